//! One conformance suite, run against every backend: each test function
//! below runs once on the embedded file store (`file::...`) and once on
//! PostgreSQL (`postgres::...`), through the real `wfstate` binary.
//!
//! The PostgreSQL runs use a fresh schema of the database `WFSTATE_TEST_PG`
//! names (default: `common::DEFAULT_TEST_PG`). When no server answers they
//! print `SKIPPED ...` and pass, unless `WFSTATE_TEST_PG_REQUIRED=1`, which
//! `.ci/run` sets so CI always runs them.

#[macro_use]
mod common;

use common::{
    Scratch, code, link_ids, lock_run, lock_status, ok, sigkill, stdout_json, text, wait_for_file,
    wait_until,
};
use serde_json::{Value, json};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

on_every_backend!(
    states_are_versioned_and_verified,
    compare_and_swap_refuses_a_moved_generation,
    hostile_names_are_refused_with_exit_2,
    eight_processes_times_fifty_increments_end_at_400,
    checkpoints_chain_diff_restore_and_prune,
    a_routine_prune_leaves_health_ok,
    every_change_is_audited_in_one_valid_chain,
    concurrent_writers_keep_one_audit_chain,
    a_busy_lock_times_out_with_exit_5_and_codes_pass_through,
    timeouts_too_long_for_a_clock_are_refused_or_wait_for_the_release,
    shared_holders_coexist_and_an_exclusive_waiter_gets_the_lock_after_the_last,
    a_sigkilled_holder_frees_its_lock_within_a_second,
    lock_status_shows_recorded_holders,
    damaged_state_is_an_integrity_error_and_repair_quarantines_it,
    an_edited_audit_entry_fails_verification,
    seed_system_files_import_once,
    large_documents_are_saved_from_their_text_and_read_back_the_same,
);

fn json_of(s: &Scratch, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    stdout_json(&s.run(&all))
}

fn set(s: &Scratch, workflow: &str, doc: &str) -> Output {
    s.run_with_stdin(&["state", "set", workflow, "-"], doc.as_bytes())
}

fn states_are_versioned_and_verified(s: &Scratch) {
    ok(&set(
        s,
        "build",
        r#"{"phase": "compile", "items": [1, 2.5, "x"]}"#,
    ));
    ok(&s.run(&["state", "update", "build", "--incr", "/n"]));
    let got = json_of(s, &["state", "get", "build"]);
    assert_eq!(got["generation"], 2);
    assert_eq!(got["data"]["phase"], "compile");
    assert_eq!(got["data"]["items"], json!([1, 2.5, "x"]));
    assert_eq!(got["data"]["n"], 1);
    assert!(got["checksum"].as_str().unwrap().starts_with("sha256:"));
    // `state get` prints the data exactly as the document holds it.
    let printed: Value = serde_json::from_str(&ok(&s.run(&["state", "get", "build"]))).unwrap();
    assert_eq!(printed, got["data"]);
    ok(&s.run(&["state", "verify", "build"]));
    let listed = json_of(s, &["state", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let missing = s.run(&["state", "get", "nope"]);
    assert_eq!(code(&missing), 1, "{}", text(&missing.stderr));
    assert!(text(&missing.stderr).contains("not found"));
}

fn compare_and_swap_refuses_a_moved_generation(s: &Scratch) {
    ok(&s.run_with_stdin(
        &["state", "set", "wf", "--expect-generation", "0", "-"],
        b"{\"v\": 1}",
    ));
    let again = s.run_with_stdin(
        &["state", "set", "wf", "--expect-generation", "0", "-"],
        b"{\"v\": 2}",
    );
    assert_eq!(code(&again), 4, "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("expected generation 0, found 1"));
    ok(&s.run_with_stdin(
        &["state", "set", "wf", "--expect-generation", "1", "-"],
        b"{\"v\": 3}",
    ));
    let got = json_of(s, &["state", "get", "wf"]);
    assert_eq!(
        (got["generation"].clone(), got["data"].clone()),
        (json!(2), json!({"v": 3}))
    );
    // A refused save of a new workflow leaves nothing behind.
    let refused = s.run_with_stdin(
        &["state", "set", "fresh", "--expect-generation", "3", "-"],
        b"{}",
    );
    assert_eq!(code(&refused), 4);
    assert_eq!(code(&s.run(&["state", "get", "fresh"])), 1);
    assert_eq!(json_of(s, &["state", "list"]).as_array().unwrap().len(), 1);
}

fn hostile_names_are_refused_with_exit_2(s: &Scratch) {
    let long = "a".repeat(1000);
    for name in ["../x", "a/b", "", ".hidden", long.as_str(), "x;drop table"] {
        let out = set(s, name, "{}");
        assert_eq!(code(&out), 2, "{name:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("names must match"), "{name:?}");
        let out = s.run(&["lock", "run", name, "--", "true"]);
        assert_eq!(code(&out), 2, "lock {name:?}: {}", text(&out.stderr));
    }
    assert_eq!(json_of(s, &["state", "list"]), json!([]));
}

fn eight_processes_times_fifty_increments_end_at_400(s: &Scratch) {
    ok(&set(s, "counter", r#"{"n": 0}"#));
    let workers: Vec<Child> = (0..8)
        .map(|_| {
            let mut script = String::new();
            for _ in 0..50 {
                script.push_str(&format!(
                    "'{}' --store '{}' state update counter --incr /n >/dev/null || exit 1\n",
                    common::BIN,
                    s.store.display()
                ));
            }
            Command::new("sh").arg("-c").arg(script).spawn().unwrap()
        })
        .collect();
    for mut worker in workers {
        assert!(worker.wait().unwrap().success(), "a worker's update failed");
    }
    let got = json_of(s, &["state", "get", "counter"]);
    assert_eq!(got["data"]["n"], 400);
    assert_eq!(got["generation"], 401);
}

fn checkpoint(s: &Scratch, args: &[&str]) -> String {
    let mut all = vec!["checkpoint", "create", "wf"];
    all.extend_from_slice(args);
    let out = json_of(s, &all);
    out["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

fn checkpoints_chain_diff_restore_and_prune(s: &Scratch) {
    ok(&set(s, "wf", r#"{"phase": "plan", "done": []}"#));
    let first = checkpoint(s, &["--message", "planned"]);
    ok(&set(s, "wf", r#"{"phase": "build", "done": ["plan"]}"#));
    let second = checkpoint(s, &["--message", "built", "--decision", "use cache"]);
    let third = checkpoint(s, &["--message", "again"]);
    let branch = checkpoint(s, &["--parent", &first, "--message", "branch"]);
    let root = checkpoint(s, &["--root", "--message", "new line"]);

    let listed = json_of(s, &["checkpoint", "list", "wf"]);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&root, &branch, &third, &second, &first]);
    let limited = json_of(s, &["checkpoint", "list", "wf", "--limit", "2"]);
    assert_eq!(limited.as_array().unwrap().len(), 2);

    let chain = json_of(s, &["checkpoint", "chain", &third]);
    assert_eq!(
        link_ids(&chain),
        [third.as_str(), second.as_str(), first.as_str()]
    );
    assert_eq!(chain["stopped"], Value::Null);
    let branch_chain = json_of(s, &["checkpoint", "chain", &branch]);
    assert_eq!(branch_chain["links"].as_array().unwrap().len(), 2);
    let shown = json_of(s, &["checkpoint", "show", &second]);
    assert_eq!(shown["key_decisions"], json!(["use cache"]));
    assert_eq!(shown["parent"], json!(first));

    let diff = json_of(s, &["checkpoint", "diff", &first, &second]);
    let patch = diff["state_patch"]
        .as_array()
        .unwrap_or_else(|| panic!("{diff}"));
    assert!(
        patch
            .iter()
            .any(|op| op["path"] == "/phase" && op["value"] == "build"),
        "{diff}"
    );

    let restored = json_of(s, &["checkpoint", "restore", &first]);
    assert_eq!(restored["generation"], 3, "{restored}");
    let now = json_of(s, &["state", "get", "wf"]);
    assert_eq!(now["data"], json!({"phase": "plan", "done": []}));
    assert_eq!(now["origin"]["restored_from_checkpoint"], json!(first));

    let dry = json_of(
        s,
        &["checkpoint", "prune", "wf", "--keep-last", "1", "--dry-run"],
    );
    assert_eq!(dry["pruned"].as_array().unwrap().len(), 4, "{dry}");
    assert_eq!(
        json_of(s, &["checkpoint", "list", "wf"])
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let pruned = json_of(s, &["checkpoint", "prune", "wf", "--keep-last", "1"]);
    assert_eq!(pruned["pruned"].as_array().unwrap().len(), 4, "{pruned}");
    let left = json_of(s, &["checkpoint", "list", "wf"]);
    assert_eq!(left[0]["id"], json!(root), "the latest is never pruned");
    let gone = s.run(&["checkpoint", "show", &first]);
    assert_eq!(code(&gone), 1, "{}", text(&gone.stderr));
    let bad_id = s.run(&["checkpoint", "show", "../../etc/passwd"]);
    assert_eq!(code(&bad_id), 2);
    let resume = ok(&s.run(&["resume", "wf"]));
    assert!(resume.contains("new line"), "{resume}");
    assert_eq!(code(&s.run(&["health"])), 0);
}

fn a_routine_prune_leaves_health_ok(s: &Scratch) {
    // A lineage cut by `prune` is normal use: information for monitoring,
    // not a warning that would page somebody from then on.
    ok(&set(s, "wf", r#"{"n": 1}"#));
    for _ in 0..3 {
        checkpoint(s, &[]);
    }
    ok(&s.run(&["checkpoint", "prune", "wf", "--keep-last", "1"]));
    let out = s.run(&["--json", "health"]);
    let report = stdout_json(&out);
    assert_eq!(code(&out), 0, "{report}");
    assert_eq!(report["status"], "ok", "{report}");
    let checkpoints = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "checkpoints")
        .unwrap();
    assert!(
        checkpoints["details"][0]
            .as_str()
            .unwrap()
            .contains("was pruned"),
        "{checkpoints}"
    );
}

fn events(s: &Scratch) -> Vec<String> {
    json_of(s, &["audit", "log"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

fn every_change_is_audited_in_one_valid_chain(s: &Scratch) {
    ok(&set(s, "wf", r#"{"key": "/home/u/.ssh/id_rsa"}"#));
    ok(&s.run(&["state", "update", "wf", "--incr", "/n"]));
    let id = checkpoint(s, &[]);
    ok(&s.run(&["checkpoint", "restore", &id]));
    ok(&s.run(&["checkpoint", "prune", "wf", "--keep-last", "1"]));
    assert_eq!(
        events(s),
        [
            "state_save",
            "state_update",
            "checkpoint_create",
            "state_restore"
        ]
    );
    let verified = json_of(s, &["audit", "verify"]);
    assert_eq!(verified["valid"], true, "{verified}");
    assert_eq!(verified["entries"], 4);
    let limited = json_of(
        s,
        &["audit", "log", "--limit", "1", "--event", "state_update"],
    );
    assert_eq!(limited.as_array().unwrap().len(), 1);
    assert_eq!(limited[0]["data"]["generation"], 2);
}

fn concurrent_writers_keep_one_audit_chain(s: &Scratch) {
    let workers: Vec<Child> = (0..4)
        .map(|w| {
            let mut script = String::new();
            for _ in 0..25 {
                script.push_str(&format!(
                    "'{}' --store '{}' state update wf{w} --incr /n >/dev/null || exit 1\n",
                    common::BIN,
                    s.store.display()
                ));
            }
            Command::new("sh").arg("-c").arg(script).spawn().unwrap()
        })
        .collect();
    for mut worker in workers {
        assert!(worker.wait().unwrap().success(), "a worker failed");
    }
    let verified = json_of(s, &["audit", "verify"]);
    assert_eq!(verified["valid"], true, "{verified}");
    assert_eq!(verified["entries"], 100);
    let seqs: Vec<u64> = json_of(s, &["audit", "log"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
}

fn a_busy_lock_times_out_with_exit_5_and_codes_pass_through(s: &Scratch) {
    let release = s.dir.path().join("release");
    let mut holder = lock_run(s, &["--no-inherit"], &wait_for_file(&release))
        .spawn()
        .unwrap();
    wait_until("held", || lock_status(s, "res")["state"] == "exclusive");
    let started = Instant::now();
    let out = s.run(&["lock", "run", "res", "--timeout", "0.3", "--", "true"]);
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(text(&out.stderr).contains("waiting for exclusive lock \"res\""));
    std::fs::write(&release, b"").unwrap();
    assert!(holder.wait().unwrap().success());
    wait_until("released", || lock_status(s, "res")["state"] == "free");
    ok(&s.run(&["lock", "run", "res", "--timeout", "10", "--", "true"]));
    let out = s.run(&["lock", "run", "res", "--", "sh", "-c", "exit 7"]);
    assert_eq!(code(&out), 7, "CMD's exit code passes through");
}

fn timeouts_too_long_for_a_clock_are_refused_or_wait_for_the_release(s: &Scratch) {
    // More seconds than a `Duration` holds: a usage error, not a panic.
    for huge in ["1e100", "inf", "NaN"] {
        let out = s.run(&["lock", "run", "res", "--timeout", huge, "--", "true"]);
        assert_eq!(code(&out), 2, "--timeout {huge}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("--timeout must be"), "{err}");
    }
    // Timeouts a `Duration` holds but the backend's clock cannot: now +
    // 1e19 s is past the end of the monotonic clock, and 3e6 s (35 days) is
    // past the longest `lock_timeout` PostgreSQL accepts. A waiter behind a
    // holder waits for the release either way.
    let release = s.dir.path().join("release");
    for long in ["1e19", "3e6"] {
        let _ = std::fs::remove_file(&release);
        let mut holder = lock_run(s, &["--no-inherit"], &wait_for_file(&release))
            .spawn()
            .unwrap();
        wait_until("held", || lock_status(s, "res")["state"] == "exclusive");
        let ran = s.dir.path().join("ran");
        let _ = std::fs::remove_file(&ran);
        let waiter = lock_run(
            s,
            &["--timeout", long],
            &format!("touch '{}'", ran.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(!ran.exists(), "--timeout {long}: the waiter must wait");
        std::fs::write(&release, b"").unwrap();
        holder.wait().unwrap();
        let out = waiter.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "--timeout {long}: {}", text(&out.stderr));
        assert!(ran.exists());
    }
}

fn shared_holders_coexist_and_an_exclusive_waiter_gets_the_lock_after_the_last(s: &Scratch) {
    let d = s.dir.path();
    let holders: Vec<Child> = (0..2)
        .map(|i| {
            let cmd = format!(
                "touch '{}/started{i}'; {}",
                d.display(),
                wait_for_file(&d.join(format!("release{i}")))
            );
            lock_run(s, &["--shared"], &cmd).spawn().unwrap()
        })
        .collect();
    wait_until("both shared holders inside", || {
        d.join("started0").exists() && d.join("started1").exists()
    });
    // Both are inside, so the kernel lists both as shared holders. (Waited
    // for rather than read once: on a busy machine the count read from
    // /proc/locks has been seen off for a moment, and the last reading is
    // printed if it never settles.)
    let started = Instant::now();
    loop {
        let st = lock_status(s, "res");
        if st["state"] == "shared" && st["holders"] == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "two shared holders are inside, but lock status says {st}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut exclusive = lock_run(s, &[], &format!("touch '{}/exclusive'", d.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("exclusive request queued", || {
        lock_status(s, "res")["waiters"] == 1
    });
    std::fs::write(d.join("release0"), b"").unwrap();
    let mut holders = holders.into_iter();
    assert!(holders.next().unwrap().wait().unwrap().success());
    // One shared holder is still inside: the exclusive waiter must still wait.
    std::thread::sleep(Duration::from_millis(200));
    assert!(exclusive.try_wait().unwrap().is_none());
    assert!(!d.join("exclusive").exists());
    std::fs::write(d.join("release1"), b"").unwrap();
    assert!(holders.next().unwrap().wait().unwrap().success());
    let out = exclusive.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(d.join("exclusive").exists());
    // It said once, on stderr, what it was waiting for and who held it.
    let err = text(&out.stderr);
    assert_eq!(
        err.matches("waiting for exclusive lock").count(),
        1,
        "{err}"
    );
    assert!(err.contains("held shared by 2"), "{err}");
}

fn a_sigkilled_holder_frees_its_lock_within_a_second(s: &Scratch) {
    let acquired = s.dir.path().join("acquired");
    let mut holder = lock_run(s, &["--no-inherit"], "sleep 30").spawn().unwrap();
    wait_until("held", || lock_status(s, "res")["state"] == "exclusive");
    let mut waiter = lock_run(
        s,
        &["--timeout", "30"],
        &format!("touch '{}'", acquired.display()),
    )
    .spawn()
    .unwrap();
    wait_until("waiting", || lock_status(s, "res")["waiters"] == 1);
    let killed = Instant::now();
    sigkill(&holder);
    holder.wait().unwrap();
    wait_until("the waiter acquired", || acquired.exists());
    let handed_over = killed.elapsed();
    eprintln!("lock handed over {handed_over:?} after SIGKILL of its holder");
    assert!(waiter.wait().unwrap().success());
    assert!(
        handed_over < Duration::from_secs(1),
        "the lock must be free within 1 s of the holder's death (took {handed_over:?})"
    );
}

fn lock_status_shows_recorded_holders(s: &Scratch) {
    let mut holder = s
        .cmd()
        .args([
            "lock",
            "run",
            "res",
            "--purpose",
            "deploy 1.4",
            "--no-inherit",
            "--",
        ])
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    wait_until("held", || lock_status(s, "res")["state"] == "exclusive");
    let st = lock_status(s, "res");
    assert_eq!(st["records"][0]["purpose"], "deploy 1.4", "{st}");
    assert_eq!(st["records"][0]["pid"], holder.id());
    assert_eq!(st["records"][0]["holding"], true);
    let text_status = ok(&s.run(&["lock", "status"]));
    assert!(
        text_status.contains("res\theld exclusive by"),
        "{text_status}"
    );
    sigkill(&holder);
    holder.wait().unwrap();
    wait_until("free", || lock_status(s, "res")["state"] == "free");
    let st = lock_status(s, "res");
    assert_eq!(st["records"][0]["holding"], false, "{st}");
    let out = ok(&s.run(&["lock", "status"]));
    assert!(out.contains("free (last holder exited"), "{out}");
    // The next holder clears the leftover record.
    ok(&s.run(&["lock", "run", "res", "--", "true"]));
    assert_eq!(
        lock_status(s, "res")["records"].as_array().unwrap().len(),
        0
    );
    let all = json_of(s, &["lock", "status"]);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .filter(|n| !n.contains('@')) // the library's own locks, on files
        .collect();
    assert_eq!(names, ["res"]);
}

/// Damages the stored state of `workflow` the way a bad disk or a careless
/// edit would: one byte of the data changes, the checksum does not.
fn damage_state(s: &Scratch, workflow: &str) {
    #[cfg(feature = "postgres")]
    if s.is_postgres() {
        let changed = s
            .sql()
            .execute(
                "UPDATE wfstate_states SET document = replace(document, 'intact', 'intacT') \
                 WHERE workflow = $1",
                &[&workflow],
            )
            .unwrap();
        assert_eq!(changed, 1);
        return;
    }
    let path = s.state_file(workflow);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("intact", "intacT")).unwrap();
}

fn damaged_state_is_an_integrity_error_and_repair_quarantines_it(s: &Scratch) {
    ok(&set(s, "good", r#"{"v": "fine"}"#));
    ok(&set(s, "bad", r#"{"v": "intact"}"#));
    damage_state(s, "bad");
    let out = s.run(&["state", "get", "bad"]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("checksum"),
        "{}",
        text(&out.stderr)
    );
    // A save over a damaged state is refused too: it would destroy evidence.
    assert_eq!(code(&set(s, "bad", "{}")), 3);
    let health = s.run(&["--json", "health"]);
    assert_eq!(code(&health), 3);
    let report = stdout_json(&health);
    assert_eq!(report["status"], "error");
    let repaired = stdout_json(&s.run(&["--json", "health", "--repair"]));
    assert_eq!(
        repaired["repairs"].as_array().unwrap().len(),
        1,
        "{repaired}"
    );
    // What was moved aside waits for a person: a warning, not an error.
    let after = s.run(&["--json", "health"]);
    assert_eq!(code(&after), 1, "{}", text(&after.stdout));
    let quarantine = &stdout_json(&after)["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "quarantine")
        .cloned()
        .unwrap();
    assert_eq!(quarantine["status"], "warning");
    assert_eq!(json_of(s, &["state", "get", "good"])["data"]["v"], "fine");
    assert_eq!(code(&s.run(&["state", "get", "bad"])), 1, "moved aside");
    assert!(events(s).contains(&"repair".to_string()));
}

/// Edits the data of audit entry `seq` without recomputing its hash.
fn edit_audit_entry(s: &Scratch, seq: u64) {
    #[cfg(feature = "postgres")]
    if s.is_postgres() {
        let changed = s
            .sql()
            .execute(
                "UPDATE wfstate_audit SET line = replace(line, '\"generation\":2', '\"generation\":9') \
                 WHERE seq = $1",
                &[&(seq as i64)],
            )
            .unwrap();
        assert_eq!(changed, 1);
        return;
    }
    let path = s.store.join("audit.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i as u64 + 1 == seq {
                l.replace("\"generation\":2", "\"generation\":9")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

fn an_edited_audit_entry_fails_verification(s: &Scratch) {
    for _ in 0..3 {
        ok(&s.run(&["state", "update", "wf", "--incr", "/n"]));
    }
    assert_eq!(code(&s.run(&["audit", "verify"])), 0);
    edit_audit_entry(s, 2);
    let out = s.run(&["--json", "audit", "verify"]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    let report = stdout_json(&out);
    assert_eq!(report["first_bad"]["line"], 2, "{report}");
    assert!(
        report["first_bad"]["reason"]
            .as_str()
            .unwrap()
            .contains("hash does not match")
    );
}

fn seed_system_files_import_once(s: &Scratch) {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/legacy/case2");
    assert!(fixture.is_dir(), "fixture {} missing", fixture.display());
    let first = s.run(&["--json", "import-legacy", fixture.to_str().unwrap()]);
    let report = stdout_json(&first);
    assert_eq!(code(&first), 0, "{report}");
    let workflows = json_of(s, &["state", "list"]);
    assert!(!workflows.as_array().unwrap().is_empty(), "{workflows}");
    let checkpoints = json_of(s, &["checkpoint", "list"]);
    let count = checkpoints.as_array().unwrap().len();
    assert!(count > 0, "{report}");
    let again = stdout_json(&s.run(&["--json", "import-legacy", fixture.to_str().unwrap()]));
    assert_eq!(
        json_of(s, &["checkpoint", "list"])
            .as_array()
            .unwrap()
            .len(),
        count
    );
    assert_eq!(again["state"]["action"], "already imported", "{again}");
    assert_eq!(code(&s.run(&["audit", "verify"])), 0);
    assert_eq!(code(&s.run(&["health"])), 0);
}

/// `state set` hands the document over as text; the file store saves a
/// large one without parsing it into a tree. Whatever the path, what comes
/// back is the document, sealed exactly as `StateDoc::seal` seals it.
fn large_documents_are_saved_from_their_text_and_read_back_the_same(s: &Scratch) {
    let items: Vec<Value> = (0..12_000)
        .map(|i| {
            json!({
                "id": i,
                "ratio": f64::from(i) / 7.0,
                "name": format!("item-{i:06} \u{e9}\u{1F600}\t\"q\""),
                "big": u64::MAX - i as u64,
                "n\u{e9}sted": {"z": null, "a": [true, false, 1e-7, -0.0]},
            })
        })
        .collect();
    // Pretty text, a key repeated (the last one counts, as everywhere in
    // JSON parsing), and a number written in a non-canonical way.
    let body = serde_json::to_string_pretty(&json!({"items": items})).unwrap();
    let doc_text = format!(
        "{{\"phase\": \"first\", \"count\": 1.50e1, {}, \"phase\": \"last\"}}",
        &body[1..body.len() - 1]
    );
    assert!(
        doc_text.len() > 2 << 20,
        "large enough for the text path: {}",
        doc_text.len()
    );
    let file = s.dir.path().join("big.json");
    std::fs::write(&file, &doc_text).unwrap();
    let file = file.to_str().unwrap();

    let saved = json_of(s, &["state", "set", "big", "--file", file]);
    let got = json_of(s, &["state", "get", "big"]);
    let expected: Value = serde_json::from_str(&doc_text).unwrap();
    assert_eq!(got["data"], expected);
    assert_eq!(got["data"]["phase"], "last");
    let sealed = wfstate::StateDoc::seal(
        "big",
        1,
        got["updated_at"].as_str().unwrap().to_string(),
        None,
        expected.clone(),
    );
    assert_eq!(saved["checksum"], json!(sealed.checksum));
    assert_eq!(got["checksum"], json!(sealed.checksum));

    // Saving over a large state, with a compare-and-swap on its generation.
    let stale = s.run(&[
        "state",
        "set",
        "big",
        "--expect-generation",
        "0",
        "--file",
        file,
    ]);
    assert_eq!(code(&stale), 4, "{}", text(&stale.stderr));
    ok(&s.run(&[
        "state",
        "set",
        "big",
        "--expect-generation",
        "1",
        "--file",
        file,
    ]));
    ok(&s.run(&["state", "update", "big", "--incr", "/n"]));
    ok(&s.run(&[
        "state",
        "set",
        "big",
        "--expect-generation",
        "3",
        "--file",
        file,
    ]));

    // Damaged text is refused (exit 2), naming the input and what is
    // wrong, and changes nothing.
    let refused = |name: &str, bytes: &[u8], says: &str| {
        let file = s.dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let out = s.run(&["state", "set", "big", "--file", file.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(code(&out), 2, "{err}");
        assert!(err.contains(name) && err.contains(says), "{err}");
    };
    refused(
        "cut.json",
        &doc_text.as_bytes()[..doc_text.len() - 10],
        "not valid JSON",
    );
    refused("latin1.json", b"{\"a\": \"\xe9\"}", "not UTF-8");
    let got = json_of(s, &["state", "get", "big"]);
    assert_eq!(got["generation"], 4);
    assert_eq!(got["data"], expected);
    ok(&s.run(&["state", "verify", "big"]));
    ok(&s.run(&["audit", "verify"]));
}
