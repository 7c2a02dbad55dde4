"""POSIX conformance through a real snapfs mount: extended attributes.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import errno
import os
import time

from lib.libc import XATTR_CREATE, XATTR_REPLACE, getxattr_size
from lib.posix import PAUSE, age, assert_mirrors, expect_errno, write_file


# ----------------------------------------------------------------------------- xattrs

def test_xattrs(m):
    p = m.mnt / "f"
    write_file(p, b"x")
    assert [a for a in os.listxattr(p) if a.startswith("user.")] == []
    os.setxattr(p, "user.one", b"1")
    os.setxattr(p, "user.two", b"\x00binary\xff" * 10)
    os.setxattr(p, "user.empty", b"")
    big = os.urandom(3000)
    os.setxattr(p, "user.big", big)
    assert os.getxattr(p, "user.one") == b"1"
    assert os.getxattr(p, "user.two") == b"\x00binary\xff" * 10
    assert os.getxattr(p, "user.empty") == b""
    assert os.getxattr(p, "user.big") == big
    assert sorted(a for a in os.listxattr(p) if a.startswith("user.")) == \
        ["user.big", "user.empty", "user.one", "user.two"]
    # the size probe (size 0) returns the value's length
    assert getxattr_size(p, "user.big", 0) == 3000
    expect_errno(errno.ERANGE, getxattr_size, p, "user.big", 10)
    # visible in the backing file
    assert os.getxattr(m.backing / "f", "user.big") == big
    assert sorted(a for a in os.listxattr(m.backing / "f") if a.startswith("user.")) == \
        ["user.big", "user.empty", "user.one", "user.two"]
    # flags
    expect_errno(errno.EEXIST, os.setxattr, p, "user.one", b"x", XATTR_CREATE)
    expect_errno(errno.ENODATA, os.setxattr, p, "user.nope", b"x", XATTR_REPLACE)
    os.setxattr(p, "user.one", b"replaced", XATTR_REPLACE)
    os.setxattr(p, "user.three", b"3", XATTR_CREATE)
    assert os.getxattr(p, "user.one") == b"replaced"
    assert os.getxattr(p, "user.three") == b"3"
    # missing / removed
    expect_errno(errno.ENODATA, os.getxattr, p, "user.missing")
    expect_errno(errno.ENODATA, os.removexattr, p, "user.missing")
    os.removexattr(p, "user.two")
    expect_errno(errno.ENODATA, os.getxattr, p, "user.two")
    expect_errno(errno.ENODATA, os.getxattr, m.backing / "f", "user.two")
    assert "user.two" not in os.listxattr(p)
    # on a directory, and through an fd
    os.mkdir(m.mnt / "d")
    os.setxattr(m.mnt / "d", "user.dir", b"yes")
    assert os.getxattr(m.backing / "d", "user.dir") == b"yes"
    fd = os.open(p, os.O_RDONLY)
    try:
        os.setxattr(fd, "user.viafd", b"fd")
        assert os.getxattr(fd, "user.viafd") == b"fd"
        assert "user.viafd" in os.listxattr(fd)
    finally:
        os.close(fd)
    # user.* on a symlink itself is not allowed on Linux
    os.symlink("f", m.mnt / "l")
    expect_errno(errno.EPERM, os.setxattr, m.mnt / "l", "user.x", b"1", follow_symlinks=False)
    os.setxattr(m.mnt / "l", "user.through-link", b"1")   # follows to f
    assert os.getxattr(m.backing / "f", "user.through-link") == b"1"
    # the xattrs survive a rename
    os.rename(p, m.mnt / "g")
    assert os.getxattr(m.mnt / "g", "user.big") == big


def test_xattr_changes_ctime(m):
    p = m.mnt / "f"
    write_file(p, b"x")
    before = age(p)
    os.setxattr(p, "user.a", b"1")
    st = os.stat(p)
    assert st.st_ctime_ns > before.st_ctime_ns
    assert st.st_mtime_ns == before.st_mtime_ns
    time.sleep(PAUSE)
    os.removexattr(p, "user.a")
    assert os.stat(p).st_ctime_ns > st.st_ctime_ns
    assert_mirrors(m, "f")
