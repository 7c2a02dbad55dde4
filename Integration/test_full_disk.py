"""A full backing filesystem: writes through snapfs fail with ENOSPC, nothing that was
acknowledged is lost, the daemon keeps serving, and writing works again once space is
freed. The backing filesystem is a small ext4 image on a loop device made by the test.

Run with the page cache off (every write reaches the backing file before it returns)
and with a small cache (acknowledged data may wait in the cache; it must survive the
failed write-backs and reach the file once there is room); with and without the kernel's
write-back cache; and with a file the kernel caches when the disk fills under it."""

import errno
import os
import sqlite3
import subprocess
import time

import pytest

from lib.common import SNAPFS, wait_until
from lib.loopfs import LoopFS
from lib.mount import is_mounted

pytestmark = pytest.mark.root   # loop ext4 images

# 60 KiB, recognisable content: small enough to be buffered by the cache (larger writes
# of whole pages go straight to the backing file).
CHUNK = bytes(range(256)) * 240


def mounted_ext4(workdir, size_mib):
    """A fixture's body: a loop ext4 of `size_mib` with no blocks kept for root, unmounted
    when the test is done."""
    with LoopFS(workdir, "ext4", size_mib << 20, name="fs", mkfs_args=["-m", "0"]) as fs:
        yield fs.dir


@pytest.fixture
def small_fs(workdir):
    yield from mounted_ext4(workdir, 48)


@pytest.fixture
def roomy_fs(workdir):
    """More free space than snapfs keeps in reserve for a cache of 8 MiB (136 MiB)."""
    yield from mounted_ext4(workdir, 320)


def expected(n):
    return (CHUNK * (n // len(CHUNK) + 1))[:n]


def fill(path):
    """Writes CHUNKs until a write fails; then fsync. Returns (bytes acknowledged,
    errno of the failed write, errno of the fsync or None)."""
    acknowledged, failed, synced = 0, None, None
    # Created first: the descriptor that creates a file writes through, a reopened one is cached.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        for _ in range(5000):
            try:
                acknowledged += os.write(fd, CHUNK)
            except OSError as e:
                failed = e.errno
                break
        try:
            os.fsync(fd)
        except OSError as e:
            synced = e.errno
    finally:
        try:
            os.close(fd)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return acknowledged, failed, synced


# With the kernel's write-back cache (the default), a file first opened while the disk is
# short of space is written with direct I/O, so these writes reach snapfs as they are made;
# without it (no_writeback_cache) they always do.
@pytest.mark.parametrize("options", [(), ("no_writeback_cache",)], ids=["kernel-cache", "no-kernel-cache"])
@pytest.mark.parametrize("cache", ["0", "32M"])
def test_enospc_is_reported_and_nothing_acknowledged_is_lost(small_fs, make_mount, cache, options):
    data = small_fs / "data"
    data.mkdir()
    # Room to free later: 20 MiB written to the backing directory directly.
    (data / "reserve").write_bytes(b"r" * (20 << 20))
    m = make_mount(backing=data, options=options, extra_args=["--cache-size", cache])
    path = m.mnt / "filler"
    acknowledged, failed, synced = fill(path)
    assert failed == errno.ENOSPC, f"expected ENOSPC from write, got {failed!r} after {acknowledged} bytes"
    assert acknowledged > 8 << 20
    if cache == "0":
        # Write-through: what was acknowledged is in the backing file already.
        assert synced is None
        assert (m.backing / "filler").read_bytes()[:acknowledged] == expected(acknowledged)
    else:
        # Some acknowledged data waits in the cache: fsync says it is not on disk, and an
        # unmount refuses, naming the file, rather than lose it.
        assert synced == errno.ENOSPC
        r = subprocess.run([SNAPFS, "unmount", str(m.mnt)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 18, r.stderr
        assert "filler" in r.stderr and "No space left" in r.stderr, r.stderr
        assert is_mounted(m.mnt)
    assert m.alive()
    # Free space: the data waiting in the cache is written back; everything acknowledged is there.
    free_before = os.statvfs(m.backing).f_bavail
    os.unlink(m.mnt / "reserve")
    # The space comes back once the kernel lets go of the inode (a FORGET, just after).
    assert wait_until(lambda: os.statvfs(m.backing).f_bavail > free_before, timeout=10)
    fd = os.open(path, os.O_WRONLY)
    os.fsync(fd)
    os.close(fd)
    for where in (path, m.backing / "filler"):
        assert os.stat(where).st_size >= acknowledged
        with open(where, "rb") as f:
            assert f.read(acknowledged) == expected(acknowledged)
    # Fill again with small files: creating and writing fail cleanly, the daemon keeps serving.
    with pytest.raises(OSError) as e:
        for i in range(100000):
            (m.mnt / f"tiny{i}").write_bytes(b"x" * 4096)
    assert e.value.errno == errno.ENOSPC
    assert m.alive()
    assert "filler" in os.listdir(m.mnt)
    # Free space; writing works again and the new data is intact.
    os.truncate(path, 0)
    for name in os.listdir(m.mnt):
        if name.startswith("tiny"):
            os.unlink(m.mnt / name)
    (m.mnt / "after").write_bytes(CHUNK * 4)
    assert (m.backing / "after").read_bytes() == CHUNK * 4
    assert m.alive()
    m.stop()
    assert "could not be written back" not in m.log_file.read_text()


def test_a_disk_that_fills_under_the_kernels_cache(roomy_fs, make_mount):
    """A file opened while there is room is cached by the kernel: its writes are
    acknowledged before they reach snapfs, so the full disk shows at fsync and close (as on
    any filesystem with write-back caching, NFS for one). snapfs holds in its own cache what
    the backing file refuses, as long as it has room; what the kernel could not hand over
    is reported, never replaced by other bytes. Once the disk is short, new files are
    written with direct I/O and write() itself fails with ENOSPC."""
    data = roomy_fs / "data"
    data.mkdir()
    (data / "reserve").write_bytes(b"r" * (64 << 20))
    st = os.statvfs(data)
    assert st.f_bavail * st.f_frsize > (136 << 20) + (32 << 20), "the image leaves too little room for this test"
    m = make_mount(backing=data, extra_args=["--cache-size", "8M"])
    r = subprocess.run([SNAPFS, "status", str(m.mnt)], capture_output=True, text=True, timeout=30)
    line = next(l for l in r.stdout.splitlines() if l.startswith("kernel-cache: "))
    assert line.startswith("kernel-cache: write-back") and str((8 << 20) + (128 << 20)) in line, line
    chunk = 1 << 20
    total = 320   # MiB: more than the disk holds
    block = lambda i: bytes([i % 251 + 1]) * chunk
    fd = os.open(m.mnt / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    refused_at_write = None
    try:
        for i in range(total):
            try:
                os.write(fd, block(i))
            except OSError as e:
                refused_at_write = e.errno
                break
        with pytest.raises(OSError) as e:
            os.fsync(fd)
        assert e.value.errno == errno.ENOSPC
    finally:
        try:
            os.close(fd)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    assert refused_at_write in (None, errno.ENOSPC)
    assert m.alive()
    # Short of space now: a new file's write fails at once.
    with pytest.raises(OSError) as e:
        with open(m.mnt / "late", "wb") as f:
            for _ in range(64):
                f.write(b"l" * chunk)
                f.flush()
    assert e.value.errno == errno.ENOSPC
    # Room again: what snapfs held reaches the file; every block is what was written there,
    # or a hole where the kernel had to drop it — never other bytes.
    os.unlink(m.mnt / "reserve")
    if (m.mnt / "late").exists():
        os.unlink(m.mnt / "late")
    assert wait_until(lambda: os.statvfs(m.backing).f_bavail * os.statvfs(m.backing).f_frsize > 64 << 20, timeout=10)
    fd = os.open(m.mnt / "big", os.O_WRONLY)
    os.fsync(fd)
    os.close(fd)
    intact = 0
    page = 4096
    with open(m.backing / "big", "rb") as f:
        for i in range(total):
            got = f.read(chunk)
            if not got:
                break
            for at in range(0, len(got), page):
                piece = got[at:at + page]
                assert piece in (block(i)[:len(piece)], bytes(len(piece))), f"page {at // page} of MiB {i} holds other bytes"
                intact += piece == block(i)[:len(piece)]
    assert intact * page >= 64 << 20, f"only {intact} pages reached the disk"
    assert m.alive()
    m.stop()


def fill_backing(directory):
    """Fills the backing filesystem from outside the mount, until a write fails."""
    block = b"f" * (1 << 20)
    with open(directory / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    small = b"f" * 4096
    with open(directory / "filler-small", "wb", buffering=0) as f:
        try:
            while True:
                f.write(small)
        except OSError:
            pass


def test_a_cached_wal_keeps_every_commit_when_the_disk_fills(roomy_fs, make_mount):
    """A WAL the kernel caches (synchronous=NORMAL, no checkpoints: no commit syncs the
    log) on a disk that fills under it: the log's write-backs that the backing file refuses
    are held in snapfs's cache, and read from there once the kernel has dropped its own
    copies. Once there is room again, every acknowledged commit is in the database."""
    data = roomy_fs / "data"
    data.mkdir()
    m = make_mount(backing=data, extra_args=["--cache-size", "64M"])
    c = sqlite3.connect(str(m.mnt / "w.db"), isolation_level=None, timeout=30)
    try:
        assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA wal_autocheckpoint=0")
        c.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
        fill_backing(data)
        n = 2000
        for i in range(1, n + 1):
            c.execute("INSERT INTO t VALUES (?, randomblob(2000))", (i,))
        # The mount's puller hands the log's pages over (once a second where snapshots
        # copy): refused by the full disk, held by snapfs. Then the kernel drops its copies.
        time.sleep(3)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
        assert m.alive()
        os.unlink(data / "filler")
        os.unlink(data / "filler-small")
        assert c.execute("SELECT count(*) FROM t").fetchone()[0] == n
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        c.close()
    c = sqlite3.connect(f"file:{m.mnt / 'w.db'}?mode=ro", uri=True)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert [r[0] for r in c.execute("SELECT n FROM t ORDER BY n")] == list(range(1, n + 1))
    finally:
        c.close()
    assert m.alive()
