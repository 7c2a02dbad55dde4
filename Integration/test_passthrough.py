"""FUSE passthrough through a real mount: a file opened read-only while nothing else has
it open is read by the kernel straight from its backing file (no READ reaches the
daemon); every open that joins it (a writer, a second reader) sees the same data at once,
including truncation and mmap writes; a snapshot taken while it is open still holds the
data of its trigger with every strategy (with hard links: a copy, since the kernel's open
file could not follow a copy-up); a file a hard-link snapshot shares is not passed
through; `-o nopassthrough` turns it off. Every mount here is made with
`-o no_writeback_cache`: the kernel allows passthrough only without its write-back cache."""

import mmap
import os
import re
import subprocess

import pytest

from lib.common import wait_until
from lib.control import snapshot
from lib.mount import log_text


@pytest.fixture
def mount_defaults():
    """Every mount here: the kernel allows passthrough only without its write-back cache."""
    return ("no_writeback_cache",)


def passthrough_opens(m):
    """Node ids the daemon opened in passthrough (`reads`) mode, in order."""
    return [int(n) for n in re.findall(r"open ino=(\d+): passthrough", log_text(m))]


def reads_of(m, node):
    return len(re.findall(rf"\bread ino={node} offset=", log_text(m)))


def wait_all_released(m):
    """Waits until the daemon has released every file opened through the mount: the kernel
    sends RELEASE after close(2) returns, and passthrough starts only on an inode with no
    open file."""
    def settled():
        text = log_text(m)
        opened = len(re.findall(r"\] (?:open ino=\d+|create ino=\d+ name=\S+)$", text, flags=re.MULTILINE))
        return len(re.findall(r"\] release ino=\d+$", text, flags=re.MULTILINE)) >= opened
    assert wait_until(settled, timeout=5), "files opened through the mount were not released"


def opened_in_passthrough(m, before):
    """The node id of the passthrough open logged after the first `before` ones."""
    assert wait_until(lambda: len(passthrough_opens(m)) > before, timeout=5), "no passthrough open was logged"
    return passthrough_opens(m)[before]


@pytest.fixture
def debug_mount(make_mount):
    return make_mount(extra_args=["--debug"])


def test_a_read_only_open_is_read_by_the_kernel(debug_mount):
    m = debug_mount
    data = os.urandom(3 << 20)
    (m.mnt / "f").write_bytes(data)
    wait_all_released(m)
    before = len(passthrough_opens(m))
    with open(m.mnt / "f", "rb") as f:
        node = opened_in_passthrough(m, before)
        assert f.read() == data
        f.seek(12345)
        assert f.read(100) == data[12345:12445]
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            assert mapped[-4096:] == data[-4096:]
    assert reads_of(m, node) == 0
    # A file opened for writing is served by the daemon as before.
    with open(m.mnt / "f", "r+b") as f:
        assert f.read(10) == data[:10]
    assert wait_until(lambda: reads_of(m, node) > 0, timeout=5)


def test_nopassthrough_serves_every_read(make_mount):
    m = make_mount(options=["nopassthrough"], extra_args=["--debug"])
    (m.mnt / "f").write_bytes(b"x" * 10000)
    assert (m.mnt / "f").read_bytes() == b"x" * 10000
    assert passthrough_opens(m) == []
    assert re.search(r"\bread ino=\d+ offset=", log_text(m))


def test_opens_that_join_a_passthrough_reader_see_the_same_data(debug_mount):
    m = debug_mount
    (m.mnt / "f").write_bytes(b"a" * 8192)
    wait_all_released(m)
    reader = os.open(m.mnt / "f", os.O_RDONLY)
    try:
        writer = os.open(m.mnt / "f", os.O_RDWR)
        try:
            assert "direct I/O beside passthrough" in log_text(m)
            os.pwrite(writer, b"written", 100)
            assert os.pread(reader, 7, 100) == b"written"
            assert os.pread(writer, 7, 100) == b"written"
            os.pwrite(writer, b"grown", 8192)
            assert os.fstat(reader).st_size == 8197
            assert os.pread(reader, 10, 8190) == b"aagrown"
            with mmap.mmap(writer, 4096) as mapped:
                mapped[0:6] = b"mapped"
                mapped.flush()
            assert os.pread(reader, 6, 0) == b"mapped"
            os.ftruncate(writer, 50)
            assert os.fstat(reader).st_size == 50
            assert os.pread(reader, 100, 0) == b"mapped" + b"a" * 44
            second = os.open(m.mnt / "f", os.O_RDONLY)
            assert os.pread(second, 100, 0) == b"mapped" + b"a" * 44
            os.close(second)
        finally:
            os.close(writer)
    finally:
        os.close(reader)
    # All closed: an ordinary (cached) open sees the latest data, and so does the backing file.
    with open(m.mnt / "f", "r+b") as f:
        assert f.read() == b"mapped" + b"a" * 44
        f.seek(0)
        f.write(b"cached")
    assert (m.mnt / "f").read_bytes() == b"cached" + b"a" * 44
    assert (m.backing / "f").read_bytes() == b"cached" + b"a" * 44


def test_a_reader_beside_a_cached_writer_sees_its_buffered_writes(debug_mount):
    m = debug_mount
    (m.mnt / "f").write_bytes(b"0" * 4096)
    with open(m.mnt / "f", "r+b", buffering=0) as writer:
        writer.write(b"buffered")          # in snapfs's page cache, not yet in the backing file
        before = len(passthrough_opens(m))
        with open(m.mnt / "f", "rb", buffering=0) as reader:
            assert reader.read(8) == b"buffered"
        assert len(passthrough_opens(m)) == before   # a cached file was open: no passthrough
    # Closed: written back; the next read-only open passes through and sees it.
    wait_all_released(m)
    with open(m.mnt / "f", "rb") as reader:
        assert reader.read(8) == b"buffered"
    assert len(passthrough_opens(m)) == before + 1


def test_a_snapshot_taken_while_a_reader_passes_through_keeps_its_data(strategy_mount):
    kind, m = strategy_mount
    (m.mnt / "f").write_bytes(b"before")
    (m.mnt / "other").write_bytes(b"not open")
    with open(m.mnt / "f", "rb", buffering=0) as reader:
        name = snapshot(m.mnt)
        with open(m.mnt / "f", "r+b", buffering=0) as writer:
            writer.write(b"AFTER!")
        reader.seek(0)
        assert reader.read() == b"AFTER!"
        (m.mnt / "other").write_bytes(b"changed")
    assert (m.mnt / ".snapshots" / name / "f").read_bytes() == b"before"
    assert (m.backing / ".snapshots" / name / "f").read_bytes() == b"before"
    assert (m.mnt / ".snapshots" / name / "other").read_bytes() == b"not open"
    assert (m.mnt / "f").read_bytes() == b"AFTER!"
    if kind == "hardlink":
        # The open file was copied into the snapshot, not linked.
        assert (m.backing / "f").stat().st_nlink == 1


def test_a_file_shared_with_a_hard_link_snapshot_is_not_passed_through(make_mount):
    m = make_mount(options=["strategy=hardlink"], extra_args=["--debug"])
    (m.mnt / "f").write_bytes(b"shared")
    name = snapshot(m.mnt)
    assert (m.backing / "f").stat().st_nlink == 2
    before = len(passthrough_opens(m))
    with open(m.mnt / "f", "rb") as reader:
        assert reader.read() == b"shared"
        with open(m.mnt / "f", "r+b") as writer:   # copies the file up, away from the snapshot
            writer.write(b"SHARED")
        reader.seek(0)
        assert reader.read() == b"SHARED"
    assert len(passthrough_opens(m)) == before
    assert (m.backing / "f").stat().st_nlink == 1
    # Now the file is its own: a read-only open passes through.
    wait_all_released(m)
    assert (m.mnt / "f").read_bytes() == b"SHARED"
    assert len(passthrough_opens(m)) == before + 1
    assert (m.mnt / ".snapshots" / name / "f").read_bytes() == b"shared"


def test_files_in_snapshots_are_passed_through(debug_mount):
    m = debug_mount
    data = os.urandom(1 << 20)
    (m.mnt / "f").write_bytes(data)
    name = snapshot(m.mnt)
    (m.mnt / "f").write_bytes(b"live")
    before = len(passthrough_opens(m))
    assert (m.mnt / ".snapshots" / name / "f").read_bytes() == data
    node = opened_in_passthrough(m, before)
    assert reads_of(m, node) == 0
    r = subprocess.run(["cmp", str(m.mnt / ".snapshots" / name / "f"), str(m.backing / ".snapshots" / name / "f")])
    assert r.returncode == 0


def test_with_hard_link_snapshots_only_files_up_to_64_mib_pass_through(make_mount):
    # A hard-link snapshot copies a file that passes through; the limit keeps that cheap.
    m = make_mount(options=["strategy=hardlink"], extra_args=["--debug"])
    with open(m.mnt / "small", "wb") as f:
        f.truncate(64 << 20)
    with open(m.mnt / "large", "wb") as f:
        f.truncate((64 << 20) + 1)
    wait_all_released(m)
    before = len(passthrough_opens(m))
    with open(m.mnt / "large", "rb") as f:
        assert f.read(10) == bytes(10)
    assert len(passthrough_opens(m)) == before
    wait_all_released(m)
    with open(m.mnt / "small", "rb") as f:
        assert f.read(10) == bytes(10)
    assert len(passthrough_opens(m)) == before + 1
