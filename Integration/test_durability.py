"""Snapshots and power cuts: a snapshot that is listed after a crash is complete.

snapfs publishes commit and timer snapshots at once and makes them durable in batches
(one syncfs, then a marker naming the newest snapshot it covered); an explicit snapshot
is durable before the command returns. The power cut is simulated as xfstests does:
`xfs_io -x -c shutdown` (FS_IOC_GOINGDOWN without flushing) on the backing XFS loop
filesystem, then the daemon is killed, the filesystem remounted (its log replayed) and
snapfs mounted again; every snapshot still listed must open read-only, pass
integrity_check and hold its commit."""

import json
import os
import signal
import sqlite3
import subprocess

import pytest

from lib.common import EVERY_COMMIT, SNAPFS, wait_until
from lib.control import snapshot, status
from lib.loopfs import LoopFS

def listed(path):
    r = subprocess.run([SNAPFS, "list", "--json", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def connect(path, mode):
    c = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    assert c.execute(f"PRAGMA journal_mode={mode}").fetchone()[0] == mode
    c.execute("PRAGMA synchronous=FULL")
    return c


def rows(path):
    """(integrity_check, row count, max n) of a snapshot's database, opened read-only."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        check = c.execute("PRAGMA integrity_check").fetchone()[0]
        if not c.execute("SELECT 1 FROM sqlite_master WHERE name = 't'").fetchone():
            return check, -1, -1
        count, top = c.execute("SELECT count(*), coalesce(max(n), 0) FROM t").fetchone()
        return check, count, top
    finally:
        c.close()


def commit_rows(m, database, start, stop):
    c = connect(m.mnt / database, "wal" if database.startswith("wal") else "delete")
    c.execute("CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, pad BLOB)")
    for i in range(start, stop):
        c.execute("INSERT INTO t VALUES (?, randomblob(1500))", (i,))
    c.close()


def verify_all(mnt, final):
    """Every listed snapshot's databases open, are intact and hold a prefix of their
    commits, one more row per snapshot; returns the row counts per database, in snapshot
    order. A snapshot whose metadata was lost is checked by what its directory holds."""
    per_db = {}
    for d in listed(mnt):
        databases = [d["sqlite"]["database"]] if d.get("sqlite") else \
            [db for db in sorted(final) if (mnt / ".snapshots" / d["name"] / db).exists()]
        assert databases, f"snapshot {d['name']} holds no database: {d}"
        for database in databases:
            path = mnt / ".snapshots" / d["name"] / database
            try:
                check, count, top = rows(path)
            except sqlite3.DatabaseError as error:
                raise AssertionError(f"snapshot {d['name']} of {database} (listed): {error}") from None
            assert check == "ok", f"snapshot {d['name']} of {database}: {check}"
            assert count == top <= final[database], (d["name"], count, top)
            per_db.setdefault(database, []).append(count)
    for database, counts in per_db.items():
        assert counts == sorted(set(counts)), f"{database}: snapshots out of commit order: {counts}"
    return per_db


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.xfs
def test_every_snapshot_listed_after_a_power_cut_is_complete(workdir, make_mount):
    """100 DELETE-mode and 100 WAL commits (synchronous=FULL), a commit snapshot each,
    reflinks on XFS; the first half given time to be made durable, the second half cut
    off by the shutdown right after its last commit."""
    with LoopFS(workdir, "xfs") as loop:
        backing = loop.dir / "data"
        backing.mkdir()
        m = make_mount(options=["strategy=reflink", "keep_commits=0"], extra_args=EVERY_COMMIT, backing=backing)
        final = {"delete.db": 100, "wal.db": 100}
        commit_rows(m, "delete.db", 1, 51)
        commit_rows(m, "wal.db", 1, 51)
        # The batch delay (1 s by default) passes: the first half becomes durable.
        # (.get: so that a build without durability fails where it matters, after the cut.)
        assert wait_until(lambda: status(m.mnt).get("pending-durable", "0") == "0", timeout=10), status(m.mnt)
        first_half = {d["name"] for d in listed(m.mnt) if d.get("sqlite")}
        assert all(d.get("durable", True) for d in listed(m.mnt))
        commit_rows(m, "delete.db", 51, 101)
        commit_rows(m, "wal.db", 51, 101)
        before = verify_all(m.mnt, final)
        assert {db: counts[-100:] for db, counts in before.items()} == {db: list(range(1, 101)) for db in final}, \
            "a commit made no snapshot before the cut"

        # The power cut: the backing filesystem stops without writing anything more.
        r = subprocess.run(["xfs_io", "-x", "-c", "shutdown", str(loop.dir)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        os.kill(m.pid, signal.SIGKILL)
        assert wait_until(lambda: not m.alive(), timeout=10)
        m.pid = None
        subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)], capture_output=True)
        assert subprocess.run(["umount", str(loop.dir)], capture_output=True).returncode == 0
        r = subprocess.run(["mount", loop.device, str(loop.dir)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

        m2 = make_mount(options=["strategy=reflink", "keep_commits=0"], extra_args=EVERY_COMMIT, backing=backing)
        try:
            after = verify_all(m2.mnt, final)
            names = {d["name"] for d in listed(m2.mnt)}
            assert all(d.get("sqlite") for d in listed(m2.mnt)), "a listed snapshot lost its metadata"
            # What was durable before the cut is still there, in full.
            assert first_half <= names
            assert all(d["durable"] for d in listed(m2.mnt))
            assert status(m2.mnt)["pending-durable"] == "0"
            assert set(after) == set(final)
            if len(names) < sum(len(counts) for counts in before.values()):
                assert "not durable" in m2.log_file.read_text()
        finally:
            m2.stop()


def test_list_and_status_show_what_is_not_yet_durable(make_mount):
    """With a long batch delay, commit snapshots wait to be made durable, and list and
    status say so; an explicit snapshot makes everything durable before it returns, and
    so does a clean unmount."""
    m = make_mount(options=["durable_delay=1h"], extra_args=EVERY_COMMIT)
    commit_rows(m, "delete.db", 1, 4)
    pending = [d for d in listed(m.mnt) if d.get("sqlite")]
    assert len(pending) == 4 and not any(d["durable"] for d in pending)
    assert status(m.mnt)["pending-durable"] == "4"
    assert [d["durable"] for d in listed(m.backing)] == [False] * 4
    table = subprocess.run([SNAPFS, "list", str(m.mnt)], capture_output=True, text=True).stdout
    assert table.splitlines()[0].split()[-1] == "DURABLE"
    assert [line.split()[-1] for line in table.splitlines()[1:]] == ["no"] * 4

    name = snapshot(m.mnt, "now")
    assert status(m.mnt)["pending-durable"] == "0"
    assert all(d["durable"] for d in listed(m.mnt))
    assert (m.backing / ".snapshots/.meta/durable").read_text().split()[0] == name

    commit_rows(m, "delete.db", 4, 6)
    assert status(m.mnt)["pending-durable"] == "2"
    m.stop()
    assert all(d["durable"] for d in listed(m.backing))
    newest = max(d["name"] for d in listed(m.backing))
    assert (m.backing / ".snapshots/.meta/durable").read_text().split()[0] == newest


def test_a_store_without_a_durability_marker_keeps_its_snapshots(make_mount):
    """A store made by an earlier version (no marker): its snapshots count as durable."""
    m = make_mount()
    commit_rows(m, "delete.db", 1, 3)
    m.stop()
    names = [d["name"] for d in listed(m.backing)]
    (m.backing / ".snapshots/.meta/durable").unlink()
    assert [d["durable"] for d in listed(m.backing)] == [True] * len(names)
    m2 = make_mount()
    assert [d["name"] for d in listed(m2.mnt)] == names
    assert all(d["durable"] for d in listed(m2.mnt))
    assert "made by an earlier snapfs" in m2.log_file.read_text()
    assert (m2.backing / ".snapshots/.meta/durable").read_text().split()[0] == names[-1]
