"""SQLite through a mount: connections in a journal mode, and the commit snapshots."""

import sqlite3

from .control import metadata


def sqlite_snapshots(m, database):
    return [d for d in metadata(m) if d.get("sqlite") and d["sqlite"]["database"] == database]


def open_snapshot(path):
    """Read-only, as a user would open a file under .snapshots (no -wal, no -shm there)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def max_n(path, table="t"):
    c = open_snapshot(path)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        if table not in names:
            return None
        return c.execute(f"SELECT max(n) FROM {table}").fetchone()[0]
    finally:
        c.close()


def connect(path, mode, exclusive=False):
    c = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    if exclusive:
        c.execute("PRAGMA locking_mode=EXCLUSIVE")
    got = c.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]
    assert got == mode
    c.execute("PRAGMA synchronous=FULL")
    return c


def snapshot_path(m, d):
    return m.mnt / ".snapshots" / d["name"] / d["sqlite"]["database"]
