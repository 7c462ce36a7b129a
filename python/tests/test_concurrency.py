"""Locks and concurrent writers, with real threads and real processes."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import wfstate


def python(code: str, *args: str) -> subprocess.Popen:
    """A child Python running `code` with the package importable."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_lock_is_held_inside_with_and_released_after(store):
    with store.lock("deploy", purpose="release 1.2") as lock:
        assert lock.held and not lock.shared
        (status,) = store.lock_status("deploy")
        assert status["state"] == "exclusive"
        assert status["records"][0]["purpose"] == "release 1.2"
    assert not lock.held
    assert store.lock_status("deploy")[0]["state"] == "free"
    lock.release()  # a second release does nothing


def test_shared_holders_coexist_and_exclude_an_exclusive_one(store, store_location):
    with store.lock("db", shared=True):
        other = wfstate.open(store_location)
        holder = threading.Thread(target=lambda: other.lock("db", shared=True, timeout=5).release())
        holder.start()
        holder.join(10)
        result = {}

        def exclusive():
            try:
                other.lock("db", timeout=0.2)
            except wfstate.LockTimeoutError as e:
                result["error"] = e

        waiter = threading.Thread(target=exclusive)
        waiter.start()
        waiter.join(10)
    error = result["error"]
    assert isinstance(error, TimeoutError) and error.exit_code == 5
    assert "db" in str(error)


def test_threads_waiting_on_one_lock_do_not_stop_the_others(store):
    store.set("wf", {"n": 0})
    order = []
    held = threading.Event()

    def holder():
        with store.lock("one"):
            held.set()
            time.sleep(0.5)
            order.append("holder done")

    def waiter():
        held.wait()
        with store.lock("one", timeout=10):
            order.append("waiter got it")

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for t in threads:
        t.start()
    held.wait()
    # While one thread sleeps holding the lock and another waits for it,
    # this thread keeps working: the waiter released the GIL.
    started = time.monotonic()
    for _ in range(20):
        store.update("wf", lambda d: d.update(n=d["n"] + 1))
    busy_for = time.monotonic() - started
    assert "holder done" not in order, f"the updates took {busy_for:.2f}s; the test needs them inside the hold"
    for t in threads:
        t.join(10)
    assert order == ["holder done", "waiter got it"]
    assert store.get("wf").data == {"n": 20}


def test_a_sigkilled_holder_frees_the_lock_for_a_waiter(store, store_location):
    child = python(
        """
        import sys, time, wfstate
        with wfstate.open(sys.argv[1]).lock("deploy"):
            print("held", flush=True)
            time.sleep(60)
        """,
        store_location,
    )
    try:
        assert child.stdout.readline().strip() == "held", child.stderr.read()
        with pytest.raises(wfstate.LockTimeoutError):
            store.lock("deploy", timeout=0.1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        with store.lock("deploy", timeout=5) as lock:
            assert lock.held
    finally:
        if child.poll() is None:
            child.kill()


def test_eight_processes_times_fifty_updates_end_at_exactly_four_hundred(store, store_location):
    store.set("counter", {"n": 0})
    children = [
        python(
            """
            import sys, wfstate
            store = wfstate.open(sys.argv[1])
            for _ in range(50):
                store.update("counter", lambda d: d.update(n=d["n"] + 1))
            print("done", flush=True)
            """,
            store_location,
        )
        for _ in range(8)
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and out.strip() == "done", err
    state = store.get("counter")
    assert state.data == {"n": 400}
    assert state.generation == 401
    assert store.audit_verify().entries == 401


def test_threads_of_one_process_share_a_store(store):
    store.set("counter", {"n": 0})

    def work():
        for _ in range(25):
            store.update("counter", lambda d: d.update(n=d["n"] + 1))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert store.get("counter").data == {"n": 100}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_fork_the_child_cannot_release_the_parents_lock(store, store_location):
    probe = """
        import sys, wfstate
        try:
            wfstate.open(sys.argv[1]).lock("deploy", timeout=0).release()
            print("free")
        except wfstate.LockTimeoutError:
            print("held")
        """

    def from_outside() -> str:
        child = python(probe, store_location)
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        return out.strip()

    with store.lock("deploy") as lock:
        pid = os.fork()
        if pid == 0:  # the child: leaving the block must not free the parent's lock
            try:
                lock.release()
                del lock
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert from_outside() == "held"
    assert from_outside() == "free"


def test_taking_exclusively_a_lock_this_thread_holds_shared_is_misuse(store):
    with store.lock("db", shared=True):
        with pytest.raises(wfstate.LockMisuseError) as caught:
            store.lock("db", timeout=1)
    assert caught.value.exit_code == 1 and caught.value.kind == "lock_misuse"
