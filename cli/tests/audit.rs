//! The audit log through the binary and with concurrent real processes.

mod common;

use common::{Scratch, code, ok, stdout_json, text};
use serde_json::{Value, json};
use std::process::Command;
use wfstate::{Store, StoreOptions};

fn events(s: &Scratch) -> Vec<String> {
    stdout_json(&s.run(&["--json", "audit", "log"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

/// Child side of the concurrency test: appends 200 entries.
#[test]
fn audit_append_child() {
    let Ok(store) = std::env::var("WFSTATE_TEST_AUDIT_CHILD") else {
        return; // only does something when the parent test starts it
    };
    let store = Store::open(store.as_ref(), StoreOptions::default()).unwrap();
    for i in 0..200 {
        store
            .audit()
            .unwrap()
            .append("test_append", json!({"i": i, "pid": std::process::id()}))
            .unwrap();
    }
}

#[test]
fn eight_processes_appending_200_entries_each_keep_one_valid_chain() {
    let s = Scratch::new();
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["audit_append_child", "--exact", "--test-threads=1", "-q"])
                .env("WFSTATE_TEST_AUDIT_CHILD", &s.store)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let report = stdout_json(&s.run(&["--json", "audit", "verify"]));
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["entries"], 1600);
    let entries = stdout_json(&s.run(&["--json", "audit", "log"]));
    let seqs: Vec<u64> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=1600).collect::<Vec<_>>());
}

#[test]
fn every_kind_of_change_leaves_an_entry() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"n\": 1}"));
    ok(&s.run(&["state", "update", "wf", "--incr", "/n"]));
    let a = stdout_json(&s.run(&["--json", "checkpoint", "create", "wf"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&s.run(&["checkpoint", "create", "wf"]));
    ok(&s.run(&["checkpoint", "restore", &a]));
    ok(&s.run(&["checkpoint", "prune", "wf", "--keep-last", "1"]));
    assert_eq!(
        events(&s),
        [
            "state_save",
            "state_update",
            "checkpoint_create",
            "checkpoint_create",
            "state_restore",
            "checkpoint_prune"
        ]
    );
    let log = stdout_json(&s.run(&["--json", "audit", "log", "--event", "state_restore"]));
    assert_eq!(
        log[0]["data"]["origin"]["restored_from_checkpoint"],
        a.as_str()
    );
    assert_eq!(log[0]["data"]["generation"], 3);
    assert!(log[0]["actor"]["pid"].as_u64().is_some());
    ok(&s.run(&["audit", "verify"]));
}

#[test]
fn editing_one_entry_makes_verify_exit_3_naming_that_line() {
    let s = Scratch::new();
    for i in 0..5 {
        ok(&s.run_with_stdin(
            &["state", "set", "wf", "-"],
            json!({"i": i}).to_string().as_bytes(),
        ));
    }
    let path = s.store.join("audit.jsonl");
    let original = std::fs::read_to_string(&path).unwrap();
    let edited = original.replacen("\"generation\":3", "\"generation\":30", 1);
    assert_ne!(edited, original);
    std::fs::write(&path, &edited).unwrap();
    let out = s.run(&["audit", "verify"]);
    assert_eq!(code(&out), 3);
    assert!(
        text(&out.stderr).contains("line 3"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("edited"),
        "{}",
        text(&out.stderr)
    );
    let report = stdout_json(&s.run(&["--json", "audit", "verify"]));
    assert_eq!(report["first_bad"]["line"], 3);
}

#[test]
fn deleting_an_entry_is_detected() {
    let s = Scratch::new();
    for i in 0..4 {
        ok(&s.run_with_stdin(
            &["state", "set", "wf", "-"],
            json!({"i": i}).to_string().as_bytes(),
        ));
    }
    let path = s.store.join("audit.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let without_second: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l.as_str())
        .collect();
    std::fs::write(&path, without_second.join("\n") + "\n").unwrap();
    let report = stdout_json(&s.run(&["--json", "audit", "verify"]));
    assert_eq!(report["valid"], false);
    assert_eq!(report["first_bad"]["line"], 2);
}

#[test]
fn with_a_key_plain_rehashing_after_an_edit_is_still_detected() {
    let s = Scratch::new();
    let key = s.dir.path().join("audit.key");
    std::fs::write(&key, b"a-long-enough-secret-key\n").unwrap();
    let keyed = |args: &[&str]| {
        s.cmd()
            .args(args)
            .env("WFSTATE_AUDIT_KEY_FILE", &key)
            .output()
            .unwrap()
    };
    for i in 0..3 {
        let mut c = s.cmd();
        c.args(["state", "update", "wf", "--set", &format!("/i={i}")])
            .env("WFSTATE_AUDIT_KEY_FILE", &key);
        assert!(c.output().unwrap().status.success());
    }
    assert_eq!(code(&keyed(&["audit", "verify"])), 0);
    assert_eq!(
        stdout_json(&s.run(&["--json", "audit", "log"]))[0]["alg"],
        "hmac-sha256"
    );

    // Edit entry 2 and recompute every hash the unkeyed way.
    let path = s.store.join("audit.jsonl");
    let mut prev = wfstate::audit::GENESIS_HASH.to_string();
    let mut forged = String::new();
    for line in std::fs::read_to_string(&path).unwrap().lines() {
        let mut e: Value = serde_json::from_str(line).unwrap();
        if e["seq"] == 2 {
            e["data"]["generation"] = json!(42);
        }
        e["alg"] = json!("sha256");
        e["prev_hash"] = json!(prev);
        let body = e.as_object().unwrap();
        let mut canonical = Vec::new();
        wfstate::canonical::write_object_except(body, Some("hash"), &mut canonical).unwrap();
        let mut input = prev.clone().into_bytes();
        input.push(b'\n');
        input.extend_from_slice(&canonical);
        use sha2::Digest;
        let h = wfstate::integrity::hex(&sha2::Sha256::digest(&input));
        e["hash"] = json!(h);
        prev = h;
        forged.push_str(&e.to_string());
        forged.push('\n');
    }
    std::fs::write(&path, forged).unwrap();
    assert_eq!(
        code(&s.run(&["audit", "verify"])),
        0,
        "unkeyed, the forgery passes: that is the limit of that mode"
    );
    let out = keyed(&["audit", "verify"]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("line 1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_short_key_is_refused() {
    let s = Scratch::new();
    let key = s.dir.path().join("short.key");
    std::fs::write(&key, b"short").unwrap();
    let out = s
        .cmd()
        .args(["audit", "verify"])
        .env("WFSTATE_AUDIT_KEY_FILE", &key)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("at least 16"));
}

#[test]
fn a_key_file_that_never_ends_is_refused_not_read_forever() {
    let s = Scratch::new();
    // /dev/zero as the key file: read with a bound, then refused. (Bounded
    // in time too: without the bound it reads until memory runs out.)
    let mut cmd = s.cmd();
    cmd.args(["audit", "verify"])
        .env("WFSTATE_AUDIT_KEY_FILE", "/dev/zero");
    let out = common::output_within_20s(cmd);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is more than 4096 bytes: not a key file"),
        "{}",
        text(&out.stderr)
    );
}
