//! Checkpoints whose content the caller gives (ids, payloads, metadata),
//! their pending writes and their removal: what the LangGraph saver builds
//! on. Each test runs on the embedded file store (`file::...`) and on
//! PostgreSQL (`postgres::...`), through the library, and checks what the
//! `wfstate` command then shows.

#[macro_use]
mod common;

use common::{Scratch, link_ids, ok, stdout_json};
use serde_json::{Map, Value, json};
use wfstate::checkpoint::{
    FindQuery, NewCheckpoint, ParentChoice, PendingWrite, Removal, WriteRule,
};
use wfstate::{Error, Store, StoreOptions};

on_every_backend!(
    given_ids_payloads_and_metadata_round_trip_and_show_in_the_cli,
    a_given_id_is_never_overwritten,
    ids_given_out_of_order_still_list_greatest_first,
    pending_writes_keep_regular_writes_once_and_replace_special_ones,
    damaged_pending_writes_are_an_integrity_error,
    removal_takes_checkpoints_with_their_writes_and_is_audited,
    one_id_may_live_in_two_workflows,
);

fn open(s: &Scratch) -> Store {
    Store::open(&s.store, StoreOptions::default()).expect("open the store")
}

fn metadata(pairs: Value) -> Map<String, Value> {
    pairs.as_object().expect("an object").clone()
}

/// A UUID whose order follows `n` (LangGraph's ids are time-ordered).
fn id(n: u32) -> String {
    format!("1f0c5a00-0000-6000-8000-{n:012x}")
}

fn record(store: &Store, workflow: &str, n: u32, parent: Option<u32>, meta: Value) -> String {
    let cp = store
        .record_checkpoint(NewCheckpoint {
            workflow: workflow.into(),
            id: Some(id(n)),
            parent: parent.map_or(ParentChoice::Root, |p| ParentChoice::Id(id(p))),
            payload: Some(json!({"step": n, "blob": "AAEC/w=="})),
            metadata: Some(metadata(meta)),
            phase: Some("loop".into()),
            ..NewCheckpoint::default()
        })
        .expect("record a checkpoint");
    assert_eq!(cp.id, id(n));
    cp.id
}

fn find(store: &Store, query: FindQuery) -> Vec<String> {
    let cps = store.checkpoints().unwrap().find(&query).expect("find");
    cps.into_iter().map(|cp| cp.id).collect()
}

fn write(task: &str, idx: i64, channel: &str, value: Value) -> PendingWrite {
    PendingWrite {
        task_id: task.into(),
        idx,
        channel: channel.into(),
        value,
        task_path: String::new(),
    }
}

fn given_ids_payloads_and_metadata_round_trip_and_show_in_the_cli(s: &Scratch) {
    let store = open(s);
    for n in 1..=4 {
        let source = if n % 2 == 0 { "loop" } else { "input" };
        record(
            &store,
            "lg.t1",
            n,
            (n > 1).then(|| n - 1),
            json!({"source": source, "step": n, "run_id": "r"}),
        );
    }
    let cps = store.checkpoints().unwrap();
    let third = cps.get_in("lg.t1", &id(3)).unwrap().expect("found");
    assert_eq!(third.payload, Some(json!({"step": 3, "blob": "AAEC/w=="})));
    assert_eq!(third.metadata.as_ref().unwrap()["source"], "input");
    assert_eq!(third.parent, Some(id(2)));
    assert!(cps.get_in("lg.t1", &id(9)).unwrap().is_none());
    assert!(cps.get_in("lg.other", &id(3)).unwrap().is_none());

    let all = |q: FindQuery| {
        find(
            &store,
            FindQuery {
                workflow: "lg.t1".into(),
                ..q
            },
        )
    };
    assert_eq!(all(FindQuery::default()), [id(4), id(3), id(2), id(1)]);
    let by_source = metadata(json!({"source": "input"}));
    assert_eq!(
        all(FindQuery {
            metadata: by_source.clone(),
            ..Default::default()
        }),
        [id(3), id(1)]
    );
    let both = metadata(json!({"source": "input", "step": 3}));
    assert_eq!(
        all(FindQuery {
            metadata: both,
            ..Default::default()
        }),
        [id(3)]
    );
    let none = metadata(json!({"source": "input", "step": 4}));
    assert!(
        all(FindQuery {
            metadata: none,
            ..Default::default()
        })
        .is_empty()
    );
    assert_eq!(
        all(FindQuery {
            before: Some(id(3)),
            limit: Some(1),
            ..Default::default()
        }),
        [id(2)]
    );
    assert_eq!(
        all(FindQuery {
            id: Some(id(2)),
            ..Default::default()
        }),
        [id(2)]
    );
    assert!(
        all(FindQuery {
            id: Some(id(2)),
            metadata: by_source,
            ..Default::default()
        })
        .is_empty()
    );

    // What wfstate adds stays visible: the CLI lists, shows and chains them,
    // each has its audit entry, and health verifies them.
    let listed = stdout_json(&s.run(&["--json", "checkpoint", "list", "lg.t1"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(4), "{listed}");
    let chain = stdout_json(&s.run(&["--json", "checkpoint", "chain", &id(4)]));
    assert_eq!(link_ids(&chain), [id(4), id(3), id(2), id(1)]);
    let shown = stdout_json(&s.run(&["--json", "checkpoint", "show", &id(2)]));
    assert_eq!(shown["payload"]["step"], 2, "{shown}");
    let audit = stdout_json(&s.run(&["--json", "audit", "log", "--event", "checkpoint_create"]));
    assert_eq!(audit.as_array().map(Vec::len), Some(4), "{audit}");
    ok(&s.run(&["health"]));

    // A snapshot of the workflow's state in the same workflow is newer,
    // and `recorded_only` leaves it out before the limit counts.
    let snapshot = store
        .create_checkpoint(NewCheckpoint {
            workflow: "lg.t1".into(),
            ..NewCheckpoint::default()
        })
        .unwrap();
    let newest = |recorded_only| {
        all(FindQuery {
            limit: Some(1),
            recorded_only,
            ..Default::default()
        })
    };
    assert_eq!(newest(false), [snapshot.id]);
    assert_eq!(newest(true), [id(4)]);
}

fn a_given_id_is_never_overwritten(s: &Scratch) {
    let store = open(s);
    record(&store, "lg.t2", 1, None, json!({"step": 1}));
    // The same checkpoint again (a retry) is accepted as it is.
    record(&store, "lg.t2", 1, None, json!({"step": 1}));
    let other = store.record_checkpoint(NewCheckpoint {
        workflow: "lg.t2".into(),
        id: Some(id(1)),
        parent: ParentChoice::Root,
        payload: Some(json!({"step": "changed"})),
        metadata: Some(metadata(json!({"step": 1}))),
        ..NewCheckpoint::default()
    });
    let err = other.expect_err("a different checkpoint under a taken id");
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    let kept = store
        .checkpoints()
        .unwrap()
        .get_in("lg.t2", &id(1))
        .unwrap()
        .unwrap();
    assert_eq!(kept.payload.unwrap()["step"], 1);
    let bad_id = store.record_checkpoint(NewCheckpoint {
        workflow: "lg.t2".into(),
        id: Some("../../etc/passwd".into()),
        ..NewCheckpoint::default()
    });
    assert!(matches!(bad_id, Err(Error::InvalidInput(_))), "{bad_id:?}");
}

fn ids_given_out_of_order_still_list_greatest_first(s: &Scratch) {
    let store = open(s);
    for n in [5, 2, 9, 1] {
        record(&store, "lg.t3", n, None, json!({"step": n}));
    }
    let q = FindQuery {
        workflow: "lg.t3".into(),
        ..Default::default()
    };
    assert_eq!(find(&store, q.clone()), [id(9), id(5), id(2), id(1)]);
    let latest = store
        .checkpoints()
        .unwrap()
        .latest("lg.t3")
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, id(9));
    assert_eq!(
        find(
            &store,
            FindQuery {
                before: Some(id(5)),
                ..q
            }
        ),
        [id(2), id(1)]
    );
    ok(&s.run(&["health"]));
}

fn pending_writes_keep_regular_writes_once_and_replace_special_ones(s: &Scratch) {
    let store = open(s);
    record(&store, "lg.t4", 1, None, json!({}));
    let cps = store.checkpoints().unwrap();
    let first = [
        write("b", 0, "x", json!(1)),
        write("b", 1, "y", json!("two")),
    ];
    assert_eq!(
        cps.put_writes("lg.t4", &id(1), &first, WriteRule::KeepFirst)
            .unwrap(),
        2
    );
    // A retry of the same task stores nothing.
    let again = [write("b", 0, "x", json!(100))];
    assert_eq!(
        cps.put_writes("lg.t4", &id(1), &again, WriteRule::KeepFirst)
            .unwrap(),
        0
    );
    let special = [write("a", -1, "__error__", json!("boom"))];
    assert_eq!(
        cps.put_writes("lg.t4", &id(1), &special, WriteRule::Replace)
            .unwrap(),
        1
    );
    let replaced = [write("a", -1, "__error__", json!("boom again"))];
    assert_eq!(
        cps.put_writes("lg.t4", &id(1), &replaced, WriteRule::Replace)
            .unwrap(),
        1
    );
    let got = cps.writes("lg.t4", &id(1)).unwrap();
    let seen: Vec<(&str, i64, &Value)> = got
        .iter()
        .map(|w| (w.task_id.as_str(), w.idx, &w.value))
        .collect();
    assert_eq!(
        seen,
        [
            ("a", -1, &json!("boom again")),
            ("b", 0, &json!(1)),
            ("b", 1, &json!("two")),
        ]
    );
    // Writes may come before their checkpoint; it finds them when it comes.
    assert!(cps.writes("lg.t4", &id(7)).unwrap().is_empty());
    assert_eq!(
        cps.put_writes("lg.new", &id(7), &first, WriteRule::KeepFirst)
            .unwrap(),
        2
    );
    record(&store, "lg.new", 7, None, json!({}));
    assert_eq!(cps.writes("lg.new", &id(7)).unwrap(), first);
    ok(&s.run(&["health"]));
}

fn damaged_pending_writes_are_an_integrity_error(s: &Scratch) {
    let store = open(s);
    record(&store, "lg.t5", 1, None, json!({}));
    let cps = store.checkpoints().unwrap();
    let w = [write("t", 0, "ch", json!("value-one"))];
    cps.put_writes("lg.t5", &id(1), &w, WriteRule::KeepFirst)
        .unwrap();
    if s.is_postgres() {
        #[cfg(feature = "postgres")]
        s.sql()
            .execute(
                "UPDATE wfstate_checkpoint_writes SET document = replace(document, 'value-one', 'value-two')",
                &[],
            )
            .unwrap();
    } else {
        let path = s
            .store
            .join("checkpoints/lg.t5")
            .join(format!("{}.writes", id(1)));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("value-one", "value-two")).unwrap();
    }
    let err = cps.writes("lg.t5", &id(1)).expect_err("a flipped value");
    assert!(matches!(err, Error::Integrity { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    let health = s.run(&["health"]);
    assert_eq!(health.status.code(), Some(3), "health reports it");
}

fn removal_takes_checkpoints_with_their_writes_and_is_audited(s: &Scratch) {
    let store = open(s);
    for n in 1..=4 {
        let run = if n <= 2 { "run-a" } else { "run-b" };
        record(
            &store,
            "lg.t6",
            n,
            (n > 1).then(|| n - 1),
            json!({"run_id": run}),
        );
    }
    let cps = store.checkpoints().unwrap();
    let w = [write("t", 0, "ch", json!("v"))];
    cps.put_writes("lg.t6", &id(1), &w, WriteRule::KeepFirst)
        .unwrap();
    cps.put_writes("lg.t6", &id(4), &w, WriteRule::KeepFirst)
        .unwrap();
    let by_run = Removal::MetadataIn {
        key: "run_id".into(),
        values: vec![json!("run-a")],
    };
    let removed: Vec<String> = cps
        .remove("lg.t6", &by_run)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(removed, [id(1), id(2)]);
    let q = FindQuery {
        workflow: "lg.t6".into(),
        ..Default::default()
    };
    assert_eq!(find(&store, q.clone()), [id(4), id(3)]);
    assert!(cps.get_in("lg.t6", &id(1)).unwrap().is_none());
    assert!(
        cps.writes("lg.t6", &id(1)).unwrap().is_empty(),
        "removed with it"
    );
    // A thread goes on from a checkpoint that was removed (LangGraph does
    // after delete_for_runs); health knows the gap from the audit log.
    record(&store, "lg.t6", 5, Some(2), json!({"run_id": "run-c"}));
    let health = stdout_json(&s.run(&["--json", "health"]));
    assert_eq!(health["status"], "ok", "{health}");
    cps.put_writes("lg.t6", &id(5), &w, WriteRule::KeepFirst)
        .unwrap();
    cps.remove("lg.t6", &Removal::AllButLatest).unwrap();
    assert_eq!(find(&store, q.clone()), [id(5)]);
    assert_eq!(
        cps.writes("lg.t6", &id(4)).unwrap().len(),
        0,
        "removed with it"
    );
    assert_eq!(
        cps.writes("lg.t6", &id(5)).unwrap().len(),
        1,
        "the kept one keeps its writes"
    );
    // Writes whose checkpoint never came go with the last checkpoint.
    let orphan = [write("t", 0, "ch", json!("no checkpoint"))];
    cps.put_writes("lg.t6", &id(99), &orphan, WriteRule::KeepFirst)
        .unwrap();
    cps.remove("lg.t6", &Removal::All).unwrap();
    assert!(cps.writes("lg.t6", &id(99)).unwrap().is_empty());
    assert!(find(&store, q).is_empty());
    assert!(cps.writes("lg.t6", &id(5)).unwrap().is_empty());
    let audit = stdout_json(&s.run(&["--json", "audit", "log", "--event", "checkpoint_remove"]));
    assert_eq!(audit.as_array().map(Vec::len), Some(3), "{audit}");
    ok(&s.run(&["audit", "verify"]));
    ok(&s.run(&["health"]));
}

fn one_id_may_live_in_two_workflows(s: &Scratch) {
    let store = open(s);
    record(&store, "lg.src", 1, None, json!({"step": 1}));
    record(&store, "lg.src", 2, Some(1), json!({"step": 2}));
    record(&store, "lg.dst", 1, None, json!({"step": 1}));
    record(&store, "lg.dst", 2, Some(1), json!({"step": 2}));
    let cps = store.checkpoints().unwrap();
    // By id alone the CLI cannot tell which copy is meant: it says so and
    // takes --workflow.
    let ambiguous = s.run(&["checkpoint", "show", &id(2)]);
    assert_eq!(ambiguous.status.code(), Some(2));
    let said = String::from_utf8_lossy(&ambiguous.stderr).to_string();
    assert!(
        said.contains("lg.dst, lg.src") && said.contains("--workflow"),
        "{said}"
    );
    let shown = stdout_json(&s.run(&[
        "--json",
        "checkpoint",
        "show",
        &id(2),
        "--workflow",
        "lg.dst",
    ]));
    assert_eq!(shown["workflow"], "lg.dst");
    let chain = stdout_json(&s.run(&[
        "--json",
        "checkpoint",
        "chain",
        &id(2),
        "--workflow",
        "lg.src",
    ]));
    assert_eq!(chain["links"].as_array().map(Vec::len), Some(2), "{chain}");
    let wrong = s.run(&["checkpoint", "show", &id(2), "--workflow", "lg.none"]);
    assert_eq!(wrong.status.code(), Some(1), "not found");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("lg.none"));
    // Every command that takes such an id says so, and takes --workflow:
    // snapshots of a state under one id in two workflows (a copy made
    // with wfstate's own tools looks the same).
    for (workflow, n) in [("wf.a", 1), ("wf.b", 2)] {
        store.save(workflow, json!({"n": n}), None).unwrap();
        for step in [10, 11] {
            store
                .create_checkpoint(NewCheckpoint {
                    workflow: workflow.into(),
                    id: Some(id(step)),
                    ..NewCheckpoint::default()
                })
                .unwrap();
            store
                .update(workflow, |d| {
                    d["n"] = json!(d["n"].as_i64().unwrap() * 10);
                    Ok(())
                })
                .unwrap();
        }
    }
    for args in [
        vec!["checkpoint", "diff", &id(10), &id(11)],
        vec!["checkpoint", "restore", &id(10)],
        vec!["resume", "--from", &id(10)],
    ] {
        let ambiguous = s.run(&args);
        assert_eq!(ambiguous.status.code(), Some(2), "{args:?}");
        let said = String::from_utf8_lossy(&ambiguous.stderr).to_string();
        assert!(
            said.contains("wf.a, wf.b") && said.contains("--workflow"),
            "{said}"
        );
    }
    let diff = stdout_json(&s.run(&[
        "--json",
        "checkpoint",
        "diff",
        &id(10),
        &id(11),
        "--workflow",
        "wf.b",
    ]));
    assert_eq!(
        diff["state_patch"],
        json!([{"op": "replace", "path": "/n", "value": 20}]),
        "{diff}"
    );
    let restored = stdout_json(&s.run(&[
        "--json",
        "checkpoint",
        "restore",
        &id(11),
        "--workflow",
        "wf.a",
    ]));
    assert_eq!(restored["workflow"], "wf.a", "{restored}");
    let resumed = ok(&s.run(&["resume", "wf.b", "--from", &id(10)]));
    assert!(
        resumed.contains("wf.b") && !resumed.contains("wf.a"),
        "{resumed}"
    );
    assert_eq!(store.load("wf.a").unwrap().data["n"], 10);
    assert_eq!(store.load("wf.b").unwrap().data["n"], 200, "untouched");
    cps.remove("lg.src", &Removal::All).unwrap();
    let q = FindQuery {
        workflow: "lg.dst".into(),
        ..Default::default()
    };
    assert_eq!(find(&store, q), [id(2), id(1)]);
    ok(&s.run(&["health"]));
}
