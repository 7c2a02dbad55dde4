#!/usr/bin/env python3
"""The replication benchmark's SQLite writer (bench/replication.py runs it in a child
process): one 200-byte INSERT per BEGIN/COMMIT into table t of an existing database, paced
at RATE transactions per second for SECONDS seconds, journal_mode=WAL,
synchronous=NORMAL, busy_timeout 10 s (Litestream's recommended settings, and the same
for snapfs). Row k (k from FIRST) holds row_value(k). Writes to OUT, as JSON, `first` and
`times`: the wall-clock time (time.time()) at which each COMMIT returned.

    python3 bench/workers/sqlite_paced.py DB RATE SECONDS OUT
"""
import json
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for lib

from lib.databases import row_value  # noqa: E402


def main(db, rate, seconds, out):
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA busy_timeout=10000")
    if con.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
        raise SystemExit("journal_mode=WAL not accepted")
    con.execute("PRAGMA synchronous=NORMAL")
    first = (con.execute("SELECT max(id) FROM t").fetchone()[0] or 0) + 1
    times = []
    start = time.time()
    deadline = start + seconds
    k = 0
    while True:
        due = start + k / rate
        now = time.time()
        if due >= deadline:
            break
        if due > now:
            time.sleep(due - now)
        con.execute("BEGIN")
        con.execute("INSERT INTO t (id, v) VALUES (?, ?)", (first + k, row_value(first + k)))
        con.execute("COMMIT")
        times.append(time.time())
        k += 1
    con.close()
    Path(out).write_text(json.dumps({"first": first, "times": times}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
