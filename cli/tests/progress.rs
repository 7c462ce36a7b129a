//! Long commands show their progress on a terminal, and only there: not
//! when stderr is a pipe or a file, and never with `--json`.

mod common;

use common::{BIN, Scratch, code, ok, text};
use std::process::Command;

/// A store with enough workflows and audit entries for a visible run.
fn busy_store() -> Scratch {
    let s = Scratch::new();
    for i in 0..60 {
        ok(&s.run(&["state", "update", &format!("wf{i}"), "--incr", "/n"]));
    }
    s
}

/// `wfstate --store S ARGS` run with a terminal as its stdout and stderr
/// (`script` gives it a pty); what the terminal received. `None` where
/// `script` is missing.
fn on_a_terminal(s: &Scratch, args: &str) -> Option<String> {
    let command = format!("{BIN} --store {} {args}", s.store.display());
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .ok()?;
    Some(text(&out.stdout))
}

#[test]
fn health_and_audit_verify_draw_progress_on_a_terminal_only() {
    let s = busy_store();
    let Some(health) = on_a_terminal(&s, "health") else {
        println!("SKIPPED: no `script` to give the command a terminal");
        return;
    };
    assert!(health.contains("checking states"), "{health}");
    assert!(health.contains("overall: ok"), "{health}");
    let verify = on_a_terminal(&s, "audit verify").unwrap();
    assert!(verify.contains("verifying the audit log"), "{verify}");

    // With --json, on the same terminal: the JSON alone.
    let json = on_a_terminal(&s, "--json health").unwrap();
    assert!(!json.contains("checking"), "{json}");
    assert!(json.trim_start().starts_with('{'), "{json}");

    // Not a terminal: nothing on stderr.
    for args in [&["health"][..], &["audit", "verify"]] {
        let out = s.run(args);
        assert_eq!(code(&out), 0);
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}
