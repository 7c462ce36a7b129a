"""Benchmark of the wfstate Python package, printed as one JSON object.

Run it with `bash python/bench/run` (release builds of the package, the
library's bench worker and the CLI). Every figure comes from this run, on
the disk of --dir; the claims are the ratios between them:

  py_update_per_s       store.update() of a ~1 KiB document, one process
  rust_update_per_s     the library doing the same updates (wfstate-bench's
                        worker), in rounds alternating with the Python ones
  sqlite3_update_per_s  Python's sqlite3 doing the same locked read-modify-
                        write of a JSON row (WAL, synchronous=FULL)
  cli_update_per_s      `wfstate state update --incr` in a new process each
  py_get_us             store.get() of the same document, median of batches
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time

import wfstate

WORKFLOW = "bench"
# The library's updates (wfstate-bench's worker) go to a workflow of their
# own, so that each side compacts its own log at its own pace.
RUST_WORKFLOW = "bench-rust"
DOCUMENT = {"n": 0, "pad": "x" * 1000}


def increment(data: dict) -> None:
    data["n"] += 1


class SqliteBaseline:
    """The store a Python user would otherwise reach for: one row per
    workflow holding its JSON, read and written in one write transaction."""

    def __init__(self, path: pathlib.Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS states (workflow TEXT PRIMARY KEY, doc TEXT NOT NULL)")
        self.db.execute("INSERT OR REPLACE INTO states VALUES (?, ?)", (WORKFLOW, json.dumps(DOCUMENT)))

    def update(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        (doc,) = self.db.execute("SELECT doc FROM states WHERE workflow = ?", (WORKFLOW,)).fetchone()
        data = json.loads(doc)
        increment(data)
        self.db.execute("UPDATE states SET doc = ? WHERE workflow = ?", (json.dumps(data), WORKFLOW))
        self.db.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, type=pathlib.Path, help="a folder on the disk to measure")
    parser.add_argument("--bench-bin", required=True, help="the release wfstate-bench binary")
    parser.add_argument("--cli", required=True, help="the release wfstate binary")
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    store_path = args.dir / "store"
    store = wfstate.init(store_path)
    store.set(WORKFLOW, DOCUMENT)
    store.set(RUST_WORKFLOW, DOCUMENT)
    sqlite = SqliteBaseline(args.dir / "baseline.sqlite")
    per_round = args.updates // args.rounds

    # Steady state first, as wfstate-bench does: SQLite's WAL grows until
    # its first checkpoint; wfstate's log compacts every few hundred updates.
    for _ in range(1200):
        store.update(WORKFLOW, increment)
        store.update(RUST_WORKFLOW, increment)
        sqlite.update()

    rust = subprocess.Popen(
        [args.bench_bin, "--worker", "timed-updates", str(store_path), str(per_round), RUST_WORKFLOW],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ours = theirs = library = 0.0
    for _ in range(args.rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            store.update(WORKFLOW, increment)
        ours += time.perf_counter() - started
        rust.stdin.write("go\n")
        rust.stdin.flush()
        library += float(rust.stdout.readline())
        started = time.perf_counter()
        for _ in range(per_round):
            sqlite.update()
        theirs += time.perf_counter() - started
    rust.stdin.close()
    rust.wait()
    total = per_round * args.rounds

    cli_runs = 50
    started = time.perf_counter()
    for _ in range(cli_runs):
        subprocess.run(
            [args.cli, "--store", str(store_path), "state", "update", WORKFLOW, "--incr", "/n"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    cli_seconds = time.perf_counter() - started

    batches = []
    for _ in range(50):
        started = time.perf_counter()
        for _ in range(100):
            store.get(WORKFLOW)
        batches.append((time.perf_counter() - started) / 100 * 1e6)

    # Every update counted was made: the save, then each update.
    python_side = store.get(WORKFLOW)
    assert python_side.generation == 1 + 1200 + total + cli_runs, python_side
    rust_side = store.get(RUST_WORKFLOW)
    assert rust_side.generation == 1 + 1200 + total, rust_side

    figures = {
        "py_update_per_s": round(total / ours, 1),
        "rust_update_per_s": round(total / library, 1),
        "sqlite3_update_per_s": round(total / theirs, 1),
        "cli_update_per_s": round(cli_runs / cli_seconds, 1),
        "py_get_us": round(statistics.median(batches), 2),
        "document_bytes": len(json.dumps(DOCUMENT)),
        "updates": total,
        "python": sys.version.split()[0],
    }
    figures["py_vs_rust"] = round(figures["py_update_per_s"] / figures["rust_update_per_s"], 3)
    figures["py_vs_sqlite3"] = round(figures["py_update_per_s"] / figures["sqlite3_update_per_s"], 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    os.environ.pop("WFSTATE_STORE", None)
    main()
