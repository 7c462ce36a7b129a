//! `wfstate lock` on the file store with real processes: mutual exclusion
//! while holders are being killed, timeouts, inheritance. (Shared holders
//! and holder records are in `conformance.rs`, run on every backend.)

mod common;

use common::{
    Rng, Scratch, code, lock_run, lock_status, ok, sigkill, text, wait_for_file, wait_until,
};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn status(s: &Scratch, name: &str) -> serde_json::Value {
    lock_status(s, name)
}

/// The acceptance run is 2,000 processes; CI runs 300 by default. Set
/// WFSTATE_TEST_LOCK_PROCS=2000 for the full run.
#[test]
fn processes_being_killed_at_random_never_overlap_in_the_critical_section() {
    let s = Scratch::new();
    let total: usize = std::env::var("WFSTATE_TEST_LOCK_PROCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng::from_env_or_clock("WFSTATE_TEST_SEED");
    let marker = s.dir.path().join("inside");
    let overlaps = s.dir.path().join("overlaps");
    let entered = s.dir.path().join("entered");
    // mkdir is atomic and fails if the directory exists: a second process
    // inside the section at the same time records an overlap.
    let section = format!(
        "mkdir '{m}' 2>/dev/null || echo overlap >> '{o}'; echo x >> '{e}'; sleep 0.002; rmdir '{m}'",
        m = marker.display(),
        o = overlaps.display(),
        e = entered.display()
    );
    let mut running: Vec<(Child, Option<Instant>)> = Vec::new();
    let (mut launched, mut killed) = (0, 0);
    while launched < total || !running.is_empty() {
        while launched < total && running.len() < 16 {
            let child = lock_run(&s, &[], &section)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // About 10% are SIGKILLed at a random moment of their life: while
            // starting, waiting, or holding the lock with the section running
            // (the section inherited the lock and must keep it).
            let kill_at = (rng.below(10) == 0)
                .then(|| Instant::now() + Duration::from_micros(rng.below(30_000)));
            running.push((child, kill_at));
            launched += 1;
        }
        running.retain_mut(|(child, kill_at)| {
            if kill_at.is_some_and(|t| Instant::now() >= t) {
                sigkill(child);
                killed += 1;
                *kill_at = None;
            }
            child.try_wait().unwrap().is_none()
        });
        std::thread::sleep(Duration::from_micros(500));
    }
    // Sections whose wfstate was killed may still be running with the
    // inherited lock; taking the lock once more waits for all of them.
    ok(&s.run(&["lock", "run", "res", "--", "true"]));
    let entries = std::fs::read_to_string(&entered)
        .unwrap_or_default()
        .lines()
        .count();
    let overlap_count = std::fs::read_to_string(&overlaps)
        .unwrap_or_default()
        .lines()
        .count();
    eprintln!(
        "{total} processes, {killed} SIGKILLed, {entries} entered the section, {overlap_count} overlaps"
    );
    assert_eq!(overlap_count, 0, "two holders were inside at once");
    assert!(
        killed > 0 && entries > total / 2,
        "the run exercised the lock"
    );
}

#[test]
fn a_holder_killed_with_sigkill_hands_the_lock_to_a_waiter_at_once() {
    let s = Scratch::new();
    let mut holder = s
        .cmd()
        .args(["lock", "run", "res", "--", "sleep", "30"])
        .process_group(0)
        .spawn()
        .unwrap();
    wait_until("holder has the lock", || {
        status(&s, "res")["state"] == "exclusive"
    });
    let got = s.dir.path().join("got");
    let mut waiter = lock_run(
        &s,
        &["--timeout", "20"],
        &format!("touch '{}'", got.display()),
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until("waiter is queued in the kernel", || {
        status(&s, "res")["waiters"].as_u64() == Some(1)
    });
    let killed_at = Instant::now();
    // Kill the whole group: wfstate and the command holding the inherited lock.
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(holder.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    holder.wait().unwrap();
    let status = waiter.wait().unwrap();
    let elapsed = killed_at.elapsed();
    eprintln!("waiter acquired and finished {elapsed:?} after the holder was killed");
    assert!(status.success());
    assert!(got.exists());
    // Not a timing claim (the benchmark measures handoff): only proof that
    // nothing waited for a stale-lock timeout or a polling interval of seconds.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn a_timeout_exits_5_without_running_the_command() {
    let s = Scratch::new();
    let mut holder = s
        .cmd()
        .args(["lock", "run", "res", "--", "sleep", "30"])
        .spawn()
        .unwrap();
    wait_until("holder has the lock", || {
        status(&s, "res")["state"] == "exclusive"
    });
    let ran = s.dir.path().join("ran");
    for requested in [0.0, 0.3] {
        let started = Instant::now();
        let out = lock_run(
            &s,
            &["--timeout", &requested.to_string()],
            &format!("touch '{}'", ran.display()),
        )
        .output()
        .unwrap();
        let waited = started.elapsed();
        eprintln!("--timeout {requested}: gave up after {waited:?}");
        assert_eq!(code(&out), 5, "{}", text(&out.stderr));
        assert!(waited >= Duration::from_secs_f64(requested));
        assert!(!ran.exists(), "CMD must not run after a timeout");
    }
    sigkill(&holder);
    holder.wait().unwrap();
}

#[test]
fn the_command_keeps_the_lock_if_wfstate_dies_unless_no_inherit() {
    let s = Scratch::new();
    let d = s.dir.path();
    for (flag, expect_held) in [(None, true), (Some("--no-inherit"), false)] {
        let release = d.join("release");
        let _ = std::fs::remove_file(&release);
        let started = d.join("started");
        // The command removes `started` as its last act, so the test can
        // tell when it has finished even though it is not our child.
        let cmd = format!(
            "touch '{s}'; {}; rm '{s}'",
            wait_for_file(&release),
            s = started.display()
        );
        let args: Vec<&str> = flag.into_iter().collect();
        let mut wf = lock_run(&s, &args, &cmd).spawn().unwrap();
        wait_until("command started", || d.join("started").exists());
        sigkill(&wf);
        wf.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let st = status(&s, "res");
        assert_eq!(st["state"] == "exclusive", expect_held, "{flag:?}: {st}");
        std::fs::write(&release, b"").unwrap();
        // `started` goes a moment before the shell exits and closes its
        // inherited descriptor, so wait for the release rather than expect it
        // at once (CI caught that window). A lock that is never released
        // still fails here, after the bound in `wait_until`.
        wait_until("the command finished", || !started.exists());
        wait_until("the lock released when the command exited", || {
            status(&s, "res")["state"] == "free"
        });
    }
}

#[test]
fn command_exit_codes_pass_through() {
    let s = Scratch::new();
    assert_eq!(code(&lock_run(&s, &[], "exit 7").output().unwrap()), 7);
    assert_eq!(
        code(&lock_run(&s, &[], "kill -TERM $$").output().unwrap()),
        128 + 15
    );
    let out = s.run(&["lock", "run", "res", "--", "/nonexistent/cmd"]);
    assert_eq!(code(&out), 127);
}

#[test]
fn symlinked_lock_files_and_invalid_names_are_refused() {
    let s = Scratch::new();
    let outside = s.dir.path().join("outside");
    std::os::unix::fs::symlink(&outside, s.store.join("locks/res.lock")).unwrap();
    let out = s.run(&["lock", "run", "res", "--", "true"]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("symlink"));
    assert!(
        !Path::new(&outside).exists(),
        "nothing created through the link"
    );
    for bad in ["../x", "a/b", "", ".x"] {
        assert_eq!(
            code(&s.run(&["lock", "run", bad, "--", "true"])),
            2,
            "{bad:?}"
        );
        assert_eq!(code(&s.run(&["lock", "status", bad])), 2, "{bad:?}");
    }
}
