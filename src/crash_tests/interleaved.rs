//! Crash scenarios of pipelined commits at once (DESIGN §13): two or three
//! writers, each updating its own workflow from its own store handle on its
//! own thread, are run step by step in every order the commit protocol
//! allows, recorded into one trace, and every crash point of every order is
//! explored. A writer's steps: 0, claim its slot and write its record
//! (under the audit lock); 1, sync its log; 2, finish (copy, wait for
//! earlier entries). Writer `a` always begins first, so its entry comes
//! first.

use super::*;
use crate::crashsim::explore_points;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// (writer, step).
type Step = (usize, usize);

const WORKFLOWS: [&str; 3] = ["a", "b", "c"];

/// Lets each writer take its steps in the schedule's order.
struct Conductor {
    schedule: Vec<Step>,
    /// How far the schedule has got, and the writers whose update failed
    /// (their steps are skipped).
    at: Mutex<Progress>,
    turn: Condvar,
    trace: sim::SharedTrace,
    /// Where in the trace each writer's update returned success.
    acked: Mutex<Vec<Option<usize>>>,
    /// Updates that returned an error, as the trace stood then (a failure
    /// of the protocol itself, reported as a violation).
    failed: Mutex<Vec<(usize, String)>>,
    /// Every writer has opened its store: an open settles what is in
    /// flight, so it must not happen, untraced, in the middle of the
    /// schedule.
    opened: std::sync::Barrier,
}

impl Conductor {
    fn wait_for(&self, step: Step) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut at = self.at.lock().unwrap();
        while self.schedule.get(at.step) != Some(&step) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "schedule {:?} stuck at step {} while {step:?} waits",
                self.schedule,
                at.step
            );
            at = self.turn.wait_timeout(at, left).unwrap().0;
        }
    }

    fn step_done(&self) {
        self.advance(None);
    }

    /// Moves past the step just taken, or (`failed`: that writer's update
    /// returned an error) past every step of that writer left.
    fn advance(&self, failed: Option<usize>) {
        let mut at = self.at.lock().unwrap();
        match failed {
            Some(w) => at.stopped.push(w),
            None => at.step += 1,
        }
        while let Some((w, _)) = self.schedule.get(at.step)
            && at.stopped.contains(w)
        {
            at.step += 1;
        }
        self.turn.notify_all();
    }
}

#[derive(Default)]
struct Progress {
    step: usize,
    stopped: Vec<usize>,
}

/// Every order of the two writers' steps in which `a` begins first and no
/// step would block the schedule: `b` finishes only after `a` has synced
/// (before that it would wait for `a`'s entry, which is how the protocol
/// works and what the schedule cannot step through).
fn schedules() -> Vec<Vec<Step>> {
    let mut all = Vec::new();
    for mask in 0u32..64 {
        if mask.count_ones() != 3 {
            continue;
        }
        let mut next = [0usize; 2];
        let schedule: Vec<Step> = (0..6)
            .map(|i| {
                let w = ((mask >> i) & 1) as usize;
                next[w] += 1;
                (w, next[w] - 1)
            })
            .collect();
        let position = |step: Step| schedule.iter().position(|s| *s == step).unwrap();
        if schedule[0] == (0, 0) && position((1, 2)) > position((0, 1)) {
            all.push(schedule);
        }
    }
    all
}

/// How each writer behaves.
#[derive(Clone, Copy, Default)]
struct Writer {
    /// Dies as its step 0, once it has claimed its slot and before its
    /// record is written (a SIGKILL inside the audit lock).
    dies_after_claiming: bool,
    /// Dies as its step 1, instead of syncing (its thread unwinds, dropping
    /// its locks as a killed process's are released).
    dies_after_writing: bool,
    /// The mutant that returns without waiting for earlier entries.
    acks_without_waiting: bool,
    /// The mutant that chains after a claim it has not checked.
    trusts_claims: bool,
}

fn run_writer(root: &Path, conductor: Arc<Conductor>, w: usize, how: Writer) {
    sim::set_boot_id(Some("boot-before-the-crash"));
    sim::set_mutation_ack_without_waiting(how.acks_without_waiting);
    sim::set_mutation_trust_claims(how.trusts_claims);
    let store = Store::open(root, StoreOptions::default()).unwrap();
    conductor.opened.wait();
    sim::share_trace(Some(conductor.trace.clone()));
    let c = conductor.clone();
    sim::set_phase_hook(Some(Box::new(move |point| match point {
        "claimed" if how.dies_after_claiming => {
            std::panic::resume_unwind(Box::new("killed before writing its record"));
        }
        "written" => {
            c.step_done();
            c.wait_for((w, 1));
            if how.dies_after_writing {
                // Its step 1 is to die; the step ends once the unwinding
                // has dropped its locks (below).
                std::panic::resume_unwind(Box::new("killed after writing its record"));
            }
        }
        "synced" => {
            c.step_done();
            c.wait_for((w, 2));
        }
        "done" => {
            let returned_at = c.trace.lock().unwrap().len();
            c.acked.lock().unwrap()[w] = Some(returned_at);
            c.step_done();
        }
        _ => {}
    })));
    conductor.wait_for((w, 0));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        store.update(WORKFLOWS[w], |d| {
            d["n"] = 3.into();
            Ok(())
        })
    }));
    sim::set_phase_hook(None);
    sim::share_trace(None);
    sim::set_mutation_ack_without_waiting(false);
    sim::set_mutation_trust_claims(false);
    sim::set_boot_id(None);
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            // A failed update takes no more steps: the schedule goes on.
            let at = conductor.trace.lock().unwrap().len();
            let failed = format!("writer {} failed: {e}", WORKFLOWS[w]);
            conductor.failed.lock().unwrap().push((at, failed));
            conductor.advance(Some(w));
        }
        Err(_) if how.dies_after_writing || how.dies_after_claiming => conductor.step_done(),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Every workflow at generation 2 (n = 2), its log created.
fn workflows_at_generation_2(s: &Store) {
    for wf in WORKFLOWS {
        s.save(wf, json!({"n": 1}), None).unwrap();
        s.update(wf, |d| {
            d["n"] = 2.into();
            Ok(())
        })
        .unwrap();
    }
}

/// Runs the writers (one per workflow, in `WORKFLOWS`' order) on
/// `schedule` and explores every crash point.
fn explore_schedule(schedule: Vec<Step>, writers: &[Writer], seed: u64) -> Exploration {
    sim::set_boot_id(Some("boot-before-the-crash"));
    let (_dir, root, store) = new_store();
    workflows_at_generation_2(&store);
    drop(store);
    let initial = Tree::snapshot(&root);
    let conductor = Arc::new(Conductor {
        schedule,
        at: Mutex::default(),
        turn: Condvar::new(),
        trace: Arc::default(),
        acked: Mutex::new(vec![None; writers.len()]),
        failed: Mutex::default(),
        opened: std::sync::Barrier::new(writers.len()),
    });
    std::thread::scope(|scope| {
        for (w, &how) in writers.iter().enumerate() {
            let conductor = conductor.clone();
            let root = root.clone();
            scope.spawn(move || run_writer(&root, conductor, w, how));
        }
    });
    let trace = std::mem::take(&mut *conductor.trace.lock().unwrap());
    let acked = conductor.acked.lock().unwrap().clone();
    let failed = std::mem::take(&mut *conductor.failed.lock().unwrap());
    if !failed.is_empty() {
        sim::set_boot_id(None);
        return Exploration {
            operations: trace.len(),
            violations: failed,
            ..Exploration::default()
        };
    }
    if std::env::var_os("WFSTATE_TEST_SHOW_TRACE").is_some() {
        for (i, op) in trace.iter().enumerate() {
            let shown = match op {
                sim::Op::Write { path, offset, data } => format!(
                    "write {} @{offset} {:?}",
                    path.display(),
                    String::from_utf8_lossy(&data[..data.len().min(40)])
                ),
                other => format!("{other:?}"),
            };
            eprintln!("{i}: {shown}");
        }
        eprintln!("acked at {acked:?}");
    }
    sim::set_boot_id(Some("boot-after-the-crash"));
    let exploration = explore_points(&root, &initial, &trace, seed, &|dir, k| {
        let store = open(dir)?;
        let mut problems = recovery_problems(&store, true);
        for (w, wf) in WORKFLOWS.iter().enumerate().take(writers.len()) {
            let returned = acked[w].is_some_and(|at| k >= at);
            match generation_and_n(&store, wf) {
                Ok(now) if returned && now != Some((3, 3)) => {
                    problems.push(format!("acknowledged update of {wf} lost: found {now:?}"))
                }
                Ok(now) if now != Some((2, 2)) && now != Some((3, 3)) => {
                    problems.push(format!("{wf} is neither old nor new: {now:?}"))
                }
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
            if let Err(e) = one_entry_per_generation_of(&store, wf) {
                problems.push(e);
            }
        }
        if problems.is_empty() {
            // The store goes on: each workflow takes one more update, and
            // the chain still verifies.
            for wf in &WORKFLOWS[..writers.len()] {
                if let Err(e) = store.update(wf, |d| {
                    d["n"] = 99.into();
                    Ok(())
                }) {
                    problems.push(format!("update of {wf} after the crash failed: {e}"));
                }
            }
            problems.extend(recovery_problems(&store, true));
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

fn add(total: &mut Exploration, one: Exploration) {
    total.operations += one.operations;
    total.crash_points += one.crash_points;
    total.states += one.states;
    total.violations.extend(one.violations);
}

#[test]
fn two_pipelined_commits_in_every_order_survive_every_crash() {
    let schedules = schedules();
    assert_eq!(schedules.len(), 9, "{schedules:?}");
    let mut total = Exploration::default();
    for (n, schedule) in schedules.into_iter().enumerate() {
        let e = explore_schedule(schedule.clone(), &[Writer::default(); 2], 0x1e4f ^ n as u64);
        if let Some((k, why)) = e.violations.first() {
            panic!("schedule {schedule:?}: crash point {k}: {why}");
        }
        add(&mut total, e);
    }
    assert_clean("two pipelined commits, 9 interleavings", &total);
}

#[test]
fn a_commit_whose_writer_died_after_writing_is_finished_by_the_next() {
    // `a` writes its record and dies, before `b` begins or after `b` chained
    // its entry to `a`'s; `b` then finds `a`'s slot with nobody holding its
    // lock: it syncs `a`'s log and copies `a`'s entry before its own.
    let dies = Writer {
        dies_after_writing: true,
        ..Writer::default()
    };
    let mut total = Exploration::default();
    for (n, schedule) in [
        vec![(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)],
        vec![(0, 0), (1, 0), (0, 1), (1, 1), (1, 2)],
        vec![(0, 0), (1, 0), (1, 1), (0, 1), (1, 2)],
    ]
    .into_iter()
    .enumerate()
    {
        let e = explore_schedule(
            schedule.clone(),
            &[dies, Writer::default()],
            0xdead ^ n as u64,
        );
        if let Some((k, why)) = e.violations.first() {
            panic!("schedule {schedule:?}: crash point {k}: {why}");
        }
        add(&mut total, e);
    }
    assert_clean(
        "pipelined commits, a writer dead in flight, 3 orders",
        &total,
    );
}

#[test]
fn a_claim_whose_writer_died_before_writing_is_never_chained_after() {
    // `b` claims its slot and dies before its record is written, while
    // `a`'s entry is still being synced by its live owner. `c` must not
    // chain its entry after `b`'s, which never happened: `b`'s slot is
    // dropped, and `a` and `c` both commit.
    let dies = Writer {
        dies_after_claiming: true,
        ..Writer::default()
    };
    let writers = [Writer::default(), dies, Writer::default()];
    let mut total = Exploration::default();
    for (n, schedule) in [
        vec![(0, 0), (1, 0), (2, 0), (0, 1), (0, 2), (2, 1), (2, 2)],
        vec![(0, 0), (1, 0), (2, 0), (2, 1), (0, 1), (2, 2), (0, 2)],
        vec![(1, 0), (0, 0), (2, 0), (0, 1), (2, 1), (0, 2), (2, 2)],
    ]
    .into_iter()
    .enumerate()
    {
        let e = explore_schedule(schedule.clone(), &writers, 0xc1a1 ^ n as u64);
        if let Some((k, why)) = e.violations.first() {
            panic!("schedule {schedule:?}: crash point {k}: {why}");
        }
        add(&mut total, e);
    }
    assert_clean(
        "pipelined commits, a writer dead inside its claim, 3 orders",
        &total,
    );
}

#[test]
fn the_harness_catches_a_settler_that_chains_after_an_unchecked_claim() {
    // `c` takes `b`'s claim for a whole record and chains after it; `b`'s
    // entry never happened, so when `a`'s sync unblocks the table the
    // chain has a hole, and the commits after it fail.
    let writers = [
        Writer::default(),
        Writer {
            dies_after_claiming: true,
            ..Writer::default()
        },
        Writer {
            trusts_claims: true,
            ..Writer::default()
        },
    ];
    let e = explore_schedule(
        vec![(0, 0), (1, 0), (2, 0), (0, 1), (0, 2), (2, 1), (2, 2)],
        &writers,
        0xc1a1,
    );
    report("MUTANT settler chaining after an unchecked claim", &e);
    assert!(
        e.violations
            .iter()
            .any(|(_, why)| why.contains("is in flight but its record is not in the state log")),
        "the harness must fail the mutant; saw {:?}",
        e.violations.first()
    );
}

#[test]
fn the_harness_catches_a_commit_acknowledged_before_the_entry_it_follows_is_durable() {
    // `b` returns while `a`'s record is not yet synced: a crash can then
    // keep `b`'s record and lose `a`'s, and recovery must drop `b`'s.
    let mutant = Writer {
        acks_without_waiting: true,
        ..Writer::default()
    };
    let e = explore_schedule(
        vec![(0, 0), (1, 0), (1, 1), (1, 2), (0, 1), (0, 2)],
        &[Writer::default(), mutant],
        0xbad,
    );
    report("MUTANT pipelined commit acknowledged without waiting", &e);
    assert!(
        e.violations
            .iter()
            .any(|(_, why)| why.contains("acknowledged update of b lost")),
        "the simulator must report the lost acknowledged update; saw {:?}",
        e.violations.first()
    );
}

#[test]
fn the_harness_catches_a_recovery_that_keeps_records_after_a_lost_entry() {
    // Both synced, neither finished; a crash may keep `b`'s record and lose
    // `a`'s. Recovery that keeps `b`'s leaves a generation without its
    // audit entry (the chain cannot reach it).
    sim::set_mutation_skip_rollback(true);
    let e = explore_schedule(
        vec![(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2)],
        &[Writer::default(); 2],
        0x5eed,
    );
    sim::set_mutation_skip_rollback(false);
    report(
        "MUTANT recovery without dropping records after a lost entry",
        &e,
    );
    assert!(
        e.violations
            .iter()
            .any(|(_, why)| why.contains("audit entries for generations")),
        "the simulator must report a generation without its entry; saw {:?}",
        e.violations.first()
    );
}
