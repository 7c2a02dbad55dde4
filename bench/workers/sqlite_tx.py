#!/usr/bin/env python3
"""The sqlite-delete and sqlite-wal workloads' worker (bench/run.py runs it in a child
process, so that a hung mount can be timed out): one 200-byte INSERT per BEGIN/COMMIT in
journal mode MODE, synchronous=FULL, up to COUNT transactions or SECONDS seconds; prints
{"tx", "seconds", "requests"} as JSON.

    python3 bench/workers/sqlite_tx.py DB MODE COUNT SECONDS CONTROL   # CONTROL: a control file, or -
"""
import json
import os
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for lib

from lib.request_counts import counted_since, read_counters  # noqa: E402


def sqlite_worker(db, mode, count, seconds, control):
    """Runs in a child process (so that a hung mount can be timed out)."""
    import sqlite3
    con = sqlite3.connect(db, isolation_level=None)
    got = con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]
    if got.lower() != mode:
        raise SystemExit(f"journal_mode={mode} not accepted (got {got})")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    rows = [os.urandom(100).hex() for _ in range(64)]  # 200 bytes each

    def tx(i):
        con.execute("BEGIN")
        con.execute("INSERT INTO t (v) VALUES (?)", (rows[i % 64],))
        con.execute("COMMIT")

    for i in range(10):
        tx(i)
    before = read_counters(control)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while n < count:
        tx(n)
        n += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    requests = counted_since(control, before)
    total = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()
    if total != n + 10:
        raise SystemExit(f"expected {n + 10} rows, found {total}")
    print(json.dumps({"tx": n, "seconds": elapsed, "requests": requests}))


if __name__ == "__main__":
    db, mode, count, seconds, control = sys.argv[1:6]
    sqlite_worker(db, mode, int(count), float(seconds), control)
