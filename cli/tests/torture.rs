//! Kill -9 torture: a process looping state updates, checkpoint creates,
//! first saves of new workflows, large states and checkpoints, audit
//! appends, prunes and restores is SIGKILLed at random moments, again and
//! again. After every kill the store must be healthy and the counter must
//! be the last acknowledged value or one more; a child that fails (an
//! operation returned an error) fails the test.
//!
//! CI runs 300 kills. Longer: `WFSTATE_TEST_TORTURE_KILLS=1000 cargo test
//! --release --test torture -- --nocapture` (6 minutes here on 2026-11-27;
//! every round runs a full health check of a store that keeps growing).

mod common;

use common::Rng;
use std::io::Write;
use std::time::Duration;
use wfstate::checkpoint::{CheckpointBackend, ListContent, ListQuery, NewCheckpoint, PrunePolicy};
use wfstate::health::Status;
use wfstate::{Store, StoreOptions};

/// A checkpoint of `workflow`, from its current state.
fn checkpoint(store: &Store, workflow: &str) {
    store
        .create_checkpoint(NewCheckpoint {
            workflow: workflow.into(),
            ..NewCheckpoint::default()
        })
        .unwrap();
}

/// The ids of `workflow`'s checkpoints, each of which must verify.
fn listed_ids(checkpoints: &dyn CheckpointBackend, workflow: &str) -> Vec<String> {
    checkpoints
        .list(&ListQuery {
            workflow: Some(workflow.into()),
            phase: None,
            limit: usize::MAX,
            before: None,
        })
        .unwrap()
        .into_iter()
        .map(|entry| {
            assert!(matches!(entry.content, ListContent::Ok { .. }), "{entry:?}");
            entry.id
        })
        .collect()
}

/// The errors `health` reports for `store`, one line each.
fn health_errors(store: &Store) -> Vec<String> {
    store
        .health()
        .unwrap()
        .components
        .iter()
        .filter(|c| c.status == Status::Error)
        .map(|c| format!("{}: {}", c.name, c.message))
        .collect()
}

/// Adds one to `workflow`'s counter `n` and, once that is durable, says
/// `ACK <n>` on `out` (what the parent reads after a kill).
fn count_up(store: &Store, workflow: &str, out: &mut impl Write) {
    let doc = store
        .update(workflow, |d| {
            let n = d["n"].as_u64().unwrap_or(0);
            d["n"] = (n + 1).into();
            Ok(())
        })
        .unwrap();
    writeln!(out, "ACK {}", doc.data["n"]).unwrap();
    out.flush().unwrap();
}

/// Child side: loops forever, acknowledging each durable step on stdout.
#[test]
fn torture_child() {
    let Ok(root) = std::env::var("WFSTATE_TEST_TORTURE_STORE") else {
        return; // only does something when the torture test starts it
    };
    common::report_panics_on_stdout();
    let store = Store::open(root.as_ref(), StoreOptions::default()).unwrap();
    let mut out = std::io::stdout().lock();
    let mut i = 0u64;
    // Children live a few milliseconds, so a step taken every n-th turn
    // counted from 0 would run in all of them or none: the rare, slow steps
    // start from a different turn in each child.
    let spread = u64::from(std::process::id());
    loop {
        count_up(&store, "counter", &mut out);
        if i.is_multiple_of(3) {
            checkpoint(&store, "counter");
        }
        if i.is_multiple_of(5) {
            // A first generation replaces no log record: it is committed by
            // a rename, with its audit entry in the intent.
            store
                .save(&format!("fresh-{i}"), serde_json::json!({"i": i}), None)
                .unwrap();
        }
        if i.is_multiple_of(2) {
            store
                .audit()
                .unwrap()
                .append("torture", serde_json::json!({"i": i}))
                .unwrap();
        }
        if i.is_multiple_of(7) {
            checkpoint(&store, "pruned");
        }
        if i.is_multiple_of(21) {
            // Removes files, with its entry in the audit intent.
            store
                .checkpoints()
                .unwrap()
                .prune(&PrunePolicy {
                    workflow: Some("pruned".into()),
                    keep_last: Some(2),
                    ..PrunePolicy::default()
                })
                .unwrap();
        }
        if (i + spread).is_multiple_of(13) {
            // A 70 KiB state goes to the log; its checkpoint, too large for
            // the journal, is published by its own synced protocol with its
            // entry in the audit intent.
            store
                .save(
                    "big",
                    serde_json::json!({"i": i, "pad": "b".repeat(70_000)}),
                    None,
                )
                .unwrap();
            checkpoint(&store, "big");
        }
        if (i + spread).is_multiple_of(47) {
            // A state of 1 MiB or more replaces the base (audit intent).
            store
                .save(
                    "huge",
                    serde_json::json!({"i": i, "pad": "h".repeat(1 << 20)}),
                    None,
                )
                .unwrap();
        }
        if i.is_multiple_of(11) {
            // A restore writes a new generation from a checkpoint.
            match store.checkpoints().unwrap().latest("restored").unwrap() {
                Some(cp) => {
                    store.restore(&cp.id).unwrap();
                }
                None => {
                    store
                        .save("restored", serde_json::json!({"v": i}), None)
                        .unwrap();
                    checkpoint(&store, "restored");
                }
            }
        }
        i += 1;
    }
}

#[test]
fn sigkill_at_random_moments_never_leaves_an_unhealthy_store() {
    let kills: usize = std::env::var("WFSTATE_TEST_TORTURE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(".wfstate");
    Store::init(&root, StoreOptions::default()).unwrap();
    let mut rng = Rng::from_env_or_clock("WFSTATE_TEST_SEED");
    let mut last_ack = 0u64;
    let mut checks = 0;
    for round in 0..kills {
        let (mut child, reader) =
            common::spawn_acking_child("torture_child", ("WFSTATE_TEST_TORTURE_STORE", &root));
        // Mostly a few milliseconds in. Every 50th child lives 100-200 ms:
        // long enough to settle a checkpoint journal (a few hundred
        // fsyncs), which children killed within milliseconds never finish;
        // without these the journal only grows, and every later child dies
        // settling it.
        let lifetime = if round % 50 == 49 {
            100_000 + rng.below(100_000)
        } else {
            1_000 + rng.below(25_000)
        };
        std::thread::sleep(Duration::from_micros(lifetime));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader
            .join()
            .unwrap()
            .unwrap_or_else(|why| panic!("round {round}: the child failed: {why}"));
        if let Some(&n) = acks.last() {
            last_ack = n;
        }

        let store = Store::open(&root, StoreOptions::default()).unwrap();
        let errors = health_errors(&store);
        assert!(
            errors.is_empty(),
            "round {round}: health errors after SIGKILL: {errors:?}"
        );
        match store.load("counter") {
            Ok(doc) => {
                let n = doc.data["n"].as_u64().unwrap();
                assert!(
                    n == last_ack || n == last_ack + 1,
                    "round {round}: counter {n} after last ack {last_ack}"
                );
                last_ack = n;
            }
            Err(wfstate::Error::NotFound { .. }) => {
                assert_eq!(last_ack, 0, "round {round}: acknowledged state lost")
            }
            Err(e) => panic!("round {round}: {e}"),
        }
        checks += 1;
    }
    let store = Store::open(&root, StoreOptions::default()).unwrap();
    let checkpoints = store.checkpoints().unwrap();
    let latest = checkpoints.latest("counter").unwrap();
    let chain = latest.map(|cp| checkpoints.chain(&cp.id, 1_000_000).unwrap());
    eprintln!(
        "torture: {kills} SIGKILLs, {checks} recoveries checked, counter reached {last_ack}, {} checkpoints in one lineage, {} audit entries",
        chain.as_ref().map_or(0, |c| c.links.len()),
        store.audit().unwrap().read(None, None).unwrap().len()
    );
    assert!(
        chain.as_ref().is_some_and(|c| c.stopped.is_none()),
        "the checkpoint lineage is unbroken"
    );
    // Every generation the counter went through has exactly one audit
    // entry, even those whose writer was killed between making the state
    // durable and copying its entry into the audit log (recovered when the
    // store was next opened).
    let audit = store.audit().unwrap();
    assert!(audit.verify().unwrap().valid, "the audit chain verifies");
    let state_entries: Vec<_> = audit
        .read(None, None)
        .unwrap()
        .into_iter()
        .filter(|e| e.event.starts_with("state_"))
        .collect();
    let workflows = store.list_workflows().unwrap();
    assert!(workflows.len() > 1, "first saves were made: {workflows:?}");
    for workflow in &workflows {
        let mut generations: Vec<u64> = state_entries
            .iter()
            .filter(|e| e.data["workflow"] == workflow.as_str())
            .map(|e| e.data["generation"].as_u64().unwrap())
            .collect();
        generations.sort_unstable();
        let current = store.load(workflow).unwrap().generation;
        assert_eq!(
            generations,
            (1..=current).collect::<Vec<_>>(),
            "{workflow}: one audit entry per generation"
        );
    }
    // No entry for a workflow that does not exist (a first save that never
    // happened).
    for entry in &state_entries {
        let workflow = entry.data["workflow"].as_str().unwrap();
        assert!(
            workflows.iter().any(|w| w == workflow),
            "entry for {workflow}, which does not exist"
        );
    }
    // And every checkpoint has exactly one creation entry, none more.
    let creations = audit.read(Some("checkpoint_create"), None).unwrap();
    let created_in = |workflow: &str| -> Vec<String> {
        creations
            .iter()
            .filter(|e| e.data["workflow"] == workflow)
            .map(|e| e.data["id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut created = created_in("counter");
    let mut lineage: Vec<String> = chain
        .map(|c| c.links.into_iter().map(|l| l.id).collect())
        .unwrap_or_default();
    created.sort();
    lineage.sort();
    assert_eq!(created, lineage, "one audit entry per checkpoint");
    // Of the pruned workflow: whatever exists was audited as created, and
    // whatever was created and is gone was audited as pruned.
    let existing = listed_ids(checkpoints, "pruned");
    let created = created_in("pruned");
    let pruned: Vec<String> = audit
        .read(Some("checkpoint_prune"), None)
        .unwrap()
        .iter()
        .flat_map(|e| e.data["ids"].as_array().unwrap().clone())
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    assert!(
        !existing.is_empty() && !pruned.is_empty(),
        "prunes were made"
    );
    for id in &existing {
        assert!(created.contains(id), "{id} exists without a creation entry");
    }
    for id in &created {
        assert!(
            existing.contains(id) || pruned.contains(id),
            "{id} is gone without a prune entry"
        );
    }
    assert!(
        store.load("restored").unwrap().generation > 1,
        "restores were made"
    );
    // Of the large checkpoints (never pruned): exactly those that exist
    // were audited as created.
    let mut big = listed_ids(checkpoints, "big");
    let mut created = created_in("big");
    big.sort();
    created.sort();
    assert_eq!(big, created, "one audit entry per large checkpoint");
    // Reported, not required: a run whose children all die before one of
    // these slower steps is rare, and not a failure.
    let huge = match store.load("huge") {
        Ok(doc) => doc.generation,
        Err(wfstate::Error::NotFound { .. }) => 0,
        Err(e) => panic!("the 1 MiB state: {e}"),
    };
    eprintln!(
        "torture: pruned workflow {} checkpoints left, {} pruned; restored workflow at \
         generation {}; {} large checkpoints; 1 MiB state at generation {}",
        existing.len(),
        pruned.len(),
        store.load("restored").unwrap().generation,
        big.len(),
        huge
    );
    assert!(last_ack > kills as u64 / 4, "the loop made progress");
}

/// Child side of the writers' torture: updates its own workflow forever.
#[test]
fn writer_child() {
    let (Ok(root), Ok(workflow)) = (
        std::env::var("WFSTATE_TEST_WRITER_STORE"),
        std::env::var("WFSTATE_TEST_WRITER_WORKFLOW"),
    ) else {
        return; // only does something when the writers' torture starts it
    };
    common::report_panics_on_stdout();
    let store = Store::open(root.as_ref(), StoreOptions::default()).unwrap();
    let mut out = std::io::stdout().lock();
    loop {
        count_up(&store, &workflow, &mut out);
    }
}

/// 8 processes update 8 workflows of one store at once, so that their
/// commits are in flight together (DESIGN §13), and are SIGKILLed at random
/// moments: all 8 at once, or a random few while the others go on. After
/// every round each workflow holds its last acknowledged count or one more,
/// and the store is healthy; at the end the audit chain verifies and every
/// generation of every workflow has exactly one entry.
#[test]
fn eight_writers_of_distinct_workflows_killed_at_random_moments() {
    const WRITERS: usize = 8;
    let rounds: usize = std::env::var("WFSTATE_TEST_WRITER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(".wfstate");
    let store = Store::init(&root, StoreOptions::default()).unwrap().0;
    let workflows: Vec<String> = (0..WRITERS).map(|i| format!("writer-{i}")).collect();
    for workflow in &workflows {
        store
            .save(workflow, serde_json::json!({"n": 0}), None)
            .unwrap();
    }
    let mut rng = Rng::from_env_or_clock("WFSTATE_TEST_SEED");
    let spawn = |workflow: &str| {
        common::spawn_acking_child_with(
            "writer_child",
            &[
                ("WFSTATE_TEST_WRITER_STORE", root.as_os_str()),
                ("WFSTATE_TEST_WRITER_WORKFLOW", workflow.as_ref()),
            ],
        )
    };
    let mut running: Vec<_> = workflows.iter().map(|w| Some(spawn(w))).collect();
    let mut last_ack = [0u64; WRITERS];
    let mut kills = 0;
    for round in 0..rounds {
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(40_000)));
        // Every other round kills them all at once; the others a random few.
        let victims: Vec<usize> = if round % 2 == 0 {
            (0..WRITERS).collect()
        } else {
            (0..WRITERS).filter(|_| rng.below(3) == 0).collect()
        };
        for &i in &victims {
            let (mut child, reader) = running[i].take().unwrap();
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
            let acks = reader
                .join()
                .unwrap()
                .unwrap_or_else(|why| panic!("round {round}: writer {i} failed: {why}"));
            if let Some(&n) = acks.last() {
                last_ack[i] = n;
            }
        }
        // Read by a fresh handle while the survivors go on.
        let store = Store::open(&root, StoreOptions::default()).unwrap();
        for &i in &victims {
            let n = store.load(&workflows[i]).unwrap().data["n"]
                .as_u64()
                .unwrap();
            assert!(
                n == last_ack[i] || n == last_ack[i] + 1,
                "round {round}: {} at {n} after last ack {}",
                workflows[i],
                last_ack[i]
            );
            last_ack[i] = n;
        }
        for &i in &victims {
            running[i] = Some(spawn(&workflows[i]));
        }
    }
    for (i, slot) in running.iter_mut().enumerate() {
        let (mut child, reader) = slot.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        if let Some(&n) = reader.join().unwrap().unwrap().last() {
            last_ack[i] = n;
        }
    }
    let store = Store::open(&root, StoreOptions::default()).unwrap();
    let errors = health_errors(&store);
    assert!(errors.is_empty(), "health errors: {errors:?}");
    let audit = store.audit().unwrap();
    assert!(audit.verify().unwrap().valid, "the audit chain verifies");
    let entries = audit.read(None, None).unwrap();
    let mut total = 0;
    for (i, workflow) in workflows.iter().enumerate() {
        let doc = store.load(workflow).unwrap();
        let n = doc.data["n"].as_u64().unwrap();
        assert!(
            n == last_ack[i] || n == last_ack[i] + 1,
            "{workflow} at {n} after last ack {}",
            last_ack[i]
        );
        let mut generations: Vec<u64> = entries
            .iter()
            .filter(|e| e.event.starts_with("state_") && e.data["workflow"] == workflow.as_str())
            .map(|e| e.data["generation"].as_u64().unwrap())
            .collect();
        // In `seq` order, a workflow's generations come in order.
        assert!(
            generations.windows(2).all(|w| w[0] < w[1]),
            "{workflow}: entries out of generation order"
        );
        generations.sort_unstable();
        assert_eq!(
            generations,
            (1..=doc.generation).collect::<Vec<_>>(),
            "{workflow}: one audit entry per generation"
        );
        total += n;
    }
    let line = format!(
        "writers' torture: {WRITERS} writers of distinct workflows, {rounds} rounds, {kills} \
         SIGKILLs, {total} updates in all, {} audit entries, chain valid, one entry per generation",
        entries.len()
    );
    common::tell(&line);
    assert!(total > rounds as u64, "the writers made progress");
}
