//! `wfstate demo`: a short tour in a fresh store, driving this same binary
//! as separate processes so the concurrency it shows is real.

use crate::Outcome;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};
use wfstate::checkpoint::NewCheckpoint;
use wfstate::checkpoint::context::Resume;
use wfstate::lock::{LockMode, LockRequest, Recording};
use wfstate::{Error, Store, StoreOptions};

const WORKFLOW: &str = "demo-pipeline";
const PROCESSES: u32 = 4;
const UPDATES_EACH: u32 = 25;

/// Narrates on stdout, or on stderr when `--json` reserves stdout for the
/// one JSON result.
pub fn run(json: bool) -> wfstate::Result<Outcome> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find own executable", ".", e))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let store_path =
        std::env::temp_dir().join(format!("wfstate-demo-{}-{nanos}", std::process::id()));
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };

    say(format!(
        "1. wfstate init: a new store at {}",
        store_path.display()
    ));
    let (store, _) = Store::init(&store_path, StoreOptions::default())?;

    let initial =
        json!({"phase": "build", "items": {"compile": "done", "test": "pending"}, "counter": 0});
    let doc = store.save(WORKFLOW, initial, Some(0))?;
    say(format!(
        "2. state set {WORKFLOW}: generation {} saved atomically and durably, {}",
        doc.generation, doc.checksum
    ));

    say(format!(
        "3. {PROCESSES} processes each run `wfstate state update {WORKFLOW} --incr /counter` {UPDATES_EACH} times, all at once"
    ));
    let workers: Vec<_> = (0..PROCESSES)
        .map(|_| spawn_updater(&exe, &store_path))
        .collect::<wfstate::Result<_>>()?;
    for worker in workers {
        let status = worker
            .join()
            .map_err(|_| Error::InvalidInput("an updater thread panicked".into()))??;
        if !status {
            return Err(Error::InvalidInput(
                "an updater process failed; see its error above".into(),
            ));
        }
    }
    let doc = store.verify(WORKFLOW)?;
    let counter = doc.data["counter"].as_i64().unwrap_or(-1);
    let expected = i64::from(PROCESSES * UPDATES_EACH);
    say(format!(
        "   counter = {counter} (expected {expected}: no update lost), generation {}",
        doc.generation
    ));

    say(format!(
        "4. state verify {WORKFLOW}: format, checksum and name check out ({})",
        doc.checksum
    ));

    let scratch = "scratch";
    store.save(scratch, json!({"note": "this copy will be damaged"}), None)?;
    let scratch_file = store_path.join("state").join(format!("{scratch}.json"));
    flip_a_data_byte(&scratch_file)?;
    let verdict = match store.verify(scratch) {
        Err(err @ Error::Integrity { .. }) => format!("refused, as it must be: {err}"),
        Err(other) => format!("failed differently than expected: {other}"),
        Ok(_) => "NOT DETECTED (this is a bug)".to_string(),
    };
    say(format!(
        "5. one byte of {} flipped by hand; state verify {scratch}: {verdict}",
        scratch_file.display()
    ));
    say(show_checkpoints(&store)?);
    let lock_step = show_lock(&store, &exe, &store_path)?;
    say(lock_step);

    let audit = store.audit()?.verify()?;
    say(format!(
        "8. audit verify: {} entries, one for every change above, chain {}",
        audit.entries,
        if audit.valid {
            "valid"
        } else {
            "INVALID (this is a bug)"
        }
    ));
    let health = store.health()?;
    let flagged: Vec<String> = health
        .components
        .iter()
        .filter(|c| c.status != wfstate::health::Status::Ok)
        .map(|c| format!("{} ({})", c.name, c.message))
        .collect();
    say(format!(
        "9. health: {} — flags {} (the file damaged in step 5); `wfstate health --repair` would quarantine it",
        serde_json::to_value(health.status)
            .map_or("?".into(), |v| v.as_str().unwrap_or("?").to_string()),
        flagged.join(", ")
    ));
    say(format!(
        "The demo store is left at {} for you to inspect (delete it when done).",
        store_path.display()
    ));

    Ok(Outcome {
        output: crate::Output {
            json: json!({
                "store": store_path.display().to_string(),
                "workflow": WORKFLOW,
                "counter": counter,
                "expected_counter": expected,
                "generation": doc.generation,
                "checksum": doc.checksum,
                "tamper_detected": verdict.starts_with("refused"),
            }),
            text: crate::Text::Plain(String::new()),
        },
        code: if counter == expected { 0 } else { 1 },
    })
}

fn spawn_updater(
    exe: &Path,
    store: &Path,
) -> wfstate::Result<std::thread::JoinHandle<wfstate::Result<bool>>> {
    let (exe, store): (PathBuf, PathBuf) = (exe.to_path_buf(), store.to_path_buf());
    Ok(std::thread::spawn(move || {
        for _ in 0..UPDATES_EACH {
            let status = Command::new(&exe)
                .arg("--store")
                .arg(&store)
                .args(["state", "update", WORKFLOW, "--incr", "/counter"])
                .stdout(std::process::Stdio::null())
                .status()
                .map_err(|e| Error::io("run", &exe, e))?;
            if !status.success() {
                return Ok(false);
            }
        }
        Ok(true)
    }))
}

/// Two checkpoints, a restore to the first, and the resume prompt.
fn show_checkpoints(store: &Store) -> wfstate::Result<String> {
    let first = store.create_checkpoint(NewCheckpoint {
        workflow: WORKFLOW.into(),
        message: Some("build finished, tests next".into()),
        key_decisions: vec!["updates go through state update, never by hand".into()],
        ..NewCheckpoint::default()
    })?;
    store.update(WORKFLOW, |data| {
        data["phase"] = "test".into();
        data["items"]["test"] = "failed".into();
        Ok(())
    })?;
    let second = store.create_checkpoint(NewCheckpoint {
        workflow: WORKFLOW.into(),
        message: Some("tests failed; rolling back".into()),
        ..NewCheckpoint::default()
    })?;
    let chain = store.checkpoints()?.chain(&second.id, 10)?;
    let (_, restored) = store.restore(&first.id)?;
    let latest = store
        .checkpoints()?
        .latest(WORKFLOW)?
        .expect("just created");
    let resume = Resume::new(&latest, Some(restored.generation), Path::new("."));
    let prompt: String = resume
        .prompt()
        .lines()
        .take(6)
        .map(|l| format!("   | {l}\n"))
        .collect();
    Ok(format!(
        "6. checkpoint create twice: {} then {} (whose parent is the first; chain length {})\n   \
         checkpoint restore {}: the state is back to phase {:?} as generation {}\n   \
         resume prints a prompt for whoever takes over; its first lines:\n{}",
        first.id,
        second.id,
        chain.links.len(),
        first.id,
        restored.data["phase"].as_str().unwrap_or("?"),
        restored.generation,
        prompt.trim_end()
    ))
}

/// Holds the lock `deploy` in this process and lets another process try it.
fn show_lock(store: &Store, exe: &Path, store_path: &Path) -> wfstate::Result<String> {
    let locks = store.locks()?;
    let guard = locks.acquire(
        "deploy",
        LockRequest {
            mode: LockMode::Exclusive,
            timeout: Some(std::time::Duration::ZERO),
            purpose: Some("demo: deploying release 1.4"),
            recording: Recording::Durable,
            notice: None,
        },
    )?;
    let status = locks.status("deploy")?;
    let other = Command::new(exe)
        .arg("--store")
        .arg(store_path)
        .args(["lock", "run", "deploy", "--timeout", "0.3", "--", "true"])
        .output()
        .map_err(|e| Error::io("run", exe, e))?;
    drop(guard);
    let said = String::from_utf8_lossy(&other.stderr);
    let first_line = said.lines().next().unwrap_or("(nothing)");
    Ok(format!(
        "7. this process holds lock deploy: lock status says \"{}\"\n   \
         another process runs `wfstate lock run deploy --timeout 0.3 -- true`: exit {} (5 = timed out), \
         having said once:\n   {first_line}",
        status.describe(),
        other.status.code().unwrap_or(-1)
    ))
}

/// Damages the file the way a bad disk or a careless edit would, to show
/// that loading refuses it.
fn flip_a_data_byte(path: &Path) -> wfstate::Result<()> {
    let mut bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let at = text.find("damaged").map_or(bytes.len() / 2, |i| i + 1);
    bytes[at] ^= 0x01;
    std::fs::write(path, &bytes).map_err(|e| Error::io("write", path, e))
}
