//! Checkpoint commands through the real binary: lineage, branching, damage,
//! restore, prune, resume, the index, and concurrent creators.

mod common;

use common::{Scratch, code, link_ids, ok, read, stdout_json, text};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;

fn create(s: &Scratch, workflow: &str, extra: &[&str]) -> String {
    let mut args = vec!["--json", "checkpoint", "create", workflow];
    args.extend_from_slice(extra);
    let out = s.run(&args);
    stdout_json(&out)["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", text(&out.stderr)))
        .to_string()
}

fn set_state(s: &Scratch, workflow: &str, data: Value) {
    ok(&s.run_with_stdin(
        &["state", "set", workflow, "-"],
        data.to_string().as_bytes(),
    ));
}

fn checkpoint_file(s: &Scratch, workflow: &str, id: &str) -> PathBuf {
    s.store
        .join("checkpoints")
        .join(workflow)
        .join(format!("{id}.json"))
}

fn index_file(s: &Scratch, workflow: &str) -> PathBuf {
    s.store.join("checkpoints").join(workflow).join("index")
}

fn chain_ids(s: &Scratch, id: &str) -> (Vec<String>, Value, String) {
    let out = s.run(&["--json", "checkpoint", "chain", id]);
    let v = stdout_json(&out);
    (link_ids(&v), v["stopped"].clone(), text(&out.stderr))
}

fn list_ids(s: &Scratch, args: &[&str]) -> Vec<String> {
    let mut full = vec!["--json", "checkpoint", "list"];
    full.extend_from_slice(args);
    stdout_json(&s.run(&full))
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn checkpoints_chain_themselves_and_branch_from_an_older_one() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({"phase": "PLAN", "n": 1}));
    let a = create(&s, "wf", &["-m", "a"]);
    let b = create(&s, "wf", &["-m", "b"]);
    let c = create(&s, "wf", &["-m", "c", "--parent", &a]); // second child of a
    let r = create(&s, "wf", &["-m", "r", "--root"]);
    assert_eq!(chain_ids(&s, &b).0, [b.clone(), a.clone()]);
    assert_eq!(chain_ids(&s, &c).0, [c.clone(), a.clone()]);
    assert_eq!(chain_ids(&s, &r).0, vec![r.clone()]);
    // Newest first, and the page/phase filters work.
    assert_eq!(
        list_ids(&s, &["wf"]),
        [r.clone(), c.clone(), b.clone(), a.clone()]
    );
    assert_eq!(
        list_ids(&s, &["wf", "--limit", "2"]),
        [r.clone(), c.clone()]
    );
    assert_eq!(
        list_ids(&s, &["wf", "--before", &c]),
        [b.clone(), a.clone()]
    );
    // The default parent is the latest: the new root.
    let d = create(&s, "wf", &["-m", "d"]);
    assert_eq!(chain_ids(&s, &d).0, [d.clone(), r.clone()]);
}

#[test]
fn show_returns_the_whole_verified_checkpoint_with_derived_context() {
    let s = Scratch::new();
    set_state(
        &s,
        "wf",
        json!({"phase": "REVIEW", "phases": {"P": {"items": {"a": {"status": "completed"}, "b": {"status": "pending"}}}}}),
    );
    let notes = s.dir.path().join("notes.txt");
    std::fs::write(&notes, b"v1").unwrap();
    let id = create(
        &s,
        "wf",
        &[
            "-m",
            "reviewing",
            "--item",
            "b",
            "-d",
            "use flock",
            "-d",
            "no PIDs",
            "--file",
            notes.to_str().unwrap(),
        ],
    );
    let cp = stdout_json(&s.run(&["--json", "checkpoint", "show", &id]));
    assert_eq!(cp["id"], id.as_str());
    assert_eq!(cp["phase"], "REVIEW");
    assert_eq!(cp["item"], "b");
    assert_eq!(cp["message"], "reviewing");
    assert_eq!(
        cp["context_summary"],
        "Phase REVIEW; 1 of 2 items completed; state generation 1."
    );
    assert_eq!(cp["key_decisions"], json!(["use flock", "no PIDs"]));
    assert_eq!(cp["files"][0]["path"], "notes.txt");
    assert_eq!(cp["files"][0]["size"], 2);
    assert_eq!(cp["state"]["generation"], 1);
    assert!(cp["checksum"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn unknown_ids_exit_1_and_malformed_ids_exit_2() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({}));
    create(&s, "wf", &[]);
    let unknown = "01a21943-dff6-7084-b4b1-e30552673800";
    for args in [
        vec!["checkpoint", "show", unknown],
        vec!["checkpoint", "chain", unknown],
        vec!["checkpoint", "restore", unknown],
        vec!["checkpoint", "create", "wf", "--parent", unknown],
    ] {
        let out = s.run(&args);
        assert_eq!(code(&out), 1, "{args:?}");
        assert!(
            text(&out.stderr).contains(unknown),
            "names the id: {}",
            text(&out.stderr)
        );
    }
    for bad in ["../x", "01A21943-DFF6-7084-B4B1-E30552673800", "x.json"] {
        assert_eq!(code(&s.run(&["checkpoint", "show", bad])), 2, "{bad}");
    }
    assert_eq!(code(&s.run(&["checkpoint", "list", "../wf"])), 2);
}

#[test]
fn a_corrupt_checkpoint_fails_show_and_restore_and_is_flagged_by_list() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({"v": 1}));
    let a = create(&s, "wf", &["-m", "good"]);
    let b = create(&s, "wf", &["-m", "to be damaged"]);
    let c = create(&s, "wf", &["-m", "also good"]);
    set_state(&s, "wf", json!({"v": 2}));
    let path = checkpoint_file(&s, "wf", &b);
    let mut bytes = read(&path);
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&path, &bytes).unwrap();
    let state_before = read(&s.state_file("wf"));

    let out = s.run(&["checkpoint", "show", &b]);
    assert_eq!(code(&out), 3);
    assert!(text(&out.stderr).contains(&b));
    let out = s.run(&["checkpoint", "restore", &b]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert_eq!(read(&s.state_file("wf")), state_before, "state untouched");
    assert_eq!(read(&path), bytes, "checkpoint file untouched");

    let out = s.run(&["--json", "checkpoint", "list", "wf"]);
    assert_eq!(code(&out), 3);
    let rows = stdout_json(&out);
    let ids: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [c.as_str(), b.as_str(), a.as_str()],
        "the rest are still listed"
    );
    assert!(rows[1]["error"].as_str().unwrap().contains("truncated"));
    assert_eq!(rows[0]["message"], "also good");
}

#[test]
fn restore_makes_a_new_generation_that_records_its_origin() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({"step": 1}));
    let a = create(&s, "wf", &[]);
    set_state(&s, "wf", json!({"step": 2}));
    let out = stdout_json(&s.run(&["--json", "checkpoint", "restore", &a]));
    assert_eq!(out["generation"], 3);
    let state = stdout_json(&s.run(&["--json", "state", "get", "wf"]));
    assert_eq!(state["data"], json!({"step": 1}));
    assert_eq!(state["generation"], 3);
    assert_eq!(state["origin"]["restored_from_checkpoint"], a.as_str());
    assert_eq!(state["origin"]["checkpoint_state_generation"], 1);
    ok(&s.run(&["state", "verify", "wf"]));
}

#[test]
fn a_checkpoint_without_state_cannot_be_restored() {
    let s = Scratch::new();
    let a = create(&s, "fresh", &[]);
    let out = s.run(&["checkpoint", "restore", &a]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("holds no state"));
}

#[test]
fn diff_gives_a_json_patch_and_the_changed_metadata() {
    let s = Scratch::new();
    set_state(
        &s,
        "wf",
        json!({"phase": "PLAN", "items": [1, 2], "gone": true}),
    );
    let a = create(&s, "wf", &["-m", "before"]);
    set_state(
        &s,
        "wf",
        json!({"phase": "BUILD", "items": [1, 2, 3], "new": {"k": "v"}}),
    );
    let b = create(&s, "wf", &["-m", "after"]);
    let diff = stdout_json(&s.run(&["--json", "checkpoint", "diff", &a, &b]));
    let patch: Vec<wfstate::checkpoint::diff::PatchOp> = diff["state_patch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| wfstate::checkpoint::diff::PatchOp {
            op: match op["op"].as_str().unwrap() {
                "add" => "add",
                "remove" => "remove",
                _ => "replace",
            },
            path: op["path"].as_str().unwrap().to_string(),
            value: op.get("value").cloned(),
        })
        .collect();
    let from = json!({"phase": "PLAN", "items": [1, 2], "gone": true});
    let applied = wfstate::checkpoint::diff::apply(from, &patch).unwrap();
    assert_eq!(
        applied,
        json!({"phase": "BUILD", "items": [1, 2, 3], "new": {"k": "v"}})
    );
    let fields: Vec<_> = diff["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    for f in ["phase", "message", "parent", "state_generation"] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    let readable = ok(&s.run(&["checkpoint", "diff", &a, &b]));
    assert!(
        readable.contains("replace /phase = \"BUILD\""),
        "{readable}"
    );
    assert!(
        readable.contains("message: \"before\" -> \"after\""),
        "{readable}"
    );
}

#[test]
fn prune_never_removes_the_latest_and_dry_run_removes_nothing() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({}));
    let ids: Vec<String> = (0..5)
        .map(|i| create(&s, "wf", &["-m", &i.to_string()]))
        .collect();
    let dry = stdout_json(&s.run(&[
        "--json",
        "checkpoint",
        "prune",
        "wf",
        "--keep-last",
        "0",
        "--dry-run",
    ]));
    assert_eq!(dry["pruned"].as_array().unwrap().len(), 4);
    assert_eq!(list_ids(&s, &["wf"]).len(), 5, "dry run removed nothing");

    let out = stdout_json(&s.run(&["--json", "checkpoint", "prune", "wf", "--keep-last", "2"]));
    let pruned: Vec<_> = out["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(pruned, [&ids[0], &ids[1], &ids[2]]);
    assert_eq!(list_ids(&s, &["wf"]), [ids[4].clone(), ids[3].clone()]);
    assert!(!checkpoint_file(&s, "wf", &ids[0]).exists());

    ok(&s.run(&["checkpoint", "prune", "wf", "--older-than", "0"]));
    assert_eq!(
        list_ids(&s, &["wf"]),
        [ids[4].clone()],
        "the latest survives everything"
    );
    ok(&s.run(&["checkpoint", "prune", "--keep-last", "0"]));
    assert_eq!(list_ids(&s, &["wf"]), [ids[4].clone()]);
    assert_eq!(
        code(&s.run(&["checkpoint", "prune", "wf"])),
        2,
        "a rule is required"
    );
}

#[test]
fn a_pruned_parent_truncates_the_chain_with_a_warning() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({}));
    let a = create(&s, "wf", &[]);
    let b = create(&s, "wf", &[]);
    let c = create(&s, "wf", &[]);
    ok(&s.run(&["checkpoint", "prune", "wf", "--keep-last", "2"]));
    let (ids, stopped, stderr) = chain_ids(&s, &c);
    assert_eq!(ids, [c.clone(), b.clone()]);
    assert_eq!(stopped["kind"], "missing_parent");
    assert_eq!(stopped["missing"], a.as_str());
    assert!(stderr.contains("lineage truncated at"), "{stderr}");
}

#[test]
fn a_hand_made_cycle_is_reported_not_followed_forever() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({}));
    let a = create(&s, "wf", &[]);
    let b = create(&s, "wf", &[]);
    // Edit a's file by hand so that its parent is b, re-sealed so it still
    // verifies: a -> b -> a.
    let path = checkpoint_file(&s, "wf", &a);
    let mut cp: wfstate::checkpoint::Checkpoint = serde_json::from_slice(&read(&path)).unwrap();
    cp.parent = Some(b.clone());
    std::fs::write(&path, cp.seal().to_bytes()).unwrap();
    std::fs::remove_file(index_file(&s, "wf")).unwrap();
    let (ids, stopped, stderr) = chain_ids(&s, &b);
    assert_eq!(ids, [b.clone(), a.clone()]);
    assert_eq!(stopped["kind"], "cycle");
    assert!(stderr.contains("cycle"), "{stderr}");
    assert!(
        stderr.contains("rebuilt"),
        "says the index was rebuilt: {stderr}"
    );
}

#[test]
fn a_deleted_or_damaged_index_is_rebuilt_and_answers_stay_correct() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({"phase": "P"}));
    let ids: Vec<String> = (0..6).map(|_| create(&s, "wf", &[])).collect();
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let index = index_file(&s, "wf");

    std::fs::remove_file(&index).unwrap();
    let out = s.run(&["--json", "checkpoint", "list", "wf"]);
    assert!(
        text(&out.stderr).contains("index missing"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(list_ids(&s, &["wf"]), newest_first);

    // Damage a record in the middle: a chain walk through it notices.
    let mut bytes = read(&index);
    bytes[128 * 3 + 5] ^= 0x01;
    std::fs::write(&index, &bytes).unwrap();
    let (chain, stopped, stderr) = chain_ids(&s, &ids[5]);
    assert_eq!(chain, newest_first);
    assert!(stopped.is_null());
    assert!(stderr.contains("index"), "{stderr}");

    // A torn tail (crash mid-append) is caught by the size check.
    let mut bytes = read(&index);
    bytes.truncate(bytes.len() - 40);
    std::fs::write(&index, &bytes).unwrap();
    let out = s.run(&["--json", "resume", "wf"]);
    assert!(
        text(&out.stderr).contains("rebuilt"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["checkpoint"], ids[5].as_str());
    // Creating after a rebuild continues the lineage.
    let next = create(&s, "wf", &[]);
    assert_eq!(chain_ids(&s, &next).0[1], ids[5]);
}

/// A checkpoint committed through the journal whose file is gone (a
/// creator that died before publishing it leaves this) is published again
/// by the next creation, in its place in the lineage: it was committed.
#[test]
fn a_journaled_checkpoint_without_its_file_is_published_again() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({}));
    let a = create(&s, "wf", &[]);
    let b = create(&s, "wf", &[]);
    std::fs::remove_file(checkpoint_file(&s, "wf", &b)).unwrap();
    assert_eq!(list_ids(&s, &["wf"]), vec![a.clone()]);
    let c = create(&s, "wf", &[]);
    assert_eq!(chain_ids(&s, &c).0, [c.clone(), b.clone(), a.clone()]);
}

/// Large checkpoints are committed by their file's rename (no journal).
#[test]
fn an_index_record_without_its_file_counts_as_never_committed() {
    let s = Scratch::new();
    // Over the journal's record limit: the synced protocol.
    set_state(&s, "wf", json!({"pad": "x".repeat(70 * 1024)}));
    let a = create(&s, "wf", &[]);
    let b = create(&s, "wf", &[]);
    assert!(
        !std::fs::read(s.store.join("checkpoints/wf/journal"))
            .is_ok_and(|j| j.iter().any(|b| *b != 0)),
        "large checkpoints do not go through the journal"
    );
    // What a crash between the index append and the rename leaves behind.
    std::fs::remove_file(checkpoint_file(&s, "wf", &b)).unwrap();
    assert_eq!(list_ids(&s, &["wf"]), vec![a.clone()]);
    let resumed = stdout_json(&s.run(&["--json", "resume", "wf"]));
    assert_eq!(resumed["checkpoint"], a.as_str());
    let c = create(&s, "wf", &[]);
    assert_eq!(
        chain_ids(&s, &c).0,
        [c.clone(), a.clone()],
        "parent is the last committed"
    );
}

#[test]
fn resume_marks_changed_and_missing_files_and_says_how_to_continue() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({"phase": "BUILD"}));
    let keep = s.dir.path().join("keep.txt");
    let change = s.dir.path().join("change.txt");
    let lose = s.dir.path().join("lose.txt");
    for f in [&keep, &change, &lose] {
        std::fs::write(f, b"original").unwrap();
    }
    let args: Vec<String> = [&keep, &change, &lose]
        .iter()
        .flat_map(|f| ["--file".to_string(), f.display().to_string()])
        .collect();
    let mut create_args = vec!["-m", "halfway", "-d", "keep it simple"];
    create_args.extend(args.iter().map(String::as_str));
    let id = create(&s, "wf", &create_args);
    std::fs::write(&change, b"edited").unwrap();
    std::fs::remove_file(&lose).unwrap();
    ok(&s.run(&["state", "update", "wf", "--set", "/phase=\"TEST\""]));

    let data = stdout_json(&s.run(&["--json", "resume", "wf"]));
    assert_eq!(data["checkpoint"], id.as_str());
    let status: Vec<(&str, &str)> = data["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["now"].as_str().unwrap()))
        .collect();
    assert_eq!(
        status,
        [
            ("keep.txt", "unchanged"),
            ("change.txt", "changed"),
            ("lose.txt", "missing")
        ]
    );
    assert_eq!(data["checkpoint_generation"], 1);
    assert_eq!(data["current_generation"], 2);

    let prompt = ok(&s.run(&["resume"]));
    for expected in [
        "Phase: BUILD",
        "Message: halfway",
        "- keep it simple",
        "* change.txt",
        "! lose.txt",
        "checkpoint restore",
        "generation 2",
    ] {
        assert!(prompt.contains(expected), "{expected:?} in:\n{prompt}");
    }
    assert_eq!(code(&s.run(&["resume", "other"])), 1);
}

#[test]
fn detect_files_records_what_git_reports_as_changed() {
    let s = Scratch::new();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(s.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    };
    git(&["init", "-q"]);
    git(&[
        "-c",
        "user.email=t@t",
        "-c",
        "user.name=t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "init",
    ]);
    std::fs::write(s.dir.path().join(".gitignore"), b".wfstate/\nignored.txt\n").unwrap();
    std::fs::write(s.dir.path().join("new.txt"), b"untracked").unwrap();
    std::fs::write(s.dir.path().join("ignored.txt"), b"ignored").unwrap();
    set_state(&s, "wf", json!({}));
    let id = create(&s, "wf", &["--detect-files"]);
    let cp = stdout_json(&s.run(&["--json", "checkpoint", "show", &id]));
    let paths: Vec<_> = cp["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"new.txt"), "{paths:?}");
    assert!(!paths.contains(&"ignored.txt"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with(".wfstate")),
        "{paths:?}"
    );
}

#[test]
fn eight_processes_creating_fifty_checkpoints_each_keep_one_consistent_lineage() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({"n": 0}));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let script: String = (0..50)
                .map(|_| {
                    format!(
                        "\"{}\" --store \"{}\" checkpoint create wf -m x >/dev/null || exit 1\n",
                        common::BIN,
                        s.store.display()
                    )
                })
                .collect();
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success());
    }
    // Every checkpoint file verifies; ids are unique; every parent exists.
    let dir = s.store.join("checkpoints/wf");
    let mut ids = HashSet::new();
    let mut parents = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        let cp = stdout_json(&s.run(&["--json", "checkpoint", "show", id]));
        assert!(ids.insert(id.to_string()), "duplicate id {id}");
        if let Some(p) = cp["parent"].as_str() {
            parents.push(p.to_string());
        }
    }
    assert_eq!(ids.len(), 400);
    assert_eq!(parents.len(), 399, "exactly one root");
    assert!(
        parents.iter().all(|p| ids.contains(p)),
        "every parent exists"
    );
    assert_eq!(
        parents.iter().collect::<HashSet<_>>().len(),
        399,
        "one straight line: no two share a parent"
    );
    // The index agrees with the files: all 400, in order, one lineage.
    let listed = list_ids(&s, &["wf", "--limit", "1000"]);
    assert_eq!(listed.len(), 400);
    assert_eq!(
        listed.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
    let (chain, stopped, _) = chain_ids(&s, &listed[0]);
    assert_eq!(chain, listed, "the lineage is the creation order");
    assert!(stopped.is_null());
    let index_len = read(&index_file(&s, "wf")).len();
    assert_eq!(index_len, 128 * 401, "header + 400 records");
}

#[test]
fn stored_control_characters_are_shown_escaped_in_text_and_kept_in_json() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({"phase": "build"}));
    // A message that would recolour the terminal, retitle it, return the
    // cursor over the line, and reverse what follows.
    let hostile = "ok\u{1b}[31mred\u{1b}]0;title\u{7}\rover\u{9b}\u{202e}desrever";
    let id = create(&s, "wf", &["--message", hostile]);
    let raw = ['\u{1b}', '\u{7}', '\r', '\u{9b}', '\u{202e}'];
    for args in [&["checkpoint", "list", "wf"][..], &["resume", "wf"]] {
        let out = s.run(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(
            !shown.contains(raw),
            "{args:?} printed a raw control: {shown:?}"
        );
        assert!(
            shown.contains(r"ok\u{1b}[31mred\u{1b}]0;title\u{7}\u{d}over\u{9b}\u{202e}desrever"),
            "{args:?}: {shown}"
        );
    }
    // `show` prints the checkpoint as JSON: the same document, with every
    // such character as a \u escape.
    let out = s.run(&["checkpoint", "show", &id]);
    let shown = text(&out.stdout);
    assert!(
        !shown.contains(raw),
        "show printed a raw control: {shown:?}"
    );
    assert_eq!(stdout_json(&out)["message"], hostile);
    // Scripts get the message exactly as stored.
    let listed = stdout_json(&s.run(&["--json", "checkpoint", "list", "wf"]));
    assert_eq!(listed[0]["message"], hostile);
    // Errors on stderr name what they are about the same way.
    let missing = s.dir.path().join("in\u{1b}[2J.json");
    let out = s.run(&["state", "set", "wf", "--file", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    let err = text(&out.stderr);
    assert!(
        !err.contains('\u{1b}') && err.contains(r"in\u{1b}[2J.json"),
        "{err:?}"
    );
}

#[test]
fn a_fifo_named_with_file_is_refused_not_waited_on() {
    let s = Scratch::new();
    set_state(&s, "wf", json!({"phase": "build"}));
    let fifo = s.dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Opening a FIFO for reading waits for a writer; hashing it would too.
    let out = s.run_bounded(&[
        "checkpoint",
        "create",
        "wf",
        "--file",
        fifo.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not a regular file"),
        "{}",
        text(&out.stderr)
    );
    let listed = stdout_json(&s.run(&["--json", "checkpoint", "list", "wf"]));
    assert_eq!(listed, json!([]), "nothing was created");
}
