"""Benchmark of wfstate.langgraph.WfstateSaver against LangGraph's own
savers, printed as one JSON object. Run it with `bash python/bench/langgraph`.

The same graph-shaped workload for every saver, in one run, on the disk of
--dir (and the local PostgreSQL server when --pg names it):

  lg_put_per_s        put() of a checkpoint with 3 channels of ~1 KiB each,
                      then put_writes() of 2 writes (~1 KiB) against it;
                      pairs per second, each one durable when it returns
  lg_get_latest_us    get_tuple() of the thread's latest checkpoint, median
  lg_list20_us_10k    list(limit=20) of a thread holding 10,000 checkpoints,
                      median

Savers: wfstate on its file store (fsync on every put), SqliteSaver with
its default settings (journal_mode=WAL, the synchronous mode it reports)
and with synchronous=FULL, and, with --pg, wfstate on PostgreSQL and
PostgresSaver on the same server. Ratios are against SqliteSaver (FULL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import sqlite3
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

import wfstate
from wfstate.langgraph import WfstateSaver

CHANNELS = {f"channel_{i}": "x" * 1000 for i in range(3)}
WRITES = [("messages", "y" * 500), ("route", "z" * 500)]


def checkpoint(step: int) -> dict[str, Any]:
    cp = empty_checkpoint()
    cp["id"] = str(uuid6(clock_seq=step))
    cp["channel_values"] = dict(CHANNELS, step=step)
    cp["channel_versions"] = {name: step + 1 for name in cp["channel_values"]}
    return cp


def put_steps(saver: BaseCheckpointSaver, thread: str, steps: int, with_writes: bool) -> float:
    """Puts `steps` checkpoints in a chain (and writes); returns seconds."""
    config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    started = time.perf_counter()
    for step in range(steps):
        cp = checkpoint(step)
        config = saver.put(config, cp, {"source": "loop", "step": step, "parents": {}}, cp["channel_versions"])
        if with_writes:
            saver.put_writes(config, WRITES, str(uuid.uuid4()))
    return time.perf_counter() - started


def median_us(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def measure(saver: BaseCheckpointSaver, puts: int, history: int) -> dict[str, float]:
    # Every saver starts with nothing of the others' (or the previous
    # run's) waiting to be written back: writeback of leftovers would be
    # charged to whoever syncs next.
    os.sync()
    seconds = put_steps(saver, "put", puts, with_writes=True)
    latest = {"configurable": {"thread_id": "put", "checkpoint_ns": ""}}
    assert saver.get_tuple(latest) is not None
    get_us = median_us(lambda: saver.get_tuple(latest), 500)
    put_steps(saver, "history", history, with_writes=False)
    many = {"configurable": {"thread_id": "history", "checkpoint_ns": ""}}
    assert len(list(saver.list(many, limit=20))) == 20
    list_us = median_us(lambda: list(saver.list(many, limit=20)), 50)
    return {"lg_put_per_s": puts / seconds, "lg_get_latest_us": get_us, "lg_list20_us_10k": list_us}


@contextlib.contextmanager
def sqlite_saver(path: pathlib.Path, synchronous: str | None) -> Iterator[tuple[BaseCheckpointSaver, str]]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    if synchronous:
        conn.execute(f"PRAGMA synchronous={synchronous}")
    mode = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[conn.execute("PRAGMA synchronous").fetchone()[0]]
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    try:
        yield saver, f"journal_mode={journal}, synchronous={mode}"
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=pathlib.Path)
    parser.add_argument("--puts", type=int, default=2000)
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--pg", help="a PostgreSQL URL: also run wfstate on it and PostgresSaver")
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    results: dict[str, Any] = {"puts": args.puts, "history": args.history}

    def record(name: str, figures: dict[str, float]) -> None:
        for key, value in figures.items():
            results[f"{name}_{key}"] = round(value, 1)

    record("wfstate_file", measure(WfstateSaver(wfstate.init(args.dir / "store")), args.puts, args.history))
    with sqlite_saver(args.dir / "default.sqlite", None) as (saver, mode):
        results["sqlite_default_mode"] = mode
        record("sqlite_default", measure(saver, args.puts, args.history))
    with sqlite_saver(args.dir / "full.sqlite", "FULL") as (saver, mode):
        results["sqlite_full_mode"] = mode
        record("sqlite_full", measure(saver, args.puts, args.history))
    if args.pg:
        from langgraph.checkpoint.postgres import PostgresSaver

        schema = f"lgbench_{int(time.time())}"
        separator = "&" if "?" in args.pg else "?"
        record(
            "wfstate_pg",
            measure(WfstateSaver(wfstate.init(f"{args.pg}{separator}options=-csearch_path%3D{schema}w")), args.puts, args.history),
        )
        with PostgresSaver.from_conn_string(f"{args.pg}{separator}options=-csearch_path%3D{schema}p") as saver:
            with saver.conn.cursor() as cur:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}p")
            saver.setup()
            record("postgres_saver", measure(saver, args.puts, args.history))

    for baseline in ("sqlite_full", "sqlite_default"):
        results[f"put_vs_{baseline}"] = round(
            results["wfstate_file_lg_put_per_s"] / results[f"{baseline}_lg_put_per_s"], 2
        )
        results[f"get_latest_vs_{baseline}"] = round(
            results["wfstate_file_lg_get_latest_us"] / results[f"{baseline}_lg_get_latest_us"], 2
        )
    if args.pg:
        results["pg_put_vs_postgres_saver"] = round(
            results["wfstate_pg_lg_put_per_s"] / results["postgres_saver_lg_put_per_s"], 2
        )
        results["pg_get_latest_vs_postgres_saver"] = round(
            results["wfstate_pg_lg_get_latest_us"] / results["postgres_saver_lg_get_latest_us"], 2
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
