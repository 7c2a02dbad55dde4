"""POSIX conformance through a real snapfs mount: locks.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import errno
import fcntl
import os
import subprocess
import sys

import pytest

from lib.posix import expect_errno, setlk, write_file


# ------------------------------------------------------------------------------ locks

LOCK_TRY = r"""
import errno, fcntl, os, struct, sys
path, kind, start, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_RDWR)
try:
    if kind == "lockf":
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
    elif kind == "setlk-rd":
        fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi4x", fcntl.F_RDLCK, 0, start, length, 0))
    elif kind == "getlk":
        r = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, start, length, 0))
        t, w, s, l, pid = struct.unpack("hhqqi4x", r)
        print("TYPE", t, s, l, pid)
        sys.exit(0)
    elif kind == "flock-ex":
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    elif kind == "flock-sh":
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    print("OK")
except OSError as e:
    print(errno.errorcode[e.errno])
"""

LOCK_HOLD = r"""
import fcntl, os, struct, sys
path, kind = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
if kind == "posix":
    fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
else:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("LOCKED", flush=True)
sys.stdin.readline()
os.close(fd)
print("CLOSED", flush=True)
sys.stdin.readline()
"""


def try_lock(path, kind, start=0, length=0):
    r = subprocess.run([sys.executable, "-c", LOCK_TRY, str(path), kind, str(start), str(length)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()



def test_posix_lock_conflicts_between_processes(m):
    p = m.mnt / "f"
    write_file(p, b"x" * 1000)
    os.link(p, m.mnt / "other-name")
    fd = os.open(p, os.O_RDWR)
    try:
        setlk(fd, fcntl.F_WRLCK, 0, 100)
        assert try_lock(p, "lockf", 0, 100) in ("EAGAIN", "EACCES")
        assert try_lock(p, "lockf", 50, 100) in ("EAGAIN", "EACCES")
        assert try_lock(p, "setlk-rd", 99, 1) in ("EAGAIN", "EACCES")
        assert try_lock(p, "lockf", 100, 100) == "OK"       # disjoint range
        # the same inode under another name conflicts too
        assert try_lock(m.mnt / "other-name", "lockf", 0, 10) in ("EAGAIN", "EACCES")
        # F_GETLK reports the holder
        out = try_lock(p, "getlk", 0, 0).split()
        assert out[0] == "TYPE" and int(out[1]) == fcntl.F_WRLCK
        assert (int(out[2]), int(out[3]), int(out[4])) == (0, 100, os.getpid())
        # downgrade to a read lock: readers may share, writers may not
        setlk(fd, fcntl.F_RDLCK, 0, 100)
        assert try_lock(p, "setlk-rd", 0, 100) == "OK"
        assert try_lock(p, "lockf", 0, 100) in ("EAGAIN", "EACCES")
        # unlock
        setlk(fd, fcntl.F_UNLCK, 0, 100)
        assert try_lock(p, "lockf", 0, 100) == "OK"
        setlk(fd, fcntl.F_WRLCK, 0, 0)
        assert try_lock(p, "lockf", 500, 1) in ("EAGAIN", "EACCES")
    finally:
        os.close(fd)
    # closing any descriptor of the file releases the process's POSIX locks
    assert try_lock(p, "lockf", 0, 0) == "OK"


def _holder(path, kind):
    h = subprocess.Popen([sys.executable, "-c", LOCK_HOLD, str(path), kind],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert h.stdout.readline().strip() == "LOCKED"
    return h


@pytest.mark.parametrize("kind", ["posix", "flock"])
def test_lock_released_when_holder_closes(m, kind):
    p = m.mnt / "f"
    write_file(p, b"x")
    h = _holder(p, kind)
    try:
        fd = os.open(p, os.O_RDWR)
        try:
            if kind == "posix":
                expect_errno((errno.EAGAIN, errno.EACCES), fcntl.lockf, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                expect_errno(errno.EWOULDBLOCK, fcntl.flock, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                expect_errno(errno.EWOULDBLOCK, fcntl.flock, fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            h.stdin.write("\n")
            h.stdin.flush()
            assert h.stdout.readline().strip() == "CLOSED"
            if kind == "posix":
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        h.stdin.write("\n")
        h.stdin.close()
        h.wait(30)


def test_flock_conflicts_between_processes(m):
    p = m.mnt / "f"
    write_file(p, b"x")
    fd = os.open(p, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert try_lock(p, "flock-ex") == "EAGAIN"
        assert try_lock(p, "flock-sh") == "EAGAIN"
        # flock and POSIX locks are independent
        assert try_lock(p, "lockf", 0, 0) == "OK"
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)   # convert
        assert try_lock(p, "flock-sh") == "OK"
        assert try_lock(p, "flock-ex") == "EAGAIN"
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert try_lock(p, "flock-ex") == "OK"
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(fd)
    assert try_lock(p, "flock-ex") == "OK"
