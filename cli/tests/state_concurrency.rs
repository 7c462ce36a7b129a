//! Real processes against one file store: a SIGKILL at any moment leaves the
//! last acknowledged generation or the one after it. (No lost updates under
//! concurrency, 8 processes x 50 increments, is in `conformance.rs`.)

mod common;

use common::{Rng, Scratch, code, stdout_json, text};

use std::time::Duration;
use wfstate::{Store, StoreOptions};

/// Child side of the kill test: loops updates and acknowledges each one on
/// stdout only after `update` returned, i.e. after it was durable.
#[test]
fn save_loop_child() {
    let Ok(store) = std::env::var("WFSTATE_TEST_SAVE_LOOP") else {
        return; // only does something when the kill test starts it
    };
    common::report_panics_on_stdout();
    let store = Store::open(store.as_ref(), StoreOptions::default()).unwrap();
    let mut out = std::io::stdout().lock();
    loop {
        let doc = store
            .update("victim", |data| {
                let n = data["n"].as_i64().unwrap_or(0);
                data["n"] = (n + 1).into();
                // Padding makes each write span several blocks, so a kill
                // can land in the middle of one.
                data["pad"] = "p".repeat(20_000 + (n as usize % 7) * 1000).into();
                Ok(())
            })
            .unwrap();
        use std::io::Write;
        writeln!(out, "ACK {}", doc.generation).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_during_saves_leaves_the_acknowledged_generation_or_the_next() {
    let s = Scratch::new();
    let mut rng = Rng::from_env_or_clock("WFSTATE_TEST_SEED");
    let mut last_ack = 0u64;
    for round in 0..50 {
        let (mut child, reader) =
            common::spawn_acking_child("save_loop_child", ("WFSTATE_TEST_SAVE_LOOP", &s.store));
        // Kill somewhere between start-up and a few dozen saves in.
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(40_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader
            .join()
            .unwrap()
            .unwrap_or_else(|why| panic!("round {round}: the child failed: {why}"));
        if let Some(&g) = acks.last() {
            last_ack = g;
        }

        let out = s.run(&["--json", "state", "verify", "victim"]);
        if last_ack == 0 && code(&out) == 1 {
            continue; // killed before the first save ever happened
        }
        let verified = stdout_json(&out);
        assert_eq!(verified["ok"], true, "round {round}: {}", text(&out.stderr));
        let generation = verified["generation"].as_u64().unwrap();
        assert!(
            generation == last_ack || generation == last_ack + 1,
            "round {round}: generation {generation} after last ack {last_ack}"
        );
        let n = stdout_json(&s.run(&["state", "get", "victim", "--pointer", "/n"]));
        assert_eq!(
            n.as_u64().unwrap(),
            generation,
            "data matches its generation"
        );
        last_ack = generation;
    }
    assert!(last_ack > 50, "the loop made progress: {last_ack} saves");
}
