//! `wfstate health` and `--repair` on a store damaged in every way at once.

mod common;

use common::{Scratch, all_files, code, ok, read, stdout_json, text};
use serde_json::Value;

fn health(s: &Scratch, repair: bool) -> (i32, Value) {
    let mut args = vec!["--json", "health"];
    if repair {
        args.push("--repair");
    }
    let out = s.run(&args);
    (code(&out), stdout_json(&out))
}

fn component<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

#[test]
fn a_healthy_store_exits_0() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{}"));
    ok(&s.run(&["checkpoint", "create", "wf"]));
    let (exit, report) = health(&s, false);
    assert_eq!(exit, 0, "{report}");
    assert_eq!(report["status"], "ok");
    for c in report["components"].as_array().unwrap() {
        assert!(c["name"].is_string() && c["message"].is_string() && c["details"].is_array());
    }
}

#[test]
fn damage_of_every_kind_is_reported_then_quarantined_not_deleted() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "good", "-"], b"{\"ok\": true}"));
    ok(&s.run_with_stdin(&["state", "set", "flipped", "-"], b"{\"balance\": 100}"));
    let cp_id = |out: &std::process::Output| stdout_json(out)["id"].as_str().unwrap().to_string();
    let keep = cp_id(&s.run(&["--json", "checkpoint", "create", "good"]));
    let truncated = cp_id(&s.run(&["--json", "checkpoint", "create", "good"]));
    ok(&s.run(&["checkpoint", "create", "good"]));

    // 1. one flipped byte in a state
    let state_path = s.state_file("flipped");
    let mut bytes = read(&state_path);
    let at = text(&bytes).find("100").unwrap() + 2;
    bytes[at] ^= 1;
    std::fs::write(&state_path, &bytes).unwrap();
    let flipped_bytes = bytes;
    // 2. a truncated checkpoint
    let cp_path = s
        .store
        .join("checkpoints/good")
        .join(format!("{truncated}.json"));
    let whole = read(&cp_path);
    std::fs::write(&cp_path, &whole[..whole.len() / 3]).unwrap();
    let truncated_bytes = read(&cp_path);
    // 3. a torn audit tail
    let audit = s.store.join("audit.jsonl");
    let mut log = read(&audit);
    log.extend_from_slice(b"{\"seq\": 99, \"ti");
    std::fs::write(&audit, &log).unwrap();
    // 4. a stray temp file of a writer that is gone, from an hour ago
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let stray = s
        .store
        .join("state")
        .join(format!(".good.json.tmp-{dead_pid}-0"));
    std::fs::write(&stray, b"half a state").unwrap();
    assert!(
        std::process::Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(&stray)
            .status()
            .unwrap()
            .success()
    );

    let (exit, report) = health(&s, false);
    assert_eq!(exit, 3, "{report:#}");
    assert_eq!(report["status"], "error");
    assert_eq!(component(&report, "states")["status"], "error");
    assert!(
        component(&report, "states")["message"]
            .as_str()
            .unwrap()
            .contains("flipped.json")
    );
    assert_eq!(component(&report, "checkpoints")["status"], "error");
    assert!(
        component(&report, "checkpoints")["details"]
            .to_string()
            .contains(&truncated)
    );
    // Reported as a warning: only an unacknowledged append leaves a torn tail.
    assert_eq!(component(&report, "audit")["status"], "warning");
    assert!(
        component(&report, "audit")["message"]
            .as_str()
            .unwrap()
            .contains("torn")
    );
    assert_eq!(component(&report, "temp_files")["status"], "warning");
    // Checking changed nothing.
    assert_eq!(read(&state_path), flipped_bytes);

    let (exit, repaired) = health(&s, true);
    let repairs: Vec<String> = repaired["repairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    // state, checkpoint (quarantined, then written back from the journal,
    // which holds it), temp file, torn line, index rebuild
    assert_eq!(repairs.len(), 6, "{repairs:#?}");
    assert!(
        repairs
            .iter()
            .any(|r| r.contains(&format!("restored checkpoint {truncated}"))),
        "{repairs:#?}"
    );
    assert_eq!(exit, 1, "only the quarantine note remains: {repaired:#}");
    assert_eq!(component(&repaired, "quarantine")["status"], "warning");

    // Nothing was deleted: every damaged file sits in quarantine, byte for byte.
    let quarantined = all_files(&s.store.join("quarantine"));
    let contents: Vec<&Vec<u8>> = quarantined.iter().map(|(_, b)| b).collect();
    assert!(contents.contains(&&flipped_bytes));
    assert!(contents.contains(&&truncated_bytes));
    assert!(contents.contains(&&b"half a state".to_vec()));
    assert!(
        quarantined
            .iter()
            .any(|(_, b)| text(b).contains("{\"seq\": 99, \"ti"))
    );
    assert!(!state_path.exists() && !stray.exists());
    assert_eq!(read(&cp_path), whole, "written back whole from the journal");

    // The store works again: the chain verifies, checkpoints list, the
    // good checkpoint is still there, and the repair is in the audit log.
    ok(&s.run(&["audit", "verify"]));
    ok(&s.run(&["checkpoint", "show", &keep]));
    let listed = stdout_json(&s.run(&["--json", "checkpoint", "list", "good"]));
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let repairs_logged = stdout_json(&s.run(&["--json", "audit", "log", "--event", "repair"]));
    assert_eq!(repairs_logged.as_array().unwrap().len(), 1);

    // A second repair changes nothing.
    let before = all_files(&s.store);
    let (exit, again) = health(&s, true);
    assert_eq!(exit, 1);
    assert!(again["repairs"].as_array().unwrap().is_empty());
    let after: Vec<_> = all_files(&s.store)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(s.store.join("locks")))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(p, _)| !p.starts_with(s.store.join("locks")))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn a_tampered_audit_entry_is_reported_but_never_repaired_away() {
    let s = Scratch::new();
    for i in 0..3 {
        ok(&s.run_with_stdin(
            &["state", "set", "wf", "-"],
            format!("{{\"i\": {i}}}").as_bytes(),
        ));
    }
    // Entries of the last commits are copied to audit.jsonl by the next
    // holder of the audit lock (DESIGN §13): a reader settles them first.
    ok(&s.run(&["audit", "verify"]));
    let audit = s.store.join("audit.jsonl");
    let edited = std::fs::read_to_string(&audit).unwrap().replacen(
        "\"generation\":2",
        "\"generation\":7",
        1,
    );
    std::fs::write(&audit, &edited).unwrap();
    let (exit, report) = health(&s, true);
    assert_eq!(exit, 3, "{report:#}");
    assert!(
        component(&report, "audit")["message"]
            .as_str()
            .unwrap()
            .contains("line 2")
    );
    assert_eq!(
        std::fs::read_to_string(&audit).unwrap(),
        edited,
        "evidence left in place"
    );
}

fn incr(s: &Scratch, workflow: &str) {
    ok(&s.run(&["state", "update", workflow, "--incr", "/n"]));
}

fn state_log(s: &Scratch, workflow: &str) -> std::path::PathBuf {
    s.store.join("state").join(format!("{workflow}.log"))
}

#[test]
fn a_torn_state_log_line_is_a_warning_and_repair_compacts_it_away() {
    let s = Scratch::new();
    for _ in 0..3 {
        incr(&s, "wf"); // generation 1 is the base, 2 and 3 are in the log
    }
    let log = state_log(&s, "wf");
    let mut bytes = read(&log);
    assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 2);
    // What a crash during a fourth append can leave: the start of a record
    // right after the last one, over the log's preallocated zeros.
    let at = bytes.iter().rposition(|b| *b == b'\n').unwrap() + 1;
    let torn = b"{\"format\":\"wfstate.state/1\",\"workf";
    bytes[at..at + torn.len()].copy_from_slice(torn);
    std::fs::write(&log, &bytes).unwrap();
    let got = stdout_json(&s.run(&["--json", "state", "get", "wf"]));
    assert_eq!(got["generation"], 3, "the unfinished line is ignored");
    let (exit, report) = health(&s, false);
    assert_eq!(exit, 1, "{report}");
    assert_eq!(component(&report, "states")["status"], "warning");
    let (exit, report) = health(&s, true);
    assert_eq!(exit, 0, "{report}");
    assert!(
        report["repairs"][0]
            .as_str()
            .unwrap()
            .contains("compacted the state log of wf"),
        "{report}"
    );
    assert!(
        read(&log).iter().all(|b| *b == 0),
        "the log holds no records after compaction"
    );
    let got = stdout_json(&s.run(&["--json", "state", "get", "wf"]));
    assert_eq!(got["generation"], 3);
    incr(&s, "wf");
    incr(&s, "wf");
    // A torn record is written over by the next update: nothing is left.
    let mut bytes = read(&log);
    let at = bytes.iter().rposition(|b| *b == b'\n').unwrap() + 1;
    bytes[at..at + torn.len()].copy_from_slice(torn);
    std::fs::write(&log, &bytes).unwrap();
    incr(&s, "wf");
    let got = stdout_json(&s.run(&["--json", "state", "get", "wf"]));
    assert_eq!(
        (got["generation"].clone(), got["data"]["n"].clone()),
        (6.into(), 6.into())
    );
    let (exit, report) = health(&s, false);
    assert_eq!(exit, 0, "{report}");
}

#[test]
fn a_damaged_newest_log_record_is_an_integrity_error_and_repair_quarantines_the_log() {
    let s = Scratch::new();
    for _ in 0..3 {
        incr(&s, "wf");
    }
    let log = state_log(&s, "wf");
    let text_before = String::from_utf8(read(&log)).unwrap();
    // A flipped digit in the newest, complete record: damage, not a crash.
    let damaged = text_before.replacen("\"n\":3", "\"n\":8", 1);
    assert_ne!(damaged, text_before);
    std::fs::write(&log, damaged).unwrap();
    let out = s.run(&["state", "get", "wf"]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("wf.log") && said.contains("newest record"),
        "{said}"
    );
    // Writes are refused too: they would bury the evidence.
    assert_eq!(code(&s.run(&["state", "update", "wf", "--incr", "/n"])), 3);
    let (exit, _) = health(&s, false);
    assert_eq!(exit, 3);
    let (_, report) = health(&s, true);
    assert!(
        report["repairs"][0].as_str().unwrap().contains("wf.log"),
        "{report}"
    );
    let quarantined: Vec<_> = all_files(&s.store.join("quarantine"));
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    // The base (generation 1) is what is left; nothing was deleted.
    let got = stdout_json(&s.run(&["--json", "state", "get", "wf"]));
    assert_eq!(got["generation"], 1);
}

#[test]
fn an_audit_intent_wfstate_did_not_write_is_an_error_and_repair_moves_it_aside() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"n\": 1}"));
    let intent = s.store.join("audit.intent");
    let garbage = b"{\"evidence\": 42, this is not an intent".to_vec();
    std::fs::write(&intent, &garbage).unwrap();

    let (exit, report) = health(&s, false);
    assert_eq!(exit, 3, "{report:#}");
    let message = component(&report, "audit")["message"].as_str().unwrap();
    assert!(
        message.contains("audit.intent") && message.contains("not an audit intent"),
        "{message}"
    );
    assert_eq!(read(&intent), garbage, "a check changes nothing");

    let (_, repaired) = health(&s, true);
    let moved = repaired["repairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|r| r.contains("audit intent"))
        .unwrap_or_else(|| panic!("no repair of the intent: {repaired:#}"))
        .to_string();
    assert!(!intent.exists(), "{moved}");
    let kept: Vec<_> = all_files(&s.store.join("quarantine"))
        .into_iter()
        .filter(|(p, _)| p.ends_with("audit.intent"))
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "{:?}",
        kept.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert_eq!(kept[0].1, garbage, "moved, not rewritten");
    // Only the reminder that the quarantine holds files is left.
    let (exit, report) = health(&s, false);
    assert_eq!(exit, 1, "{report:#}");
    assert_eq!(component(&report, "audit")["status"], "ok", "{report:#}");
    // Writes go on as before.
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"n\": 2}"));
}

#[test]
fn an_intent_this_code_wrote_is_not_reported() {
    // A large state is saved through the intent, which stays in place.
    let s = Scratch::new();
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1100 * 1024));
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], big.as_bytes()));
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], big.as_bytes()));
    assert!(s.store.join("audit.intent").exists());
    let (exit, report) = health(&s, false);
    assert_eq!(exit, 0, "{report:#}");
}

#[test]
fn a_quarantine_batch_no_audit_entry_names_is_reported_then_recorded_once() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"n\": 1}"));
    // What a repair killed between its moves and its audit entry leaves
    // (the crash tests make one for real; here the CLI's part is checked).
    let batch = "20261101T000000Z";
    let moved = s.store.join("quarantine").join(batch).join("state/wf.json");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::write(&moved, b"{damaged").unwrap();

    let (exit, report) = health(&s, false);
    assert_eq!(exit, 1, "{report:#}");
    let message = component(&report, "quarantine")["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains(batch) && message.contains("no audit entry"),
        "{message}"
    );

    let (exit, repaired) = health(&s, true);
    assert_eq!(
        exit, 1,
        "the batch stays for a person to inspect: {repaired:#}"
    );
    assert!(
        repaired["repairs"][0]
            .as_str()
            .unwrap()
            .contains("recorded"),
        "{repaired:#}"
    );
    let entries = stdout_json(&s.run(&["--json", "audit", "log", "--event", "repair"]));
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["data"]["recorded"][0]["batch"], batch);
    assert_eq!(
        entries[0]["data"]["recorded"][0]["files"][0],
        format!("quarantine/{batch}/state/wf.json")
    );
    assert_eq!(read(&moved), b"{damaged", "recorded, not touched");

    // Once: the next repair has nothing to do, and the message is the
    // ordinary reminder.
    let (_, again) = health(&s, true);
    assert_eq!(again["repairs"], serde_json::json!([]), "{again:#}");
    let message = component(&again, "quarantine")["message"].as_str().unwrap();
    assert!(!message.contains("no audit entry"), "{message}");
    let entries = stdout_json(&s.run(&["--json", "audit", "log", "--event", "repair"]));
    assert_eq!(entries.as_array().unwrap().len(), 1);
}

/// The symlinks named `name` anywhere under `dir` (not followed).
fn symlinks_named(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            found.extend(symlinks_named(&entry.path(), name));
        } else if kind.is_symlink() && entry.file_name() == name {
            found.push(entry.path());
        }
    }
    found
}

#[test]
fn a_symlink_for_the_audit_pointer_is_refused_reported_and_moved_aside() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"n\": 1}"));
    ok(&s.run(&["state", "update", "wf", "--incr", "/n"]));
    let pointer = s.store.join("audit.pointer");
    let copy = s.dir.path().join("pointer-copy");
    std::fs::copy(&pointer, &copy).unwrap();
    // A symlink to a good copy is still not followed; one to /dev/zero
    // must not be read forever.
    for (round, target) in [copy.as_path(), std::path::Path::new("/dev/zero")]
        .into_iter()
        .enumerate()
    {
        let _ = std::fs::remove_file(&pointer);
        std::os::unix::fs::symlink(target, &pointer).unwrap();
        let n = 2 + round as i64;

        let out = s.run_bounded(&["state", "get", "wf", "--pointer", "/n"]);
        assert_eq!(code(&out), 0, "reads go on: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), n.to_string());

        let out = s.run_bounded(&["state", "update", "wf", "--incr", "/n"]);
        assert_eq!(code(&out), 3, "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains("audit.pointer") && err.contains("symlink"),
            "{err}"
        );
        let out = s.run_bounded(&["state", "get", "wf", "--pointer", "/n"]);
        assert_eq!(
            text(&out.stdout).trim(),
            n.to_string(),
            "a refused update changes nothing"
        );

        let (exit, report) = health(&s, false);
        assert_eq!(exit, 3, "{report:#}");
        let message = component(&report, "audit")["message"].as_str().unwrap();
        assert!(message.contains("audit.pointer"), "{message}");

        let (_, repaired) = health(&s, true);
        assert!(
            repaired["repairs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_str().unwrap().contains("audit pointer")),
            "{repaired:#}"
        );
        assert_eq!(
            symlinks_named(&s.store.join("quarantine"), "audit.pointer").len(),
            round + 1,
            "the symlink itself is moved aside"
        );

        ok(&s.run_bounded(&["state", "update", "wf", "--incr", "/n"]));
        let rebuilt = std::fs::symlink_metadata(&pointer).unwrap();
        assert!(rebuilt.is_file(), "{rebuilt:?}");
        ok(&s.run_bounded(&["audit", "verify"]));
    }
}

#[test]
fn a_symlink_for_the_audit_intent_is_reported_and_moved_aside() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"n\": 1}"));
    let intent = s.store.join("audit.intent");
    let copy = s.dir.path().join("intent-copy");
    std::fs::copy(&intent, &copy).unwrap();
    std::fs::remove_file(&intent).unwrap();
    std::os::unix::fs::symlink(&copy, &intent).unwrap();

    let (exit, report) = health(&s, false);
    assert_eq!(exit, 3, "{report:#}");
    let message = component(&report, "audit")["message"].as_str().unwrap();
    assert!(
        message.contains("audit.intent") && message.contains("symlink"),
        "{message}"
    );
    health(&s, true);
    assert_eq!(
        symlinks_named(&s.store.join("quarantine"), "audit.intent").len(),
        1
    );
    let (_, report) = health(&s, false);
    assert_eq!(component(&report, "audit")["status"], "ok", "{report:#}");
}

#[test]
fn a_fifo_where_a_store_file_belongs_is_an_integrity_error_not_a_wait() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"n\": 1}"));
    ok(&s.run_with_stdin(&["state", "set", "other", "-"], b"{\"n\": 1}"));
    let state = s.state_file("wf");
    std::fs::remove_file(&state).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&state)
        .status()
        .unwrap();
    assert!(made.success());
    // Opening a FIFO for reading waits for a writer: every command that
    // read this state used to hang here.
    let out = s.run_bounded(&["state", "get", "wf"]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("wf.json") && err.contains("FIFO"), "{err}");
    let out = s.run_bounded(&["--json", "health"]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    let report = stdout_json(&out);
    let message = component(&report, "states")["message"].as_str().unwrap();
    assert!(message.contains("FIFO"), "{message}");
    // The other workflow is untouched by it.
    ok(&s.run_bounded(&["state", "update", "other", "--incr", "/n"]));

    // The same for the audit log: verification and appends refuse it.
    let audit = s.store.join("audit.jsonl");
    let kept = s.dir.path().join("audit.jsonl.kept");
    std::fs::rename(&audit, &kept).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&audit)
        .status()
        .unwrap();
    assert!(made.success());
    for args in [
        &["audit", "verify"][..],
        &["state", "update", "other", "--incr", "/n"],
    ] {
        let out = s.run_bounded(args);
        assert_eq!(code(&out), 3, "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("audit.jsonl") && err.contains("FIFO"), "{err}");
    }
    std::fs::remove_file(&audit).unwrap();
    std::fs::rename(&kept, &audit).unwrap();
    ok(&s.run_bounded(&["audit", "verify"]));
}

#[test]
fn a_damaged_in_flight_table_is_reported_and_left_in_place() {
    let s = Scratch::new();
    incr(&s, "wf");
    incr(&s, "wf");
    let table = s.store.join("audit.in-flight");
    assert!(table.exists(), "updates use the in-flight table");
    let whole = read(&table);

    // A slot whose claim is garbage: a warning, and the next update frees it.
    let mut broken = whole.clone();
    broken[1024] = b'W';
    broken[1025..1040].copy_from_slice(b"{not a slot!!!!");
    std::fs::write(&table, &broken).unwrap();
    let (exit, report) = health(&s, false);
    assert_eq!(exit, 1, "{report:#}");
    let message = component(&report, "audit")["message"].as_str().unwrap();
    assert!(
        message.contains("audit.in-flight") && message.contains("slot(s) [0]"),
        "{message}"
    );
    incr(&s, "wf");
    let (exit, report) = health(&s, false);
    assert_eq!(exit, 0, "{report:#}");

    // A damaged header and a table of the wrong length: errors, and the
    // file is left as it was.
    let mut header = read(&table);
    header[..8].copy_from_slice(b"garbage!");
    std::fs::write(&table, &header).unwrap();
    let (exit, report) = health(&s, false);
    assert_eq!(exit, 3, "{report:#}");
    let message = component(&report, "audit")["message"].as_str().unwrap();
    assert!(message.contains("header is damaged"), "{message}");
    assert_eq!(read(&table), header, "a check changes nothing");

    std::fs::write(&table, &whole[..100]).unwrap();
    let (exit, report) = health(&s, false);
    assert_eq!(exit, 3, "{report:#}");
    let message = component(&report, "audit")["message"].as_str().unwrap();
    assert!(message.contains("in-flight table"), "{message}");
    assert_eq!(read(&table), whole[..100].to_vec());
}
