"""Every SQLite database in every snapshot opens read-only with plain sqlite3, as another
user, at a committed state; and reading a snapshot with root's everyday tools in the
backing store never changes it (issue 23).

The matrix has five dimensions: journal mode (DELETE, TRUNCATE, PERSIST, WAL, each with and
without EXCLUSIVE locking), the database's state at the snapshot (closed; open and idle;
in the middle of a transaction big enough to spill pages), the trigger (control file,
`--every`, a commit with database scope, a commit with tree scope) and the strategy
(hardlink on ext4, reflink on XFS, btrfs, copy). The full product is 8 x 3 x 4 x 4 = 384
cells; `CELLS` covers every pair of values of any two dimensions at least once (a greedy
all-pairs cover over the cells that can occur: a commit with database scope snapshots the
committing database itself, so never one that is closed or mid-transaction)."""

import hashlib
import itertools
import os
import sqlite3
import subprocess
import time

import pytest

from lib.common import EVERY_COMMIT, SNAPFS
from lib.loopfs import LoopFS

MODES = ["delete", "truncate", "persist", "wal"]
LOCKINGS = ["normal", "exclusive"]
STATES = ["closed", "idle", "midtx"]
TRIGGERS = ["control", "every", "commit-db", "commit-tree"]
STRATEGIES = ["hardlink", "reflink", "btrfs", "copy"]


def valid(cell):
    mode, locking, state, trigger, strategy = cell
    return not (trigger == "commit-db" and state != "idle")


def all_pairs():
    """A deterministic greedy cover of every pair of values over the valid cells."""
    dims = [[(m, l) for m in MODES for l in LOCKINGS], STATES, TRIGGERS, STRATEGIES]
    cells = [c for c in itertools.product(*dims) if valid((c[0][0], c[0][1], c[1], c[2], c[3]))]

    def pairs(c):
        return {(i, c[i], j, c[j]) for i in range(4) for j in range(i + 1, 4)}

    needed = set().union(*(pairs(c) for c in cells))
    chosen = []
    while needed:
        best = max(cells, key=lambda c: len(pairs(c) & needed))
        chosen.append(best)
        needed -= pairs(best)
    return [(c[0][0], c[0][1], c[1], c[2], c[3]) for c in chosen]


CELLS = all_pairs()

HOLDER = r"""
import sqlite3, sys
path, mode, locking, state = sys.argv[1:5]
c = sqlite3.connect(path, isolation_level=None)
c.execute(f"PRAGMA journal_mode={mode}")
if locking == "exclusive":
    c.execute("PRAGMA locking_mode=EXCLUSIVE")
c.execute("PRAGMA cache_size=10")
c.execute("PRAGMA synchronous=FULL")
if state == "idle":
    c.execute("INSERT INTO t(v) VALUES (randomblob(600))")
elif state == "midtx":
    c.execute("BEGIN")
    for _ in range(600):
        c.execute("INSERT INTO t(v) VALUES (randomblob(600))")
print("ready", flush=True)
sys.stdin.read()
if state == "midtx":
    c.execute("ROLLBACK")
c.close()
"""

COMMITTER = r"""
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, v)")
c.execute("INSERT INTO t(v) VALUES (1)")
c.close()
"""


def snapfs(*args, check=0, timeout=60):
    r = subprocess.run([SNAPFS, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert r.returncode == check, (args, r.returncode, r.stdout, r.stderr)
    return r


def snapshot_names(mount):
    return sorted(n for n in os.listdir(mount.mnt / ".snapshots") if not n.startswith("."))


def create(db, mode, rows):
    c = sqlite3.connect(db, isolation_level=None)
    c.execute(f"PRAGMA journal_mode={mode}")
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, v)")
    c.execute("BEGIN")
    for _ in range(rows):
        c.execute("INSERT INTO t(v) VALUES (randomblob(600))")
    c.execute("COMMIT")
    c.close()
    os.chmod(db, 0o644)


def read_as(user, path):
    """(integrity_check, row count) of the database at `path`, opened read-only by `user`."""
    r = user.run(["sqlite3", f"file:{path}?mode=ro", "PRAGMA integrity_check; SELECT count(*) FROM t;"], timeout=60)
    assert r.returncode == 0, (path, r.stdout, r.stderr)
    lines = r.stdout.split()
    return lines[0], int(lines[-1])


@pytest.fixture
def place(workdir, make_mount):
    """place(strategy, extra_args) -> a mount of that strategy (loop filesystems for
    reflink and btrfs)."""
    loops = []

    def factory(strategy, extra_args=()):
        args = ["--strategy", strategy, *EVERY_COMMIT, *extra_args]
        if strategy in ("hardlink", "copy"):
            return make_mount(extra_args=args)
        loop = LoopFS(workdir, "xfs" if strategy == "reflink" else "btrfs").__enter__()
        loops.append(loop)
        backing = loop.dir / "data" if strategy == "reflink" else loop.dir
        backing.mkdir(exist_ok=True)
        return make_mount(extra_args=args, backing=backing)

    yield factory
    for loop in loops:
        subprocess.run(["chattr", "-R", "-f", "-i", str(loop.dir)], capture_output=True)
        loop.__exit__()


@pytest.mark.parametrize("mode,locking,state,trigger,strategy", CELLS,
                         ids=["-".join(c) for c in CELLS])
def test_every_database_in_every_snapshot_opens_read_only(place, users, mode, locking, state, trigger, strategy):
    extra = {"control": ["--sqlite", "detect"], "every": ["--sqlite", "detect", "--every", "1s"],
             "commit-db": [], "commit-tree": ["--sqlite-scope", "tree"]}[trigger]
    mount = place(strategy, extra)
    os.chmod(mount.mnt, 0o755)
    (mount.mnt / "data").mkdir()
    db = mount.mnt / "data" / "app.db"
    create(db, mode, rows=20)
    committed = 20
    before = set(snapshot_names(mount))

    holder = None
    if state != "closed":
        holder = subprocess.Popen(["python3", "-c", HOLDER, str(db), mode, locking, state],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "ready"
        if state == "idle":
            committed += 1
    try:
        if trigger == "control":
            snapfs("snapshot", mount.mnt, "--force")
        elif trigger == "every":
            deadline = time.time() + 20
            start = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            while time.time() < deadline and not [n for n in set(snapshot_names(mount)) - before if n[:15] > start]:
                time.sleep(0.2)
        elif trigger == "commit-tree":
            other = mount.mnt / "data" / "other.db"
            subprocess.run(["python3", "-c", COMMITTER, str(other)], check=True, timeout=60)
        # commit-db: the holder's own commit took it.
        new = sorted(set(snapshot_names(mount)) - before)
        assert new, "no snapshot was taken"
        checked = []
        for name in new:
            copy = mount.mnt / ".snapshots" / name / "data" / "app.db"
            if copy.exists():
                check, rows = read_as(users.alice, copy)
                assert check == "ok", (name, check)
                # A timer may also have fired before the holder's commit.
                assert rows == committed or (trigger == "every" and rows == 20), (name, rows, committed)
                checked.append(rows)
        assert checked and checked[-1] == committed, (new, checked, committed)
    finally:
        if holder:
            holder.stdin.close()
            holder.wait(timeout=60)


# ---------------------------------------------------------------- reading never changes

def manifest(root):
    """Every name below `root` with its type, mode, owner, size and content digest."""
    result = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            digest = ""
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            result[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, digest)
    return result


@pytest.mark.parametrize("strategy", ["hardlink", "reflink", "copy"])
def test_reading_a_snapshot_with_roots_tools_never_changes_it(place, workdir, strategy):
    """Root opens every database of the backing store's snapshots with plain sqlite3
    (read-write, its default), reads and tries to write, copies the snapshots out with cp -a
    and rsync: every snapshot stays byte for byte and name for name as it was, and so does
    the live data."""
    mount = place(strategy, ["--sqlite", "detect"])
    (mount.mnt / "data").mkdir()
    create(mount.mnt / "data" / "closed.db", "wal", rows=5)
    create(mount.mnt / "data" / "rollback.db", "delete", rows=5)
    create(mount.mnt / "data" / "open.db", "wal", rows=5)
    holder = subprocess.Popen(["python3", "-c", HOLDER, str(mount.mnt / "data" / "open.db"), "wal", "normal", "idle"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        snapfs("snapshot", mount.mnt, "--force")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    store = mount.backing / ".snapshots"
    before = manifest(store)
    live_before = manifest(mount.mnt / "data")
    for path in sorted(store.rglob("*.db")):
        subprocess.run(["sqlite3", str(path), "SELECT count(*) FROM t;"], capture_output=True, timeout=60)
        subprocess.run(["sqlite3", str(path), "INSERT INTO t(v) VALUES (1);"], capture_output=True, timeout=60)
        subprocess.run(["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
                        "c.execute('SELECT count(*) FROM t').fetchall(); c.close()", str(path)],
                       capture_output=True, timeout=60)
    out = workdir / "copied-out"
    subprocess.run(["cp", "-a", str(store), str(out)], check=True)
    if subprocess.run(["which", "rsync"], capture_output=True).returncode == 0:
        subprocess.run(["rsync", "-a", f"{store}/", str(workdir / "rsynced")], check=True)
    assert manifest(store) == before
    assert manifest(mount.mnt / "data") == live_before
    # The copy out is a working copy: its closed WAL database opens read-write.
    copies = sorted(out.rglob("closed.db"))
    assert copies
    subprocess.run(["chattr", "-R", "-f", "-i", str(out)], capture_output=True)
    r = subprocess.run(["sqlite3", str(copies[-1]), "SELECT count(*) FROM t;"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "5", r


def immutable(path):
    """Whether `path` carries the immutable flag (lsattr's `i`)."""
    r = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True, check=True)
    return "i" in r.stdout.split()[0]


@pytest.mark.parametrize("strategy", ["hardlink", "reflink", "copy"])
def test_a_file_that_becomes_a_database_between_snapshots_is_finished_as_one(place, users, workdir, strategy):
    """A tree snapshot finds its databases as its walk places each file, and remembers the
    files that were not databases by the live file's inode, size and time: a file of a
    database's size that held other bytes at one snapshot and a closed WAL database at the
    next (overwritten in place, same size) gets its companions and its seal in the second,
    and a file that stayed the same gets none."""
    mount = place(strategy, ["--sqlite", "detect"])
    os.chmod(mount.mnt, 0o755)
    data = mount.mnt / "data"
    data.mkdir()
    native = workdir / "native.db"
    c = sqlite3.connect(native, isolation_level=None)
    c.execute("PRAGMA page_size=4096")
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, v)")
    c.execute("INSERT INTO t(v) VALUES ('one'), ('two'), ('three')")
    c.close()
    database = native.read_bytes()
    assert len(database) == 8192 and database[18:20] == b"\x02\x02"
    noise = os.urandom(8192)
    (data / "x.db").write_bytes(noise)
    (data / "same.bin").write_bytes(noise)
    for path in (data / "x.db", data / "same.bin"):
        os.chmod(path, 0o644)
    snapfs("snapshot", mount.mnt, "--force")
    first = sorted(snapshot_names(mount))[-1]
    with open(data / "x.db", "r+b") as f:
        f.write(database)
    snapfs("snapshot", mount.mnt, "--force")
    second = sorted(snapshot_names(mount))[-1]
    assert second != first
    store = mount.backing / ".snapshots"
    old, new = store / first / "data", store / second / "data"
    assert (old / "x.db").read_bytes() == noise
    assert not (old / "x.db-wal").exists() and not (old / "x.db-shm").exists()
    assert (new / "x.db").read_bytes() == database
    for suffix in ("-wal", "-shm"):
        assert (new / f"x.db{suffix}").stat().st_size == 0
    for snapshot in (old, new):
        assert not (snapshot / "same.bin-wal").exists()
    assert read_as(users.alice, mount.mnt / ".snapshots" / second / "data" / "x.db") == ("ok", 3)
    # The snapshot's own copy is sealed; a hard-linked one is the live file's inode.
    assert immutable(new / "x.db") == (strategy != "hardlink") or (new / "x.db").stat().st_nlink > 1
    assert immutable(new / "x.db-wal")


def test_snapshots_can_still_be_deleted_and_pruned(make_mount):
    """Sealed snapshots (chattr +i) go away with snapfs delete and with retention."""
    mount = make_mount(extra_args=["--sqlite", "detect", "--keep-last", "2"])
    create(mount.mnt / "w.db", "wal", rows=3)
    names = []
    for i in range(4):
        (mount.mnt / f"f{i}").write_text(str(i))
        names.append(snapfs("snapshot", mount.mnt).stdout.strip())
    left = snapshot_names(mount)
    assert left == names[-2:], left
    r = subprocess.run(["lsattr", "-d", str(mount.backing / ".snapshots" / names[-1])], capture_output=True, text=True)
    assert "i" in r.stdout.split()[0], r.stdout
    snapfs("delete", mount.mnt, names[-1])
    assert not (mount.backing / ".snapshots" / names[-1]).exists()


MID_TRANSACTION_COPY = r"""
import os, shutil, sqlite3, sys
src, dst = sys.argv[1], sys.argv[2]
c = sqlite3.connect(src, isolation_level=None)
c.execute("PRAGMA journal_mode=delete")
c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, v)")
c.execute("INSERT INTO t(v) VALUES (1)")
c.execute("PRAGMA cache_size=2")
c.execute("BEGIN")
for _ in range(300):
    c.execute("INSERT INTO t(v) VALUES (randomblob(3000))")
# What a snapshot of an earlier snapfs could hold: the database mid-transaction and its hot journal.
shutil.copy(src, dst)
shutil.copy(src + "-journal", dst + "-journal")
c.execute("ROLLBACK")
c.close()
"""


def test_a_store_made_by_an_earlier_snapfs_is_brought_up_to_date(make_mount, workdir, users):
    """A store as earlier versions left it: snapshots unsealed, a closed WAL database without
    -wal/-shm, a database mid-transaction with its hot journal, no format file. At mount every
    database in it opens read-only for another user, and the snapshot is sealed."""
    backing = workdir / "backing"
    snap = backing / ".snapshots" / "20250101T000000.000Z"
    (snap / "data").mkdir(parents=True)
    (backing / ".snapshots" / ".meta").mkdir()
    for d in (backing / ".snapshots", snap, snap / "data"):
        os.chmod(d, 0o755)
    create(snap / "data" / "closed.db", "wal", rows=4)
    subprocess.run(["python3", "-c", MID_TRANSACTION_COPY, str(workdir / "live.db"), str(snap / "data" / "mid.db")], check=True)
    os.chmod(snap / "data" / "mid.db", 0o644)
    assert not (snap / "data" / "closed.db-shm").exists()
    m = make_mount(backing=backing)
    os.chmod(workdir, 0o755)
    view = m.mnt / ".snapshots" / snap.name / "data"
    assert read_as(users.alice, view / "closed.db") == ("ok", 4)
    assert read_as(users.alice, view / "mid.db") == ("ok", 1)
    assert not (snap / "data" / "mid.db-journal").exists()
    r = subprocess.run(["lsattr", "-d", str(snap), str(snap / "data")], capture_output=True, text=True)
    assert all("i" in line.split()[0] for line in r.stdout.splitlines()), r.stdout
    assert (backing / ".snapshots" / ".meta" / "format").read_text().strip() == "2"
