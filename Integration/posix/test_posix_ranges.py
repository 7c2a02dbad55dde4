"""POSIX conformance through a real snapfs mount: fallocate, copy_file_range,
SEEK_DATA/SEEK_HOLE.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import errno
import os

from lib.libc import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocate
from lib.posix import MiB, assert_mirrors, expect_errno, read_file, write_file


# -------------------------------------------------------------------------- fallocate

def test_fallocate_mode0_grows(m):
    fd = os.open(m.mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"head")
        fallocate(fd, 0, 0, MiB)
        assert os.fstat(fd).st_size == MiB
        assert os.stat(m.mnt / "f").st_size == MiB
        assert os.stat(m.mnt / "f").st_blocks * 512 >= MiB
        assert os.pread(fd, 10, 0) == b"head" + bytes(6)
        assert os.pread(fd, 100, MiB - 100) == bytes(100)
        # posix_fallocate is the same call
        os.posix_fallocate(fd, MiB, MiB)
        assert os.fstat(fd).st_size == 2 * MiB
    finally:
        os.close(fd)
    assert_mirrors(m, "f")


def test_fallocate_keep_size_beyond_eof(m):
    write_file(m.mnt / "f", b"a" * 4096)
    fd = os.open(m.mnt / "f", os.O_RDWR)
    try:
        blocks = os.fstat(fd).st_blocks
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 4096, MiB)
        st = os.fstat(fd)
        assert st.st_size == 4096
        assert st.st_blocks >= blocks + MiB // 512
    finally:
        os.close(fd)
    assert_mirrors(m, "f")


def test_fallocate_punch_hole(m):
    write_file(m.mnt / "f", b"x" * (64 * 1024))
    fd = os.open(m.mnt / "f", os.O_RDWR)
    try:
        assert os.pread(fd, 64 * 1024, 0) == b"x" * (64 * 1024)   # page cache filled
        blocks = os.fstat(fd).st_blocks
        fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 4096, 16384)
        st = os.fstat(fd)
        assert st.st_size == 64 * 1024
        assert st.st_blocks < blocks
        want = b"x" * 4096 + bytes(16384) + b"x" * (64 * 1024 - 20480)
        assert os.pread(fd, 64 * 1024, 0) == want
        # unaligned punch zeroes exactly the bytes asked for
        fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 30000, 10)
        want = want[:30000] + bytes(10) + want[30010:]
        assert os.pread(fd, 64 * 1024, 0) == want
    finally:
        os.close(fd)
    assert read_file(m.mnt / "f") == want
    assert read_file(m.backing / "f") == want
    assert_mirrors(m, "f")


def test_fallocate_zero_range(m):
    write_file(m.mnt / "f", b"y" * 32768)
    fd = os.open(m.mnt / "f", os.O_RDWR)
    try:
        assert os.pread(fd, 32768, 0) == b"y" * 32768
        fallocate(fd, FALLOC_FL_ZERO_RANGE, 1000, 5000)
        want = b"y" * 1000 + bytes(5000) + b"y" * (32768 - 6000)
        assert os.pread(fd, 40000, 0) == want
        assert os.fstat(fd).st_size == 32768
        # past EOF without KEEP_SIZE grows the file, with KEEP_SIZE it doesn't
        fallocate(fd, FALLOC_FL_ZERO_RANGE, 30000, 10000)
        want = want[:30000] + bytes(10000)
        assert os.fstat(fd).st_size == 40000
        fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 39000, 10000)
        want = want[:39000] + bytes(1000)
        assert os.fstat(fd).st_size == 40000
        assert os.pread(fd, 50000, 0) == want
    finally:
        os.close(fd)
    assert read_file(m.backing / "f") == want
    assert_mirrors(m, "f")


# -------------------------------------------------------------------- copy_file_range

def test_copy_file_range(m):
    data = os.urandom(2 * MiB + 77)
    write_file(m.mnt / "src", data)
    write_file(m.mnt / "dst", b"D" * 100)
    src = os.open(m.mnt / "src", os.O_RDONLY)
    dst = os.open(m.mnt / "dst", os.O_RDWR)
    try:
        copied = 0
        while copied < len(data):
            n = os.copy_file_range(src, dst, len(data) - copied, copied, 50 + copied)
            assert n > 0
            copied += n
        want = b"D" * 50 + data
        assert os.fstat(dst).st_size == len(want)
        assert os.pread(dst, len(want) + 10, 0) == want
        # offsets given explicitly leave the file offsets alone
        assert os.lseek(src, 0, os.SEEK_CUR) == 0 and os.lseek(dst, 0, os.SEEK_CUR) == 0
        # without offsets it uses and advances the file offsets
        os.lseek(src, 10, os.SEEK_SET)
        os.lseek(dst, 0, os.SEEK_SET)
        n = os.copy_file_range(src, dst, 5)
        assert n == 5
        assert os.lseek(src, 0, os.SEEK_CUR) == 15 and os.lseek(dst, 0, os.SEEK_CUR) == 5
        want = data[10:15] + want[5:]
        # past the source's end copies nothing
        assert os.copy_file_range(src, dst, 10, len(data) + 1, 0) == 0
    finally:
        os.close(src)
        os.close(dst)
    assert read_file(m.mnt / "dst") == want
    assert read_file(m.backing / "dst") == want
    assert_mirrors(m, "dst")


# ----------------------------------------------------------------- SEEK_DATA/SEEK_HOLE

def test_seek_data_hole(m, plain):
    for root in (m.mnt, plain):
        p = root / "sparse"
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"a" * 4096, 0)
            os.pwrite(fd, b"b" * 4096, 8 * MiB)
            os.fsync(fd)
            size = 8 * MiB + 4096
            assert os.fstat(fd).st_size == size
            assert os.lseek(fd, 0, os.SEEK_DATA) == 0, root
            hole = os.lseek(fd, 0, os.SEEK_HOLE)
            assert 4096 <= hole < 8 * MiB, (root, hole)
            data = os.lseek(fd, MiB, os.SEEK_DATA)
            assert MiB < data <= 8 * MiB and data % 4096 == 0, (root, data)
            assert os.lseek(fd, 8 * MiB, os.SEEK_HOLE) == size, root
            assert os.lseek(fd, 8 * MiB + 100, os.SEEK_DATA) == 8 * MiB + 100, root
            expect_errno(errno.ENXIO, os.lseek, fd, size, os.SEEK_DATA)
            expect_errno(errno.ENXIO, os.lseek, fd, size + 1, os.SEEK_HOLE)
            expect_errno(errno.ENXIO, os.lseek, fd, 100 * MiB, os.SEEK_DATA)
            expect_errno(errno.EINVAL, os.lseek, fd, -1, os.SEEK_SET)
            # SEEK_END/SEEK_CUR still right
            assert os.lseek(fd, -10, os.SEEK_END) == size - 10
            assert os.lseek(fd, 5, os.SEEK_CUR) == size - 5
        finally:
            os.close(fd)
    assert read_file(m.backing / "sparse")[8 * MiB:] == b"b" * 4096
    assert os.stat(m.backing / "sparse").st_blocks < 1000
