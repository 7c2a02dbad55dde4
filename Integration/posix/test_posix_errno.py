"""POSIX conformance through a real snapfs mount: the errno table against a plain directory,
EXDEV, read-only mounts.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import errno
import os
import stat

import pytest

from lib.libc import (RENAME_NOREPLACE, RENAME_EXCHANGE, FALLOC_FL_PUNCH_HOLE, XATTR_CREATE,
    XATTR_REPLACE, fallocate, getxattr_size, renameat2)
from lib.posix import errno_of, expect_errno, read_file, write_file


# -------------------------------------------------------------- errno table, vs plain

def _tree(r):
    write_file(r / "f", b"data")
    os.mkdir(r / "d")
    os.mkdir(r / "full")
    write_file(r / "full" / "x", b"")
    os.symlink("f", r / "l")
    os.symlink("d", r / "ldir")
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    os.symlink("nothere", r / "dangling")
    os.mkfifo(r / "fifo")


def _with_fd(path, flags, fn):
    fd = os.open(path, flags)
    try:
        return fn(fd)
    finally:
        os.close(fd)


def _open_close(path, flags, mode=0o644):
    os.close(os.open(path, flags, mode))


def _create_unlink_stat(r):
    write_file(r / "gone", b"x")
    os.stat(r / "gone")
    os.unlink(r / "gone")
    os.stat(r / "gone")


def _stat_missing_then_create(r):
    # a cached negative lookup must not hide a file created afterwards
    try:
        os.stat(r / "later")
    except FileNotFoundError:
        pass
    write_file(r / "later", b"x")
    os.stat(r / "later")
    os.stat(r / "later" / "x")


def _rename_then_stat_old(r):
    os.rename(r / "f", r / "f2")
    os.stat(r / "f")


def _rmdir_then_stat(r):
    os.rmdir(r / "d")
    os.stat(r / "d")


LONG = "n" * 256
OK_LEN = "n" * 255
E = errno

ERRNO_CASES = [
    # ENOENT
    ("stat-missing", E.ENOENT, lambda r: os.stat(r / "missing")),
    ("lstat-missing", E.ENOENT, lambda r: os.lstat(r / "missing")),
    ("open-missing", E.ENOENT, lambda r: _open_close(r / "missing", os.O_RDONLY)),
    ("unlink-missing", E.ENOENT, lambda r: os.unlink(r / "missing")),
    ("rmdir-missing", E.ENOENT, lambda r: os.rmdir(r / "missing")),
    ("stat-under-missing-dir", E.ENOENT, lambda r: os.stat(r / "nodir" / "x")),
    ("create-under-missing-dir", E.ENOENT, lambda r: _open_close(r / "nodir" / "x", os.O_CREAT | os.O_WRONLY)),
    ("mkdir-under-missing-dir", E.ENOENT, lambda r: os.mkdir(r / "nodir" / "x")),
    ("readlink-missing", E.ENOENT, lambda r: os.readlink(r / "missing")),
    ("rename-missing-src", E.ENOENT, lambda r: os.rename(r / "missing", r / "y")),
    ("link-missing-src", E.ENOENT, lambda r: os.link(r / "missing", r / "y")),
    ("open-dangling-symlink", E.ENOENT, lambda r: _open_close(r / "dangling", os.O_RDONLY)),
    ("chmod-missing", E.ENOENT, lambda r: os.chmod(r / "missing", 0o600)),
    ("truncate-missing", E.ENOENT, lambda r: os.truncate(r / "missing", 0)),
    ("listdir-missing", E.ENOENT, lambda r: os.listdir(r / "missing")),
    ("getxattr-missing-file", E.ENOENT, lambda r: os.getxattr(r / "missing", "user.x")),
    ("stat-after-unlink", E.ENOENT, _create_unlink_stat),
    ("stat-after-rename", E.ENOENT, _rename_then_stat_old),
    ("stat-after-rmdir", E.ENOENT, _rmdir_then_stat),
    ("stat-child-by-old-path-after-dir-rename", E.ENOENT,
     lambda r: (os.stat(r / "full" / "x"), os.rename(r / "full", r / "full2"), os.stat(r / "full" / "x"))),
    ("negative-lookup-then-create", E.ENOTDIR, _stat_missing_then_create),
    ("exchange-missing-target", E.ENOENT, lambda r: renameat2(r / "f", r / "missing", RENAME_EXCHANGE)),
    # EEXIST
    ("mkdir-existing-dir", E.EEXIST, lambda r: os.mkdir(r / "d")),
    ("mkdir-existing-file", E.EEXIST, lambda r: os.mkdir(r / "f")),
    ("mkdir-over-dangling-symlink", E.EEXIST, lambda r: os.mkdir(r / "dangling")),
    ("open-excl-existing", E.EEXIST, lambda r: _open_close(r / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
    ("open-excl-dir", E.EEXIST, lambda r: _open_close(r / "d", os.O_CREAT | os.O_EXCL | os.O_WRONLY)),
    ("link-onto-existing", E.EEXIST, lambda r: os.link(r / "f", r / "full" / "x")),
    ("symlink-onto-existing", E.EEXIST, lambda r: os.symlink("whatever", r / "f")),
    ("symlink-onto-dir", E.EEXIST, lambda r: os.symlink("whatever", r / "d")),
    ("rename-noreplace", E.EEXIST, lambda r: renameat2(r / "f", r / "full" / "x", RENAME_NOREPLACE)),
    ("mkfifo-existing", E.EEXIST, lambda r: os.mkfifo(r / "fifo")),
    ("mknod-existing", E.EEXIST, lambda r: os.mknod(r / "f", stat.S_IFREG | 0o600)),
    # ENOTEMPTY
    ("rmdir-nonempty", E.ENOTEMPTY, lambda r: os.rmdir(r / "full")),
    ("rename-dir-over-nonempty", E.ENOTEMPTY, lambda r: os.rename(r / "d", r / "full")),
    # EISDIR
    ("open-dir-wronly", E.EISDIR, lambda r: _open_close(r / "d", os.O_WRONLY)),
    ("open-dir-rdwr", E.EISDIR, lambda r: _open_close(r / "d", os.O_RDWR)),
    ("open-creat-on-dir", E.EISDIR, lambda r: _open_close(r / "d", os.O_CREAT | os.O_WRONLY)),
    ("rename-file-over-dir", E.EISDIR, lambda r: os.rename(r / "f", r / "d")),
    ("unlink-dir", E.EISDIR, lambda r: os.unlink(r / "d")),
    ("truncate-dir", E.EISDIR, lambda r: os.truncate(r / "d", 0)),
    ("read-dir-fd", E.EISDIR, lambda r: _with_fd(r / "d", os.O_RDONLY, lambda fd: os.read(fd, 10))),
    # ENOTDIR
    ("stat-through-file", E.ENOTDIR, lambda r: os.stat(r / "f" / "x")),
    ("open-through-file", E.ENOTDIR, lambda r: _open_close(r / "f" / "x", os.O_RDONLY)),
    ("create-through-file", E.ENOTDIR, lambda r: _open_close(r / "f" / "x", os.O_CREAT | os.O_WRONLY)),
    ("mkdir-through-file", E.ENOTDIR, lambda r: os.mkdir(r / "f" / "x")),
    ("file-trailing-slash", E.ENOTDIR, lambda r: os.stat(str(r / "f") + "/")),
    ("rmdir-file", E.ENOTDIR, lambda r: os.rmdir(r / "f")),
    ("rmdir-symlink-to-dir", E.ENOTDIR, lambda r: os.rmdir(r / "ldir")),
    ("rename-dir-over-file", E.ENOTDIR, lambda r: os.rename(r / "d", r / "f")),
    ("listdir-file", E.ENOTDIR, lambda r: os.listdir(r / "f")),
    ("o-directory-on-file", E.ENOTDIR, lambda r: _open_close(r / "f", os.O_RDONLY | os.O_DIRECTORY)),
    # ELOOP
    ("open-nofollow-symlink", E.ELOOP, lambda r: _open_close(r / "l", os.O_RDONLY | os.O_NOFOLLOW)),
    ("open-nofollow-dir-symlink", E.ENOTDIR,
     lambda r: _open_close(r / "ldir", os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)),
    ("open-symlink-loop", E.ELOOP, lambda r: _open_close(r / "loop1", os.O_RDONLY)),
    ("stat-symlink-loop", E.ELOOP, lambda r: os.stat(r / "loop1")),
    ("create-through-loop", E.ELOOP, lambda r: _open_close(r / "loop1", os.O_CREAT | os.O_WRONLY)),
    # ENAMETOOLONG
    ("stat-256", E.ENAMETOOLONG, lambda r: os.stat(r / LONG)),
    ("create-256", E.ENAMETOOLONG, lambda r: _open_close(r / LONG, os.O_CREAT | os.O_WRONLY)),
    ("mkdir-256", E.ENAMETOOLONG, lambda r: os.mkdir(r / LONG)),
    ("symlink-256", E.ENAMETOOLONG, lambda r: os.symlink("f", r / LONG)),
    ("rename-to-256", E.ENAMETOOLONG, lambda r: os.rename(r / "f", r / LONG)),
    ("link-to-256", E.ENAMETOOLONG, lambda r: os.link(r / "f", r / LONG)),
    ("create-255-then-256", E.ENAMETOOLONG,
     lambda r: (_open_close(r / OK_LEN, os.O_CREAT | os.O_WRONLY), os.stat(r / (OK_LEN + "n")))),
    # EINVAL
    ("rename-dir-into-itself", E.EINVAL, lambda r: os.rename(r / "full", r / "full" / "sub")),
    ("rmdir-dot", E.EINVAL, lambda r: os.rmdir(os.path.join(r, "d", "."))),
    ("renameat2-bad-flags", E.EINVAL, lambda r: renameat2(r / "f", r / "d", RENAME_NOREPLACE | RENAME_EXCHANGE)),
    ("readlink-regular-file", E.EINVAL, lambda r: os.readlink(r / "f")),
    ("readlink-dir", E.EINVAL, lambda r: os.readlink(r / "d")),
    # EPERM / EBUSY-ish
    ("link-a-directory", E.EPERM, lambda r: os.link(r / "d", r / "dlink")),
    ("user-xattr-on-symlink", E.EPERM, lambda r: os.setxattr(r / "l", "user.x", b"1", follow_symlinks=False)),
    # xattr errors
    ("getxattr-missing", E.ENODATA, lambda r: os.getxattr(r / "f", "user.missing")),
    ("removexattr-missing", E.ENODATA, lambda r: os.removexattr(r / "f", "user.missing")),
    ("setxattr-replace-missing", E.ENODATA, lambda r: os.setxattr(r / "f", "user.m", b"1", XATTR_REPLACE)),
    ("setxattr-create-existing", E.EEXIST,
     lambda r: (os.setxattr(r / "f", "user.e", b"1"), os.setxattr(r / "f", "user.e", b"2", XATTR_CREATE))),
    ("getxattr-small-buffer", E.ERANGE,
     lambda r: (os.setxattr(r / "f", "user.e", b"12345"), getxattr_size(r / "f", "user.e", 2))),
    ("setxattr-unknown-namespace", E.EOPNOTSUPP, lambda r: os.setxattr(r / "f", "bogus.x", b"1")),
    # EFBIG: beyond ext4's largest file
    ("pwrite-beyond-max-file-size", E.EFBIG,
     lambda r: _with_fd(r / "f", os.O_RDWR, lambda fd: os.pwrite(fd, b"x", 1 << 45))),
    ("truncate-beyond-max-file-size", E.EFBIG, lambda r: os.truncate(r / "f", 1 << 45)),
    ("fallocate-beyond-max-file-size", E.EFBIG,
     lambda r: _with_fd(r / "f", os.O_RDWR, lambda fd: fallocate(fd, 0, 1 << 45, 4096))),
    ("truncate-negative", E.EINVAL, lambda r: os.truncate(r / "f", -1)),
    # fallocate / seek / fifo
    ("punch-hole-without-keep-size", E.EOPNOTSUPP,
     lambda r: _with_fd(r / "f", os.O_RDWR, lambda fd: fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096))),
    ("fallocate-zero-length", E.EINVAL,
     lambda r: _with_fd(r / "f", os.O_RDWR, lambda fd: fallocate(fd, 0, 0, 0))),
    ("seek-data-at-eof", E.ENXIO, lambda r: _with_fd(r / "f", os.O_RDONLY, lambda fd: os.lseek(fd, 4, os.SEEK_DATA))),
    ("seek-hole-past-eof", E.ENXIO,
     lambda r: _with_fd(r / "f", os.O_RDONLY, lambda fd: os.lseek(fd, 5, os.SEEK_HOLE))),
    ("fifo-open-write-no-reader", E.ENXIO, lambda r: _open_close(r / "fifo", os.O_WRONLY | os.O_NONBLOCK)),
    ("lseek-fifo", E.ESPIPE,
     lambda r: _with_fd(r / "fifo", os.O_RDONLY | os.O_NONBLOCK, lambda fd: os.lseek(fd, 0, os.SEEK_SET))),
]


@pytest.mark.parametrize("want,op", [c[1:] for c in ERRNO_CASES], ids=[c[0] for c in ERRNO_CASES])
def test_errno_matches_local_fs(m, plain, want, op):
    got = {}
    for name, root in (("snapfs", m.mnt), ("plain", plain)):
        _tree(root)
        got[name] = errno_of(lambda: op(root))
    assert got["plain"] == errno.errorcode[want], f"test premise wrong on plain ext4: {got}"
    assert got["snapfs"] == got["plain"], f"snapfs differs from local fs: {got}"
    # the failed operation changed nothing that the backing tree disagrees with
    assert sorted(os.listdir(m.mnt)) == sorted(os.listdir(m.backing))


# -------------------------------------------------------------------------------- EXDEV

def test_exdev_between_mounts_and_outside(m, make_mount, outside):
    m1 = m
    m2 = make_mount(name="mnt2")
    write_file(m1.mnt / "a", b"a")
    write_file(m2.mnt / "b", b"b")
    write_file(outside / "o", b"o")
    os.mkdir(m1.mnt / "dir")
    expect_errno(errno.EXDEV, os.rename, m1.mnt / "a", m2.mnt / "a")
    expect_errno(errno.EXDEV, os.rename, m1.mnt / "dir", m2.mnt / "dir")
    expect_errno(errno.EXDEV, os.link, m1.mnt / "a", m2.mnt / "a")
    expect_errno(errno.EXDEV, os.rename, m1.mnt / "a", outside / "a")
    expect_errno(errno.EXDEV, os.rename, outside / "o", m1.mnt / "o")
    expect_errno(errno.EXDEV, os.link, m1.mnt / "a", outside / "a")
    expect_errno(errno.EXDEV, os.link, outside / "o", m1.mnt / "o")
    expect_errno(errno.EXDEV, renameat2, m1.mnt / "a", m2.mnt / "b", RENAME_EXCHANGE)
    # nothing moved
    assert sorted(os.listdir(m1.mnt)) == ["a", "dir"]
    assert os.listdir(m2.mnt) == ["b"]
    assert os.listdir(outside) == ["o"]
    assert read_file(m1.backing / "a") == b"a"
    # the two mounts are two filesystems
    assert os.stat(m1.mnt).st_dev != os.stat(m2.mnt).st_dev


# --------------------------------------------------------------------------- read-only

@pytest.mark.parametrize("op", [
    lambda r: write_file(r / "new", b""),
    lambda r: _open_close(r / "f", os.O_WRONLY),
    lambda r: os.mkdir(r / "nd"),
    lambda r: os.unlink(r / "f"),
    lambda r: os.rename(r / "f", r / "g"),
    lambda r: os.chmod(r / "f", 0o600),
    lambda r: os.utime(r / "f"),
    lambda r: os.setxattr(r / "f", "user.x", b"1"),
    lambda r: os.symlink("f", r / "s"),
    lambda r: os.truncate(r / "f", 0),
], ids=["create", "open-write", "mkdir", "unlink", "rename", "chmod", "utime", "setxattr", "symlink", "truncate"])
def test_readonly_mount_gives_erofs(ro_mount, op):
    m = ro_mount
    expect_errno(errno.EROFS, op, m.mnt)
    assert read_file(m.mnt / "f") == b"keep"
    assert sorted(os.listdir(m.backing)) == ["f"]
    assert sorted(os.listdir(m.mnt)) == ["f"]
    assert stat.S_IMODE(os.stat(m.backing / "f").st_mode) == 0o644
    assert os.listxattr(m.backing / "f") == []
