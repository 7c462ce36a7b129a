"""wfstate.langgraph.WfstateSaver against LangGraph's own conformance suite
(all 8 capabilities), on the file store and on PostgreSQL, and what it
adds: verified blobs, entries in wfstate's checkpoint and audit views."""

import asyncio
import json
import subprocess

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import Capability

import wfstate
from wfstate.langgraph import WfstateSaver, workflow_for

from conftest import tell
from test_state import cli


def test_langgraph_conformance_suite_passes_with_all_eight_capabilities(store: wfstate.Store):
    @checkpointer_test(name="WfstateSaver")
    async def saver():
        yield WfstateSaver(store)

    report = asyncio.run(validate(saver))
    backend = "PostgreSQL" if store.location.startswith("postgres") else "file store"
    checks = sum(r.tests_passed for r in report.results.values())
    failed = sum(r.tests_failed for r in report.results.values())
    passed = sorted(cap for cap, r in report.results.items() if r.passed)
    tell(f"LangGraph conformance ({backend}): {len(passed)} of 8 capabilities passed, {checks} checks, {failed} failed")
    assert set(report.results) == {c.value for c in Capability}
    for cap, result in report.results.items():
        assert result.detected, f"{cap} not detected"
        assert result.passed, f"{cap}: {result.failures}"
        assert result.tests_failed == 0 and result.tests_passed > 0


def _config(thread: str, ns: str = "", checkpoint_id: str | None = None) -> dict:
    configurable = {"thread_id": thread, "checkpoint_ns": ns}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _checkpoint(cid: str, values: dict) -> dict:
    return {
        "v": 1,
        "id": cid,
        "ts": "2026-12-03T00:00:00+00:00",
        "channel_values": values,
        "channel_versions": {k: 1 for k in values},
        "versions_seen": {},
        "updated_channels": None,
    }


def test_hostile_thread_ids_and_nested_namespaces_round_trip_exactly(store: wfstate.Store):
    saver = WfstateSaver(store)
    threads = ["t/../../etc", "", "ünïcödé thread", "a" * 500, "x.y", "-dash", "1"]
    namespaces = ["", "parent:1|child:2", "weird ns/..", "child:abc"]
    n = 0
    for thread in threads:
        for ns in namespaces:
            n += 1
            cid = f"1f0c5a00-0000-6000-8000-{n:012x}"
            saver.put(_config(thread, ns), _checkpoint(cid, {"v": thread + ns}), {"source": "loop", "step": n}, {})
            got = saver.get_tuple(_config(thread, ns))
            assert got is not None
            assert got.config["configurable"] == {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": cid}
            assert got.checkpoint["channel_values"] == {"v": thread + ns}
    # A thread's listing without a namespace covers all of its namespaces.
    assert len(list(saver.list({"configurable": {"thread_id": threads[0]}}))) == len(namespaces)
    saver.delete_thread(threads[0])
    assert saver.get_tuple(_config(threads[0])) is None
    assert saver.get_tuple(_config(threads[1])) is not None


def test_binary_channel_values_are_stored_byte_for_byte_and_verified(store: wfstate.Store, tmp_path):
    saver = WfstateSaver(store)
    blob = bytes(range(256)) * 4
    stored = saver.put(_config("bin"), _checkpoint("1f0c5a00-0000-6000-8000-000000000001", {"b": blob}), {}, {})
    saver.put_writes(stored, [("w", blob[::-1])], "task-1")
    got = saver.get_tuple(stored)
    assert got.checkpoint["channel_values"]["b"] == blob
    assert got.pending_writes == [("task-1", "w", blob[::-1])]
    if store.location.startswith("postgres"):
        return
    # Flip one base64 character of the stored blob: the read fails with
    # IntegrityError naming the file; it never returns other bytes.
    path = pathlib_of(store) / "checkpoints" / workflow_for("bin") / "1f0c5a00-0000-6000-8000-000000000001.json"
    text = path.read_text()
    doc = json.loads(text)
    encoded = doc["payload"]["channel_values"]["b"][1]
    flipped = ("B" if encoded[10] != "B" else "C").join([encoded[:10], encoded[11:]])
    path.write_text(text.replace(encoded, flipped))
    with pytest.raises(wfstate.IntegrityError, match="checksum"):
        saver.get_tuple(stored)


def pathlib_of(store: wfstate.Store):
    import pathlib

    return pathlib.Path(store._native.path)


def test_checkpoints_show_in_wfstate_views_with_audit_entries_and_health(store: wfstate.Store, store_location):
    saver = WfstateSaver(store)
    config = _config("visible")
    ids = [f"1f0c5a00-0000-6000-8000-{n:012x}" for n in range(1, 4)]
    for n, cid in enumerate(ids):
        config = saver.put(config, _checkpoint(cid, {"n": n}), {"source": "loop", "step": n}, {})
    workflow = workflow_for("visible")
    listed = json.loads(wfstate_cli(store_location, "--json", "checkpoint", "list", workflow).stdout)
    assert [row["id"] for row in listed] == ids[::-1]
    chain = json.loads(wfstate_cli(store_location, "--json", "checkpoint", "chain", ids[-1]).stdout)
    assert [link["id"] for link in chain["links"]] == ids[::-1]
    creates = store.audit_log(event="checkpoint_create")
    assert [e["data"]["id"] for e in creates] == ids
    assert store.health().status == "ok"
    assert wfstate_cli(store_location, "health").returncode == 0


def test_from_conn_string_creates_a_store_like_sqlite_saver(tmp_path):
    location = tmp_path / "lg-store"
    with WfstateSaver.from_conn_string(str(location)) as saver:
        saver.put(_config("t"), _checkpoint("1f0c5a00-0000-6000-8000-000000000001", {"a": 1}), {}, {})
    with WfstateSaver.from_conn_string(str(location)) as saver:
        assert saver.get_tuple(_config("t")).checkpoint["channel_values"] == {"a": 1}


def test_get_next_version_counts_up_from_ints_and_string_versions(store: wfstate.Store):
    saver = WfstateSaver(store)
    assert saver.get_next_version(None, None) == 1
    assert saver.get_next_version(7, None) == 8
    assert saver.get_next_version("00000000000000000000000000000041.123", None) == 42


def test_unknown_prune_strategy_is_a_value_error(store: wfstate.Store):
    with pytest.raises(ValueError, match="strategy"):
        WfstateSaver(store).prune(["t"], strategy="keep_some")


def wfstate_cli(location: str, *args: str) -> subprocess.CompletedProcess:
    binary = cli()
    if binary is None:
        pytest.skip("no wfstate binary (run cargo build first)")
    return subprocess.run([binary, "--store", location, *args], capture_output=True, text=True)


def test_checkpoints_of_a_thread_workflow_made_with_wfstate_tools_are_left_out(store: wfstate.Store):
    saver = WfstateSaver(store)
    stored = saver.put(_config("mixed"), _checkpoint("1f0c5a00-0000-6000-8000-000000000001", {"a": 1}), {}, {})
    store.set(workflow_for("mixed"), {"note": "by hand"})
    store.create_checkpoint(workflow_for("mixed"), message="by hand")
    assert saver.get_tuple(_config("mixed")).config == stored
    assert [t.config for t in saver.list(_config("mixed"))] == [stored]
    assert [t.config for t in saver.list(None)] == [stored]
    # Left out before the limit counts: the newest is the hand-made one.
    assert [t.config for t in saver.list(_config("mixed"), limit=1)] == [stored]
