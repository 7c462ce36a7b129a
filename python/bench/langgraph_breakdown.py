"""Where the time of the LangGraph benchmark's put and get goes: each call
timed on its own, for WfstateSaver and SqliteSaver (synchronous=FULL), in
one run on the folder given. Prints one JSON object.

    target/venv-bench/bin/python python/bench/langgraph_breakdown.py DIR

(`bash python/bench/langgraph` builds that venv.) The workload is
langgraph_bench.py's. For each saver: the median, p99 and sum of the `put`
and `put_writes` calls of 2,000 pairs, and the sum of the calls above the
95th percentile (wfstate's settles of its checkpoint journal land there);
then the median of 2,000 `get_tuple` calls of the latest checkpoint, and
for wfstate its parts: the native `find_checkpoints` call with and without
the pending writes, and the saver's decoding (`_tuple`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from langgraph_bench import WRITES, checkpoint, median_us  # noqa: E402

import wfstate  # noqa: E402
from wfstate.langgraph import WfstateSaver  # noqa: E402

PAIRS = 2000


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return {
        "median_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[int(0.99 * (len(ordered) - 1))] * 1e6, 1),
        "sum_ms": round(sum(ordered) * 1e3, 1),
        "sum_above_p95_ms": round(sum(s for s in ordered if s > p95) * 1e3, 1),
    }


def timed_pairs(saver: Any) -> dict[str, Any]:
    os.sync()
    config: dict[str, Any] = {"configurable": {"thread_id": "put", "checkpoint_ns": ""}}
    puts, writes = [], []
    started = time.perf_counter()
    for step in range(PAIRS):
        cp = checkpoint(step)
        a = time.perf_counter()
        config = saver.put(config, cp, {"source": "loop", "step": step, "parents": {}}, cp["channel_versions"])
        b = time.perf_counter()
        saver.put_writes(config, WRITES, str(uuid.uuid4()))
        writes.append(time.perf_counter() - b)
        puts.append(b - a)
    total = time.perf_counter() - started
    latest = {"configurable": {"thread_id": "put", "checkpoint_ns": ""}}
    return {
        "pairs_per_s": round(PAIRS / total),
        "put": summary(puts),
        "put_writes": summary(writes),
        "get_tuple_us": round(median_us(lambda: saver.get_tuple(latest), PAIRS), 1),
    }


def main() -> None:
    root = pathlib.Path(sys.argv[1])
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    results: dict[str, Any] = {}
    saver = WfstateSaver(wfstate.init(str(root / "store")))
    results["wfstate_file"] = timed_pairs(saver)
    find = saver.store.find_checkpoints
    row = find("lg.put", with_writes=True, recorded_only=True, limit=1)[0]
    results["wfstate_file"]["get_parts_us"] = {
        "native_find_with_writes": round(
            median_us(lambda: find("lg.put", with_writes=True, recorded_only=True, limit=1), PAIRS), 1
        ),
        "native_find_without_writes": round(
            median_us(lambda: find("lg.put", with_writes=False, recorded_only=True, limit=1), PAIRS), 1
        ),
        "saver_decoding": round(median_us(lambda: saver._tuple(row), PAIRS), 1),
    }
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(root / "full.sqlite", check_same_thread=False)
    sqlite_saver = SqliteSaver(conn)
    sqlite_saver.setup()
    conn.execute("PRAGMA synchronous=FULL")
    results["sqlite_full"] = timed_pairs(sqlite_saver)
    conn.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
