"""Checkpoints, audit and health through the package."""

import json
import subprocess

import pytest

import wfstate


def test_create_list_show_chain_diff_restore(store, tmp_path):
    store.set("wf", {"phase": "plan", "n": 1})
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    first = store.create_checkpoint("wf", message="planned", decisions=["use rust"], files=[notes])
    assert (first.workflow, first.parent, first.message, first.phase) == ("wf", None, "planned", "plan")
    assert first.key_decisions == ["use rust"]
    assert first.files[0].path.endswith("notes.txt") and first.files[0].size == 5
    assert first.state == {"phase": "plan", "n": 1} and first.state_generation == 1
    assert first.context_summary  # derived from the state

    store.update("wf", lambda d: d.update(phase="build", n=2))
    second = store.create_checkpoint("wf", message="built", item="compile")
    assert second.parent == first.id
    rooted = store.create_checkpoint("wf", root=True)
    assert rooted.parent is None
    branch = store.create_checkpoint("wf", parent=first.id, summary="a branch")
    assert branch.parent == first.id and branch.context_summary == "a branch"

    listed = store.checkpoints()
    assert [c.id for c in listed] == [branch.id, rooted.id, second.id, first.id]
    assert [c.id for c in store.checkpoints(limit=2)] == [branch.id, rooted.id]
    assert [c.id for c in store.checkpoints(before=rooted.id)] == [second.id, first.id]
    assert [c.id for c in store.checkpoints(phase="plan", workflow="wf")] == [first.id]
    assert listed[2].item == "compile"

    assert store.checkpoint(second.id) == second
    assert [c.id for c in store.chain(second.id)] == [second.id, first.id]
    assert [c.id for c in store.chain(second.id, max_depth=1)] == [second.id]
    assert store.diff(first.id, second.id) == [
        {"op": "replace", "path": "/n", "value": 2},
        {"op": "replace", "path": "/phase", "value": "build"},
    ]

    restored = store.restore(first.id)
    assert restored.data == {"phase": "plan", "n": 1}
    assert restored.origin["restored_from_checkpoint"] == first.id
    assert restored.generation == 3


def test_an_id_two_workflows_share_needs_its_workflow_named(store):
    # A copied LangGraph thread keeps its checkpoint ids.
    a, b = "1f0c5a00-0000-6000-8000-00000000000a", "1f0c5a00-0000-6000-8000-00000000000b"
    for workflow in ("lg.src", "lg.dst"):
        store.record_checkpoint(workflow, {"step": 1}, {"step": 1}, id=a)
        store.record_checkpoint(workflow, {"step": 2}, {"step": 2}, id=b, parent=a)
    for call in (
        lambda: store.checkpoint(b),
        lambda: store.chain(b),
        lambda: store.diff(a, b),
        lambda: store.restore(b),
    ):
        with pytest.raises(wfstate.InvalidInputError, match="lg.dst, lg.src"):
            call()
    assert store.checkpoint(b, workflow="lg.dst").workflow == "lg.dst"
    assert [c.workflow for c in store.chain(b, workflow="lg.src")] == ["lg.src", "lg.src"]
    assert store.diff(a, b, workflow="lg.dst") == []  # recorded, so no state to compare
    with pytest.raises(wfstate.InvalidInputError, match='holds no state.*"lg.dst"'):
        store.restore(b, workflow="lg.dst")
    with pytest.raises(wfstate.NotFoundError, match="lg.none"):
        store.checkpoint(b, workflow="lg.none")


def test_prune_keeps_the_latest_and_says_what_it_removed(store):
    store.set("wf", {"n": 0})
    ids = [store.create_checkpoint("wf", message=str(i)).id for i in range(5)]
    with pytest.raises(wfstate.InvalidInputError):
        store.prune()  # no rule
    would = store.prune(keep_last=2, dry_run=True)
    assert [p["id"] for p in would] == ids[:3]
    assert len(store.checkpoints()) == 5
    pruned = store.prune(workflow="wf", keep_last=2)
    assert [p["id"] for p in pruned] == ids[:3]
    assert [c.id for c in store.checkpoints()] == ids[:2:-1]
    assert [p["id"] for p in store.prune(older_than_days=0)] == [ids[3]]
    with pytest.raises(wfstate.NotFoundError):
        store.checkpoint(ids[0])


def test_resume_prompt_names_the_checkpoint_and_what_to_run(store):
    store.set("wf", {"phase": "review"})
    cp = store.create_checkpoint("wf", message="ready for review", decisions=["ship friday"])
    prompt = store.resume_prompt("wf")
    assert cp.id in prompt and "ready for review" in prompt and "ship friday" in prompt
    assert store.resume_prompt() == prompt
    assert cp.id in store.resume_prompt(from_id=cp.id)
    with pytest.raises(wfstate.NotFoundError):
        store.resume_prompt("no-such-workflow")


def test_audit_log_and_verify(store):
    store.set("wf", {"n": 1})
    store.update("wf", lambda d: d.update(n=2))
    entries = store.audit_log()
    assert [e["event"] for e in entries] == ["state_save", "state_update"]
    assert store.audit_log(limit=1, event="state_save")[0]["data"]["generation"] == 1
    report = store.audit_verify()
    assert (report.entries, report.valid, report.keyed) == (2, True, False)


def test_an_edited_audit_entry_raises_integrity_error(store, store_path):
    store.set("wf", {"n": 1})
    store.update("wf", lambda d: d.update(n=2))
    log = store_path / "audit.jsonl"
    lines = log.read_text().splitlines()
    first = json.loads(lines[0])
    first["data"]["generation"] = 7
    lines[0] = json.dumps(first)
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(wfstate.IntegrityError) as caught:
        store.audit_verify()
    assert caught.value.exit_code == 3
    assert "line 1" in str(caught.value)


def test_health_reports(store):
    store.set("wf", {"n": 1})
    report = store.health()
    assert report.status == "ok" and report.exit_code == 0
    assert {c["name"] for c in report.components} >= {"states", "checkpoints", "audit"}
    assert report.to_dict()["status"] == "ok"
    assert "HealthReport(status='ok'" in repr(report)


def test_health_repair_quarantines_a_damaged_state(store, store_path):
    store.set("wf", {"n": 1})
    state = store_path / "state" / "wf.json"
    state.write_bytes(state.read_bytes().replace(b'"n": 1', b'"n": 5'))
    damaged = store.health()
    assert damaged.status == "error" and damaged.exit_code == 3
    repaired = store.health(repair=True)
    assert repaired.repairs and not state.exists()
    assert repaired.status != "error"


def test_checkpoint_dicts_hold_what_the_cli_shows(store, store_location, tmp_path):
    # The native layer builds checkpoint dicts field by field (for speed):
    # they must stay what the library serializes, which the CLI prints.
    from test_state import cli

    binary = cli()
    if binary is None:
        pytest.skip("no wfstate binary (run cargo build first)")
    store.set("wf", {"phase": "build", "n": 1})
    (tmp_path / "f.txt").write_text("x")
    made = store.create_checkpoint("wf", message="m", decisions=["d"], files=[tmp_path / "f.txt"])
    recorded = store.record_checkpoint(
        "lg.t", {"any": ["payload", 1]}, {"source": "loop"}, id="1f0c5a00-0000-6000-8000-000000000001"
    )
    for cid in (made.id, recorded["id"]):
        shown = subprocess.run(
            [binary, "--store", store_location, "--json", "checkpoint", "show", cid], capture_output=True, text=True
        )
        assert shown.returncode == 0, shown.stderr
        assert store._native.checkpoint(cid) == json.loads(shown.stdout)
