"""Snapshots never take the last of the disk (issue 18, defect 4).

An unprivileged user commits a multi-MB SQLite database over and over through a mount
with the copy strategy (every commit snapshot is a full copy) on a small ext4 image: the
space left to users never falls below the floor (min_free, 5% by default) but by a little,
the retention rules are applied early when that makes room, snapshots are skipped when it
does not (one log line, a status counter), and other users can still write."""

import os
import re
import subprocess

import pytest

from lib.common import EVERY_COMMIT, SNAPFS
from lib.control import status
from lib.loopfs import LoopFS

# Fills the database to about 4 MiB, then commits `count` small updates; after each commit
# prints the bytes left to unprivileged users on the backing filesystem.
COMMITS = """
import os, sqlite3, sys
db, backing, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = sqlite3.connect(db, isolation_level=None)
c.execute("CREATE TABLE IF NOT EXISTS big(b BLOB)")
c.execute("CREATE TABLE IF NOT EXISTS t(n INTEGER)")
if c.execute("SELECT count(*) FROM big").fetchone()[0] == 0:
    c.execute("BEGIN")
    for _ in range(64):
        c.execute("INSERT INTO big VALUES (randomblob(65536))")
    c.execute("COMMIT")
for n in range(count):
    c.execute("INSERT INTO t VALUES (?)", (n,))
    s = os.statvfs(backing)
    print(s.f_bavail * s.f_frsize, flush=True)
c.close()
"""

SLACK = 1 << 20


@pytest.fixture
def ext4(workdir):
    """A 64 MiB ext4 image (with ext4's usual 5% kept for root), loop-mounted."""
    with LoopFS(workdir, "ext4", 64 << 20, name="ext4") as fs:
        os.chmod(fs.dir, 0o755)
        yield fs.dir


def floor_bytes(path, percent=5):
    s = os.statvfs(path)
    return s.f_blocks * s.f_frsize * percent // 100


def snapshot_names(m):
    return sorted(p.name for p in (m.backing / ".snapshots").iterdir() if not p.name.startswith("."))


def bob_commits(m, users, count):
    d = m.mnt / "bob"
    if not d.exists():
        d.mkdir()
        os.chown(d, users.bob.uid, users.bob.gid)
    r = users.bob.python(COMMITS, str(d / "app.db"), str(m.backing), str(count), timeout=300)
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.split()]


def test_commit_snapshots_stop_at_the_free_space_floor(ext4, make_mount, users):
    backing = ext4 / "data"
    backing.mkdir()
    m = make_mount(backing=backing, extra_args=["--strategy", "copy", *EVERY_COMMIT])
    floor = floor_bytes(backing)
    left = bob_commits(m, users, 25)
    assert min(left) >= floor - SLACK, f"free space fell to {min(left)} bytes, below the floor {floor}"
    st = status(m.mnt)
    assert int(st["skipped-for-space"]) > 0
    assert st["min-free"] == "5%"
    # Another user can still write.
    (m.mnt / "alice").mkdir()
    os.chown(m.mnt / "alice", users.alice.uid, users.alice.gid)
    r = users.alice.run(["dd", "if=/dev/zero", f"of={m.mnt}/alice/a.bin", "bs=1M", "count=1", "conv=fsync"])
    assert r.returncode == 0, r.stderr
    log = m.log_file.read_text()
    assert len(re.findall("snapshots are skipped", log)) == 1, log
    # The snapshots taken are whole and hold commits in order.
    names = snapshot_names(m)
    assert 3 <= len(names) < 25


def test_the_retention_rules_make_room_before_a_snapshot_is_skipped(ext4, make_mount, users):
    backing = ext4 / "data"
    (backing / "bob").mkdir(parents=True)
    os.chown(backing / "bob", users.bob.uid, users.bob.gid)
    r = users.bob.python(COMMITS, str(backing / "bob" / "app.db"), str(backing), "0")
    assert r.returncode == 0, r.stderr
    size = os.path.getsize(backing / "bob" / "app.db")
    # Room above the floor for three and a half copies: with three kept, the fourth fits
    # only once the oldest, which the rules let go, is gone.
    s = os.statvfs(backing)
    reserve = s.f_bavail * s.f_frsize - int(3.5 * size)
    m = make_mount(backing=backing, extra_args=["--strategy", "copy", *EVERY_COMMIT, "--keep-commits", "3",
                                                "--min-free", str(reserve)])
    left = bob_commits(m, users, 12)
    assert min(left) >= reserve - SLACK
    st = status(m.mnt)
    assert st["skipped-for-space"] == "0", st
    names = snapshot_names(m)
    assert len(names) == 3
    # The newest snapshot holds the last commit.
    r = subprocess.run(["sqlite3", "-readonly", str(m.backing / ".snapshots" / names[-1] / "bob/app.db"),
                        "SELECT max(n) FROM t"], capture_output=True, text=True)
    assert r.stdout.strip() == "11", r.stderr


def test_commit_snapshots_are_bounded_by_default(make_mount, users):
    m = make_mount()
    assert "keep_commits=100" in status(m.mnt).get("retention", "")


@pytest.mark.parametrize("value", ["-1%", "101%", "x", "%", "-5"])
def test_a_bad_floor_is_refused(workdir, value):
    (workdir / "b").mkdir()
    (workdir / "m").mkdir()
    r = subprocess.run([SNAPFS, "mount", str(workdir / "b"), str(workdir / "m"), "-o", f"min_free={value}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 64 and "min_free" in r.stderr, r.stderr
