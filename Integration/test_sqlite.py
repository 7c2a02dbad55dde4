"""SQLite commits trigger snapshots, through a real mount, driven by python3's sqlite3
module and the sqlite3 command-line tool. What is checked, in every journal mode that
leaves a trace on disk (DELETE, TRUNCATE, PERSIST, WAL, each also with
locking_mode=EXCLUSIVE): every commit gives one snapshot, which opens with a plain
read-only sqlite3 (no -wal, no -shm), passes integrity_check and holds exactly the
transactions committed up to it; rollbacks, failed statements and a writer killed
mid-transaction give none; two writers, a long reader during checkpoints, a 100 MB
transaction, schema changes and VACUUM; files that only look like journals or WALs;
the policy options (detect, min interval with a last snapshot, globs, tree scope); the
default policy (auto: a burst on hard links makes far fewer snapshots than commits and ends
on the final state; slow commits on XFS each get one); the reflink strategy on an XFS image;
WAL files in the kernel's cache (snapshotted while open with synchronous=NORMAL, every
commit counted, checkpoints without syncs kept exact). Tests of what each commit's
snapshot holds mount with a snapshot at every commit."""

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from lib.common import EVERY_COMMIT, SNAPFS, wait_until
from lib.control import metadata, snapshot, status
from lib.loopfs import LoopFS
from lib.sqlite import connect, max_n, open_snapshot, snapshot_path, sqlite_snapshots

ROLLBACK_MODES = ["delete", "truncate", "persist"]
MODES = ROLLBACK_MODES + ["wal"]


# ---------------------------------------------------------------- helpers

def cli(path, sql):
    """The sqlite3 command-line tool, read-only."""
    r = subprocess.run(["sqlite3", "-readonly", str(path), sql], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


# ---------------------------------------------------------------- every mode

@pytest.mark.parametrize("exclusive", [False, True], ids=["normal", "exclusive"])
@pytest.mark.parametrize("mode", MODES)
def test_each_commit_is_one_exact_snapshot(make_mount, mode, exclusive):
    m = make_mount(extra_args=EVERY_COMMIT)
    (m.mnt / "data").mkdir()
    db = m.mnt / "data" / "app.db"
    c = connect(db, mode, exclusive)
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    base = len(sqlite_snapshots(m, "data/app.db"))
    assert base >= 1, "the CREATE TABLE commit made no snapshot"
    n_tx = 12
    for i in range(1, n_tx + 1):
        c.execute("BEGIN")
        c.execute("INSERT INTO t VALUES (?, randomblob(200))", (i,))
        c.execute("COMMIT")
        snaps = sqlite_snapshots(m, "data/app.db")
        assert len(snaps) == base + i, f"commit {i}: {len(snaps) - base} snapshots"
        newest = snaps[-1]
        assert newest["scope"] == "files" and newest["paths"] == ["data/app.db"]
        # With locking_mode=EXCLUSIVE, DELETE mode ends a transaction as PERSIST does.
        assert newest["sqlite"]["journalMode"] == ("persist" if exclusive and mode == "delete" else mode)
        assert max_n(snapshot_path(m, newest)) == i
        # A rollback and a failing statement in between make no snapshot.
        c.execute("BEGIN")
        c.execute("INSERT INTO t VALUES (?, 'never')", (1000 + i,))
        c.execute("ROLLBACK")
        with pytest.raises(sqlite3.IntegrityError):
            c.execute("INSERT INTO t VALUES (?, 'duplicate')", (i,))
        assert len(sqlite_snapshots(m, "data/app.db")) == base + i
    c.close()
    # Every snapshot holds exactly the transactions up to its own commit.
    snaps = sqlite_snapshots(m, "data/app.db")[base:base + n_tx]
    for i, d in enumerate(snaps, start=1):
        p = snapshot_path(m, d)
        assert max_n(p) == i
        assert cli(p, "SELECT count(*) FROM t WHERE pad = 'never'") == "0"
        assert not any(p.parent.glob("app.db-*")), "a journal or WAL was taken into the snapshot"
    assert m.alive()
    assert status(m.mnt)["sqlite-failures"] == "0"


def test_plain_sqlite3_cli_opens_a_wal_snapshot(make_mount):
    m = make_mount(extra_args=EVERY_COMMIT)
    db = m.mnt / "w.db"
    subprocess.run(["sqlite3", str(db), "PRAGMA journal_mode=WAL; CREATE TABLE t(n); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);"],
                   check=True, capture_output=True)
    snaps = sqlite_snapshots(m, "w.db")
    newest = m.mnt / ".snapshots" / snaps[-1]["name"] / "w.db"
    r = subprocess.run(["sqlite3", str(newest), "SELECT max(n) FROM t; PRAGMA integrity_check; PRAGMA journal_mode;"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "ok", "delete"]
    assert not (newest.parent / "w.db-shm").exists()


# ---------------------------------------------------------------- concurrency and failures

WRITER = r"""
import sqlite3, sys, time
db, mode, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = sqlite3.connect(db, isolation_level=None, timeout=60)
c.execute("PRAGMA journal_mode=" + mode)
for i in range(first, first + count):
    for attempt in range(200):
        try:
            c.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError:
            time.sleep(0.01)
    c.execute("INSERT INTO t(n, who) VALUES (?, ?)", (i, first))
    c.execute("COMMIT")
"""


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_two_processes_writing_one_database(make_mount, mode):
    m = make_mount(extra_args=EVERY_COMMIT)
    db = m.mnt / "shared.db"
    c = connect(db, mode)
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, who INTEGER)")
    c.close()
    before = len(sqlite_snapshots(m, "shared.db"))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), mode, str(first), "40"])
             for first in (1, 1001)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    snaps = sqlite_snapshots(m, "shared.db")[before:]
    assert len(snaps) == 80
    counts = []
    for d in snaps:
        conn = open_snapshot(snapshot_path(m, d))
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts.append(conn.execute("SELECT count(*) FROM t").fetchone()[0])
        conn.close()
    # Each snapshot holds one more committed row than the one before.
    assert counts == list(range(1, 81))


def test_long_reader_during_checkpoints(make_mount):
    m = make_mount(extra_args=EVERY_COMMIT)
    db = m.mnt / "r.db"
    w = connect(db, "wal")
    w.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    w.execute("INSERT INTO t VALUES (1, randomblob(1000))")
    reader = sqlite3.connect(str(db), isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT max(n) FROM t").fetchone()[0] == 1
    for i in range(2, 60):
        w.execute("INSERT INTO t VALUES (?, randomblob(1000))", (i,))
        if i % 10 == 0:
            w.execute("PRAGMA wal_checkpoint(PASSIVE)")
    assert reader.execute("SELECT max(n) FROM t").fetchone()[0] == 1
    reader.execute("COMMIT")
    reader.close()
    for kind in ("FULL", "RESTART", "TRUNCATE"):
        w.execute(f"PRAGMA wal_checkpoint({kind})")
        i += 1
        w.execute("INSERT INTO t VALUES (?, randomblob(1000))", (i,))
        newest = sqlite_snapshots(m, "r.db")[-1]
        assert max_n(snapshot_path(m, newest)) == i, kind
    w.close()
    for d in sqlite_snapshots(m, "r.db")[2:]:
        assert max_n(snapshot_path(m, d)) is not None


KILLED = r"""
import sqlite3, sys, os
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=" + sys.argv[2])
c.execute("PRAGMA cache_size=10")          # spill uncommitted pages into the file
c.execute("BEGIN")
for i in range(2000):
    c.execute("INSERT INTO t VALUES (?, randomblob(2000))", (100000 + i,))
print("ready", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("mode", MODES)
def test_writer_killed_mid_transaction(make_mount, mode):
    m = make_mount(extra_args=EVERY_COMMIT)
    db = m.mnt / "k.db"
    c = connect(db, mode)
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    c.execute("INSERT INTO t VALUES (1, 'x')")
    c.close()
    before = len(sqlite_snapshots(m, "k.db"))
    p = subprocess.Popen([sys.executable, "-c", KILLED, str(db), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert len(sqlite_snapshots(m, "k.db")) == before, "uncommitted data was snapshotted"
    # The next connection recovers (rolls back) and commits; that commit is snapshotted.
    c = connect(db, mode)
    c.execute("INSERT INTO t VALUES (2, 'y')")
    c.close()
    newest = sqlite_snapshots(m, "k.db")[-1]
    p = snapshot_path(m, newest)
    assert max_n(p) == 2
    assert cli(p, "SELECT count(*) FROM t WHERE n >= 100000") == "0"


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_large_transaction(make_mount, mode):
    m = make_mount(extra_args=EVERY_COMMIT)
    db = m.mnt / "big.db"
    c = connect(db, mode)
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    before = len(sqlite_snapshots(m, "big.db"))
    c.execute("BEGIN")
    for i in range(1, 1601):
        c.execute("INSERT INTO t VALUES (?, randomblob(65536))", (i,))
    c.execute("COMMIT")
    snaps = sqlite_snapshots(m, "big.db")
    assert len(snaps) == before + 1
    p = snapshot_path(m, snaps[-1])
    assert os.path.getsize(p) > 100 << 20
    assert max_n(p) == 1600
    c.close()


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_schema_changes_and_vacuum(make_mount, mode):
    m = make_mount(extra_args=EVERY_COMMIT)
    db = m.mnt / "s.db"
    c = connect(db, mode)
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    c.executemany("INSERT INTO t VALUES (?, randomblob(3000))", [(i,) for i in range(1, 200)])
    c.execute("DELETE FROM t WHERE n > 10")
    c.execute("ALTER TABLE t ADD COLUMN extra TEXT")
    c.execute("CREATE INDEX ti ON t(extra)")
    c.execute("VACUUM")
    c.execute("INSERT INTO t(n, extra) VALUES (500, 'after vacuum')")
    c.execute(f"VACUUM INTO '{m.mnt / 'copy.db'}'")
    c.close()
    newest = sqlite_snapshots(m, "s.db")[-1]
    p = snapshot_path(m, newest)
    assert max_n(p) == 500
    assert cli(p, "SELECT count(*) FROM t") == "11"
    assert cli(p, "SELECT extra FROM t WHERE n = 500") == "after vacuum"
    assert cli(m.mnt / "copy.db", "SELECT count(*) FROM t") == "11"


def test_page_size_and_mode_switches(make_mount):
    m = make_mount(extra_args=EVERY_COMMIT)
    db = m.mnt / "p.db"
    c = sqlite3.connect(str(db), isolation_level=None)
    c.execute("PRAGMA page_size=65536")
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY)")
    n = 0
    for mode in ["wal", "delete", "persist", "wal", "truncate"]:
        assert c.execute(f"PRAGMA journal_mode={mode}").fetchone()[0] == mode
        n += 1
        c.execute("INSERT INTO t VALUES (?)", (n,))
        newest = sqlite_snapshots(m, "p.db")[-1]
        # With locking_mode=EXCLUSIVE, DELETE mode ends a transaction as PERSIST does.
        assert newest["sqlite"]["journalMode"] == mode
        assert max_n(snapshot_path(m, newest)) == n, mode
    c.close()


# ---------------------------------------------------------------- journals the kernel writes

@pytest.mark.parametrize("synchronous", ["OFF", "FULL"])
@pytest.mark.parametrize("switch", ["exclusive", "persist", "truncate"])
def test_a_journal_the_kernel_writes_still_ends_seen(make_mount, switch, synchronous):
    """Once a database's journal ended by its removal (DELETE mode), its next journals are
    written by the kernel straight to the backing file (FUSE passthrough). A connection
    that then ends its journals another way (locking_mode=EXCLUSIVE or PERSIST zero the
    header, which the daemon no longer sees; TRUNCATE truncates it) still gets exactly
    one snapshot per commit, holding that commit, also with synchronous=OFF (no fsync).
    Passthrough needs a mount without the kernel's write-back cache."""
    m = make_mount(options=["no_writeback_cache"], extra_args=EVERY_COMMIT)
    db = m.mnt / "k.db"
    c = sqlite3.connect(str(db), isolation_level=None)
    c.execute(f"PRAGMA synchronous={synchronous}")
    assert c.execute("PRAGMA journal_mode=delete").fetchone()[0] == "delete"
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    n = 0
    for _ in range(3):
        n += 1
        c.execute("INSERT INTO t VALUES (?, randomblob(300))", (n,))
    assert int(status(m.mnt)["sqlite-journals-passed-through"]) >= 3, "DELETE-mode journals did not pass through"
    if switch == "exclusive":
        c.execute("PRAGMA locking_mode=EXCLUSIVE")
    else:
        assert c.execute(f"PRAGMA journal_mode={switch}").fetchone()[0] == switch
    for _ in range(10):
        n += 1
        c.execute("BEGIN")
        c.execute("INSERT INTO t VALUES (?, randomblob(300))", (n,))
        c.execute("COMMIT")
        c.execute("BEGIN")
        c.execute("INSERT INTO t VALUES (?, 'never')", (10_000 + n,))
        c.execute("ROLLBACK")
    c.close()
    snaps = sqlite_snapshots(m, "k.db")
    got = [max_n(snapshot_path(m, d)) for d in snaps]
    assert got == [None] + list(range(1, n + 1)), got
    for d in snaps[1:]:
        assert cli(snapshot_path(m, d), "SELECT count(*) FROM t WHERE pad = 'never'") == "0"
    assert status(m.mnt)["sqlite-failures"] == "0"
    assert m.alive()


@pytest.mark.parametrize("options", [(), ("no_writeback_cache",)], ids=["kernel-cache", "journal-passthrough"])
def test_a_tree_snapshot_taken_mid_transaction_holds_the_last_commit(make_mount, users, options):
    """A snapshot of the tree taken mid-transaction (pages spilled into the database, a hot
    journal beside it that the kernel writes) holds the database as of the last commit, with
    no journal: snapfs played the journal back into the snapshot's own copy. It opens
    read-only for any user, and neither the live database nor the rest of the transaction
    changes it."""
    m = make_mount(options=options, extra_args=EVERY_COMMIT)
    os.chmod(m.mnt, 0o755)
    db = m.mnt / "j.db"
    c = sqlite3.connect(str(db), isolation_level=None)
    c.execute("PRAGMA journal_mode=delete")
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    c.execute("INSERT INTO t VALUES (1, randomblob(300))")
    os.chmod(db, 0o644)
    c.execute("PRAGMA cache_size=2")   # spill pages into the database before COMMIT
    c.execute("BEGIN")
    for i in range(2, 400):
        c.execute("INSERT INTO t VALUES (?, randomblob(3000))", (i,))
    journal = m.backing / "j.db-journal"
    assert journal.exists()
    if options:
        assert int(status(m.mnt)["sqlite-journals-passed-through"]) >= 1
    try:
        name = snapshot(m.mnt, "mid", force=True)
    finally:
        for i in range(400, 600):
            c.execute("INSERT INTO t VALUES (?, randomblob(3000))", (i,))
        c.execute("COMMIT")
        c.close()
    snap = m.backing / ".snapshots" / name
    assert not (snap / "j.db-journal").exists()
    assert os.stat(snap / "j.db").st_ino != os.stat(m.backing / "j.db").st_ino
    frozen = (snap / "j.db").read_bytes()
    r = users.alice.run(["sqlite3", f"file:{m.mnt}/.snapshots/{name}/j.db?mode=ro",
                         "PRAGMA integrity_check; SELECT max(n) FROM t;"])
    assert r.returncode == 0 and r.stdout.split() == ["ok", "1"], (r.stdout, r.stderr)
    assert (snap / "j.db").read_bytes() == frozen
    assert max_n(db) == 599


# ---------------------------------------------------------------- hostile files

def test_files_that_only_look_like_journals(make_mount):
    m = make_mount(extra_args=EVERY_COMMIT)
    rng = random.Random(5)
    magic = bytes.fromhex("d9d505f920a163d7")
    wal_magic = bytes.fromhex("377f0682002dd8c0")
    (m.mnt / "plain").write_bytes(b"not a database at all")
    cases = {
        "plain-journal": magic + rng.randbytes(600),
        "nothing-journal": magic,
        "random-journal": rng.randbytes(4096),
        "plain-wal": wal_magic + rng.randbytes(8000),
        "short-wal": wal_magic[:5],
    }
    for name, data in cases.items():
        path = m.mnt / name
        path.write_bytes(data)
        with open(path, "r+b") as f:
            f.write(b"\0" * 28)          # looks like PERSIST's commit
        os.truncate(path, 0)             # looks like TRUNCATE's commit
        path.write_bytes(data)
        path.unlink()                    # looks like DELETE's commit
    # A real database next to garbage that claims to be its WAL, with random writes.
    subprocess.run(["sqlite3", str(m.mnt / "real.db"), "CREATE TABLE t(n); INSERT INTO t VALUES (1);"], check=True)
    before = len(metadata(m))
    fd = os.open(m.mnt / "real.db-wal", os.O_RDWR | os.O_CREAT, 0o644)
    header = bytearray(rng.randbytes(32))
    header[0:8] = wal_magic
    os.pwrite(fd, bytes(header), 0)
    for _ in range(300):
        off = rng.randrange(0, 200000)
        os.pwrite(fd, rng.randbytes(rng.choice([24, 4096, 4120, 7])), off)
    # A hostile frame header: a commit flag and a huge page number.
    os.pwrite(fd, (0xFFFFFFFF).to_bytes(4, "big") + (1).to_bytes(4, "big") + rng.randbytes(16), 32)
    os.close(fd)
    os.unlink(m.mnt / "real.db-wal")
    assert len(metadata(m)) == before, "a fake journal or WAL triggered a snapshot"
    assert m.alive()
    assert (m.backing / "plain").read_bytes() == b"not a database at all"
    assert status(m.mnt)["sqlite-failures"] == "0"


@pytest.mark.parametrize("kernel_writeback", [False, True])
def test_journal_and_wal_names_work_like_any_file(make_mount, kernel_writeback):
    # snapfs opens -journal and -wal files with direct I/O; a program that is not SQLite
    # must still be able to map them (shared and private), append and read back.
    import mmap
    m = make_mount(extra_args=EVERY_COMMIT, options=[] if kernel_writeback else ["no_writeback_cache"])
    for name in ["notes-journal", "notes-wal"]:
        path = m.mnt / name
        path.write_bytes(b"a" * 8192)
        fd = os.open(path, os.O_RDWR)
        try:
            shared = mmap.mmap(fd, 8192, mmap.MAP_SHARED)
            shared[0:5] = b"hello"
            shared.flush()
            assert os.pread(fd, 5, 0) == b"hello"
            os.pwrite(fd, b"WORLD", 100)
            assert shared[100:105] == b"WORLD"
            private = mmap.mmap(fd, 8192, mmap.MAP_PRIVATE)
            private[200:203] = b"xyz"
            assert os.pread(fd, 3, 200) == b"aaa"
            private.close()
            shared.close()
        finally:
            os.close(fd)
        with open(path, "ab") as f:
            f.write(b"tail")
        data = (m.backing / name).read_bytes()
        assert data[:5] == b"hello" and data[100:105] == b"WORLD" and data.endswith(b"tail")
        assert len(data) == 8196 and os.stat(path).st_size == 8196
    assert m.alive()


# ---------------------------------------------------------------- policy

def test_detect_only_counts(make_mount):
    m = make_mount(extra_args=["--sqlite", "detect"])
    subprocess.run(["sqlite3", str(m.mnt / "d.db"), "CREATE TABLE t(n); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);"], check=True)
    st = status(m.mnt)
    assert st["sqlite"] == "detect"
    assert int(st["sqlite-commits"]) == 3
    assert metadata(m) == []


def test_off_takes_nothing(make_mount):
    m = make_mount(options=["sqlite=off"])
    subprocess.run(["sqlite3", str(m.mnt / "d.db"), "CREATE TABLE t(n); INSERT INTO t VALUES (1);"], check=True)
    assert status(m.mnt)["sqlite"] == "off"
    assert metadata(m) == []


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_min_interval_keeps_commit_boundaries_and_the_final_state(make_mount, mode):
    m = make_mount(extra_args=["--sqlite-min-interval", "1s"])
    db = m.mnt / "i.db"
    c = connect(db, mode)
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY)")
    started = time.time()
    i = 0
    while time.time() - started < 2.5:
        i += 1
        c.execute("INSERT INTO t VALUES (?)", (i,))
        time.sleep(0.005)
    time.sleep(1.6)   # quiet: the last snapshot of the final state follows the interval
    snaps = sqlite_snapshots(m, "i.db")
    assert 2 <= len(snaps) <= 6, len(snaps)
    values = [max_n(snapshot_path(m, d)) for d in snaps]
    assert values[-1] == i, "no snapshot of the final state"
    assert values == sorted(values, key=lambda v: -1 if v is None else v)
    c.close()
    assert int(status(m.mnt)["sqlite-deferred"]) > 0


def committed_rows(path):
    """A snapshot's values of `t.n` in order (None before `t` was made), after checking
    that it opens read-only and is whole."""
    c = open_snapshot(path)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        if not c.execute("SELECT 1 FROM sqlite_master WHERE name = 't'").fetchone():
            return None
        return [r[0] for r in c.execute("SELECT n FROM t ORDER BY n")]
    finally:
        c.close()


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_the_default_policy_paces_hard_link_snapshots_and_keeps_the_final_state(make_mount, mode):
    """The default mount on ext4 (hard links: a snapshot costs a copy of the database) under
    a burst of commits: far fewer snapshots than commits, each a committed prefix, and once
    the commits stop the newest snapshot holds the final committed state."""
    m = make_mount()
    st = status(m.mnt)
    if st["strategy"] != "hardlink":
        pytest.skip(f"the test directory is not on a filesystem without reflinks ({st['strategy']})")
    assert st["sqlite-min-interval"].startswith("auto (at least 1000ms")
    c = connect(m.mnt / "burst.db", mode)
    try:
        c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
        c.execute("CREATE TABLE fill(b BLOB)")
        c.execute("WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 2000) "
                  "INSERT INTO fill SELECT randomblob(4000) FROM s")
        n = 0
        started = time.time()
        while n < 400 or time.time() - started < 1.5:
            n += 1
            c.execute("INSERT INTO t VALUES (?, randomblob(100))", (n,))
    finally:
        c.close()
    assert wait_until(lambda: status(m.mnt)["sqlite-pending"] == "0", timeout=15)
    st = status(m.mnt)
    commits = int(st["sqlite-commits"])
    snapshots = int(st["sqlite-snapshots"])
    assert commits >= n + 3
    assert 2 <= snapshots <= commits // 10, (snapshots, commits)
    assert int(st["sqlite-deferred"]) > 0 and st["sqlite-failures"] == "0"
    snaps = sqlite_snapshots(m, "burst.db")
    assert len(snaps) == snapshots
    rows = [r for r in (committed_rows(snapshot_path(m, d)) for d in snaps) if r is not None]
    for r in rows:
        assert r == list(range(1, len(r) + 1)), "not a committed prefix"
    assert rows[-1] == list(range(1, n + 1)), "the newest snapshot is not the final state"
    assert cli(snapshot_path(m, snaps[-1]), "PRAGMA integrity_check") == "ok"


def write_requests(m):
    """The daemon's count of write requests so far (`snapfs status`)."""
    return int(re.search(r"\bwrite=(\d+)", status(m.mnt)["requests"]).group(1))


def test_a_cached_wal_with_synchronous_normal_reaches_a_snapshot_while_open(make_mount):
    """The default mount caches a WAL in the kernel: with synchronous=NORMAL no commit
    syncs the log, so its writes cost no request, and snapfs pulls the log's pages once per
    interval of the commit policy. The final state is snapshotted while the connection is
    still open, and every snapshot holds a committed prefix."""
    m = make_mount()
    c = connect(m.mnt / "n.db", "wal")
    try:
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
        before = write_requests(m)
        n = 400
        for i in range(1, n + 1):
            c.execute("INSERT INTO t VALUES (?, randomblob(200))", (i,))
        # Each commit writes a frame header and a page: 800 writes without the cache.
        assert write_requests(m) - before < n // 2
        def final_state_held():
            snaps = sqlite_snapshots(m, "n.db")
            return bool(snaps) and committed_rows(snapshot_path(m, snaps[-1])) == list(range(1, n + 1))
        assert wait_until(final_state_held, timeout=20), "the final state was not snapshotted while the log was open"
        for d in sqlite_snapshots(m, "n.db"):
            rows = committed_rows(snapshot_path(m, d))
            assert rows is None or rows == list(range(1, len(rows) + 1)), "not a committed prefix"
    finally:
        c.close()
    assert status(m.mnt)["sqlite-failures"] == "0"


def test_detection_counts_every_commit_of_a_cached_wal(make_mount):
    """Detection only: the log's pages reach snapfs in batches (at checkpoints and the
    close), each commit in them is counted, and a tree snapshot taken while the connection
    is open holds every commit made before it."""
    m = make_mount(extra_args=["--sqlite", "detect"])
    db = m.mnt / "d.db"
    c = connect(db, "wal")
    try:
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY)")
        for i in range(1, 201):
            c.execute("INSERT INTO t VALUES (?)", (i,))
        name = snapshot(m.mnt, force=True)
        assert max_n(m.mnt / ".snapshots" / name / "d.db") == 200
    finally:
        c.close()
    # The switch to WAL (a DELETE-mode transaction), the CREATE and 200 inserts. The close
    # checkpoints (the log is synced first) and removes the log.
    assert wait_until(lambda: int(status(m.mnt)["sqlite-commits"]) >= 202, timeout=10)
    assert int(status(m.mnt)["sqlite-commits"]) == 202


@pytest.mark.parametrize("interval", ["0", "50ms"], ids=["every-commit", "cached-log"])
@pytest.mark.parametrize("synchronous", ["OFF", "NORMAL"])
def test_checkpoints_of_a_wal_keep_commit_snapshots_exact(make_mount, synchronous, interval):
    """Checkpoints every few pages. With synchronous=OFF nothing syncs the database after
    a checkpoint, so when the log restarts the checkpoint's pages may still be in the
    kernel's cache: snapfs hands them over before the generation's first snapshot. With a
    50 ms interval the kernel also caches the log, and nothing syncs it before the database
    is written either: snapfs pulls the log before each database write it gets. Every
    commit snapshot opens read-only, passes integrity_check and holds a committed prefix."""
    m = make_mount(extra_args=["--sqlite-min-interval", interval])
    c = connect(m.mnt / "c.db", "wal")
    try:
        c.execute(f"PRAGMA synchronous={synchronous}")
        c.execute("PRAGMA wal_autocheckpoint=8")
        c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
        started = time.time()
        n = 0
        while n < 300 or time.time() - started < 2:
            n += 1
            c.execute("INSERT INTO t VALUES (?, randomblob(1500))", (n,))
            if n % 50 == 0:
                time.sleep(0.06)
        assert wait_until(lambda: status(m.mnt).get("sqlite-pending", "0") == "0", timeout=15)
    finally:
        c.close()
    snaps = sqlite_snapshots(m, "c.db")
    assert len(snaps) >= 3, len(snaps)
    checked = 0
    for d in snaps:
        try:
            rows = committed_rows(snapshot_path(m, d))
        except (sqlite3.Error, AssertionError):
            # Retention prunes on a thread of its own and may still be at it: a snapshot
            # that is gone was not wrong.
            if (m.backing / ".snapshots" / d["name"]).exists():
                raise
            continue
        checked += 1
        assert rows is None or rows == list(range(1, len(rows) + 1)), "not a committed prefix"
    assert checked >= 3, checked
    assert status(m.mnt)["sqlite-failures"] == "0"


@pytest.mark.root
@pytest.mark.xfs
@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_the_default_policy_snapshots_every_slow_commit_with_reflinks(workdir, make_mount, mode):
    """The default mount on XFS with reflinks: a snapshot costs a clone, and the policy's
    floor there is 100 ms, so commits that come 150 ms apart each get their own snapshot."""
    with LoopFS(workdir, "xfs") as loop:
        backing = loop.dir / "data"
        backing.mkdir()
        m = make_mount(backing=backing)
        try:
            st = status(m.mnt)
            assert st["strategy"] == "reflink"
            assert st["sqlite-min-interval"].startswith("auto (at least 100ms")
            c = connect(m.mnt / "slow.db", mode)
            n_tx = 25
            try:
                c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
                for i in range(1, n_tx + 1):
                    time.sleep(0.15)
                    c.execute("INSERT INTO t VALUES (?, randomblob(300))", (i,))
            finally:
                c.close()
            assert wait_until(lambda: status(m.mnt)["sqlite-pending"] == "0", timeout=10)
            held = [committed_rows(snapshot_path(m, d)) for d in sqlite_snapshots(m, "slow.db")]
            # One snapshot per commit: from the empty table to each insert.
            assert [len(r) for r in held if r is not None] == list(range(0, n_tx + 1)), held
            assert status(m.mnt)["sqlite-failures"] == "0"
        finally:
            m.stop()


def test_include_and_exclude_globs(make_mount):
    m = make_mount(extra_args=["--sqlite-include", "keep/*", "--sqlite-exclude", "*.tmp.db"])
    for rel in ("keep/a.db", "keep/b.tmp.db", "other/c.db"):
        (m.mnt / rel).parent.mkdir(exist_ok=True)
        subprocess.run(["sqlite3", str(m.mnt / rel), "CREATE TABLE t(n); INSERT INTO t VALUES (1);"], check=True)
    taken = {d["sqlite"]["database"] for d in metadata(m)}
    assert taken == {"keep/a.db"}


def test_tree_scope_snapshots_the_whole_tree(make_mount):
    m = make_mount(extra_args=["--sqlite-scope", "tree", *EVERY_COMMIT])
    (m.mnt / "notes.txt").write_text("beside the database")
    db = m.mnt / "t.db"
    c = connect(db, "delete")
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY)")
    c.execute("INSERT INTO t VALUES (1)")
    newest = sqlite_snapshots(m, "t.db")[-1]
    assert newest["scope"] == "tree"
    root = m.mnt / ".snapshots" / newest["name"]
    assert (root / "notes.txt").read_text() == "beside the database"
    assert not (root / "t.db-journal").exists()
    assert max_n(root / "t.db") == 1
    c.close()


def test_bad_sqlite_options_are_refused(workdir):
    (workdir / "b").mkdir()
    (workdir / "m").mkdir()
    for args in (["--sqlite", "sometimes"], ["--sqlite-scope", "galaxy"], ["--sqlite-min-interval", "soon"], ["-o", "sqlite_bogus=1"]):
        r = subprocess.run([SNAPFS, "mount", str(workdir / "b"), str(workdir / "m"), *args], capture_output=True, text=True)
        assert r.returncode == 64, args
        assert r.stderr.startswith("snapfs: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_list_and_versions_show_database_snapshots(make_mount):
    m = make_mount(extra_args=EVERY_COMMIT)
    subprocess.run(["sqlite3", str(m.mnt / "v.db"), "CREATE TABLE t(n); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);"], check=True)
    r = subprocess.run([SNAPFS, "list", str(m.mnt)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "sqlite:v.db#" in r.stdout
    r = subprocess.run([SNAPFS, "versions", str(m.mnt), "v.db"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") >= 3


# ---------------------------------------------------------------- reflink

@pytest.mark.parametrize("strategy", ["reflink", "btrfs"])
@pytest.mark.parametrize("mode", ROLLBACK_MODES)
def test_a_cloned_rollback_snapshot_is_the_file_at_its_commit(workdir, make_mount, mode, strategy):
    """With reflinks, each rollback-mode commit snapshot is the live file, byte for byte,
    as its commit left it: through inserts, updates of pages all over the file, growth, a
    VACUUM that shrinks it (SQLite cuts the file after the commit; the copy is cut to the
    header's size at once), a rollback with pages spilled into the file, and a second
    process writing. On XFS with reflinks, and on btrfs (whose commit snapshots of one
    database clone the file too)."""
    with LoopFS(workdir, "xfs" if strategy == "reflink" else "btrfs") as loop:
        # --strategy btrfs needs the root of a subvolume: the image's top level.
        backing = loop.dir / "data" if strategy == "reflink" else loop.dir
        backing.mkdir(exist_ok=True)
        m = make_mount(extra_args=EVERY_COMMIT, options=[f"strategy={strategy}"], backing=backing)
        c = connect(m.mnt / "r.db", mode)
        try:
            c.execute("PRAGMA cache_size=8")
            c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, v BLOB)")
            rng = random.Random(11)
            live = m.mnt / "r.db"

            def check_newest(what):
                d = sqlite_snapshots(m, "r.db")[-1]
                assert (m.backing / ".snapshots" / d["name"] / "r.db").read_bytes() == live.read_bytes(), what

            for i in range(1, 61):
                if i % 20 == 0:
                    c.execute("DELETE FROM t WHERE n % 2 = 0")
                    c.execute("VACUUM")
                elif i % 7 == 0:
                    c.execute("BEGIN")
                    for k in range(500, 540):
                        c.execute("INSERT INTO t VALUES (?, randomblob(3000))", (10_000 * i + k,))
                    c.execute("ROLLBACK")
                    continue
                elif i % 5 == 0:
                    other = sqlite3.connect(str(m.mnt / "r.db"), isolation_level=None, timeout=30)
                    other.execute("UPDATE t SET v = randomblob(2000) WHERE n % 3 = 0")
                    other.close()
                else:
                    c.execute("BEGIN")
                    for _ in range(rng.randrange(1, 6)):
                        c.execute("INSERT OR REPLACE INTO t VALUES (?, randomblob(?))", (rng.randrange(1, 400), rng.randrange(100, 4000)))
                    c.execute("COMMIT")
                check_newest(f"commit {i}")
            assert status(m.mnt)["sqlite-failures"] == "0"
            for d in sqlite_snapshots(m, "r.db")[-5:]:
                assert cli(m.mnt / ".snapshots" / d["name"] / "r.db", "PRAGMA integrity_check") == "ok"
        finally:
            c.close()
            m.stop()


def shared_blocks(path):
    """The file's blocks (4 KiB) that FIEMAP reports shared with another file."""
    out = subprocess.run(["filefrag", "-v", "-b4096", str(path)], capture_output=True, text=True, check=True).stdout
    shared = set()
    for line in out.splitlines():
        m = re.match(r"\s*\d+:\s+(\d+)\.\.\s*(\d+):.*", line)
        if m and "shared" in line:
            shared.update(range(int(m.group(1)), int(m.group(2)) + 1))
    return shared


@pytest.mark.root
@pytest.mark.xfs
def test_a_reflink_snapshot_keeps_the_pages_just_written_unshared(workdir, make_mount):
    """The pages a rollback-mode transaction wrote are copied into its snapshot rather
    than shared, so the live file's next write to them is in place (no copy-on-write,
    no new extent); the rest is shared. The snapshot is still the file at its commit."""
    with LoopFS(workdir, "xfs") as loop:
        backing = loop.dir / "data"
        backing.mkdir()
        m = make_mount(extra_args=EVERY_COMMIT, options=["strategy=reflink"], backing=backing)
        c = connect(m.mnt / "h.db", "delete")
        try:
            c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, v BLOB)")
            c.execute("CREATE TABLE fill(b BLOB)")
            c.execute("WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 500) "
                      "INSERT INTO fill SELECT randomblob(4000) FROM s")
            live = m.mnt / "h.db"
            for i in range(1, 31):
                c.execute("INSERT INTO t(v) VALUES (randomblob(100))")
                newest = m.backing / ".snapshots" / sqlite_snapshots(m, "h.db")[-1]["name"] / "h.db"
                assert newest.read_bytes() == live.read_bytes(), f"commit {i}"
            live_shared = shared_blocks(m.backing / "h.db")
            blocks = (m.backing / "h.db").stat().st_size // 4096
            # The header page (block 0), written by every commit, is the live file's own;
            # the fill, written before the first snapshot and never since, is shared.
            assert 0 not in live_shared
            assert len(live_shared) > blocks // 2
            assert status(m.mnt)["sqlite-failures"] == "0"
            assert cli(newest, "PRAGMA integrity_check") == "ok"
            assert cli(newest, "SELECT count(*) FROM t") == "30"
        finally:
            c.close()
            m.stop()


def expect_newest_snapshots_hold(m, snaps, states):
    """The newest len(states) snapshots in `snaps` hold table t as `states` says, in order."""
    for state, d in zip(states, snaps[-len(states):]):
        conn = open_snapshot(snapshot_path(m, d))
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert dict(conn.execute("SELECT n, v FROM t")) == state
        conn.close()


@pytest.mark.root
@pytest.mark.parametrize("strategy", ["reflink", "btrfs"])
def test_wal_commit_snapshots_stay_exact_as_the_log_grows(workdir, make_mount, strategy):
    """A WAL commit snapshot that clones is built from the live database with every
    committed page of the log laid over it while the log holds few pages, and from the
    previous snapshot with only the newer frames once it holds more than 128: both must
    give each commit exactly. 30 commits of 8 rows of 3,000 bytes each, no checkpoint
    (about 180 pages in one generation), then a checkpoint and 5 more."""
    with LoopFS(workdir, "xfs" if strategy == "reflink" else "btrfs") as loop:
        backing = loop.dir / "data" if strategy == "reflink" else loop.dir
        backing.mkdir(exist_ok=True)
        m = make_mount(extra_args=EVERY_COMMIT, options=[f"strategy={strategy}"], backing=backing)
        try:
            c = connect(m.mnt / "g.db", "wal")
            c.execute("PRAGMA wal_autocheckpoint=100000")
            c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, v TEXT)")
            rng = random.Random(7)
            expected, states = {}, []
            for i in range(35):
                if i == 30:
                    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                c.execute("BEGIN")
                for j in range(8):
                    n = i * 8 + j
                    expected[n] = chr(97 + rng.randrange(26)) * 3000
                    c.execute("INSERT INTO t VALUES (?, ?)", (n, expected[n]))
                if i > 3:     # and a page of an earlier commit rewritten
                    k = rng.choice(sorted(expected))
                    expected[k] = f"updated {i}"
                    c.execute("UPDATE t SET v = ? WHERE n = ?", (expected[k], k))
                c.execute("COMMIT")
                states.append(dict(expected))
            c.close()
            snaps = sqlite_snapshots(m, "g.db")
            assert len(snaps) >= len(states)
            expect_newest_snapshots_hold(m, snaps, states)
        finally:
            m.stop()


@pytest.mark.root
@pytest.mark.xfs
@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_commit_snapshots_with_reflinks_on_xfs(workdir, make_mount, mode):
    with LoopFS(workdir, "xfs") as loop:
        backing = loop.dir / "data"
        backing.mkdir()
        m = make_mount(extra_args=EVERY_COMMIT, options=["strategy=reflink"], backing=backing)
        try:
            c = connect(m.mnt / "x.db", mode)
            c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, v TEXT)")
            rng = random.Random(3)
            expected, states = {}, []
            for i in range(1, 40):
                # Inserts, updates of earlier rows (pages rewritten), and checkpoints of
                # every kind in between (the log restarts with new salts).
                if i > 5 and i % 3 == 0:
                    k = rng.choice(sorted(expected))
                    expected[k] = f"updated {i}"
                    c.execute("UPDATE t SET v = ? WHERE n = ?", (expected[k], k))
                else:
                    expected[i] = "x" * rng.randrange(10, 3000)
                    c.execute("INSERT INTO t VALUES (?, ?)", (i, expected[i]))
                states.append(dict(expected))
                if mode == "wal" and i % 10 == 0:
                    c.execute(f"PRAGMA wal_checkpoint({['PASSIVE', 'RESTART', 'TRUNCATE'][i // 10 % 3]})")
            c.close()
            snaps = sqlite_snapshots(m, "x.db")
            assert all(d["strategy"] == "reflink" for d in snaps)
            expect_newest_snapshots_hold(m, snaps, states)
        finally:
            m.stop()
