"""POSIX conformance through a real snapfs mount: POSIX time-stamp and link-count rules,
consistency with the backing directory.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import mmap
import os
import pathlib
import stat
import time

import pytest

from lib.libc import fallocate
from lib.posix import SAME_FIELDS, age, assert_mirrors, kernel_keeps_times, read_file, write_file


# --------------------------------------------------------- POSIX time and nlink rules

def test_create_updates_parent_mtime_ctime(m):
    os.mkdir(m.mnt / "d")
    for i, make in enumerate((lambda p: write_file(p, b""), os.mkdir, lambda p: os.symlink("x", p),
                              os.mkfifo, lambda p: os.mknod(p, stat.S_IFREG | 0o644))):
        old = age(m.mnt / "d")
        make(m.mnt / "d" / f"new{i}")
        st = os.stat(m.mnt / "d")
        assert st.st_mtime_ns > old.st_mtime_ns, i
        assert st.st_ctime_ns > old.st_ctime_ns, i
        assert_mirrors(m, "d")
        # the new object's times are "now"
        new = os.lstat(m.mnt / "d" / f"new{i}")
        assert new.st_mtime_ns >= old.st_ctime_ns and new.st_ctime_ns >= old.st_ctime_ns


def test_unlink_updates_parent_and_target_ctime(m):
    os.mkdir(m.mnt / "d")
    write_file(m.mnt / "d" / "f", b"x")
    os.link(m.mnt / "d" / "f", m.mnt / "keep")
    old_dir = age(m.mnt / "d")
    old_f = age(m.mnt / "keep")
    assert old_f.st_nlink == 2
    os.unlink(m.mnt / "d" / "f")
    d, k = os.stat(m.mnt / "d"), os.stat(m.mnt / "keep")
    assert d.st_mtime_ns > old_dir.st_mtime_ns and d.st_ctime_ns > old_dir.st_ctime_ns
    assert k.st_nlink == 1
    assert k.st_ctime_ns > old_f.st_ctime_ns
    assert k.st_mtime_ns == old_f.st_mtime_ns
    assert_mirrors(m, "d")
    assert_mirrors(m, "keep")


def test_link_updates_nlink_and_ctime(m):
    write_file(m.mnt / "f", b"x")
    os.mkdir(m.mnt / "d")
    old = age(m.mnt / "f")
    old_dir = age(m.mnt / "d")
    os.link(m.mnt / "f", m.mnt / "d" / "g")
    st = os.stat(m.mnt / "f")
    assert st.st_nlink == 2
    assert st.st_ctime_ns > old.st_ctime_ns
    assert st.st_mtime_ns == old.st_mtime_ns
    d = os.stat(m.mnt / "d")
    assert d.st_mtime_ns > old_dir.st_mtime_ns and d.st_ctime_ns > old_dir.st_ctime_ns
    assert_mirrors(m, "f")
    assert_mirrors(m, "d")


def test_mkdir_rmdir_update_parent_nlink_and_times(m):
    os.mkdir(m.mnt / "p")
    old = age(m.mnt / "p")
    os.mkdir(m.mnt / "p" / "c")
    st = os.stat(m.mnt / "p")
    assert st.st_nlink == old.st_nlink + 1
    assert st.st_mtime_ns > old.st_mtime_ns and st.st_ctime_ns > old.st_ctime_ns
    old = age(m.mnt / "p")
    os.rmdir(m.mnt / "p" / "c")
    st = os.stat(m.mnt / "p")
    assert st.st_nlink == old.st_nlink - 1
    assert st.st_mtime_ns > old.st_mtime_ns and st.st_ctime_ns > old.st_ctime_ns
    assert_mirrors(m, "p")


@pytest.mark.parametrize("how", ["write", "pwrite", "writev", "mmap", "truncate", "copy_file_range", "fallocate"])
def test_write_updates_mtime_ctime(m, how):
    p = m.mnt / "f"
    write_file(p, b"0" * 8192)
    write_file(m.mnt / "src", b"S" * 100)
    old = age(p)
    assert os.stat(p).st_mtime_ns == old.st_mtime_ns   # cached value is the aged one
    fd = os.open(p, os.O_RDWR)
    try:
        if how == "write":
            os.write(fd, b"new")
        elif how == "pwrite":
            os.pwrite(fd, b"new", 9000)
        elif how == "writev":
            os.writev(fd, [b"a", b"b"])
        elif how == "mmap":
            mm = mmap.mmap(fd, 8192)
            mm[0:3] = b"new"
            mm.flush()
            mm.close()
        elif how == "truncate":
            os.truncate(p, 100)
        elif how == "copy_file_range":
            s = os.open(m.mnt / "src", os.O_RDONLY)
            try:
                assert os.copy_file_range(s, fd, 100, 0, 0) == 100
            finally:
                os.close(s)
        elif how == "fallocate":
            fallocate(fd, 0, 8192, 8192)
        during = os.fstat(fd)
    finally:
        os.close(fd)
    st = os.stat(p)
    assert st.st_mtime_ns > old.st_mtime_ns, "mtime not updated"
    assert st.st_ctime_ns > old.st_ctime_ns, "ctime not updated"
    assert during.st_mtime_ns > old.st_mtime_ns, "fstat on the open fd shows stale mtime"
    assert_mirrors(m, "f")


@pytest.mark.parametrize("mtime_ns", [9_500_000_000 * 10**9 + 123, -1_500_000_000, 0],
                         ids=["year-2271", "before-1970", "epoch"])
def test_a_set_modification_time_survives_the_write_back(m, mtime_ns):
    """A time the application sets after writing is what the file keeps once its data is
    written back at close, whatever the time: past 2262 its nanoseconds do not fit in 64
    bits (that once crashed the daemon), before 1970 they are negative, and 0 is a time
    like any other."""
    p = m.mnt / "f"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 10_000)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
        os.fsync(fd)
        os.write(fd, b"y")   # the kernel moves the time on again
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(fd)
    assert os.stat(p).st_mtime_ns == mtime_ns
    assert os.stat(m.backing / "f").st_mtime_ns == mtime_ns
    assert read_file(p) == b"x" * 10_000 + b"y"


def test_chmod_chown_update_ctime_not_mtime(m):
    p = m.mnt / "f"
    write_file(p, b"x")
    for change in (lambda: os.chmod(p, 0o600), lambda: os.chown(p, 5, 6), lambda: os.link(p, m.mnt / "g"),
                   lambda: os.rename(m.mnt / "g", m.mnt / "h")):
        old = age(p)
        change()
        st = os.stat(p)
        assert st.st_ctime_ns > old.st_ctime_ns
        assert st.st_mtime_ns == old.st_mtime_ns
        assert st.st_atime_ns == old.st_atime_ns
        assert_mirrors(m, "f")


def test_rename_updates_both_parents_and_moved_ctime(m):
    os.mkdir(m.mnt / "a")
    os.mkdir(m.mnt / "b")
    write_file(m.mnt / "a" / "f", b"x")
    oa, ob, of = age(m.mnt / "a"), age(m.mnt / "b"), age(m.mnt / "a" / "f")
    os.rename(m.mnt / "a" / "f", m.mnt / "b" / "f")
    a, b, f = os.stat(m.mnt / "a"), os.stat(m.mnt / "b"), os.stat(m.mnt / "b" / "f")
    assert a.st_mtime_ns > oa.st_mtime_ns and a.st_ctime_ns > oa.st_ctime_ns
    assert b.st_mtime_ns > ob.st_mtime_ns and b.st_ctime_ns > ob.st_ctime_ns
    assert f.st_ctime_ns > of.st_ctime_ns and f.st_mtime_ns == of.st_mtime_ns
    for n in ("a", "b", "b/f"):
        assert_mirrors(m, n)


def test_read_updates_atime(m):
    # relatime: an access time older than a day is updated by the next read
    write_file(m.mnt / "f", b"read me")
    two_days = time.time_ns() - 2 * 86400 * 10**9
    os.utime(m.mnt / "f", ns=(two_days, two_days))
    assert os.stat(m.mnt / "f").st_atime_ns == two_days
    before = time.time_ns() - 10**9
    assert read_file(m.mnt / "f") == b"read me"
    if kernel_keeps_times(m):
        # A read the kernel serves from its page cache reaches neither snapfs nor the
        # backing file: the access time stays (as with noatime), through the mount and below.
        assert os.stat(m.mnt / "f").st_atime_ns == os.stat(m.backing / "f").st_atime_ns
    else:
        assert os.stat(m.mnt / "f").st_atime_ns >= before
        assert_mirrors(m, "f", SAME_FIELDS + ("st_atime_ns",))
    os.mkdir(m.mnt / "d")
    os.utime(m.mnt / "d", ns=(two_days, two_days))
    os.listdir(m.mnt / "d")
    assert os.stat(m.mnt / "d").st_atime_ns >= before


# --------------------------------------------------------------- backing consistency

def test_tree_built_through_mount_is_in_backing(m):
    files = {}
    for i in range(20):
        sub = pathlib.Path(f"lvl{i % 4}") / f"sub{i % 3}"
        os.makedirs(m.mnt / sub, exist_ok=True)
        data = os.urandom(i * 997)
        write_file(m.mnt / sub / f"file{i}", data)
        files[sub / f"file{i}"] = data
    os.symlink("lvl0", m.mnt / "link")
    for rel, data in files.items():
        assert read_file(m.backing / rel) == data
        assert read_file(m.mnt / rel) == data
        assert_mirrors(m, rel)
    walk_m = sorted((os.path.relpath(d, m.mnt), sorted(ds), sorted(fs)) for d, ds, fs in os.walk(m.mnt))
    walk_b = sorted((os.path.relpath(d, m.backing), sorted(ds), sorted(fs)) for d, ds, fs in os.walk(m.backing))
    assert walk_m == walk_b
    assert os.readlink(m.backing / "link") == "lvl0"
