//! Importing the seed system's files: the fixture trees must import with
//! exactly the outcomes in their EXPECT.json, and the Python-compatible
//! serializer must match Python itself.

mod common;

use common::{Rng, Scratch, all_files, code, ok, random_value, stdout_json, text};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/legacy");
    assert!(
        dir.is_dir(),
        "legacy fixtures not found at {}",
        dir.display()
    );
    dir
}

fn cases() -> Vec<(String, PathBuf, Value)> {
    let mut cases: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("EXPECT.json").is_file())
        .map(|p| {
            let expect: Value =
                serde_json::from_slice(&std::fs::read(p.join("EXPECT.json")).unwrap()).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                p,
                expect,
            )
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!cases.is_empty());
    cases
}

fn import(s: &Scratch, dir: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["--json", "import-legacy", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = s.run(&args);
    (code(&out), stdout_json(&out), text(&out.stderr))
}

/// Copies a fixture tree (hidden folders included) so tests can rearrange it.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            let mut perms = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).unwrap();
        }
    }
}

#[test]
fn fixture_trees_import_with_the_expected_outcomes() {
    for (name, dir, expect) in cases() {
        let s = Scratch::new();
        let (exit, report, stderr) = import(&s, &dir, &[]);
        assert_eq!(exit, 0, "{name}: {stderr}");
        assert_eq!(report["state"]["valid"], expect["state_valid"], "{name}");
        assert_eq!(
            report["state"]["workflow"], expect["state_workflow_id"],
            "{name}"
        );
        assert_eq!(
            report["audit"]["entries"], expect["audit_entries"],
            "{name}"
        );
        assert_eq!(report["audit"]["valid"], expect["audit_valid"], "{name}");
        let imported: Vec<&Value> = report["checkpoints"].as_array().unwrap().iter().collect();
        assert_eq!(
            imported.len() as u64,
            expect["checkpoints"].as_u64().unwrap(),
            "{name}"
        );

        // The lineage, walked in the store and mapped back to legacy ids.
        let workflow = expect["state_workflow_id"].as_str().unwrap();
        let newest = stdout_json(&s.run(&[
            "--json",
            "checkpoint",
            "list",
            workflow,
            "--limit",
            "1",
        ]))[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let chain = stdout_json(&s.run(&["--json", "checkpoint", "chain", &newest]));
        let legacy_ids: Vec<Value> = chain["links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let cp = stdout_json(&s.run(&[
                    "--json",
                    "checkpoint",
                    "show",
                    l["id"].as_str().unwrap(),
                ]));
                assert!(
                    cp["origin"]["legacy_timestamp"].is_string(),
                    "original timestamp kept"
                );
                cp["origin"]["legacy_checkpoint_id"].clone()
            })
            .collect();
        assert_eq!(
            Value::Array(legacy_ids),
            expect["chain_newest_first"],
            "{name}"
        );
        assert!(chain["stopped"].is_null(), "{name}: {}", chain["stopped"]);

        // The state arrived with its data and where it came from.
        let state = stdout_json(&s.run(&["--json", "state", "get", workflow]));
        assert_eq!(state["data"]["workflow_id"], workflow);
        assert!(state["data"].get("_checksum").is_none());
        assert_eq!(state["origin"]["legacy_valid"], true);
        ok(&s.run(&["audit", "verify"]));
        let audit_entries = stdout_json(&s.run(&["--json", "audit", "log"]))
            .as_array()
            .unwrap()
            .len();

        // A second import adds nothing.
        let (exit, again, _) = import(&s, &dir, &[]);
        assert_eq!(exit, 0);
        assert_eq!(again["state"]["action"], "already imported", "{name}");
        assert!(
            again["checkpoints"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["action"] == "already imported")
        );
        assert_eq!(again["audit"]["imported"], 0);
        assert_eq!(
            stdout_json(&s.run(&["--json", "audit", "log"]))
                .as_array()
                .unwrap()
                .len(),
            audit_entries
        );
        let listed =
            stdout_json(&s.run(&["--json", "checkpoint", "list", workflow, "--limit", "100"]));
        assert_eq!(
            listed.as_array().unwrap().len() as u64,
            expect["checkpoints"].as_u64().unwrap()
        );
    }
}

#[test]
fn tampered_files_are_reported_and_imported_only_when_accepted() {
    for (name, dir, expect) in cases() {
        let tree = tempfile::tempdir().unwrap();
        copy_tree(&dir, tree.path());
        let orch = tree.path().join(".orchestrator");
        std::fs::remove_file(orch.join("v3/state.json")).unwrap();
        std::fs::copy(dir.join("tampered/state.json"), orch.join("state.json")).unwrap();
        std::fs::copy(dir.join("tampered/audit.jsonl"), orch.join("audit.jsonl")).unwrap();

        let s = Scratch::new();
        let (exit, report, stderr) = import(&s, tree.path(), &[]);
        assert_eq!(exit, 3, "{name}: invalid files make the import exit 3");
        assert_eq!(
            report["state"]["valid"], expect["tampered_state_valid"],
            "{name}"
        );
        assert!(
            report["state"]["action"]
                .as_str()
                .unwrap()
                .starts_with("skipped")
        );
        assert_eq!(
            report["audit"]["first_bad_line"], expect["tampered_audit_first_bad_line"],
            "{name}"
        );
        assert!(stderr.contains("checksum mismatch"), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("line {}", expect["tampered_audit_first_bad_line"])),
            "{stderr}"
        );
        let workflow = expect["state_workflow_id"].as_str().unwrap();
        assert_eq!(
            code(&s.run(&["state", "get", workflow])),
            1,
            "invalid state not imported"
        );
        let bad = expect["tampered_audit_first_bad_line"].as_u64().unwrap();
        assert_eq!(
            report["audit"]["imported"],
            bad - 1,
            "only the valid prefix"
        );

        let (exit, report, _) = import(&s, tree.path(), &["--accept-invalid"]);
        assert_eq!(exit, 0);
        assert_eq!(report["state"]["action"], "imported");
        let state = stdout_json(&s.run(&["--json", "state", "get", workflow]));
        assert_eq!(state["origin"]["legacy_valid"], false, "marked as invalid");
        let invalid_entries =
            stdout_json(&s.run(&["--json", "audit", "log", "--event", "legacy_audit"]))
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["data"]["legacy_valid"] == false)
                .count();
        assert!(invalid_entries > 0);
    }
}

#[test]
fn a_dry_run_writes_nothing() {
    let (_, dir, _) = cases().remove(0);
    let s = Scratch::new();
    let before = all_files(&s.store);
    let (exit, report, _) = import(&s, &dir, &["--dry-run"]);
    assert_eq!(exit, 0);
    assert_eq!(report["state"]["action"], "would import");
    assert!(
        report["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["action"] == "would import")
    );
    assert_eq!(all_files(&s.store), before);
}

#[test]
fn a_corrupt_earlier_import_stops_a_re_import_instead_of_duplicating() {
    let (_, dir, expect) = cases().remove(0);
    let s = Scratch::new();
    assert_eq!(import(&s, &dir, &[]).0, 0);
    let workflow = expect["state_workflow_id"].as_str().unwrap();
    let listed = stdout_json(&s.run(&["--json", "checkpoint", "list", workflow, "--limit", "100"]));
    let count = listed.as_array().unwrap().len();
    let victim = listed[0]["id"].as_str().unwrap();
    let path = s
        .store
        .join("checkpoints")
        .join(workflow)
        .join(format!("{victim}.json"));
    std::fs::write(&path, b"{ damaged").unwrap();

    let (exit, _, stderr) = import(&s, &dir, &[]);
    assert_eq!(exit, 3, "{stderr}");
    assert!(
        stderr.contains(victim) && stderr.contains("health --repair"),
        "{stderr}"
    );
    let after = stdout_json(&s.run(&["--json", "checkpoint", "list", workflow, "--limit", "100"]));
    assert_eq!(after.as_array().unwrap().len(), count, "nothing duplicated");

    // The repair quarantines the damaged file and, the checkpoint being
    // committed through the journal not long ago, writes it back from
    // there; importing again then has nothing to do. Exit 1: repaired, with
    // the quarantine noted as a warning.
    let repair = s.run(&["health", "--repair"]);
    assert_eq!(code(&repair), 1, "{}", text(&repair.stdout));
    assert!(
        text(&repair.stdout).contains(&format!("restored checkpoint {victim}")),
        "{}",
        text(&repair.stdout)
    );
    let (exit, report, stderr) = import(&s, &dir, &[]);
    assert_eq!(exit, 0, "{stderr}");
    let imported = report["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "imported")
        .count();
    assert_eq!(imported, 0);
    let after = stdout_json(&s.run(&["--json", "checkpoint", "list", workflow, "--limit", "100"]));
    assert_eq!(after.as_array().unwrap().len(), count);
}

#[test]
fn a_folder_without_legacy_files_is_an_error() {
    let s = Scratch::new();
    let empty = tempfile::tempdir().unwrap();
    let out = s.run(&["import-legacy", empty.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains(".orchestrator"));
}

#[test]
fn a_session_pointer_that_never_ends_is_ignored_not_read_forever() {
    let s = Scratch::new();
    let project = tempfile::tempdir().unwrap();
    let orch = project.path().join(".orchestrator");
    std::fs::create_dir(&orch).unwrap();
    std::os::unix::fs::symlink("/dev/zero", orch.join("current")).unwrap();
    let out = s.run_bounded(&["import-legacy", project.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    // A FIFO there, which no one writes, is not waited on either.
    std::fs::remove_file(orch.join("current")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(orch.join("current"))
        .status()
        .unwrap();
    assert!(made.success());
    let out = s.run_bounded(&["import-legacy", project.path().to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
}

#[test]
fn the_python_compatible_serializer_matches_python_on_generated_values() {
    let mut rng = Rng::from_env_or_clock("WFSTATE_TEST_SEED");
    let values: Vec<Value> = (0..2000)
        .map(|_| random_value(&mut rng, 0, u64::MAX))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("values.jsonl");
    let lines: Vec<String> = values.iter().map(Value::to_string).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let script = "import json,sys\nfor line in open(sys.argv[1], encoding='utf-8'):\n    print(json.dumps(json.loads(line), sort_keys=True))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&input)
        .output()
        .expect("python3 is needed for this test");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let python = String::from_utf8(out.stdout).unwrap();
    let mut compared = 0;
    for (value, expected) in values.iter().zip(python.lines()) {
        assert_eq!(
            wfstate::legacy::python_dumps_sorted(value),
            expected,
            "value {value}"
        );
        compared += 1;
    }
    assert_eq!(compared, values.len());
    eprintln!(
        "{compared} generated values serialized exactly as Python's json.dumps(sort_keys=True)"
    );
}
