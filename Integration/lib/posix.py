"""Helpers of the POSIX conformance tests (Integration/posix/): expected errnos, whole-file
reads and writes, aged time stamps, and the mount-vs-backing comparison."""

import errno
import fcntl
import os
import socket
import stat
import struct
import time

import pytest

MiB = 1 << 20
PAUSE = 0.03  # longer than the coarse clock tick, so a new time stamp is a later one



def expect_errno(expected, fn, *args, **kw):
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    got = ei.value.errno
    exp = expected if isinstance(expected, tuple) else (expected,)
    assert got in exp, (f"expected {'/'.join(errno.errorcode[e] for e in exp)}, "
                        f"got {errno.errorcode.get(got, got)} ({ei.value})")
    return got


def errno_of(fn):
    """Name of the errno fn() raises, or 'OK'."""
    try:
        fn()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "OK"


def write_file(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def age(path, seconds=1000, follow=True):
    """Set atime and mtime to the past (this sets ctime to now), then wait a tick."""
    t = time.time_ns() - seconds * 1_000_000_000
    os.utime(path, ns=(t, t), follow_symlinks=follow)
    time.sleep(PAUSE)
    return os.stat(path, follow_symlinks=follow)


SAME_FIELDS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size",
               "st_mtime_ns", "st_ctime_ns", "st_rdev", "st_blocks")


def kernel_keeps_times(m):
    """With the kernel's write-back cache (the default) the kernel keeps a regular file's
    modification and change times itself, as it does for any FUSE filesystem in that
    mode: they are the times of the system calls, while the backing file's are those of
    snapfs's own calls, which come a little later (a write reaches snapfs at write-back)."""
    return "no_writeback_cache" not in m.top.options


TIME_FIELDS = ("st_mtime_ns", "st_ctime_ns")


def assert_mirrors(m, rel, fields=SAME_FIELDS):
    """lstat through the mount equals lstat of the backing object, field by field (the
    times of a regular file within a second when the kernel keeps them)."""
    a = os.lstat(m.mnt / rel)
    b = os.lstat(m.backing / rel)
    loose = kernel_keeps_times(m) and stat.S_ISREG(a.st_mode)

    def same(f):
        if loose and f in TIME_FIELDS:
            return abs(getattr(a, f) - getattr(b, f)) < 1_000_000_000
        return getattr(a, f) == getattr(b, f)
    diff = {f: (getattr(a, f), getattr(b, f)) for f in fields if not same(f)}
    assert not diff, f"{rel}: mount vs backing differ: {diff}"
    return a


def bind_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


def setlk(fd, typ, start=0, length=0):
    fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi4x", typ, 0, start, length, 0))


# The start of a program run as uid 65534: t(f) prints OK or the errno name f() raises.
NOBODY_PRELUDE = r"""
import errno, os, sys
P = sys.argv[1]
def acc(path, mode):
    if not os.access(path, mode):
        raise PermissionError(errno.EACCES, "access")
def t(f):
    try:
        f()
        print("OK")
    except OSError as e:
        print(errno.errorcode[e.errno])
"""
