//! The crash-safety proofs: every protocol run under the crash simulator,
//! the seed system's missing-directory-fsync bug shown to be caught, and
//! faults injected into every fsync, write and rename.

use crate::checkpoint::{ListContent, ListQuery, NewCheckpoint, PrunePolicy};
use crate::crashsim::{Exploration, Tree, explore, traced};
use crate::durable::sim::{self, Fault};
use crate::error::Error;
use crate::health::{self, Status};
use crate::{Store, StoreOptions};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Scratch space for crash states: tmpfs when there is one, since thousands
/// of states are written and checked.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap_or_else(|_| tempfile::tempdir().unwrap())
    } else {
        tempfile::tempdir().unwrap()
    }
}

thread_local! {
    /// What the stores of this thread's test warned about (see `warned`).
    static WARNINGS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Options whose warnings (a change made, a step after it failed) are kept
/// for `warned`. The library warns on the thread that made the change.
fn recording_options() -> StoreOptions {
    StoreOptions {
        on_warning: Some(std::sync::Arc::new(|w: &str| {
            WARNINGS.with(|all| all.borrow_mut().push(w.to_string()))
        })),
        ..StoreOptions::default()
    }
}

/// The warnings reported on this thread since the last call.
fn warned() -> Vec<String> {
    WARNINGS.with(|all| std::mem::take(&mut *all.borrow_mut()))
}

/// How a change with an injected fault was reported: its error, or, when
/// the change was made and only a step after it failed, its warning (which
/// a success without one would not be).
fn reported<T>(result: crate::Result<T>, what: &str) -> Result<String, Error> {
    match result {
        Err(e) => Err(e),
        Ok(_) => {
            let warnings = warned();
            assert!(
                !warnings.is_empty(),
                "{what}: a write failed, yet the change reported success without a warning"
            );
            Ok(warnings.join("; "))
        }
    }
}

fn new_store() -> (tempfile::TempDir, PathBuf, Store) {
    let dir = scratch();
    let root = dir.path().join("store");
    warned();
    let (store, _) = Store::init(&root, recording_options()).unwrap();
    (dir, root, store)
}

fn open(root: &Path) -> Result<Store, String> {
    Store::open(root, StoreOptions::default()).map_err(|e| format!("store does not open: {e}"))
}

/// Problems a recovery finds: any health error (a torn audit tail is a
/// warning there, since only an unacknowledged append leaves one), and,
/// once the operation has returned, any audit chain that is not fully valid.
fn recovery_problems(store: &Store, acknowledged: bool) -> Vec<String> {
    let report = match store.health() {
        Ok(r) => r,
        Err(e) => return vec![format!("health failed: {e}")],
    };
    let mut problems: Vec<String> = report
        .components
        .iter()
        .filter(|c| c.status == Status::Error)
        .map(|c| format!("health {}: {}", c.name, c.message))
        .collect();
    if acknowledged {
        match store.audit().and_then(|a| a.verify()) {
            Ok(v) if v.valid => {}
            Ok(v) => problems.push(format!(
                "acknowledged, yet the audit chain is invalid: {:?}",
                v.first_bad
            )),
            Err(e) => problems.push(format!("audit unreadable: {e}")),
        }
    }
    problems
}

fn report(name: &str, e: &Exploration) {
    tell(format!(
        "crash simulation [{name}]: {} operations, {} crash points, {} crash states checked, {} violations",
        e.operations,
        e.crash_points,
        e.states,
        e.violations.len()
    ));
}

/// Prints a count, and appends it to the file `WFSTATE_TEST_COUNTS` names
/// (`.ci/run` shows that file, since libtest hides a passing test's output
/// and running these tests twice would double CI's longest step).
fn tell(line: String) {
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("WFSTATE_TEST_COUNTS") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the counts file");
        // One write per line: O_APPEND keeps concurrent tests' lines whole.
        file.write_all(format!("{line}\n").as_bytes())
            .expect("write the counts file");
    }
}

fn assert_clean(name: &str, e: &Exploration) {
    report(name, e);
    assert!(e.states >= e.crash_points, "every crash point was explored");
    if let Some((k, why)) = e.violations.first() {
        let mut kinds: Vec<&str> = e.violations.iter().map(|(_, w)| w.as_str()).collect();
        kinds.sort();
        kinds.dedup();
        panic!(
            "[{name}] {} violation(s); first at crash point {k}: {why}\ndistinct: {:#?}",
            e.violations.len(),
            &kinds[..kinds.len().min(5)]
        );
    }
}

/// Runs `op` traced on a store prepared by `setup`, then explores.
fn scenario(
    setup: impl FnOnce(&Store),
    op: impl FnOnce(&Store),
    check: impl Fn(&Path, &Store, bool) -> Result<(), String>,
) -> Exploration {
    scenario_with_damage(setup, op, check, None)
}

/// As `scenario`, for a store that `setup` damaged on purpose: health
/// problems naming `damaged` are expected until the operation returns.
fn scenario_with_damage(
    setup: impl FnOnce(&Store),
    op: impl FnOnce(&Store),
    check: impl Fn(&Path, &Store, bool) -> Result<(), String>,
    damaged: Option<&str>,
) -> Exploration {
    // A crash is a power cut, after which the machine boots again: the
    // store is written under one boot id and recovered under another.
    sim::set_boot_id(Some("boot-before-the-crash"));
    let (_dir, root, store) = new_store();
    setup(&store);
    let initial = Tree::snapshot(&root);
    let ((), trace) = traced(|| op(&store));
    sim::set_boot_id(Some("boot-after-the-crash"));
    let exploration = explore(&root, &initial, &trace, 0x5eed, &|dir, ack| {
        let store = open(dir)?;
        let mut problems = recovery_problems(&store, ack);
        if let Some(name) = damaged.filter(|_| !ack) {
            problems.retain(|p| !p.contains(name));
        }
        if let Err(why) = check(dir, &store, ack) {
            problems.push(why);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    });
    sim::set_boot_id(None);
    exploration
}

/// Setup shared by most scenarios: workflow `wf` at generation 1, `n` = 1.
fn workflow_at_generation_1(s: &Store) {
    s.save("wf", json!({"n": 1}), None).unwrap();
}

fn generation_and_n(store: &Store, wf: &str) -> Result<Option<(u64, i64)>, String> {
    match store.load(wf) {
        Ok(doc) => Ok(Some((doc.generation, doc.data["n"].as_i64().unwrap_or(-1)))),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(format!("state unreadable after crash: {e}")),
    }
}

/// Old or new version, never torn; new once acknowledged.
fn old_or_new(
    store: &Store,
    old: Option<(u64, i64)>,
    new: (u64, i64),
    ack: bool,
) -> Result<(), String> {
    let now = generation_and_n(store, "wf")?;
    if ack && now != Some(new) {
        return Err(format!(
            "acknowledged save lost: found {now:?}, expected {new:?}"
        ));
    }
    if now != old && now != Some(new) {
        return Err(format!(
            "found {now:?}: neither the old {old:?} nor the new {new:?} version"
        ));
    }
    Ok(())
}

/// Every generation `wf` went through has exactly one audit entry, and
/// none that it did not go through: a change and its entry survive a crash
/// together or not at all.
fn one_entry_per_generation(s: &Store) -> Result<(), String> {
    one_entry_per_generation_of(s, "wf")
}

fn one_entry_per_generation_of(s: &Store, workflow: &str) -> Result<(), String> {
    let current = generation_and_n(s, workflow)?.map_or(0, |(generation, _)| generation);
    let entries = s
        .audit()
        .and_then(|a| a.read(None, None))
        .map_err(|e| format!("audit unreadable: {e}"))?;
    let mut generations: Vec<u64> = entries
        .iter()
        .filter(|e| e.event.starts_with("state_") && e.data["workflow"] == workflow)
        .filter_map(|e| e.data["generation"].as_u64())
        .collect();
    generations.sort_unstable();
    if generations != (1..=current).collect::<Vec<_>>() {
        return Err(format!(
            "{workflow} at generation {current}, but audit entries for generations {generations:?}"
        ));
    }
    Ok(())
}

#[test]
fn a_first_save_survives_every_crash_as_absent_or_whole() {
    let e = scenario(
        |_| {},
        workflow_at_generation_1,
        |_, s, ack| {
            old_or_new(s, None, (1, 1), ack)?;
            one_entry_per_generation(s)
        },
    );
    assert_clean("first state save (base + audit intent)", &e);
}

#[test]
fn an_intent_replaces_the_previous_one_only_once_that_entry_is_durable() {
    // Two base replacements in a row: the second intent overwrites the
    // first, whose entry must by then be durable in the audit log itself.
    // (The audit log exists already, so entries are appended unsynced.)
    let e = scenario(
        |s| {
            s.audit().unwrap().append("probe", json!({})).unwrap();
        },
        |s| {
            s.save("wf", json!({"n": 1}), None).unwrap();
            s.save("wf2", json!({"n": 1}), None).unwrap();
        },
        |_, s, _| {
            one_entry_per_generation_of(s, "wf")?;
            one_entry_per_generation_of(s, "wf2")
        },
    );
    assert_clean("two first saves (two audit intents)", &e);
}

#[test]
fn an_overwriting_save_survives_every_crash_as_old_or_new() {
    let e = scenario(
        workflow_at_generation_1,
        |s| {
            s.save("wf", json!({"n": 2}), None).unwrap();
        },
        |_, s, ack| old_or_new(s, Some((1, 1)), (2, 2), ack),
    );
    assert_clean("state save", &e);
}

#[test]
fn a_large_save_from_text_survives_every_crash_as_old_or_new() {
    // Over the state log's record limit: written from the text, as the base.
    let text = format!(r#"{{"n": 2, "pad": "{}"}}"#, "x".repeat(1 << 20));
    let e = scenario(
        workflow_at_generation_1,
        |s| {
            s.save_json("wf", &text, Some(1)).unwrap();
        },
        |_, s, ack| {
            old_or_new(s, Some((1, 1)), (2, 2), ack)?;
            one_entry_per_generation(s)
        },
    );
    assert_clean("state save from text (base + audit intent)", &e);
}

#[test]
fn an_update_survives_every_crash_and_its_audit_entry_with_it() {
    let e = scenario(
        workflow_at_generation_1,
        |s| set_n(s, 2),
        |_, s, ack| {
            update_and_its_entry(s, ack)?;
            one_entry_per_generation(s)
        },
    );
    assert_clean("state update + audit entry in the state log", &e);
}

fn set_n(s: &Store, n: i64) {
    s.update("wf", |d| {
        d["n"] = n.into();
        Ok(())
    })
    .unwrap();
}

/// How much of the (preallocated) state log holds data.
fn log_len(root: &Path) -> u64 {
    std::fs::read(root.join("state/wf.log")).map_or(0, |bytes| {
        bytes
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |i| i as u64 + 1)
    })
}

/// After recovery, the next update must still work: a torn last line of
/// the log must not swallow the next record.
fn next_update_works(s: &Store) -> Result<(), String> {
    let before = s.load("wf").map_err(|e| e.to_string())?.generation;
    s.update("wf", |d| {
        d["n"] = 99.into();
        Ok(())
    })
    .map_err(|e| format!("update after the crash failed: {e}"))?;
    let after = s.load("wf").map_err(|e| e.to_string())?;
    if after.generation != before + 1 || after.data["n"] != 99 {
        return Err(format!(
            "update after the crash not visible: generation {} (before {before})",
            after.generation
        ));
    }
    Ok(())
}

#[test]
fn an_update_appended_to_the_state_log_is_old_or_new_and_the_log_stays_usable() {
    let e = scenario(
        |s| {
            workflow_at_generation_1(s);
            set_n(s, 2); // creates the log
        },
        |s| set_n(s, 3),
        |_, s, ack| {
            old_or_new(s, Some((2, 2)), (3, 3), ack)?;
            next_update_works(s)
        },
    );
    assert_clean("state log append (+ audit append)", &e);
}

#[test]
fn a_log_record_torn_at_block_granularity_is_ignored_and_the_next_append_starts_clean() {
    // A record of about 9 KiB spans three 4 KiB blocks, so the simulator
    // also keeps one or two of its blocks (the torn states a large append
    // can leave), not only none, all, or zeros.
    let padded = |s: &Store, n: i64| {
        s.update("wf", |d| {
            d["n"] = n.into();
            d["pad"] = "p".repeat(9000).into();
            Ok(())
        })
        .unwrap();
    };
    let e = scenario(
        |s| {
            workflow_at_generation_1(s);
            padded(s, 2);
        },
        |s| padded(s, 3),
        |_, s, ack| {
            old_or_new(s, Some((2, 2)), (3, 3), ack)?;
            next_update_works(s)
        },
    );
    assert_clean("large state log record (torn blocks, then compaction)", &e);
}

#[test]
fn a_state_log_compaction_is_old_or_new_after_every_crash() {
    let root_len = std::cell::Cell::new(0u64);
    let e = scenario(
        |s| {
            workflow_at_generation_1(s);
            let root = Path::new(&s.location()).to_path_buf();
            // Fill the log to just below the compaction threshold, so the
            // operation's append crosses it.
            let (mut n, mut previous) = (1, 0);
            loop {
                let len = log_len(&root);
                let record = len - previous;
                if record > 0 && len + record > crate::file_store::state_log::COMPACT_AT {
                    break;
                }
                previous = len;
                n += 1;
                set_n(s, n);
            }
            root_len.set(n as u64);
        },
        |s| set_n(s, 1000),
        |dir, s, ack| {
            let n = root_len.get();
            old_or_new(s, Some((n, n as i64)), (n + 1, 1000), ack)?;
            if ack && log_len(dir) != 0 {
                return Err(format!(
                    "acknowledged, yet the log was not compacted ({} bytes)",
                    log_len(dir)
                ));
            }
            next_update_works(s)
        },
    );
    assert!(
        e.operations >= 10,
        "the operation must include the compaction: {} operations",
        e.operations
    );
    assert_clean("state log compaction (append, base replace, log reset)", &e);
}

#[test]
fn the_harness_catches_a_save_without_the_directory_fsync() {
    // The seed system's original bug: rename without fsync of the directory.
    sim::set_mutation_skip_dir_fsync(true);
    let e = scenario(
        workflow_at_generation_1,
        |s| {
            s.save("wf", json!({"n": 2}), None).unwrap();
        },
        |_, s, ack| old_or_new(s, Some((1, 1)), (2, 2), ack),
    );
    sim::set_mutation_skip_dir_fsync(false);
    report("MUTANT state save without directory fsync", &e);
    assert!(
        e.violations
            .iter()
            .any(|(_, why)| why.contains("acknowledged save lost")),
        "the simulator must report the lost acknowledged save; saw {:?}",
        e.violations.first()
    );
}

/// The update scenario's check: old or new, and an acknowledged update has
/// its audit entry.
fn update_and_its_entry(s: &Store, ack: bool) -> Result<(), String> {
    old_or_new(s, Some((1, 1)), (2, 2), ack)?;
    if ack {
        let last = s.audit().unwrap().read(None, Some(1)).unwrap();
        if last
            .first()
            .map(|e| (e.event.as_str(), e.data["generation"].as_u64()))
            != Some(("state_update", Some(2)))
        {
            return Err(format!("acknowledged update has no audit entry: {last:?}"));
        }
    }
    Ok(())
}

#[test]
fn the_harness_catches_an_open_that_does_not_recover_audit_entries() {
    // An update's audit entry is durable only inside its state log record
    // until the audit log is next synced; without the recovery at open, a
    // power cut loses it from the audit log.
    sim::set_mutation_skip_audit_recovery(true);
    let e = scenario(
        workflow_at_generation_1,
        |s| set_n(s, 2),
        |_, s, ack| update_and_its_entry(s, ack),
    );
    sim::set_mutation_skip_audit_recovery(false);
    report("MUTANT open without audit recovery", &e);
    assert!(
        e.violations
            .iter()
            .any(|(_, why)| why.contains("has no audit entry")),
        "the simulator must report the lost audit entry; saw {:?}",
        e.violations.first()
    );
}

/// The files a traced operation wrote to, one per write, in order (the
/// `nth` that `Fault::WriteEnospc` counts).
fn written_paths(trace: &[sim::Op]) -> Vec<PathBuf> {
    trace
        .iter()
        .filter_map(|o| match o {
            sim::Op::Write { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

/// Which of `writes` copies the operation's entry into the audit log: the
/// last write to it (or to the temp file that creates it).
fn audit_copy(writes: &[PathBuf]) -> usize {
    writes
        .iter()
        .rposition(|p| p.to_string_lossy().contains("audit.jsonl"))
        .expect("the entry is copied into the audit log")
}

/// A writer whose update returned has not copied its entry into the audit
/// log: a pipelined commit leaves that to the next holder of the audit lock
/// (DESIGN §13), which is exactly the state a writer that died after its
/// sync leaves too. Nothing is lost: the next open in the same boot (or any
/// reader) finds the entry `Synced` in the in-flight table and copies it
/// from the state log, and a failure to copy it there is a warning, not a
/// lost entry.
#[test]
fn an_entry_a_dead_writer_did_not_copy_is_recovered_at_the_next_open() {
    let (_dir, root, store) = new_store();
    workflow_at_generation_1(&store);
    set_n(&store, 2); // creates the log
    set_n(&store, 3); // copies generation 2's entry, leaves its own
    let on_disk = std::fs::read_to_string(root.join("audit.jsonl")).unwrap();
    assert!(
        !on_disk.contains("\"generation\":3"),
        "the entry is not in audit.jsonl until someone settles it"
    );
    drop(store); // the writer is gone
    let reopened = open(&root).unwrap();
    let entries = reopened.audit().unwrap().read(None, None).unwrap();
    let generations: Vec<_> = entries
        .iter()
        .map(|e| e.data["generation"].as_u64())
        .collect();
    assert_eq!(
        generations,
        [Some(1), Some(2), Some(3)],
        "every generation has its entry once"
    );
    assert!(recovery_problems(&reopened, true).is_empty());
    // The copy made by the next commit failing: that commit still
    // succeeds (with a warning), and the entries are copied later.
    let (_dir, root, store) = new_store();
    workflow_at_generation_1(&store);
    set_n(&store, 2);
    set_n(&store, 3);
    let copy = {
        let (_d, _r, probe) = new_store();
        workflow_at_generation_1(&probe);
        set_n(&probe, 2);
        set_n(&probe, 3);
        let ((), trace) = traced(|| set_n(&probe, 4));
        audit_copy(&written_paths(&trace))
    };
    for fault in [
        Fault::WriteEnospc { nth: copy },
        Fault::WriteShortThenEnospc { nth: copy },
    ] {
        warned();
        sim::inject(Some(fault));
        let before = store.load("wf").unwrap().generation;
        let (result, _) = traced(|| {
            store.update("wf", |d| {
                d["n"] = 9.into();
                Ok(())
            })
        });
        sim::inject(None);
        let warning = reported(result, &format!("{fault:?}"))
            .unwrap_or_else(|e| panic!("{fault:?}: the change was made, yet reported failed: {e}"));
        assert!(warning.contains("was saved"), "{warning}");
        assert_eq!(store.load("wf").unwrap().generation, before + 1);
    }
    let reopened = open(&root).unwrap();
    if let Err(why) = one_entry_per_generation(&reopened) {
        panic!("{why}");
    }
    let problems = recovery_problems(&reopened, true);
    assert!(problems.is_empty(), "{problems:?}");
    eprintln!("kill recovery: entries left in flight recovered at the next open");
}

/// The same for changes that replace the base (a first generation, a
/// document too large for the log): a writer that dies after its rename
/// but before copying its entry leaves the entry in the audit intent, and
/// one that dies before its rename leaves an intent that never counts.
#[test]
fn a_base_replacement_is_audited_once_whichever_side_of_its_rename_the_writer_dies() {
    let large = format!(r#"{{"n": 2, "pad": "{}"}}"#, "x".repeat(1 << 20));
    type Change = Box<dyn Fn(&Store) -> crate::Result<()>>;
    let changes: [(&str, Option<u64>, Change); 2] = [
        (
            "first save",
            None,
            Box::new(|s: &Store| s.save("wf", json!({"n": 1}), None).map(drop)),
        ),
        (
            "large save",
            Some(1),
            Box::new(move |s: &Store| s.save_json("wf", &large, Some(1)).map(drop)),
        ),
    ];
    let mut checked = 0;
    for (what, before, change) in &changes {
        // Where the writes of the change go, from a run without faults.
        let (_dir, _root, store) = new_store();
        if before.is_some() {
            workflow_at_generation_1(&store);
        }
        let (result, trace) = traced(|| change(&store));
        result.unwrap();
        let writes = written_paths(&trace);
        let copy = audit_copy(&writes);
        let base = writes
            .iter()
            .position(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("wf.json"))
            })
            .expect("the base is written");
        // Failing a write stops the writer there, as its death would; the
        // unsynced writes before it stay, as they do after a kill.
        for (nth, dies_after_rename) in [(base, false), (copy, true)] {
            let (_dir, root, store) = new_store();
            if before.is_some() {
                workflow_at_generation_1(&store);
            }
            sim::inject(Some(Fault::WriteEnospc { nth }));
            let result = change(&store);
            sim::inject(None);
            // Before its rename the change fails; after it, it was made
            // and only the copy of its entry failed: a warning.
            let message = match (reported(result, what), dies_after_rename) {
                (Err(e), false) => e.to_string(),
                (Ok(warning), true) => warning,
                (outcome, _) => panic!("{what}, write {nth} failed: reported as {outcome:?}"),
            };
            let reopened = open(&root).unwrap();
            let generation = reopened.load("wf").map_or(0, |d| d.generation);
            let expected = before.unwrap_or(0) + u64::from(dies_after_rename);
            assert_eq!(
                generation, expected,
                "{what}, write {nth} failed: {message}"
            );
            if dies_after_rename {
                assert!(message.contains("was saved"), "{what}: {message}");
            }
            one_entry_per_generation(&reopened).unwrap_or_else(|why| panic!("{what}: {why}"));
            // The next writer, in the same process, appends after it.
            reopened
                .update("wf", |d| {
                    d["n"] = 9.into();
                    Ok(())
                })
                .unwrap();
            one_entry_per_generation(&reopened).unwrap_or_else(|why| panic!("{what}: {why}"));
            assert!(recovery_problems(&reopened, true).is_empty(), "{what}");
            checked += 1;
        }
    }
    eprintln!(
        "kill recovery: {checked} base replacements cut short, each audited once or not at all"
    );
}

/// The same for the checkpoint changes that go through the audit intent:
/// a prune and a checkpoint too large for the journal, whose writer dies
/// after its commit but before copying its entry (simulated by failing
/// that copy's write), are audited once at the next open.
#[test]
fn a_prune_or_large_checkpoint_whose_writer_dies_before_its_copy_is_audited_once() {
    let prune = |s: &Store| {
        s.checkpoints()
            .unwrap()
            .prune(&PrunePolicy {
                keep_last: Some(1),
                ..PrunePolicy::default()
            })
            .map(drop)
    };
    let large = |s: &Store| {
        s.create_checkpoint(NewCheckpoint {
            workflow: "wf".into(),
            message: Some("x".repeat(100 * 1024)),
            ..NewCheckpoint::default()
        })
        .map(drop)
    };
    let setup = |s: &Store| {
        workflow_at_generation_1(s);
        for m in ["a", "b", "c"] {
            checkpoint(s, m);
        }
    };
    type Change<'a> = &'a dyn Fn(&Store) -> crate::Result<()>;
    let cases: [(&str, Change, &str); 2] = [
        ("prune", &prune, "checkpoint_prune"),
        ("large checkpoint", &large, "checkpoint_create"),
    ];
    for (what, change, event) in cases {
        let before = {
            let (_dir, _root, twin) = new_store();
            setup(&twin);
            entries_of(&twin, event).unwrap().len()
        };
        let writes = writes_of(&setup, change);
        let (_dir, root, warning) = failing_at_write(&setup, change, audit_copy(&writes));
        assert!(
            warning.contains("recovered from the audit intent"),
            "{what}: {warning}"
        );
        let reopened = open(&root).unwrap();
        let after = entries_of(&reopened, event).unwrap().len();
        assert_eq!(
            after,
            before + 1,
            "{what}: audited once after the next open"
        );
        if event == "checkpoint_create" {
            one_entry_per_checkpoint(&reopened).unwrap_or_else(|why| panic!("{what}: {why}"));
        }
        assert!(recovery_problems(&reopened, true).is_empty(), "{what}");
    }
}

/// The files `change` writes to, one per write, in order, run on a store
/// prepared by `setup`.
fn writes_of<T>(
    setup: &dyn Fn(&Store),
    change: &dyn Fn(&Store) -> crate::Result<T>,
) -> Vec<PathBuf> {
    let (_dir, _root, twin) = new_store();
    setup(&twin);
    let (result, trace) = traced(|| change(&twin));
    if let Err(e) = result {
        panic!("the change fails without a fault: {e}");
    }
    written_paths(&trace)
}

/// `change` on a store prepared by `setup`, with its `nth` write failing:
/// the files are then as a writer killed at that point leaves them (its
/// process state aside). Returns the store's folder, to reopen, and what
/// was reported: the error, or the warning of a change that was made.
fn failing_at_write<T>(
    setup: &dyn Fn(&Store),
    change: &dyn Fn(&Store) -> crate::Result<T>,
    nth: usize,
) -> (tempfile::TempDir, PathBuf, String) {
    let (dir, root, store) = new_store();
    setup(&store);
    warned();
    sim::inject(Some(Fault::WriteEnospc { nth }));
    let result = change(&store);
    sim::inject(None);
    let message = match reported(result, &format!("write {nth}")) {
        Ok(warning) => warning,
        Err(e) => e.to_string(),
    };
    (dir, root, message)
}

/// A creator that dies after committing a checkpoint to its journal and
/// before publishing it (simulated by failing the publication's first
/// write: the entry is then not copied, as after a kill) leaves nothing
/// half-seen: the next open in the same boot publishes the checkpoint as it
/// copies the entry. (Found by the torture test: an entry copied before
/// publication named a checkpoint that readers did not list.)
#[test]
fn a_checkpoint_whose_creator_dies_before_publishing_it_is_listed_and_audited_at_the_next_open() {
    let setup = |s: &Store| {
        workflow_at_generation_1(s);
        for m in ["a", "b", "c"] {
            checkpoint(s, m);
        }
    };
    let create = |s: &Store| {
        s.create_checkpoint(NewCheckpoint {
            workflow: "wf".into(),
            message: Some("d".into()),
            ..NewCheckpoint::default()
        })
    };
    let writes = writes_of(&setup, &create);
    let journal = writes
        .iter()
        .position(|p| p.ends_with("journal"))
        .expect("the creation writes its journal");
    let publication = journal + 1;
    assert!(writes[publication].ends_with("index"), "{writes:?}");

    let before = {
        let (_dir, _root, twin) = new_store();
        setup(&twin);
        listed(&twin).unwrap().len()
    };
    let (_dir, root, warning) = failing_at_write(&setup, &create, publication);
    assert!(
        warning.contains("when the store is next opened"),
        "{warning}"
    );
    let reopened = open(&root).unwrap();
    assert_eq!(listed(&reopened).unwrap().len(), before + 1, "published");
    one_entry_per_checkpoint(&reopened).unwrap();
    assert!(recovery_problems(&reopened, true).is_empty());
    // And the next creation goes on from it.
    checkpoint(&reopened, "e");
    one_entry_per_checkpoint(&reopened).unwrap();

    // If that journal record is damaged meanwhile, the store still opens
    // (health reports the damage) rather than failing every command.
    let (_dir, root, _) = failing_at_write(&setup, &create, publication);
    let journal = root.join("checkpoints/wf/journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    let at = bytes.windows(5).rposition(|w| w == b"\"d\",\"").unwrap() + 1;
    bytes[at] = b'e';
    std::fs::write(&journal, &bytes).unwrap();
    let reopened = open(&root).expect("a damaged journal does not stop the open");
    let report = reopened.health().unwrap();
    assert!(report.status == Status::Error, "{report:#?}");
}

fn checkpoint(s: &Store, message: &str) -> String {
    s.create_checkpoint(NewCheckpoint {
        workflow: "wf".into(),
        message: Some(message.into()),
        ..NewCheckpoint::default()
    })
    .unwrap()
    .id
}

/// The `event` entries of the audit log, oldest first.
fn entries_of(s: &Store, event: &str) -> Result<Vec<crate::audit::AuditEntry>, String> {
    s.audit()
        .and_then(|a| a.read(Some(event), None))
        .map_err(|e| format!("audit unreadable: {e}"))
}

/// Every checkpoint of `wf` that exists has exactly one creation entry, and
/// none that does not exist has one.
fn one_entry_per_checkpoint(s: &Store) -> Result<(), String> {
    let mut audited: Vec<String> = entries_of(s, "checkpoint_create")?
        .iter()
        .filter_map(|e| e.data["id"].as_str().map(str::to_string))
        .collect();
    let mut ids = listed(s)?;
    audited.sort();
    ids.sort();
    if audited != ids {
        return Err(format!(
            "checkpoints {ids:?}, but creation entries for {audited:?}"
        ));
    }
    Ok(())
}

/// Every listed checkpoint verifies; returns the ids, newest first.
fn listed(s: &Store) -> Result<Vec<String>, String> {
    listed_in(s, "wf")
}

fn listed_in(s: &Store, workflow: &str) -> Result<Vec<String>, String> {
    let entries = s
        .checkpoints()
        .unwrap()
        .list(&ListQuery {
            workflow: Some(workflow.into()),
            limit: 100,
            ..ListQuery::default()
        })
        .map_err(|e| format!("list failed: {e}"))?;
    for e in &entries {
        if let ListContent::Corrupt { error } = &e.content {
            return Err(format!("partial checkpoint visible: {error}"));
        }
    }
    Ok(entries.into_iter().map(|e| e.id).collect())
}

#[test]
fn checkpoint_creation_is_whole_or_absent_after_every_crash() {
    let first = std::cell::RefCell::new(String::new());
    let created = std::cell::RefCell::new(String::new());
    let e = scenario(
        |s| {
            s.save("wf", json!({"n": 1}), None).unwrap();
            *first.borrow_mut() = checkpoint(s, "first");
        },
        |s| {
            *created.borrow_mut() = checkpoint(s, "second");
        },
        |_, s, ack| {
            let (a, b) = (first.borrow().clone(), created.borrow().clone());
            let ids = listed(s)?;
            let latest = s
                .checkpoints()
                .unwrap()
                .latest("wf")
                .map_err(|e| e.to_string())?
                .map(|c| c.id);
            match ids.as_slice() {
                [only] if *only == a && !ack => {}
                [newest, older] if *newest == b && *older == a => {
                    let chain = s
                        .checkpoints()
                        .unwrap()
                        .chain(&b, 10)
                        .map_err(|e| e.to_string())?;
                    if chain.links.len() != 2 || chain.stopped.is_some() {
                        return Err(format!("lineage broken: {chain:?}"));
                    }
                }
                other => return Err(format!("checkpoints after crash: {other:?} (ack {ack})")),
            }
            if latest.as_deref() != ids.first().map(String::as_str) {
                return Err(format!(
                    "latest {latest:?} is not the newest listed {:?}",
                    ids.first()
                ));
            }
            one_entry_per_checkpoint(s)
        },
    );
    assert_clean("checkpoint create (with index append and audit append)", &e);
}

#[test]
fn a_checkpoint_too_large_for_the_journal_is_whole_or_absent_and_audited_with_it() {
    // Over the journal's record limit: published as its own file, its
    // entry carried by the audit intent.
    let e = scenario(
        workflow_at_generation_1,
        |s| {
            s.create_checkpoint(NewCheckpoint {
                workflow: "wf".into(),
                message: Some("x".repeat(100 * 1024)),
                ..NewCheckpoint::default()
            })
            .unwrap();
        },
        |_, s, ack| {
            let ids = listed(s)?;
            if ack && ids.len() != 1 || ids.len() > 1 {
                return Err(format!("checkpoints after crash: {ids:?} (ack {ack})"));
            }
            one_entry_per_checkpoint(s)
        },
    );
    assert_clean("large checkpoint create (file + index + audit intent)", &e);
}

#[test]
fn the_first_checkpoint_of_a_workflow_is_whole_or_absent() {
    let e = scenario(
        workflow_at_generation_1,
        |s| {
            checkpoint(s, "first");
        },
        |_, s, ack| match listed(s)?.len() {
            1 => Ok(()),
            0 if !ack => Ok(()),
            n => Err(format!("{n} checkpoints after crash (ack {ack})")),
        },
    );
    assert_clean("first checkpoint (directory creation + index creation)", &e);
}

#[test]
fn a_restore_is_old_or_restored_after_every_crash() {
    let id = std::cell::RefCell::new(String::new());
    let e = scenario(
        |s| {
            s.save("wf", json!({"n": 1}), None).unwrap();
            *id.borrow_mut() = checkpoint(s, "one");
            s.save("wf", json!({"n": 2}), None).unwrap();
        },
        |s| {
            s.restore(&id.borrow()).unwrap();
        },
        |_, s, ack| {
            old_or_new(s, Some((2, 2)), (3, 1), ack)?;
            if let Ok(doc) = s.load("wf")
                && doc.generation == 3
                && doc
                    .origin
                    .as_ref()
                    .and_then(|o| o["restored_from_checkpoint"].as_str())
                    != Some(id.borrow().as_str())
            {
                return Err("restored state does not record its origin".into());
            }
            Ok(())
        },
    );
    assert_clean("checkpoint restore", &e);
}

#[test]
fn a_prune_never_loses_the_latest_or_leaves_a_partial_checkpoint() {
    let ids = std::cell::RefCell::new(Vec::new());
    let e = scenario(
        |s| {
            s.save("wf", json!({"n": 1}), None).unwrap();
            for m in ["a", "b", "c"] {
                ids.borrow_mut().push(checkpoint(s, m));
            }
        },
        |s| {
            s.checkpoints()
                .unwrap()
                .prune(&PrunePolicy {
                    keep_last: Some(1),
                    ..PrunePolicy::default()
                })
                .unwrap();
        },
        |root, s, ack| {
            let now = listed(s)?;
            let newest = ids.borrow()[2].clone();
            if now.first() != Some(&newest) {
                return Err(format!("latest checkpoint lost: {now:?}"));
            }
            if ack && now.len() != 1 {
                return Err(format!("acknowledged prune not durable: {now:?}"));
            }
            // Audited once if any file is gone, else not at all.
            let removed = ids.borrow()[..2]
                .iter()
                .any(|id| !root.join(format!("checkpoints/wf/{id}.json")).exists());
            let entries = entries_of(s, "checkpoint_prune")?.len();
            if entries != usize::from(removed) {
                return Err(format!(
                    "{entries} prune entries, with files removed: {removed}"
                ));
            }
            Ok(())
        },
    );
    assert_clean("checkpoint prune (file removals + index rewrite)", &e);
}

#[test]
fn an_audit_append_is_whole_or_torn_at_the_tail_never_breaking_the_chain() {
    let e = scenario(
        workflow_at_generation_1,
        |s| {
            s.audit().unwrap().append("probe", json!({"x": 1})).unwrap();
        },
        |_, s, ack| {
            let audit = s.audit().unwrap();
            let v = audit.verify().map_err(|e| e.to_string())?;
            let last = audit.read(None, Some(1)).map_err(|e| e.to_string())?;
            let has_probe = last.first().is_some_and(|e| e.event == "probe");
            if ack && (!has_probe || !v.valid) {
                return Err(format!("acknowledged append lost or chain invalid: {v:?}"));
            }
            // And a later append still chains on from whatever survived.
            audit
                .append("after", json!({}))
                .map_err(|e| e.to_string())?;
            let entries = audit.read(None, None).map_err(|e| e.to_string())?;
            let n = entries.len();
            if n < 2 || entries[n - 1].prev_hash != entries[n - 2].hash {
                return Err("an append after the crash does not chain".into());
            }
            Ok(())
        },
    );
    assert_clean("audit append", &e);
}

fn legacy_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy/case2")
}

#[test]
fn an_interrupted_import_leaves_whole_items_and_a_rerun_completes_it() {
    let fixture = legacy_fixture();
    assert!(fixture.is_dir(), "fixture {} missing", fixture.display());
    let options = crate::import::ImportOptions::default();
    let e = scenario(
        |_| {},
        |s| {
            crate::import::import_legacy(s, &fixture, options).unwrap();
        },
        |_dir, s, ack| {
            let before = listed_in(s, "wf_2")?.len();
            if ack && before != 4 {
                return Err(format!("acknowledged import has {before} checkpoints"));
            }
            // Running the import again after the crash finishes the job.
            crate::import::import_legacy(s, &fixture, options)
                .map_err(|e| format!("re-import failed: {e}"))?;
            let after = listed_in(s, "wf_2")?;
            if after.is_empty() {
                return Err("no checkpoints after re-import".into());
            }
            let chain = s
                .checkpoints()
                .unwrap()
                .chain(&after[0], 10)
                .map_err(|e| e.to_string())?;
            if after.len() != 4 || chain.links.len() != 4 {
                return Err(format!(
                    "after re-import: {} checkpoints, chain {}",
                    after.len(),
                    chain.links.len()
                ));
            }
            // A crash can leave torn (unparsable) audit lines, which later
            // appends skip; the recovery procedure moves them aside.
            let v = s.audit().unwrap().verify().map_err(|e| e.to_string())?;
            if !v.valid {
                let bad = v.first_bad.clone().unwrap();
                if !bad.reason.contains("torn") {
                    return Err(format!(
                        "audit invalid after re-import, not by a torn line: {bad:?}"
                    ));
                }
                s.repair().map_err(|e| format!("repair failed: {e}"))?;
                let v = s.audit().unwrap().verify().map_err(|e| e.to_string())?;
                if !v.valid {
                    return Err(format!(
                        "audit still invalid after repair: {:?}",
                        v.first_bad
                    ));
                }
            }
            s.load("wf_2")
                .map_err(|e| format!("state missing after re-import: {e}"))?;
            Ok(())
        },
    );
    assert_clean("import-legacy (then re-import)", &e);
}

#[test]
fn an_interrupted_repair_never_loses_the_damaged_file() {
    let damaged = b"{\"format\": \"wfstate.state/1\", damaged".to_vec();
    let e = scenario_with_damage(
        |s| {
            s.save("good", json!({"n": 1}), None).unwrap();
            s.save("bad", json!({"n": 1}), None).unwrap();
            let root = PathBuf::from(s.location());
            std::fs::write(root.join("state/bad.json"), &damaged).unwrap();
        },
        |s| {
            s.repair().unwrap();
        },
        |dir, s, ack| {
            generation_and_n(s, "good")?.ok_or("good state lost")?;
            let in_place = std::fs::read(dir.join("state/bad.json")).ok();
            let quarantined = walk(&dir.join("quarantine"))
                .into_iter()
                .any(|(_, b)| b == damaged);
            match (in_place == Some(damaged.clone()), quarantined, ack) {
                (_, true, _) | (true, false, false) => {}
                other => {
                    return Err(format!(
                        "damaged file neither in place nor quarantined: {other:?}"
                    ));
                }
            }
            // Whatever the crash left, the next repair leaves every batch
            // of moved files named by exactly one repair entry.
            s.repair()
                .map_err(|e| format!("the next repair failed: {e}"))?;
            every_batch_named_once(dir, s)
        },
        Some("bad.json"),
    );
    assert_clean("health --repair (quarantine move + audit append)", &e);
}

/// Every folder in the quarantine is named by exactly one `repair` entry:
/// no repair's moves go unaudited, and none is recorded twice.
fn every_batch_named_once(root: &Path, s: &Store) -> Result<(), String> {
    let entries: Vec<String> = entries_of(s, "repair")?
        .iter()
        .map(|e| e.data.to_string())
        .collect();
    let Ok(batches) = std::fs::read_dir(root.join("quarantine")) else {
        return Ok(());
    };
    for batch in batches.flatten() {
        let name = batch.file_name().to_string_lossy().into_owned();
        let naming = entries.iter().filter(|d| d.contains(&name)).count();
        if naming != 1 {
            return Err(format!(
                "quarantine/{name} is named by {naming} repair entries"
            ));
        }
    }
    Ok(())
}

/// What `health` says of the quarantine.
fn quarantine_component(store: &Store) -> health::Component {
    store
        .health()
        .unwrap()
        .components
        .into_iter()
        .find(|c| c.name == "quarantine")
        .unwrap()
}

/// A repair killed after its moves and before its audit entry (simulated
/// by failing the entry's write: the files are then as a kill leaves them)
/// leaves a batch that no entry names. `health` says so, and the next
/// repair records it, once.
#[test]
fn a_repair_killed_before_its_entry_is_recorded_by_the_next_repair() {
    let setup = |s: &Store| {
        s.save("good", json!({"n": 1}), None).unwrap();
        s.save("bad", json!({"n": 1}), None).unwrap();
        let root = PathBuf::from(s.location());
        std::fs::write(root.join("state/bad.json"), b"{damaged").unwrap();
    };
    let repair = |s: &Store| s.repair();
    let writes = writes_of(&setup, &repair);
    let (_dir, root, _) = failing_at_write(&setup, &repair, audit_copy(&writes));
    let store = open(&root).unwrap();
    let batches: Vec<String> = std::fs::read_dir(root.join("quarantine"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(batches.len(), 1, "the moves were made: {batches:?}");
    let batch = &batches[0];
    assert!(
        root.join("quarantine")
            .join(batch)
            .join("state/bad.json")
            .exists()
    );
    assert!(
        every_batch_named_once(&root, &store).is_err(),
        "the killed repair left no entry"
    );

    let quarantine = quarantine_component(&store);
    assert_eq!(quarantine.status, Status::Warning);
    assert!(
        quarantine.message.contains(batch.as_str())
            && quarantine.message.contains("no audit entry"),
        "{}",
        quarantine.message
    );

    let repaired = store.repair().unwrap();
    assert!(
        repaired.repairs.iter().any(|r| r.contains("recorded")),
        "{:?}",
        repaired.repairs
    );
    every_batch_named_once(&root, &store).unwrap();
    let recorded = entries_of(&store, "repair").unwrap().pop().unwrap();
    assert_eq!(recorded.data["recorded"][0]["batch"], json!(batch));
    assert_eq!(
        recorded.data["recorded"][0]["files"],
        json!([format!("quarantine/{batch}/state/bad.json")])
    );
    assert!(store.audit().unwrap().verify().unwrap().valid);

    // Recorded once: a further repair has nothing to do.
    let again = store.repair().unwrap();
    assert!(again.repairs.is_empty(), "{:?}", again.repairs);
    every_batch_named_once(&root, &store).unwrap();
}

/// Repair entries written before they had a `batch` field name their batch
/// only in the paths of their actions; such a batch counts as recorded.
#[test]
fn a_batch_named_only_in_an_older_entrys_actions_counts_as_recorded() {
    let (_dir, root, store) = new_store();
    let moved = root.join("quarantine/20261101T000000.000000Z/state/old.json");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::write(&moved, b"{damaged").unwrap();
    store
        .audit()
        .unwrap()
        .append(
            "repair",
            json!({"actions": [format!("moved {} to {} (damaged)",
                root.join("state/old.json").display(), moved.display())]}),
        )
        .unwrap();
    let quarantine = quarantine_component(&store);
    assert!(
        !quarantine.message.contains("no audit entry"),
        "{}",
        quarantine.message
    );
    assert!(store.repair().unwrap().repairs.is_empty());
}

fn walk(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

// ---- fault injection -------------------------------------------------------

type Op = fn(&Store) -> crate::Result<()>;

fn save_op(s: &Store) -> crate::Result<()> {
    s.save("wf", json!({"n": 2}), None).map(|_| ())
}
fn update_op(s: &Store) -> crate::Result<()> {
    s.update("wf", |d| {
        d["n"] = 2.into();
        Ok(())
    })
    .map(|_| ())
}
fn checkpoint_op(s: &Store) -> crate::Result<()> {
    s.create_checkpoint(NewCheckpoint {
        workflow: "wf".into(),
        ..NewCheckpoint::default()
    })
    .map(|_| ())
}
fn audit_op(s: &Store) -> crate::Result<()> {
    s.audit()?.append("probe", json!({})).map(|_| ())
}

fn count_ops(op: Op) -> (usize, usize, usize) {
    let (_dir, _root, store) = new_store();
    store.save("wf", json!({"n": 1}), None).unwrap();
    let (res, trace) = traced(|| op(&store));
    res.unwrap();
    let fsyncs = trace
        .iter()
        .filter(|o| matches!(o, sim::Op::Fsync(_) | sim::Op::FsyncDir(_)))
        .count();
    let renames = trace
        .iter()
        .filter(|o| matches!(o, sim::Op::Rename { .. }))
        .count();
    let writes = trace
        .iter()
        .filter(|o| matches!(o, sim::Op::Write { .. }))
        .count();
    (fsyncs, renames, writes)
}

#[test]
fn injected_faults_fail_the_operation_and_leave_the_previous_version() {
    let mut injected = 0;
    for (name, op) in [
        ("save", save_op as Op),
        ("update", update_op),
        ("checkpoint create", checkpoint_op),
        ("audit append", audit_op),
    ] {
        let (fsyncs, renames, writes) = count_ops(op);
        let mut faults = Vec::new();
        faults.extend((0..fsyncs).map(|nth| Fault::FsyncEio { nth }));
        faults.extend((0..renames).map(|nth| Fault::RenameFails { nth }));
        faults.extend((0..writes).map(|nth| Fault::WriteEnospc { nth }));
        faults.extend((0..writes).map(|nth| Fault::WriteShortThenEnospc { nth }));
        for fault in faults {
            let (_dir, root, store) = new_store();
            store.save("wf", json!({"n": 1}), None).unwrap();
            sim::inject(Some(fault));
            let (result, trace) = traced(|| op(&store));
            sim::inject(None);
            injected += 1;
            // An error, or success with a warning when the change was made
            // and a step after it failed; never a silent success.
            let err = match reported(result, &format!("[{name}] {fault:?}")) {
                Ok(warning) => warning,
                Err(e) => e.to_string(),
            };
            // A failed fsync is final: nothing is fsynced after it.
            if let Fault::FsyncEio { nth } = fault {
                let after = trace
                    .iter()
                    .filter(|o| matches!(o, sim::Op::Fsync(_) | sim::Op::FsyncDir(_)))
                    .count();
                assert_eq!(
                    after, nth,
                    "[{name}] {fault:?}: fsync retried or continued after an fsync error"
                );
            }
            // The store still verifies; the state is the previous version,
            // or the new one when only its directory fsync or the audit
            // append failed (and the error says so).
            let generation = store
                .load("wf")
                .unwrap_or_else(|e| panic!("[{name}] {fault:?}: state unreadable: {e}"))
                .generation;
            let says_visible = err.contains("durability unknown") || err.contains("was saved");
            assert!(
                generation == 1 || says_visible,
                "[{name}] {fault:?}: generation {generation} after {err}"
            );
            let problems = recovery_problems(&store, false);
            assert!(problems.is_empty(), "[{name}] {fault:?}: {problems:?}");
            let leftovers: Vec<_> = walk(&root)
                .into_iter()
                .filter(|(p, _)| p.to_string_lossy().contains(".tmp-"))
                .collect();
            assert!(
                leftovers.is_empty(),
                "[{name}] {fault:?}: temp files left: {:?}",
                leftovers.iter().map(|(p, _)| p).collect::<Vec<_>>()
            );
        }
    }
    tell(format!(
        "fault injection: {injected} faults injected (fsync EIO, rename failure, write ENOSPC, short write then ENOSPC), all reported, no retried fsync"
    ));
    assert!(injected >= 20);
}

/// A checkpoint of ordinary size costs one sync: its journal record. (The
/// first of a workflow also creates the journal and the index; every few
/// hundred, the journal is settled: counted by the benchmark.)
#[test]
fn a_checkpoint_through_the_journal_costs_one_sync() {
    let (_dir, _root, store) = new_store();
    workflow_at_generation_1(&store);
    checkpoint(&store, "first");
    let (_, trace) = traced(|| checkpoint(&store, "second"));
    let syncs: Vec<_> = trace
        .iter()
        .filter(|o| matches!(o, sim::Op::Fsync(_) | sim::Op::FsyncDir(_)))
        .collect();
    assert_eq!(syncs.len(), 1, "{syncs:?}");
    assert!(
        matches!(syncs[0], sim::Op::Fsync(p) if p.ends_with("checkpoints/wf/journal")),
        "{syncs:?}"
    );
}

/// A creator that dies after its journal record is durable but before it
/// published the file (simulated by failing that write) loses nothing: the
/// next creation publishes it first, in its place in the lineage.
#[test]
fn a_committed_checkpoint_left_unpublished_is_published_by_the_next() {
    let (_dir, _root, store) = new_store();
    workflow_at_generation_1(&store);
    let first = checkpoint(&store, "first");
    // Writes of a creation: pointer, journal record, index record, the
    // checkpoint file (the fourth), then the audit copy.
    sim::inject(Some(Fault::WriteEnospc { nth: 3 }));
    let failed = store.create_checkpoint(NewCheckpoint {
        workflow: "wf".into(),
        message: Some("second".into()),
        ..NewCheckpoint::default()
    });
    sim::inject(None);
    // Committed, so reported as made, with a warning.
    let warning = reported(failed, "publication").expect("the checkpoint was committed");
    assert!(warning.contains("committed to the journal"), "{warning}");
    assert_eq!(
        listed(&store).unwrap(),
        std::slice::from_ref(&first),
        "not visible yet"
    );
    let third = checkpoint(&store, "third");
    let ids = listed(&store).unwrap();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(
        (ids[0].as_str(), ids[2].as_str()),
        (third.as_str(), first.as_str())
    );
    let chain = store.checkpoints().unwrap().chain(&third, 10).unwrap();
    let messages: Vec<_> = chain
        .links
        .iter()
        .map(|l| store.checkpoints().unwrap().get(&l.id).unwrap().message)
        .collect();
    assert_eq!(
        messages,
        [
            Some("third".into()),
            Some("second".into()),
            Some("first".into())
        ]
    );
    assert!(recovery_problems(&store, true).is_empty());
}

mod interleaved;

// Pending writes (DESIGN section 15): committed by a record of the
// checkpoint journal, published to the checkpoint's writes file unsynced,
// written back from the journal when it is settled (after a reboot, at the
// first open).

const WRITES_CHECKPOINT: &str = "1f0c5a00-0000-6000-8000-000000000001";

fn pending(task: &str, value: &str) -> Vec<crate::checkpoint::PendingWrite> {
    vec![crate::checkpoint::PendingWrite {
        task_id: task.into(),
        idx: 0,
        channel: "ch".into(),
        value: json!(value),
        task_path: String::new(),
    }]
}

fn put_pending(s: &Store, task: &str, value: &str) {
    s.checkpoints()
        .unwrap()
        .put_writes(
            "lg.t",
            WRITES_CHECKPOINT,
            &pending(task, value),
            crate::checkpoint::WriteRule::KeepFirst,
        )
        .unwrap();
}

fn record_writes_checkpoint(s: &Store) {
    s.record_checkpoint(NewCheckpoint {
        workflow: "lg.t".into(),
        id: Some(WRITES_CHECKPOINT.into()),
        payload: Some(json!({"step": 1})),
        ..NewCheckpoint::default()
    })
    .unwrap();
}

/// The writes after a crash are `before`, or `after` (always, once the call
/// returned); they read without error, and one more call works.
fn writes_old_or_new(
    s: &Store,
    before: &[(&str, &str)],
    after: &[(&str, &str)],
    ack: bool,
) -> Result<(), String> {
    let cps = s.checkpoints().map_err(|e| e.to_string())?;
    let read =
        |cps: &dyn crate::checkpoint::CheckpointBackend| -> Result<Vec<(String, String)>, String> {
            Ok(cps
                .writes("lg.t", WRITES_CHECKPOINT)
                .map_err(|e| format!("writes unreadable: {e}"))?
                .into_iter()
                .map(|w| (w.task_id, w.value.as_str().unwrap_or("").to_string()))
                .collect())
        };
    let got = read(cps)?;
    let owned = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    if got != owned(after) && (ack || got != owned(before)) {
        return Err(if ack {
            format!("acknowledged writes lost: {got:?}")
        } else {
            format!("writes neither old nor new: {got:?}")
        });
    }
    cps.put_writes(
        "lg.t",
        WRITES_CHECKPOINT,
        &pending("zz", "next"),
        crate::checkpoint::WriteRule::KeepFirst,
    )
    .map_err(|e| format!("the next put_writes failed: {e}"))?;
    let mut expected = got;
    expected.push(("zz".into(), "next".into()));
    match read(cps)? {
        again if again == expected => Ok(()),
        again => Err(format!("after the next put_writes: {again:?}")),
    }
}

#[test]
fn pending_writes_that_create_their_file_are_absent_or_whole_after_every_crash() {
    let e = scenario(
        record_writes_checkpoint,
        |s| put_pending(s, "a", "first"),
        |_, s, ack| writes_old_or_new(s, &[], &[("a", "first")], ack),
    );
    assert_clean(
        "pending writes through the journal, first (writes file created unsynced)",
        &e,
    );
}

#[test]
fn pending_writes_appended_are_old_or_new_after_every_crash() {
    let e = scenario(
        |s| {
            record_writes_checkpoint(s);
            put_pending(s, "a", &"first".repeat(1500));
        },
        |s| put_pending(s, "b", &"second".repeat(1500)),
        |_, s, ack| {
            let first = "first".repeat(1500);
            let second = "second".repeat(1500);
            writes_old_or_new(s, &[("a", &first)], &[("a", &first), ("b", &second)], ack)
        },
    );
    assert_clean(
        "pending writes through the journal, appended (torn blocks)",
        &e,
    );
}

#[test]
fn small_pending_writes_left_in_the_journal_are_written_back_after_every_crash() {
    // Small batches stay in the journal (no settle during the operation):
    // after a power cut their published copies may be lost or torn
    // anywhere, and the first open writes them back in order.
    let e = scenario(
        |s| {
            record_writes_checkpoint(s);
            put_pending(s, "a", "first");
        },
        |s| put_pending(s, "b", "second"),
        |_, s, ack| {
            writes_old_or_new(
                s,
                &[("a", "first")],
                &[("a", "first"), ("b", "second")],
                ack,
            )
        },
    );
    assert_clean(
        "pending writes through the journal, small (left unsettled)",
        &e,
    );
}

#[test]
fn the_harness_catches_a_journal_settle_that_does_not_write_back_pending_writes() {
    sim::set_mutation_skip_writes_replay(true);
    let e = scenario(
        record_writes_checkpoint,
        |s| put_pending(s, "a", "first"),
        |_, s, ack| writes_old_or_new(s, &[], &[("a", "first")], ack),
    );
    sim::set_mutation_skip_writes_replay(false);
    report(
        "MUTANT journal settle without writing back pending writes",
        &e,
    );
    assert!(
        e.violations
            .iter()
            .any(|(_, why)| why.contains("acknowledged writes lost")),
        "the simulator must report the lost acknowledged writes; saw {:?}",
        e.violations.first()
    );
}
