"""Two processes writing to one SQLite file (what ``huiliu serve --workers 2`` does): taking turns through SQLite's
busy handler, or through a ``flock`` before ``BEGIN IMMEDIATE`` as the SQLite store does.

Run on demand (never in CI):
    .venv/bin/python bench/sqlite_writers.py [--transactions 1500] [--rounds 3]

Each writer runs small transactions (one row, a short pause inside the transaction standing for the store
thread's work, a shorter one between transactions standing for the time until its next batch), in the store's
settings (WAL, synchronous=NORMAL, busy_timeout 10 s). A writer that finds the file locked sleeps in SQLite's busy
handler (1, 2, 5, 10 ... ms) before it polls again; one waiting on ``flock`` is woken as the other lets go.
Prints transactions/s of both writers together and CPU per transaction, both ways, alternating.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import sqlite3
import tempfile
import time
from pathlib import Path

INSIDE_S = 0.0002  # in the transaction: the store thread's Python between statements
BETWEEN_S = 0.0003  # between transactions: until the next batch is queued


def _writer(path: str, transactions: int, use_flock: bool, results: multiprocessing.Queue[tuple[float, float]]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=10000")
    lock = os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(transactions):
        if use_flock:
            fcntl.flock(lock, fcntl.LOCK_EX)
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (v) VALUES (?)", ("x" * 500,))
        time.sleep(INSIDE_S)
        db.execute("COMMIT")
        if use_flock:
            fcntl.flock(lock, fcntl.LOCK_UN)
        time.sleep(BETWEEN_S)
    results.put((time.perf_counter() - started, time.process_time() - cpu))


def _run(directory: Path, transactions: int, use_flock: bool) -> dict[str, float]:
    path = str(directory / f"writers-{use_flock}-{time.monotonic_ns()}.sqlite3")
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    db.commit()
    db.close()
    results: multiprocessing.Queue[tuple[float, float]] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_writer, args=(path, transactions, use_flock, results)) for _ in range(2)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    wall = time.perf_counter() - started
    cpu = sum(results.get()[1] for _ in procs)
    return {
        "transactions_per_s": round(2 * transactions / wall),
        "cpu_ms_per_transaction": round(cpu * 1000 / (2 * transactions), 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, default=1500, help="per writer")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for use_flock in (False, True):
                way = "flock" if use_flock else "busy_handler"
                runs.append({"round": round_, "way": way, **_run(Path(tmp), args.transactions, use_flock)})
                print(json.dumps(runs[-1]), flush=True)


if __name__ == "__main__":
    main()
