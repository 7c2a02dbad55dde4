"""snapfs's page cache through a real mount: a snapshot holds data still waiting in the
cache (and, by default, in the kernel's write-back cache), fsync and close write it back,
O_APPEND writers of one file do not overwrite each other, the statistics are shown by
`snapfs status`, the daemon's memory stays within the cache size while gigabytes go
through, and `kill -9` of the daemon loses nothing that was fsync'd and leaves no byte
that was never written."""

import os
import random
import signal
import subprocess
import time

import pytest

from lib.common import EVERY_COMMIT, SNAPFS, wait_until
from lib.control import snapfs_status as status, snapshot
from lib.mount import is_mounted, peak_rss_kib

KIB = 1024
MIB = 1024 * KIB


@pytest.mark.parametrize("options", [("no_writeback_cache",), ()], ids=["cache", "cache+kernel_writeback"])
def test_a_snapshot_holds_writes_still_in_the_cache(make_mount, options):
    m = make_mount(options=options, extra_args=["--strategy", "copy"])
    (m.mnt / "log").touch()   # reopened: a file's creating descriptor writes through
    fd = os.open(m.mnt / "log", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        lines = [f"line {i}\n".encode() for i in range(500)]
        for line in lines:
            assert os.write(fd, line) == len(line)
        expected = b"".join(lines)
        # Still buffered (the file is open, nothing synced): the backing file lags behind.
        assert (m.backing / "log").stat().st_size < len(expected)
        name = snapshot(m.mnt)
        # The snapshot has every write acknowledged before the trigger; the live backing
        # file has them too now, and later writes stay out of the snapshot.
        assert (m.backing / ".snapshots" / name / "log").read_bytes() == expected
        assert (m.backing / "log").read_bytes() == expected
        os.write(fd, b"after\n")
    finally:
        os.close(fd)
    assert (m.mnt / ".snapshots" / name / "log").read_bytes() == expected
    assert (m.mnt / "log").read_bytes() == expected + b"after\n"


def test_fsync_and_close_write_back(make_mount):
    m = make_mount()
    path = m.mnt / "f"
    path.touch()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"a" * 5000, 3)
        assert (m.backing / "f").stat().st_size == 0
        assert os.fstat(fd).st_size == 5003
        assert os.pread(fd, 10, 0) == b"\0\0\0aaaaaaa"
        os.fsync(fd)
        assert (m.backing / "f").read_bytes() == b"\0\0\0" + b"a" * 5000
        os.pwrite(fd, b"b" * 10, 1)
        assert (m.backing / "f").read_bytes()[:4] == b"\0\0\0a"
    finally:
        os.close(fd)
    assert (m.backing / "f").read_bytes()[:12] == b"\0" + b"b" * 10 + b"a"


def test_appending_processes_do_not_overwrite_each_other(make_mount):
    m = make_mount()
    path = m.mnt / "shared.log"
    script = ("import os,sys\n"
              "fd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT|os.O_APPEND,0o644)\n"
              "for i in range(2000): os.write(fd,(sys.argv[2]+'%05d'%i+'.'*40+'\\n').encode())\n"
              "os.close(fd)\n")
    procs = [subprocess.Popen(["python3", "-c", script, str(path), tag]) for tag in "ABC"]
    for p in procs:
        assert p.wait(timeout=120) == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 6000
    for tag in "ABC":
        assert [l for l in lines if l[0] == tag] == [f"{tag}{i:05d}" + "." * 40 for i in range(2000)]
    assert (m.backing / "shared.log").read_text() == path.read_text()


def test_status_shows_the_cache_and_a_tiny_cache_writes_back_under_pressure(make_mount):
    # snapfs's own cache at work: without the kernel's, every write reaches it at once.
    m = make_mount(options=["no_writeback_cache"], extra_args=["--cache-size", "256K", "--dirty-limit", "64K"])
    data = os.urandom(4 * MIB)
    (m.mnt / "f").touch()
    fd = os.open(m.mnt / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for off in range(0, len(data), 4 * KIB):
            os.pwrite(fd, data[off:off + 4 * KIB], off)
        s = status(m)
        assert s["kernel-cache"].startswith("none (every write a request")
        assert s["cache"].startswith("262144 bytes, dirty limit 65536")
        # Back-pressure kept the dirty data near the limit and wrote the rest back.
        assert int(s["cache dirty"]) <= 64 * KIB + 4 * KIB
        assert int(s["cache cached"]) <= 256 * KIB
        writebacks, written = s["cache write-backs"].split(" ", 1)
        assert int(writebacks) > 10 and int(written.strip("( bytes)")) >= len(data) - 68 * KIB
        assert int(s["cache write-back errors"]) == 0
    finally:
        os.close(fd)
    assert (m.backing / "f").read_bytes() == data
    assert int(status(m)["cache dirty"]) == 0


def test_a_new_file_is_written_through_until_reopened(make_mount):
    # The descriptor that creates a file writes through (its close then needs no request);
    # a reopened one is buffered; reads see both.
    m = make_mount(options=["no_writeback_cache"])   # a write reaches snapfs when made
    path = m.mnt / "new"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.pwrite(fd, b"n" * 5000, 10)
        assert (m.backing / "new").read_bytes() == b"\0" * 10 + b"n" * 5000
        assert os.pread(fd, 12, 8) == b"\0\0" + b"n" * 10
        fd2 = os.open(path, os.O_RDWR)
        try:
            os.pwrite(fd2, b"c" * 100, 20)
            assert (m.backing / "new").read_bytes()[20:30] == b"n" * 10
            # The creating descriptor's next write is buffered too while the file is dirty.
            os.pwrite(fd, b"d" * 10, 4000)
            expected = b"\0" * 10 + b"n" * 10 + b"c" * 100 + b"n" * 3880 + b"d" * 10 + b"n" * 1000
            assert os.pread(fd, 6000, 0) == expected
        finally:
            os.close(fd2)
        assert (m.backing / "new").read_bytes() == expected
        os.pwrite(fd, b"e" * 3, 0)
        assert (m.backing / "new").read_bytes()[:3] == b"eee"
    finally:
        os.close(fd)
    assert status(m)["cache write-back errors"] == "0"


def test_dirty_data_is_written_back_after_the_dirty_age(make_mount):
    m = make_mount(options=["no_writeback_cache"], extra_args=["--dirty-age", "300ms"])
    (m.mnt / "f").touch()
    fd = os.open(m.mnt / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 1000)
        assert (m.backing / "f").stat().st_size == 0
        assert wait_until(lambda: (m.backing / "f").stat().st_size == 1000, timeout=5)
    finally:
        os.close(fd)


def test_bad_cache_options_are_refused(workdir):
    b, mnt = workdir / "b", workdir / "m"
    b.mkdir()
    mnt.mkdir()
    for args in (["--cache-size", "lots"], ["--cache-size", "1K"], ["--cache-size", "1M", "--dirty-limit", "2M"],
                 ["--dirty-age", "soon"], ["-o", "cache_size=-5"]):
        r = subprocess.run([SNAPFS, "mount", str(b), str(mnt), *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 64, (args, r.stderr)
        assert "cache_size" in r.stderr or "dirty_" in r.stderr, r.stderr
        assert not is_mounted(mnt)


@pytest.mark.slow
def test_memory_stays_within_the_cache_size_while_4_gib_go_through(make_mount):
    cache = 64 * MIB
    m = make_mount(extra_args=["--cache-size", "64M"])
    base = peak_rss_kib(m.pid)
    chunk = os.urandom(60 * KIB)   # buffered by the cache (not a large whole-page write)
    fd = os.open(m.mnt / "big", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        written = 0
        while written < 4 * 1024 * MIB:
            written += os.write(fd, chunk)
        # Random 4 KiB overwrites too: pages all over the file, dirty at once.
        rng = random.Random(1)
        for _ in range(20000):
            os.pwrite(fd, chunk[:4 * KIB], rng.randrange(0, written // (4 * KIB)) * 4 * KIB)
        os.fsync(fd)
    finally:
        os.close(fd)
    peak = peak_rss_kib(m.pid)
    print(f"daemon peak RSS {peak // 1024} MiB (at start {base // 1024} MiB), cache {cache // MIB} MiB")
    # The cache, plus a fixed allowance for libfuse's request buffers and the rest.
    assert peak * KIB <= cache + 48 * MIB, f"peak RSS {peak} KiB"
    assert os.stat(m.backing / "big").st_size == written
    os.unlink(m.mnt / "big")


@pytest.mark.slow
def test_kill_9_keeps_every_fsynced_byte_and_invents_none(make_mount):
    m = make_mount(extra_args=["--dirty-age", "1h"])
    rng = random.Random(int(time.time()))
    size = 512 * KIB
    names = [f"f{i}" for i in range(6)]
    # Per file and byte: the values ever written there, and the value at the last fsync.
    history = {n: [set() for _ in range(size)] for n in names}
    since_sync = {n: [set() for _ in range(size)] for n in names}
    synced = {n: [None] * size for n in names}
    fds = {n: os.open(m.mnt / n, os.O_RDWR | os.O_CREAT, 0o644) for n in names}
    value = 0
    for step in range(600):
        n = rng.choice(names)
        value = value % 255 + 1
        off = rng.randrange(0, size - 1)
        length = min(rng.choice([1, 100, 4096, 5000, 40000]), size - off)
        os.pwrite(fds[n], bytes([value]) * length, off)
        for i in range(off, off + length):
            history[n][i].add(value)
            since_sync[n][i].add(value)
        if rng.random() < 0.05:
            os.fsync(fds[n])
            content = os.pread(fds[n], size, 0)
            synced[n] = [content[i] if i < len(content) else None for i in range(size)]
            since_sync[n] = [set() for _ in range(size)]
    os.kill(m.pid, signal.SIGKILL)
    assert wait_until(lambda: not m.alive(), timeout=10)
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)], capture_output=True)
    m.pid = None
    for n in names:
        data = (m.backing / n).read_bytes()
        for i in range(size):
            got = data[i] if i < len(data) else None
            if synced[n][i] not in (None, 0):
                # fsync'd: that value, or one written there later.
                assert got is not None and (got == synced[n][i] or got in since_sync[n][i]), \
                    f"{n}[{i}] = {got}, fsync'd {synced[n][i]}"
            if got not in (None, 0):
                assert got in history[n][i], f"{n}[{i}] = {got}, never written there"


@pytest.mark.parametrize("options", [("no_writeback_cache",), ()], ids=["cache", "cache+kernel_writeback"])
def test_sigterm_writes_back_data_of_files_still_open(make_mount, options):
    m = make_mount(options=options)
    fd = os.open(m.mnt / "open", os.O_WRONLY | os.O_CREAT, 0o644)
    data = b"".join(f"{i:06d}\n".encode() for i in range(20000))
    for off in range(0, len(data), 1000):
        os.write(fd, data[off:off + 1000])
    pid = m.pid
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not m.alive(), timeout=20), "daemon still running after SIGTERM"
    m.pid = None
    try:
        os.close(fd)
    except OSError:
        pass
    subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)], capture_output=True)
    assert (m.backing / "open").read_bytes() == data
    assert "could not be written back" not in m.log_file.read_text()


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_commit_snapshots_are_exact_with_kernel_writeback_and_synchronous_off(make_mount, mode):
    """synchronous=OFF: SQLite syncs nothing, so at a commit the database's pages may still
    be in the kernel's write-back cache; each commit snapshot must still hold exactly the
    transactions up to it."""
    import sqlite3
    m = make_mount(extra_args=EVERY_COMMIT)   # the default: the kernel's write-back cache
    c = sqlite3.connect(m.mnt / "app.db", isolation_level=None)
    c.execute(f"pragma journal_mode={mode}")
    c.execute("pragma synchronous=OFF")
    c.execute("create table t(n integer, pad blob)")
    for i in range(1, 31):
        c.execute("begin")
        c.execute("insert into t values (?, randomblob(3000))", (i,))
        c.execute("commit")
    c.close()
    seen = []
    for snap in sorted(p for p in (m.mnt / ".snapshots").iterdir() if (p / "app.db").exists()):
        d = sqlite3.connect(f"file:{snap / 'app.db'}?mode=ro", uri=True)
        assert d.execute("pragma integrity_check").fetchone()[0] == "ok", snap
        tables = [r[0] for r in d.execute("select name from sqlite_master")]
        if "t" in tables:
            seen.append(d.execute("select coalesce(max(n), 0) from t").fetchone()[0])
        d.close()
    # Every commit of an insert is there, each exactly at its transaction.
    assert seen == list(range(0, 31))
