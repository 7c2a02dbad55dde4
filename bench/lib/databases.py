"""The SQLite databases the SQLite benchmarks (sqlite_commits.py, clone_cost.py) start from."""

import os
import sqlite3


def row_value(i):
    """What row i (from 1) of table t holds: a snapshot's rows can be checked to be a prefix
    of what was committed."""
    return f"{i:09d}".ljust(200, "x")


def make_database(path, megabytes):
    """A database of about `megabytes` MB: an empty table t(id, v) and a table of blobs."""
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    c.execute("CREATE TABLE fill (b BLOB)")
    blob = os.urandom(64 << 10)
    for _ in range(megabytes * 16):
        c.execute("INSERT INTO fill VALUES (?)", (blob,))
    c.commit()
    c.close()
