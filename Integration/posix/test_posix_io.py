"""POSIX conformance through a real snapfs mount: open and create, read and write.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import errno
import mmap
import os
import stat
import subprocess
import sys

import pytest

from lib.libc import fallocate
from lib.posix import MiB, age, assert_mirrors, expect_errno, read_file, write_file


# ---------------------------------------------------------------------- open / create

def test_open_creat_excl(m):
    p = m.mnt / "f"
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.write(fd, b"first")
    os.close(fd)
    expect_errno(errno.EEXIST, os.open, p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    assert read_file(p) == b"first"
    # O_CREAT without O_EXCL opens the existing file and keeps its content and mode
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o777)
    assert os.read(fd, 100) == b"first"
    os.close(fd)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    # O_EXCL on a dangling symlink must not create the target
    os.symlink("target", m.mnt / "dangling")
    expect_errno(errno.EEXIST, os.open, m.mnt / "dangling", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert not os.path.lexists(m.backing / "target")
    # O_CREAT without O_EXCL through a dangling symlink creates the target
    fd = os.open(m.mnt / "dangling", os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    assert os.path.isfile(m.backing / "target")


def test_open_trunc(m):
    write_file(m.mnt / "f", b"x" * 100000)
    old = age(m.mnt / "f")
    assert read_file(m.mnt / "f")[:10] == b"x" * 10   # fill the page cache
    fd = os.open(m.mnt / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)
    st = os.stat(m.mnt / "f")
    assert st.st_size == 0
    assert read_file(m.mnt / "f") == b""
    assert st.st_mtime_ns > old.st_mtime_ns and st.st_ctime_ns > old.st_ctime_ns
    assert os.stat(m.backing / "f").st_size == 0
    assert_mirrors(m, "f")
    # O_TRUNC on an empty file and with O_RDONLY|O_TRUNC (Linux truncates)
    fd = os.open(m.mnt / "f", os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    write_file(m.mnt / "g", b"abc")
    fd = os.open(m.mnt / "g", os.O_RDONLY | os.O_TRUNC)
    os.close(fd)
    assert os.stat(m.mnt / "g").st_size == 0


def test_open_append(m):
    p = m.mnt / "log"
    write_file(p, b"start\n")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    other = os.open(p, os.O_WRONLY)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"one\n")
        assert os.lseek(fd, 0, os.SEEK_CUR) == 10
        # another descriptor extends the file; the next append still lands at the end
        os.pwrite(other, b"two\n", 10)
        os.lseek(fd, 2, os.SEEK_SET)
        os.write(fd, b"three\n")
        # pwrite on O_APPEND appends on Linux regardless of the offset
        os.pwrite(fd, b"four\n", 0)
    finally:
        os.close(fd)
        os.close(other)
    want = b"start\none\ntwo\nthree\nfour\n"
    assert read_file(p) == want
    assert read_file(m.backing / "log") == want
    assert os.stat(p).st_size == len(want)


def test_append_from_two_processes(m):
    p = m.mnt / "log"
    write_file(p, b"")
    code = ("import os,sys\nfd=os.open(sys.argv[1], os.O_WRONLY|os.O_APPEND)\n"
            "for i in range(200): os.write(fd, (sys.argv[2]*63+'\\n').encode())\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p), c]) for c in "AB"]
    for pr in procs:
        assert pr.wait(30) == 0
    data = read_file(p)
    assert len(data) == 400 * 64
    lines = data.split(b"\n")[:-1]
    assert sorted(set(lines)) == [b"A" * 63, b"B" * 63]
    assert lines.count(b"A" * 63) == 200


@pytest.mark.parametrize("flags,op,want", [
    (os.O_RDONLY, "write", errno.EBADF),
    (os.O_WRONLY, "read", errno.EBADF),
    (os.O_RDONLY, "ftruncate", errno.EINVAL),
    (os.O_RDONLY, "fallocate", errno.EBADF),
    (os.O_PATH, "read", errno.EBADF),
    (os.O_PATH, "write", errno.EBADF),
], ids=["rdonly-write", "wronly-read", "rdonly-ftruncate", "rdonly-fallocate", "path-read", "path-write"])
def test_wrong_access_mode(m, plain, flags, op, want):
    for root in (m.mnt, plain):
        write_file(root / "f", b"data")
        fd = os.open(root / "f", flags)
        try:
            fn = {"write": lambda: os.write(fd, b"x"), "read": lambda: os.read(fd, 1),
                  "ftruncate": lambda: os.ftruncate(fd, 0),
                  "fallocate": lambda: fallocate(fd, 0, 0, 4096)}[op]
            expect_errno(want, fn)
        finally:
            os.close(fd)
        assert read_file(root / "f") == b"data"


# ------------------------------------------------------------------------- read/write

def test_read_write_pread_pwrite(m):
    data = os.urandom(3 * MiB + 123)
    write_file(m.mnt / "f", data)
    assert read_file(m.mnt / "f") == data
    assert read_file(m.backing / "f") == data
    fd = os.open(m.mnt / "f", os.O_RDWR)
    try:
        for off, n in ((0, 1), (4095, 2), (MiB - 7, 4096 + 14), (3 * MiB, 200), (len(data) - 5, 100)):
            assert os.pread(fd, n, off) == data[off:off + n], (off, n)
        assert os.pread(fd, 10, len(data) + 10) == b""
        os.pwrite(fd, b"PATCH", 2 * MiB + 1)
        data = data[:2 * MiB + 1] + b"PATCH" + data[2 * MiB + 6:]
        # pread/pwrite do not move the file offset
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
        assert os.read(fd, 10) == data[:10]
        assert os.lseek(fd, 0, os.SEEK_CUR) == 10
        # a write past EOF leaves a hole that reads as zeros
        os.pwrite(fd, b"END", len(data) + 1000)
        data = data + bytes(1000) + b"END"
        assert os.fstat(fd).st_size == len(data)
        assert os.lseek(fd, 0, os.SEEK_END) == len(data)
    finally:
        os.close(fd)
    assert read_file(m.mnt / "f") == data
    assert read_file(m.backing / "f") == data
    assert_mirrors(m, "f")


def test_data_coherent_between_descriptors(m):
    p = m.mnt / "f"
    write_file(p, b"a" * 8192)
    r = os.open(p, os.O_RDONLY)
    w = os.open(p, os.O_WRONLY)
    try:
        assert os.pread(r, 8192, 0) == b"a" * 8192   # cached now
        os.pwrite(w, b"b" * 100, 4000)
        assert os.pread(r, 8192, 0) == b"a" * 4000 + b"b" * 100 + b"a" * 4092
        os.ftruncate(w, 10)
        assert os.pread(r, 8192, 0) == b"a" * 10
    finally:
        os.close(r)
        os.close(w)
    # a reopened file sees the same
    assert read_file(p) == b"a" * 10


def test_mmap_shared_write(m):
    write_file(m.mnt / "f", bytes(3 * 4096))
    fd = os.open(m.mnt / "f", os.O_RDWR)
    try:
        mm = mmap.mmap(fd, 3 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        mm[4096:4096 + 5] = b"mmap!"
        mm.flush()
        mm.close()
    finally:
        os.close(fd)
    want = bytes(4096) + b"mmap!" + bytes(4096 * 2 - 5)
    assert read_file(m.backing / "f") == want
    assert read_file(m.mnt / "f") == want


def test_fsync_fdatasync(m):
    fd = os.open(m.mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"durable")
        os.fsync(fd)
        os.fdatasync(fd)
        assert read_file(m.backing / "f") == b"durable"
    finally:
        os.close(fd)
    # fsync on a directory and on a read-only descriptor is allowed
    dfd = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    rfd = os.open(m.mnt / "f", os.O_RDONLY)
    try:
        os.fsync(rfd)
        os.fdatasync(rfd)
    finally:
        os.close(rfd)
    os.sync()
    fd = os.open(m.mnt / "f", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.read(fd, 100) == b"durable"
    finally:
        os.close(fd)
