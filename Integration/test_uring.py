"""FUSE over io_uring (`-o uring`) through a real mount: once the rings are registered the
kernel sends every request but FORGET and INTERRUPT through them, so file operations of
every kind (names, data larger than one ring payload, xattrs, O_TMPFILE, which libfuse does
not know, and spliced reads), SQLite commit snapshots and a busy machine all work as over
/dev/fuse, and the daemon counts what the rings served. Needs Linux >= 6.14 with FUSE's
io_uring support (the fuse module's `enable_uring` parameter); the test restores the
parameter as it found it."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from lib.common import EVERY_COMMIT, wait_until
from lib.control import status
from lib.mount import log_text
from lib.sqlite import connect, max_n, snapshot_path, sqlite_snapshots

PARAMETER = pathlib.Path("/sys/module/fuse/parameters/enable_uring")   # conftest's uring_parameter restores it


@pytest.fixture
def uring_parameter():
    if not PARAMETER.exists():
        pytest.skip("this kernel's FUSE has no io_uring support")
    before = PARAMETER.read_text().strip()
    yield
    PARAMETER.write_text(before)


def served(m):
    """Stops the mount; the requests its rings served (logged at exit)."""
    m.stop()
    found = re.findall(r"io_uring: (\d+) requests served through the rings", log_text(m))
    assert found, "the daemon did not serve through io_uring:\n" + log_text(m)[-2000:]
    return int(found[-1])


def test_file_operations_go_through_the_rings(make_mount, uring_parameter):
    m = make_mount(options=["uring"], extra_args=["--debug"])
    assert PARAMETER.read_text().strip() == "Y"
    assert wait_until(lambda: re.search(r"io_uring: \d+ queues, \d+ entries each", log_text(m)), timeout=5)
    (m.mnt / "d").mkdir()
    data = os.urandom(5 << 20)                       # several 1 MiB ring payloads
    (m.mnt / "d" / "big").write_bytes(data)
    with open(m.mnt / "d" / "big", "r+b") as f:      # read by the daemon (no passthrough)
        assert f.read() == data
        f.seek(4095)
        f.write(b"xyz")
        f.seek(4090)
        assert f.read(10) == data[4090:4095] + b"xyz" + data[4098:4100]
    os.truncate(m.mnt / "d" / "big", 1000)
    assert (m.mnt / "d" / "big").stat().st_size == 1000
    os.rename(m.mnt / "d" / "big", m.mnt / "d" / "small")
    os.symlink("small", m.mnt / "d" / "link")
    assert os.readlink(m.mnt / "d" / "link") == "small"
    os.setxattr(m.mnt / "d" / "small", "user.k", b"v" * 300)
    assert os.getxattr(m.mnt / "d" / "small", "user.k") == b"v" * 300
    assert "user.k" in os.listxattr(m.mnt / "d" / "small")
    names = [f"n{i:04}" for i in range(300)]
    for name in names:
        (m.mnt / "d" / name).write_bytes(name.encode())
    assert sorted(p.name for p in (m.mnt / "d").iterdir()) == sorted(names + ["small", "link"])
    with pytest.raises(FileExistsError):
        os.mkdir(m.mnt / "d")
    with pytest.raises(FileNotFoundError):
        os.stat(m.mnt / "d" / "missing")
    fd = os.open(m.mnt / "d", os.O_TMPFILE | os.O_RDWR, 0o600)
    os.write(fd, b"anonymous")
    assert os.pread(fd, 9, 0) == b"anonymous"
    os.close(fd)
    for name in names:
        os.unlink(m.mnt / "d" / name)
    # What went in is in the backing directory.
    assert (m.backing / "d" / "small").read_bytes() == (data[:4095] + b"xyz" + data[4098:])[:1000]
    assert m.alive()
    assert served(m) > 600


def test_sqlite_commit_snapshots_over_the_rings(make_mount, uring_parameter):
    m = make_mount(options=["uring"], extra_args=EVERY_COMMIT)
    for mode in ("delete", "wal"):
        db = m.mnt / f"{mode}.db"
        c = connect(db, mode)
        c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
        base = len(sqlite_snapshots(m, db.name))
        for i in range(1, 16):
            c.execute("INSERT INTO t VALUES (?, randomblob(200))", (i,))
        c.close()
        snaps = sqlite_snapshots(m, db.name)[base:]
        assert len(snaps) >= 15
        for i, d in enumerate(snaps[:15], start=1):
            assert max_n(snapshot_path(m, d)) == i
    assert status(m.mnt)["sqlite-failures"] == "0"
    assert served(m) > 100


def test_a_busy_machine_does_not_stall_the_rings(make_mount, uring_parameter):
    """With every CPU busy, the rings' threads (SCHED_IDLE only while they commit) still
    serve requests promptly."""
    m = make_mount(options=["uring"])
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * os.cpu_count())]
    try:
        db = m.mnt / "busy.db"
        c = connect(db, "wal")
        c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
        for i in range(1, 201):
            c.execute("INSERT INTO t VALUES (?, randomblob(200))", (i,))
        assert c.execute("SELECT count(*) FROM t").fetchone()[0] == 200
        c.close()
        for i in range(200):
            (m.mnt / f"f{i}").write_text(str(i))
        assert all((m.mnt / f"f{i}").read_text() == str(i) for i in range(200))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert served(m) > 1000


def test_without_the_option_no_ring_is_set_up(make_mount, uring_parameter):
    m = make_mount(extra_args=["--debug"])
    (m.mnt / "f").write_text("x")
    assert (m.mnt / "f").read_text() == "x"
    m.stop()
    assert "io_uring" not in log_text(m)
