//! The state commands through the real binary: what a user and a script see.

mod common;

use common::{Scratch, code, ok, read, stdout_json, text};
use serde_json::json;

#[test]
fn set_then_get_returns_the_same_document() {
    let s = Scratch::new();
    let doc = json!({"phase": "test", "items": [1, 2.5, "naïve café 🚀"], "nested": {"x": null}});
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], doc.to_string().as_bytes()));
    let got = stdout_json(&s.run(&["state", "get", "wf"]));
    assert_eq!(got, doc);
    let meta = stdout_json(&s.run(&["--json", "state", "get", "wf"]));
    assert_eq!(meta["generation"], 1);
    assert_eq!(meta["data"], doc);
}

#[test]
fn set_from_file_and_generations_count_up() {
    let s = Scratch::new();
    let input = s.dir.path().join("in.json");
    for n in 1..=3 {
        std::fs::write(&input, json!({"n": n}).to_string()).unwrap();
        let saved = stdout_json(&s.run(&[
            "--json",
            "state",
            "set",
            "wf",
            "--file",
            input.to_str().unwrap(),
        ]));
        assert_eq!(saved["generation"], n);
    }
    assert_eq!(
        stdout_json(&s.run(&["state", "get", "wf", "--pointer", "/n"])),
        3
    );
}

#[test]
fn a_flipped_byte_makes_get_and_verify_exit_3_and_leaves_the_file_unchanged() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], br#"{"balance": 100}"#));
    let path = s.state_file("wf");
    let mut bytes = read(&path);
    let at = text(&bytes).find("100").unwrap() + 2;
    bytes[at] ^= 0x01; // "100" -> "101": still valid JSON, wrong content
    std::fs::write(&path, &bytes).unwrap();

    for args in [&["state", "get", "wf"][..], &["state", "verify", "wf"]] {
        let out = s.run(args);
        assert_eq!(code(&out), 3, "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "names the file: {err}"
        );
        assert_eq!(read(&path), bytes, "file must be left byte for byte");
    }
    // A save must not paper over the corruption either.
    let out = s.run(&["state", "update", "wf", "--incr", "/balance"]);
    assert_eq!(code(&out), 3);
    assert_eq!(read(&path), bytes);
}

#[test]
fn truncated_and_non_json_files_are_integrity_errors() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], br#"{"k": "v"}"#));
    let path = s.state_file("wf");
    let whole = read(&path);
    for (label, bytes) in [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("not json", b"hello".to_vec()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let out = s.run(&["state", "verify", "wf"]);
        assert_eq!(code(&out), 3, "{label}: {}", text(&out.stderr));
        assert_eq!(read(&path), bytes, "{label}: file unchanged");
    }
}

#[test]
fn a_wrong_format_id_exits_3_naming_the_format() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{}"));
    let path = s.state_file("wf");
    let changed = text(&read(&path)).replace("wfstate.state/1", "wfstate.state/9");
    std::fs::write(&path, &changed).unwrap();
    let out = s.run(&["state", "get", "wf"]);
    assert_eq!(code(&out), 3);
    assert!(
        text(&out.stderr).contains("wfstate.state/9"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&read(&path)), changed);
}

#[test]
fn a_stale_expected_generation_exits_4_and_writes_nothing() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"v\": 1}"));
    ok(&s.run_with_stdin(
        &["state", "set", "wf", "-", "--expect-generation", "1"],
        b"{\"v\": 2}",
    ));
    let before = read(&s.state_file("wf"));
    let out = s.run_with_stdin(
        &["state", "set", "wf", "-", "--expect-generation", "1"],
        b"{\"v\": 3}",
    );
    assert_eq!(code(&out), 4, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("expected generation 1, found 2"));
    assert_eq!(read(&s.state_file("wf")), before);
    // 0 means "only if absent".
    let out = s.run_with_stdin(
        &["state", "set", "other", "-", "--expect-generation", "0"],
        b"1",
    );
    ok(&out);
    let out = s.run_with_stdin(
        &["state", "set", "other", "-", "--expect-generation", "0"],
        b"2",
    );
    assert_eq!(code(&out), 4);
}

#[test]
fn invalid_names_exit_2_and_name_the_rule() {
    let s = Scratch::new();
    let thousand = "x".repeat(1000);
    for name in ["../x", "a/b", "", ".hidden", thousand.as_str()] {
        for args in [
            vec!["state", "get", name],
            vec!["state", "update", name, "--incr", "/n"],
        ] {
            let out = s.run(&args);
            assert_eq!(code(&out), 2, "{args:?}");
            assert!(
                text(&out.stderr).contains("^[A-Za-z0-9]"),
                "{}",
                text(&out.stderr)
            );
        }
    }
    // Nothing was created anywhere for them.
    assert!(!s.dir.path().join("x.json").exists());
    assert_eq!(std::fs::read_dir(s.store.join("state")).unwrap().count(), 0);
}

#[test]
fn update_applies_edits_in_command_line_order_in_one_generation() {
    let s = Scratch::new();
    let out = s.run(&[
        "--json",
        "state",
        "update",
        "wf",
        "--set",
        "/n=5",
        "--incr",
        "/n",
        "--set",
        "/tags=[]",
        "--set",
        "/tags/-=\"a\"",
        "--incr",
        "/n=-10",
    ]);
    assert_eq!(stdout_json(&out)["generation"], 1);
    assert_eq!(
        stdout_json(&s.run(&["state", "get", "wf"])),
        json!({"n": -4, "tags": ["a"]})
    );
}

#[test]
fn bad_input_exits_2_and_leaves_state_untouched() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"s\": \"text\"}"));
    let before = read(&s.state_file("wf"));
    let cases: [&[&str]; 4] = [
        &["state", "update", "wf", "--set", "/a=not json"],
        &["state", "update", "wf", "--incr", "/s"],
        &["state", "update", "wf", "--incr", "/n=abc"],
        &["state", "update", "wf", "--set", "nopointer=1"],
    ];
    for args in cases {
        let out = s.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stderr));
    }
    let out = s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"broken\": ");
    assert_eq!(code(&out), 2);
    assert_eq!(read(&s.state_file("wf")), before);
}

#[test]
fn missing_workflow_and_missing_pointer_exit_1() {
    let s = Scratch::new();
    assert_eq!(code(&s.run(&["state", "get", "nope"])), 1);
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{}"));
    assert_eq!(
        code(&s.run(&["state", "get", "wf", "--pointer", "/absent"])),
        1
    );
}

#[test]
fn the_store_is_found_from_a_subdirectory_or_the_environment() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"x\": 1}"));
    let deep = s.dir.path().join("src/deep");
    std::fs::create_dir_all(&deep).unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["state", "get", "wf", "--pointer", "/x"])
        .current_dir(&deep)
        .env_remove("WFSTATE_STORE")
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "1");

    let elsewhere = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["state", "get", "wf", "--pointer", "/x"])
        .current_dir(elsewhere.path())
        .env("WFSTATE_STORE", &s.store)
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "1");
}

#[test]
fn without_a_store_the_error_says_how_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["state", "list"])
        .current_dir(dir.path())
        .env_remove("WFSTATE_STORE")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(
        text(&out.stderr).contains("wfstate init"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn init_is_idempotent_and_refuses_a_folder_with_foreign_files() {
    let s = Scratch::new();
    let out = s.run(&["--json", "init"]);
    assert_eq!(stdout_json(&out)["created"], false);
    let foreign = s.dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--store")
        .arg(&foreign)
        .arg("init")
        .output()
        .unwrap();
    assert_ne!(code(&out), 0);
    assert_eq!(read(&foreign.join("notes.txt")), b"mine");
    assert!(!foreign.join("format").exists());
}

#[test]
fn a_store_named_without_a_folder_is_made_in_the_current_directory() {
    // `--store s` names ./s: its parent is the current directory, not
    // "no parent directory".
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    ok(&run(&["--store", "s", "init"]));
    assert!(dir.path().join("s/format").is_file());
    ok(&run(&[
        "--store", "s", "state", "update", "wf", "--incr", "/n",
    ]));
    let out = run(&["--store", "s", "--json", "state", "get", "wf"]);
    assert_eq!(stdout_json(&out)["data"]["n"], 1);
}

#[test]
fn a_symlink_in_place_of_a_state_file_is_refused_and_its_target_untouched() {
    let s = Scratch::new();
    let outside = s.dir.path().join("outside.json");
    std::fs::write(&outside, b"{\"secret\": true}").unwrap();
    std::os::unix::fs::symlink(&outside, s.state_file("wf")).unwrap();
    let out = s.run(&["state", "get", "wf"]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("symlink"));
    let out = s.run(&["state", "update", "wf", "--incr", "/n"]);
    assert_eq!(code(&out), 3);
    assert_eq!(read(&outside), b"{\"secret\": true}");
}

#[test]
fn list_shows_every_workflow_and_flags_corrupt_ones_with_exit_3() {
    let s = Scratch::new();
    for wf in ["a", "b", "c"] {
        ok(&s.run_with_stdin(&["state", "set", wf, "-"], b"{}"));
    }
    let rows = stdout_json(&s.run(&["--json", "state", "list"]));
    assert_eq!(rows.as_array().unwrap().len(), 3);
    std::fs::write(s.state_file("b"), b"{").unwrap();
    let out = s.run(&["--json", "state", "list"]);
    assert_eq!(code(&out), 3);
    let rows = stdout_json(&out);
    assert_eq!(rows[0]["generation"], 1);
    assert!(rows[1]["error"].as_str().unwrap().contains("b.json"));
    assert_eq!(rows[2]["generation"], 1);
}

#[test]
fn errors_in_json_mode_still_print_one_json_value() {
    let s = Scratch::new();
    let out = s.run(&["--json", "state", "get", "missing"]);
    assert_eq!(code(&out), 1);
    let v = stdout_json(&out);
    assert_eq!(v["error"]["kind"], "not_found");
    assert_eq!(v["error"]["exit_code"], 1);
}

#[test]
fn a_ten_mib_state_round_trips() {
    let s = Scratch::new();
    let items: Vec<_> = (0..100_000)
        .map(|i| json!({"id": i, "name": format!("item-{i:06}"), "pad": "x".repeat(64)}))
        .collect();
    let doc = json!({ "items": items });
    let bytes = doc.to_string().into_bytes();
    assert!(bytes.len() >= 10 * 1024 * 1024, "{} bytes", bytes.len());
    let input = s.dir.path().join("big.json");
    std::fs::write(&input, &bytes).unwrap();
    ok(&s.run(&["state", "set", "big", "--file", input.to_str().unwrap()]));
    ok(&s.run(&["state", "update", "big", "--set", "/items/0/name=\"first\""]));
    let got = stdout_json(&s.run(&["state", "get", "big"]));
    assert_eq!(got["items"].as_array().unwrap().len(), 100_000);
    assert_eq!(got["items"][0]["name"], "first");
    assert_eq!(got["items"][99_999], doc["items"][99_999]);
}

#[test]
fn a_writer_times_out_with_exit_5_while_another_process_holds_the_workflow() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], b"{\"n\": 1}"));
    // Hold the workflow's lock the way another wfstate process would.
    let lock_file = std::fs::File::open(s.store.join("locks/workflow@wf.lock")).unwrap();
    lock_file.lock().unwrap();
    let started = std::time::Instant::now();
    let out = s.run(&["state", "update", "wf", "--incr", "/n", "--timeout", "0.3"]);
    let waited = started.elapsed();
    assert_eq!(code(&out), 5, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("workflow@wf"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        waited >= std::time::Duration::from_millis(300),
        "{waited:?}"
    );
    drop(lock_file);
    ok(&s.run(&["state", "update", "wf", "--incr", "/n", "--timeout", "0.3"]));
    assert_eq!(
        stdout_json(&s.run(&["state", "get", "wf", "--pointer", "/n"])),
        2
    );
}

#[test]
fn the_demo_runs_and_loses_no_update() {
    let out = std::process::Command::new(common::BIN)
        .args(["--json", "demo"])
        .env_remove("WFSTATE_STORE")
        .output()
        .unwrap();
    let result = stdout_json(&out);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(result["counter"], result["expected_counter"]);
    assert_eq!(result["tamper_detected"], true);
    std::fs::remove_dir_all(result["store"].as_str().unwrap()).unwrap();
}

#[test]
fn the_readme_run_command_selects_the_cli() {
    // `cargo run --release -- demo` at the top of the repository must pick
    // the wfstate binary: of the workspace's packages with a binary, only
    // the CLI is a default member (the benchmark is run by name).
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
    assert!(
        manifest.contains("default-members = [\".\", \"cli\"]"),
        "the workspace's default members must be the library and the CLI only"
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(readme.contains("cargo run --release -- demo"));
}

#[test]
fn an_oversized_document_is_refused_with_its_true_size_and_the_state_is_untouched() {
    let s = Scratch::new();
    ok(&s.run_with_stdin(&["state", "set", "wf", "-"], br#"{"n": 1}"#));
    let limit = wfstate::store::DEFAULT_MAX_STATE_BYTES;

    // A file says how large it is: the message gives that size, not how
    // far a read went (the file is sparse, so nothing is read at all).
    let input = s.dir.path().join("huge.json");
    std::fs::File::create(&input)
        .unwrap()
        .set_len(limit + 1_000_000)
        .unwrap();
    let out = s.run(&["state", "set", "wf", "--file", input.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} is {} bytes, over the limit of {limit} bytes",
            input.display(),
            limit + 1_000_000
        )),
        "{err}"
    );

    // Stdin is read only until it passes the limit, and says so.
    let out = s.run_with_stdin(
        &["state", "set", "wf", "-"],
        &vec![b' '; limit as usize + 1],
    );
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "stdin is at least {} bytes, over the limit of {limit} bytes",
            limit + 1
        )),
        "{err}"
    );

    let meta = stdout_json(&s.run(&["--json", "state", "get", "wf"]));
    assert_eq!(meta["generation"], 1);
    assert_eq!(meta["data"], json!({"n": 1}));
}

#[test]
fn a_store_path_that_names_a_plain_file_is_not_a_store_and_the_file_is_untouched() {
    let s = Scratch::new();
    let file = s.dir.path().join("notes.txt");
    std::fs::write(&file, b"not a store\n").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .arg("--store")
            .arg(&file)
            .args(args)
            .env_remove("WFSTATE_STORE")
            .output()
            .unwrap()
    };
    // A mistyped --store is no store (exit 1), not damage to one (exit 3).
    let out = run(&["state", "list"]);
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} is a regular file, not a wfstate store folder",
            file.display()
        )),
        "{err}"
    );
    let out = run(&["init"]);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("it is a regular file, not a folder"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(read(&file), b"not a store\n");
}
