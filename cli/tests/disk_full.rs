//! A full disk, for real: a small tmpfs mounted by the test (as root; the
//! test says it is skipped, and why, where mounting is not allowed).
//!
//! A change that was made is reported as made: when an update is durable
//! but compacting the log afterwards fails for want of space, the command
//! exits 0 with a warning (stderr, and `warnings` in `--json`), so a caller
//! that retries only failures never applies an increment twice.

mod common;

use common::{BIN, code, stdout_json, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", text(&out.stderr).trim()));
        }
        Ok(SmallDisk { _dir: dir, mount })
    }

    /// Writes a file until the disk is full, then gives `free` bytes back.
    fn fill_leaving(&self, free: u64) -> PathBuf {
        use std::io::Write;
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0xa5u8; 4096];
        while file.write_all(&block).is_ok() {}
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(free)).unwrap();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(&self.mount)
            .status();
    }
}

fn wfstate(store: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_update_made_before_compaction_fails_on_a_full_disk_is_reported_as_made() {
    let disk = match SmallDisk::mount("4m") {
        Ok(disk) => disk,
        Err(why) => {
            println!("SKIPPED: this test mounts a small tmpfs and cannot here: {why}");
            return;
        }
    };
    let store = disk.mount.join(".wfstate");
    assert_eq!(code(&wfstate(&store, &["init"])), 0);
    let mut set = Command::new(BIN)
        .arg("--store")
        .arg(&store)
        .args(["state", "set", "wf", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let document = format!(r#"{{"n": 0, "pad": "{}"}}"#, "x".repeat(900));
    set.stdin
        .take()
        .unwrap()
        .write_all(document.as_bytes())
        .unwrap();
    assert!(set.wait().unwrap().success());
    // The first update creates the log, preallocated (320 KiB); then the
    // disk fills, leaving room for the records and audit entries of a few
    // hundred updates but not for the new base and the new preallocated log
    // that compacting the log at 256 KiB writes.
    assert_eq!(
        code(&wfstate(&store, &["state", "update", "wf", "--incr", "/n"])),
        0
    );
    let filler = disk.fill_leaving(200 * 1024);

    // Updates go into the preallocated log until it is due for compaction:
    // from then on each update is durable but its compaction fails, until
    // the disk is full and the updates themselves fail (an update first
    // copies any audit entry still pending, so it fails before its change
    // when even that has no room).
    let (mut made, mut warned, mut failed) = (1, 0, 0);
    for _ in 0..1000 {
        let out = wfstate(&store, &["--json", "state", "update", "wf", "--incr", "/n"]);
        match code(&out) {
            0 => {
                made += 1;
                let json = stdout_json(&out);
                if let Some(warnings) = json.get("warnings") {
                    for warning in warnings.as_array().unwrap() {
                        let warning = warning.as_str().unwrap();
                        assert!(warning.contains("was saved"), "{warning}");
                        if warning.contains("compacting its log failed") {
                            warned += 1;
                        } else {
                            assert!(warning.contains("audit entry was not copied"), "{warning}");
                        }
                    }
                    assert!(
                        text(&out.stderr).contains("wfstate: warning: "),
                        "{}",
                        text(&out.stderr)
                    );
                    assert_eq!(json["generation"], made + 1, "{json}");
                }
            }
            1 => {
                assert!(
                    text(&out.stderr).contains("No space left"),
                    "{}",
                    text(&out.stderr)
                );
                failed += 1;
                if failed == 3 {
                    break;
                }
            }
            other => panic!("exit {other}: {}", text(&out.stderr)),
        }
    }
    assert!(warned > 0, "no update reached its compaction ({made} made)");
    assert!(failed > 0, "the disk never ran out for an update");
    // Exactly the updates reported as made were made.
    let out = wfstate(&store, &["--json", "state", "get", "wf"]);
    assert_eq!(stdout_json(&out)["data"]["n"], made, "{made} made");

    // With space again, the next update compacts and nothing is lost.
    std::fs::remove_file(&filler).unwrap();
    let out = wfstate(&store, &["--json", "state", "update", "wf", "--incr", "/n"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(stdout_json(&out).get("warnings").is_none());
    let out = wfstate(&store, &["--json", "state", "get", "wf"]);
    assert_eq!(stdout_json(&out)["data"]["n"], made + 1);

    // What a failed append left is described as what is known.
    let health = wfstate(&store, &["--json", "health"]);
    let report = stdout_json(&health);
    let states = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "states")
        .unwrap()
        .clone();
    for detail in states["details"].as_array().unwrap() {
        let detail = detail.as_str().unwrap();
        assert!(!detail.contains("interrupted by a crash"), "{detail}");
        if detail.contains("unfinished") {
            assert!(detail.contains("full disk"), "{detail}");
        }
    }
    let repaired = wfstate(&store, &["health", "--repair"]);
    assert_ne!(code(&repaired), 3, "{}", text(&repaired.stdout));
    assert_eq!(code(&wfstate(&store, &["health"])), 0);
}
