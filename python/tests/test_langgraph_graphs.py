"""Real LangGraph graphs on WfstateSaver: SIGKILLed at random moments and
resumed, travelled back in time and forked, and run by two processes on
one store at once. Children are forked from the test process, so each
starts with LangGraph already imported and opens the store itself."""

import json
import operator
import os
import random
import signal
import time
import traceback
from typing import Annotated, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

import wfstate
from wfstate.langgraph import WfstateSaver, workflow_for

from conftest import tell
from test_langgraph import wfstate_cli

#: How many times the kill test SIGKILLs a running graph (at least 30).
KILLS = max(30, int(os.environ.get("WFSTATE_TEST_LANGGRAPH_KILLS", "30")))
NODES = 40


class Steps(TypedDict):
    steps: Annotated[list[str], operator.add]


def build(saver: WfstateSaver, nodes: int = NODES, pause: float = 0.002):
    graph = StateGraph(Steps)

    def node(name: str):
        def run(state: Steps) -> dict:
            time.sleep(pause)
            return {"steps": [name]}

        return run

    names = [f"n{i:02}" for i in range(nodes)]
    for name in names:
        graph.add_node(name, node(name))
    graph.add_edge(START, names[0])
    for a, b in zip(names, names[1:]):
        graph.add_edge(a, b)
    graph.add_edge(names[-1], END)
    return graph.compile(checkpointer=saver), names


def run_to_the_end(location: str, thread: str) -> list[str]:
    """Starts the thread's graph, or resumes it where it stopped."""
    saver = WfstateSaver(wfstate.open(location))
    graph, _ = build(saver)
    config = {"configurable": {"thread_id": thread}}
    first = saver.get_tuple(config) is None
    return graph.invoke({"steps": []} if first else None, config)["steps"]


def in_child(work) -> int:
    """Forks a child that runs `work()` and exits 0 (1 on an exception)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def test_a_graph_sigkilled_at_random_moments_resumes_with_every_step_once(store, store_location):
    rng = random.Random(os.environ.get("WFSTATE_TEST_SEED"))
    expected = [f"n{i:02}" for i in range(NODES)]
    # One whole run, unkilled, tells how long a run takes: kills land at
    # random moments within that span.
    started = time.monotonic()
    _, status = os.waitpid(in_child(lambda: run_to_the_end(store_location, "kill-timing")), 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child failed: {status}"
    span = time.monotonic() - started
    kills, finished, thread = 0, ["kill-timing"], 0
    while kills < KILLS:
        pid = in_child(lambda: run_to_the_end(store_location, f"kill-{thread}"))
        time.sleep(rng.uniform(0.0, span))
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status):
                kills += 1
                continue
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child failed: {status}"
        finished.append(f"kill-{thread}")
        thread += 1
    # Every thread, finished by a child or now, shows each step exactly once.
    final = run_to_the_end(store_location, f"kill-{thread}")
    assert final == expected
    for done_thread in finished:
        state = WfstateSaver(store).get_tuple({"configurable": {"thread_id": done_thread}})
        assert state.checkpoint["channel_values"]["steps"] == expected
    backend = "PostgreSQL" if store.location.startswith("postgres") else "file store"
    tell(f"LangGraph kill test ({backend}): {kills} SIGKILLs over {thread + 1} graph runs of {NODES} steps, every step once")
    report = store.health()
    assert report.status == "ok", report.components
    assert store.audit_verify().valid


def test_time_travel_forks_a_branch_that_wfstate_chain_shows(store, store_location):
    saver = WfstateSaver(store)
    graph, names = build(saver, nodes=4, pause=0)
    config = {"configurable": {"thread_id": "travel"}}
    assert graph.invoke({"steps": []}, config)["steps"] == names
    history = list(graph.get_state_history(config))
    assert len(history) == len(names) + 2  # input, start, one per node
    original_latest = history[0].config["configurable"]["checkpoint_id"]
    # Back to the checkpoint taken after the second node, and on from there.
    fork_point = next(s for s in history if s.values.get("steps") == names[:2])
    fork_id = fork_point.config["configurable"]["checkpoint_id"]
    result = graph.invoke(None, fork_point.config)
    assert result["steps"] == names
    latest = saver.get_tuple(config)
    new_latest = latest.config["configurable"]["checkpoint_id"]
    assert new_latest != original_latest
    # The new branch's lineage runs through the fork point, in wfstate too.
    chain = json.loads(wfstate_cli(store_location, "--json", "checkpoint", "chain", new_latest).stdout)
    links = [link["id"] for link in chain["links"]]
    assert fork_id in links and original_latest not in links
    old_branch = json.loads(wfstate_cli(store_location, "--json", "checkpoint", "chain", original_latest).stdout)
    assert fork_id in [link["id"] for link in old_branch["links"]], "the old branch is kept"
    listed = json.loads(
        wfstate_cli(store_location, "--json", "checkpoint", "list", workflow_for("travel"), "--limit", "100").stdout
    )
    # wfstate lists what LangGraph's history now shows: both branches.
    after = [s.config["configurable"]["checkpoint_id"] for s in graph.get_state_history(config)]
    assert len(after) > len(history)
    assert [row["id"] for row in listed] == after


def test_two_processes_run_different_threads_on_one_store_at_once(store, store_location):
    children = [in_child(lambda n=n: run_to_the_end(store_location, f"pair-{n}")) for n in range(2)]
    for pid in children:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    saver = WfstateSaver(store)
    for n in range(2):
        state = saver.get_tuple({"configurable": {"thread_id": f"pair-{n}"}})
        assert state.checkpoint["channel_values"]["steps"] == [f"n{i:02}" for i in range(NODES)]
    assert store.health().status == "ok"
    assert store.audit_verify().valid


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_async_methods_run_a_graph_too(store, kind):
    saver = WfstateSaver(store)
    graph, names = build(saver, nodes=3, pause=0)
    config = {"configurable": {"thread_id": f"mode-{kind}"}}
    if kind == "sync":
        assert graph.invoke({"steps": []}, config)["steps"] == names
    else:
        import asyncio

        assert asyncio.run(graph.ainvoke({"steps": []}, config))["steps"] == names
    assert len(list(saver.list(config))) == len(names) + 2
