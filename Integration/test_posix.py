"""POSIX conformance through a real snapfs mount.

Every FUSE operation snapfs serves is exercised through the mount point, and most
results are cross-checked two ways: against the backing directory (what snapfs wrote
there must be what the application sees), and against the same operation on a plain
directory of the same ext4 filesystem (the errno and the visible effect must be the
ones a local filesystem gives).

The kernel caches names and attributes for a long time on a snapfs mount, so the
time-stamp and link-count checks below really check that snapfs (and the kernel's
FUSE code with it) invalidates those caches on every change.
"""

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import pathlib
import socket
import stat
import struct
import subprocess
import sys
import time

import itertools
import shutil
import tempfile
import types

import pytest

from conftest import Mount, run_as_nobody, snapfs_available

# ---------------------------------------------------------------------------- fixtures
#
# One snapfs mount serves the whole module; each test works in its own fresh
# subdirectory of it (and of a plain directory next to it on the same ext4). A mount
# per test would cost more in teardown than the tests themselves, and a long-lived
# mount is also what exercises the kernel's attribute and name caches. Tests that
# need a mount of their own (a second mount for EXDEV) use conftest's make_mount.

_counter = itertools.count()


# Every test runs on both kinds of mount: the default, with the kernel's write-back cache,
# and -o no_writeback_cache (every write a request; passthrough of read-only opens).
@pytest.fixture(scope="module", params=[(), ("no_writeback_cache",)], ids=["kernel-cache", "no-kernel-cache"])
def shared(request):
    snapfs_available()
    work = pathlib.Path(tempfile.mkdtemp(prefix="snapfs-posix-"))
    os.chmod(work, 0o755)   # uid 65534 must reach the mount and the plain directory
    (work / "backing").mkdir()
    (work / "mnt").mkdir()
    (work / "plain").mkdir()
    mount = Mount(work / "backing", work / "mnt", options=request.param)
    try:
        mount.start()
        mount.work = work
        yield mount
    finally:
        mount.stop()
        subprocess.run(["fusermount3", "-u", "-z", str(work / "mnt")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def ro_mount():
    """A second module-wide mount, read-only (-o ro), over a backing dir holding one file."""
    snapfs_available()
    work = pathlib.Path(tempfile.mkdtemp(prefix="snapfs-posix-ro-"))
    (work / "backing").mkdir()
    (work / "mnt").mkdir()
    write_file(work / "backing" / "f", b"keep")
    os.chmod(work / "backing" / "f", 0o644)
    mount = Mount(work / "backing", work / "mnt", options=["ro"])
    try:
        mount.start()
        yield mount
    finally:
        mount.stop()
        subprocess.run(["fusermount3", "-u", "-z", str(work / "mnt")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def m(shared):
    """This test's directory in the shared mount: .mnt, .backing (pathlib.Paths), .top (the Mount)."""
    assert shared.alive(), "snapfs daemon died during an earlier test"
    name = f"t{next(_counter):03d}"
    os.mkdir(shared.mnt / name, 0o755)
    os.chmod(shared.mnt / name, 0o755)
    return types.SimpleNamespace(mnt=shared.mnt / name, backing=shared.backing / name, top=shared,
                                 work=shared.work, name=name)


@pytest.fixture
def plain(m):
    """A plain directory on the same ext4 as the backing directory, for comparison."""
    p = m.work / "plain" / m.name
    p.mkdir(mode=0o755)
    os.chmod(p, 0o755)
    return p


@pytest.fixture
def outside(m):
    """A directory outside the mount (same ext4)."""
    p = m.work / ("outside-" + m.name)
    p.mkdir()
    return p

# --------------------------------------------------------------------------- helpers

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
XATTR_CREATE = 1
XATTR_REPLACE = 2
DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK = 1, 2, 4, 6, 8, 10, 12
MiB = 1 << 20
# an interpreter uid 65534 can surely run (the test's own may live under /root, mode 0700)
NOBODY_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
PAUSE = 0.03  # longer than the coarse clock tick, so a new time stamp is a later one


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(Timespec), ctypes.c_int]
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.getxattr.restype = ctypes.c_ssize_t
libc.opendir.argtypes = [ctypes.c_char_p]
libc.opendir.restype = ctypes.c_void_p
libc.readdir.argtypes = [ctypes.c_void_p]
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.closedir.argtypes = [ctypes.c_void_p]
libc.telldir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]


def _check(ret, what):
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def renameat2(old, new, flags):
    _check(libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags), "renameat2")


def utimensat(path, atime, mtime, flags=0):
    """atime/mtime: (sec, nsec) tuples, or UTIME_NOW / UTIME_OMIT."""
    def ts(v):
        if v in (UTIME_NOW, UTIME_OMIT):
            return Timespec(0, v)
        return Timespec(*v)
    times = (Timespec * 2)(ts(atime), ts(mtime))
    _check(libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags), "utimensat")


def fallocate(fd, mode, offset, length):
    _check(libc.fallocate(fd, mode, offset, length), "fallocate")


def getxattr_size(path, name, size):
    buf = ctypes.create_string_buffer(max(size, 1))
    return _check(libc.getxattr(os.fsencode(path), name.encode(), buf, size), "getxattr")


def raw_readdir(path):
    """[(name, d_type, d_ino)] in the order readdir(3) returns them."""
    d = libc.opendir(os.fsencode(path))
    if not d:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))
    out = []
    try:
        while True:
            ctypes.set_errno(0)
            ent = libc.readdir(d)
            if not ent:
                assert ctypes.get_errno() == 0, os.strerror(ctypes.get_errno())
                return out
            e = ent.contents
            out.append((e.d_name.decode("utf-8", "surrogateescape"), e.d_type, e.d_ino))
    finally:
        libc.closedir(d)


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


# --------------------------------------------------------------------- lookup / getattr

def test_stat_matches_backing_for_every_file_type(m):
    r = m.mnt
    write_file(r / "reg", b"hello")
    os.mkdir(r / "dir")
    os.symlink("reg", r / "sym")
    os.mkfifo(r / "fifo")
    s = bind_socket(r / "sock")
    s.close()
    os.mknod(r / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    kinds = {"reg": stat.S_ISREG, "dir": stat.S_ISDIR, "sym": stat.S_ISLNK,
             "fifo": stat.S_ISFIFO, "sock": stat.S_ISSOCK, "chr": stat.S_ISCHR}
    for name, is_kind in kinds.items():
        st = assert_mirrors(m, name)
        assert is_kind(st.st_mode), (name, oct(st.st_mode))
    assert os.lstat(r / "reg").st_size == 5
    assert os.lstat(r / "sym").st_size == len("reg")
    # stat follows the symlink, lstat does not
    assert os.stat(r / "sym").st_ino == os.lstat(r / "reg").st_ino
    # root and '.'/'..' inside the mount
    assert os.stat(r / "dir" / "..").st_ino == os.stat(r).st_ino
    assert os.stat(r).st_ino == os.stat(m.backing).st_ino


def test_fstat_on_open_file_tracks_changes(m):
    p = m.mnt / "f"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        assert os.fstat(fd).st_size == 0
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o640
        os.write(fd, b"x" * 1000)
        assert os.fstat(fd).st_size == 1000
        assert os.stat(p).st_size == 1000
        os.fchmod(fd, 0o600)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert os.fstat(fd).st_ino == os.stat(m.backing / "f").st_ino
    finally:
        os.close(fd)
    assert_mirrors(m, "f")


def test_hard_links_share_one_inode(m):
    r = m.mnt
    write_file(r / "a", b"1")
    os.link(r / "a", r / "b")
    a, b = os.stat(r / "a"), os.stat(r / "b")
    assert a.st_ino == b.st_ino and a.st_dev == b.st_dev
    with open(r / "b", "ab") as f:
        f.write(b"2")
    assert read_file(r / "a") == b"12"
    assert os.stat(r / "a").st_size == 2


# ------------------------------------------------------------------------------ setattr

def _chmod(p):
    os.chmod(p, 0o4751)
    return {"mode": 0o4751}


def _chown(p):
    os.chown(p, 1234, 5678)
    return {"uid": 1234, "gid": 5678}


def _chown_uid_only(p):
    os.chown(p, 4321, -1)
    return {"uid": 4321, "gid": 0}


def _truncate_shrink(p):
    os.truncate(p, 3)
    return {"size": 3, "data": b"012"}


def _truncate_grow(p):
    os.truncate(p, 20000)
    return {"size": 20000, "data": b"0123456789" + bytes(19990)}


def _ftruncate(p):
    fd = os.open(p, os.O_RDWR)
    try:
        os.ftruncate(fd, 5)
        assert os.fstat(fd).st_size == 5
    finally:
        os.close(fd)
    return {"size": 5, "data": b"01234"}


def _ftruncate_zero(p):
    fd = os.open(p, os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    return {"size": 0, "data": b""}


def _utime_ns(p):
    os.utime(p, ns=(1_000_000_123, 2_000_000_456))
    return {"atime_ns": 1_000_000_123, "mtime_ns": 2_000_000_456}


def _utime_seconds(p):
    os.utime(p, (1_500_000_000, 1_600_000_000))
    return {"atime_ns": 1_500_000_000 * 10**9, "mtime_ns": 1_600_000_000 * 10**9}


def _utime_now(p):
    os.utime(p, ns=(10**9, 10**9))
    before = time.time_ns()
    os.utime(p)  # both UTIME_NOW
    return {"atime_after": before - 20_000_000, "mtime_after": before - 20_000_000}


def _utimensat_omit_atime(p):
    os.utime(p, ns=(111 * 10**9, 222 * 10**9))
    utimensat(p, UTIME_OMIT, (333, 444))
    return {"atime_ns": 111 * 10**9, "mtime_ns": 333 * 10**9 + 444}


def _utimensat_now_mtime_omit_atime(p):
    os.utime(p, ns=(111 * 10**9, 222 * 10**9))
    before = time.time_ns()
    utimensat(p, UTIME_OMIT, UTIME_NOW)
    return {"atime_ns": 111 * 10**9, "mtime_after": before - 20_000_000}


def _utimensat_now_atime_omit_mtime(p):
    os.utime(p, ns=(111 * 10**9, 222 * 10**9))
    before = time.time_ns()
    utimensat(p, UTIME_NOW, UTIME_OMIT)
    return {"mtime_ns": 222 * 10**9, "atime_after": before - 20_000_000}


def _utimensat_both_omit(p):
    os.utime(p, ns=(111 * 10**9, 222 * 10**9))
    utimensat(p, UTIME_OMIT, UTIME_OMIT)
    return {"atime_ns": 111 * 10**9, "mtime_ns": 222 * 10**9}


def _fchmod(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o640)
    finally:
        os.close(fd)
    return {"mode": 0o640}


def _fchown(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fchown(fd, 99, 98)
    finally:
        os.close(fd)
    return {"uid": 99, "gid": 98}


def _futimens(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        os.utime(fd, ns=(3 * 10**9 + 7, 4 * 10**9 + 9))
    finally:
        os.close(fd)
    return {"atime_ns": 3 * 10**9 + 7, "mtime_ns": 4 * 10**9 + 9}


def _utime_pre_epoch(p):
    os.utime(p, ns=(-10**9, -5 * 10**9 + 1))
    return {"atime_ns": -10**9, "mtime_ns": -5 * 10**9 + 1}


def _utime_far_future(p):
    t = 4_000_000_000 * 10**9 + 123   # after 2038: needs 64-bit times all the way
    os.utime(p, ns=(t, t))
    return {"atime_ns": t, "mtime_ns": t}


SETATTR_CASES = {
    "fchmod": _fchmod, "fchown": _fchown, "futimens": _futimens,
    "utime-pre-epoch": _utime_pre_epoch, "utime-after-2038": _utime_far_future,
    "chmod": _chmod, "chown": _chown, "chown-uid-only": _chown_uid_only,
    "truncate-shrink": _truncate_shrink, "truncate-grow": _truncate_grow,
    "ftruncate": _ftruncate, "ftruncate-zero": _ftruncate_zero,
    "utime-ns": _utime_ns, "utime-seconds": _utime_seconds, "utime-now": _utime_now,
    "utimensat-omit-atime": _utimensat_omit_atime,
    "utimensat-now-mtime": _utimensat_now_mtime_omit_atime,
    "utimensat-now-atime": _utimensat_now_atime_omit_mtime,
    "utimensat-omit-both": _utimensat_both_omit,
}


@pytest.mark.parametrize("op", SETATTR_CASES.values(), ids=SETATTR_CASES.keys())
def test_setattr(m, plain, op):
    for root in (m.mnt, plain):
        p = root / "f"
        write_file(p, b"0123456789", 0o644)
        before = os.stat(p)
        time.sleep(PAUSE)
        want = op(p)
        st = os.stat(p)
        if "mode" in want:
            assert stat.S_IMODE(st.st_mode) == want["mode"], (root, oct(st.st_mode))
        if "uid" in want:
            assert (st.st_uid, st.st_gid) == (want["uid"], want["gid"]), root
        if "size" in want:
            assert st.st_size == want["size"], root
            assert read_file(p) == want["data"], root
            # a size change is a content change: mtime and ctime move
            assert st.st_mtime_ns > before.st_mtime_ns, root
        if "atime_ns" in want:
            assert st.st_atime_ns == want["atime_ns"], root
        if "mtime_ns" in want:
            assert st.st_mtime_ns == want["mtime_ns"], root
        if "atime_after" in want:
            assert st.st_atime_ns >= want["atime_after"], root
        if "mtime_after" in want:
            assert st.st_mtime_ns >= want["mtime_after"], root
        # every setattr changes ctime (except the all-OMIT no-op, which may or may not)
        if op is not _utimensat_both_omit:
            assert st.st_ctime_ns > before.st_ctime_ns, root
    assert_mirrors(m, "f", SAME_FIELDS + ("st_atime_ns",))
    assert read_file(m.backing / "f") == read_file(plain / "f")


def test_utimensat_nofollow_on_symlink(m):
    r = m.mnt
    write_file(r / "t", b"x")
    os.symlink("t", r / "l")
    os.utime(r / "t", ns=(5 * 10**9, 6 * 10**9))
    utimensat(r / "l", (7, 0), (8, 0), AT_SYMLINK_NOFOLLOW)
    assert os.lstat(r / "l").st_mtime_ns == 8 * 10**9
    assert os.stat(r / "t").st_mtime_ns == 6 * 10**9
    assert_mirrors(m, "l")
    assert_mirrors(m, "t")


def test_lchown_on_symlink_changes_the_link_only(m):
    r = m.mnt
    write_file(r / "t", b"x")
    os.symlink("t", r / "l")
    os.lchown(r / "l", 777, 888)
    assert (os.lstat(r / "l").st_uid, os.lstat(r / "l").st_gid) == (777, 888)
    assert (os.stat(r / "t").st_uid, os.stat(r / "t").st_gid) == (0, 0)
    assert_mirrors(m, "l")


# -------------------------------------------------------------- set-ID bits (killpriv)

SUID_CASES = [
    # (id, user, mode, file's group, operation, mode afterwards on a local fs)
    ("nobody-write", "nobody", 0o6777, 0, "write", 0o0777),
    ("nobody-truncate", "nobody", 0o6777, 0, "truncate", 0o0777),
    ("nobody-ftruncate", "nobody", 0o6777, 0, "ftruncate", 0o0777),
    ("nobody-open-trunc", "nobody", 0o6777, 0, "open-trunc", 0o0777),
    # set-group-ID without group-execute: since Linux 6.x the VFS drops it when the
    # writer is neither in the file's group nor CAP_FSETID (setattr_should_drop_sgid)
    ("nobody-write-sgid-no-gexec-other-group", "nobody", 0o2767, 0, "write", 0o0767),
    ("nobody-truncate-sgid-no-gexec-other-group", "nobody", 0o2767, 0, "truncate", 0o0767),
    ("nobody-write-sgid-no-gexec-own-group", "nobody", 0o2767, 65534, "write", 0o2767),
    ("root-write-keeps", "root", 0o6777, 0, "write", 0o6777),
    ("root-truncate-keeps", "root", 0o6777, 0, "truncate", 0o6777),
    ("root-chown-clears", "root", 0o6755, 0, "chown", 0o0755),
    ("root-chown-sgid-no-gexec-keeps", "root", 0o2745, 0, "chown", 0o2745),
]


@pytest.mark.parametrize("user,mode,gid,op,want", [c[1:] for c in SUID_CASES], ids=[c[0] for c in SUID_CASES])
def test_setid_bits_cleared_like_local_fs(m, plain, user, mode, gid, op, want):
    code = {
        "write": "fd=os.open(p, os.O_WRONLY); os.write(fd, b'x'); os.close(fd)",
        "truncate": "os.truncate(p, 1)",
        "ftruncate": "fd=os.open(p, os.O_WRONLY); os.ftruncate(fd, 2); os.close(fd)",
        "open-trunc": "os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))",
        "chown": "os.chown(p, 0, 1)",
    }[op]
    got = {}
    for name, root in (("snapfs", m.mnt), ("plain", plain)):
        p = root / "f"
        write_file(p, b"data")
        os.chown(p, 0, gid)
        os.chmod(p, mode)
        assert stat.S_IMODE(os.stat(p).st_mode) == mode
        py = NOBODY_PYTHON if user == "nobody" else sys.executable
        cmd = [py, "-c", f"import os,sys; p=sys.argv[1]; {code}", str(p)]
        if user == "nobody":
            r = run_as_nobody(cmd, timeout=30)
        else:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        got[name] = oct(stat.S_IMODE(os.stat(p).st_mode))
    assert got["plain"] == oct(want), f"test premise wrong on plain ext4: {got}"
    assert got["snapfs"] == got["plain"], f"snapfs differs from local fs: {got}"
    assert_mirrors(m, "f")


# ------------------------------------------------------------------- readlink/symlink

@pytest.mark.parametrize("target", ["plain", "../up/and/over", "/etc/passwd", "dangling-nowhere",
                                    "a" * 1000, "with space/ünïcode"],
                         ids=["relative", "dotdot", "absolute", "dangling", "long", "unicode"])
def test_symlink_readlink(m, target):
    os.symlink(target, m.mnt / "l")
    assert os.readlink(m.mnt / "l") == target
    assert os.readlink(m.backing / "l") == target
    st = assert_mirrors(m, "l")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == len(target.encode())


def test_backing_symlink_pointing_outside_is_not_followed(m, outside):
    write_file(outside / "target", b"outside data")
    os.chmod(outside / "target", 0o600)
    # created in the backing tree before the mount ever looks these names up
    os.symlink("/etc", m.backing / "etc-link")
    os.symlink("/etc/passwd", m.backing / "passwd-link")
    os.symlink(str(outside / "target"), m.backing / "out-link")
    for name, target in (("etc-link", "/etc"), ("passwd-link", "/etc/passwd"),
                         ("out-link", str(outside / "target"))):
        st = os.lstat(m.mnt / name)
        assert stat.S_ISLNK(st.st_mode), name
        assert os.readlink(m.mnt / name) == target
        expect_errno(errno.ELOOP, os.open, m.mnt / name, os.O_RDONLY | os.O_NOFOLLOW)
    # the kernel resolves absolute links in the caller's namespace, like any local fs
    assert sorted(os.listdir(m.mnt / "etc-link")) == sorted(os.listdir("/etc"))
    assert read_file(m.mnt / "passwd-link") == read_file("/etc/passwd")
    # operations on the link itself stay on the link
    os.lchown(m.mnt / "out-link", 4242, 4343)
    utimensat(m.mnt / "out-link", (1, 0), (2, 0), AT_SYMLINK_NOFOLLOW)
    assert os.lstat(m.backing / "out-link").st_uid == 4242
    assert os.lstat(m.backing / "out-link").st_mtime_ns == 2 * 10**9
    assert os.stat(outside / "target").st_uid == 0
    assert os.stat(outside / "target").st_mtime_ns != 2 * 10**9
    os.rename(m.mnt / "out-link", m.mnt / "renamed-link")
    assert os.readlink(m.backing / "renamed-link") == str(outside / "target")
    os.unlink(m.mnt / "renamed-link")
    assert read_file(outside / "target") == b"outside data"
    assert not os.path.lexists(m.backing / "renamed-link")
    # a link to a directory is not a directory for rmdir / O_NOFOLLOW|O_DIRECTORY
    expect_errno(errno.ENOTDIR, os.rmdir, m.mnt / "etc-link")
    expect_errno(errno.ENOTDIR, os.open, m.mnt / "etc-link", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    assert os.path.isdir("/etc") and os.path.islink(m.backing / "etc-link")


# -------------------------------------------------------------------------------- mknod

def test_mkfifo_works_as_a_pipe(m):
    os.mkfifo(m.mnt / "fifo", 0o640)
    st = assert_mirrors(m, "fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    assert stat.S_ISFIFO(os.lstat(m.backing / "fifo").st_mode)
    r = os.open(m.mnt / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(m.mnt / "fifo", os.O_WRONLY)
    try:
        os.write(w, b"through the fifo")
        assert os.read(r, 100) == b"through the fifo"
    finally:
        os.close(w)
        os.close(r)


def test_unix_socket_bind_and_connect(m):
    path = m.mnt / "sock"
    srv = bind_socket(path)
    try:
        srv.listen(1)
        st = assert_mirrors(m, "sock")
        assert stat.S_ISSOCK(st.st_mode)
        cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cli.connect(str(path))
        conn, _ = srv.accept()
        cli.sendall(b"ping")
        assert conn.recv(4) == b"ping"
        conn.close()
        cli.close()
    finally:
        srv.close()
    # binding again over the existing socket file fails as on any fs
    s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        expect_errno(errno.EADDRINUSE, s2.bind, str(path))
    finally:
        s2.close()


@pytest.mark.parametrize("kind,dev", [(stat.S_IFCHR, (1, 3)), (stat.S_IFCHR, (4, 64)), (stat.S_IFBLK, (7, 0)),
                                      (stat.S_IFREG, (0, 0))],
                         ids=["chr-null", "chr-tty", "blk-loop", "regular"])
def test_mknod(m, kind, dev):
    os.mknod(m.mnt / "node", kind | 0o600, os.makedev(*dev))
    st = assert_mirrors(m, "node")
    assert stat.S_IFMT(st.st_mode) == kind
    assert stat.S_IMODE(st.st_mode) == 0o600
    if kind != stat.S_IFREG:
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == dev


def test_device_node_is_not_usable_on_nodev_mount(m):
    # libfuse mounts nodev by default: then a device node must not open (EACCES); otherwise it works
    os.mknod(m.mnt / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    opts = [l.split()[5] for l in open("/proc/self/mountinfo") if l.split()[4] == str(m.top.mnt)][0]
    if "nodev" in opts.split(","):
        expect_errno(errno.EACCES, os.open, m.mnt / "null", os.O_RDONLY)
    else:
        fd = os.open(m.mnt / "null", os.O_RDWR)
        try:
            assert os.write(fd, b"gone") == 4 and os.read(fd, 10) == b""
        finally:
            os.close(fd)


# ------------------------------------------------------------------ mkdir/rmdir/unlink

@pytest.mark.parametrize("umask,mode,want", [(0o022, 0o777, 0o755), (0o027, 0o777, 0o750),
                                             (0o000, 0o1777, 0o1777), (0o077, 0o700, 0o700)])
def test_mkdir_mode_and_umask(m, plain, umask, mode, want):
    old = os.umask(umask)
    try:
        for root in (m.mnt, plain):
            os.mkdir(root / "d", mode)
            assert oct(stat.S_IMODE(os.stat(root / "d").st_mode)) == oct(want), root
            assert os.stat(root / "d").st_nlink == 2
    finally:
        os.umask(old)
    assert_mirrors(m, "d")


@pytest.mark.parametrize("umask,mode,want", [(0o022, 0o666, 0o644), (0o027, 0o666, 0o640),
                                             (0o000, 0o777, 0o777), (0o077, 0o604, 0o600)])
def test_create_mode_and_umask(m, plain, umask, mode, want):
    old = os.umask(umask)
    try:
        for root in (m.mnt, plain):
            fd = os.open(root / "f", os.O_CREAT | os.O_WRONLY | os.O_EXCL, mode)
            os.close(fd)
            assert oct(stat.S_IMODE(os.stat(root / "f").st_mode)) == oct(want), root
    finally:
        os.umask(old)
    assert_mirrors(m, "f")


def test_mkdir_rmdir_parent_nlink(m):
    os.mkdir(m.mnt / "p")
    assert os.stat(m.mnt / "p").st_nlink == 2
    for i in range(5):
        os.mkdir(m.mnt / "p" / f"c{i}")
        assert os.stat(m.mnt / "p").st_nlink == 3 + i
    # regular files don't count
    write_file(m.mnt / "p" / "file", b"")
    assert os.stat(m.mnt / "p").st_nlink == 7
    assert_mirrors(m, "p")
    for i in range(5):
        os.rmdir(m.mnt / "p" / f"c{i}")
        assert os.stat(m.mnt / "p").st_nlink == 6 - i
    assert_mirrors(m, "p")
    # moving a directory out changes both parents' link counts
    os.mkdir(m.mnt / "q")
    os.mkdir(m.mnt / "p" / "mover")
    assert os.stat(m.mnt / "p").st_nlink == 3
    os.rename(m.mnt / "p" / "mover", m.mnt / "q" / "mover")
    assert os.stat(m.mnt / "p").st_nlink == 2
    assert os.stat(m.mnt / "q").st_nlink == 3
    assert os.stat(m.mnt / "q" / "mover" / "..").st_ino == os.stat(m.mnt / "q").st_ino
    assert_mirrors(m, "p")
    assert_mirrors(m, "q")


def test_unlink_and_rmdir_remove_from_backing(m):
    write_file(m.mnt / "f", b"x")
    os.mkdir(m.mnt / "d")
    os.symlink("f", m.mnt / "l")
    os.stat(m.mnt / "f")
    os.unlink(m.mnt / "f")
    os.rmdir(m.mnt / "d")
    os.unlink(m.mnt / "l")
    for n in ("f", "d", "l"):
        assert not os.path.lexists(m.mnt / n)
        assert not os.path.lexists(m.backing / n)
        expect_errno(errno.ENOENT, os.lstat, m.mnt / n)
    assert os.listdir(m.mnt) == []
    # the names can be reused with another type at once
    os.mkdir(m.mnt / "f")
    write_file(m.mnt / "d", b"now a file")
    assert stat.S_ISDIR(os.lstat(m.mnt / "f").st_mode)
    assert read_file(m.mnt / "d") == b"now a file"


def test_unlinked_open_file_stays_usable(m):
    fd = os.open(m.mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"before")
        os.unlink(m.mnt / "f")
        assert not os.path.exists(m.backing / "f")
        os.write(fd, b" after")
        assert os.pread(fd, 100, 0) == b"before after"
        st = os.fstat(fd)
        assert st.st_nlink == 0
        assert st.st_size == 12
        os.fchmod(fd, 0o600)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        os.ftruncate(fd, 3)
        assert os.pread(fd, 100, 0) == b"bef"
    finally:
        os.close(fd)
    assert os.listdir(m.mnt) == []


def test_open_directory_after_rmdir(m):
    os.mkdir(m.mnt / "d")
    fd = os.open(m.mnt / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(m.mnt / "d")
        assert os.fstat(fd).st_nlink == 0
        expect_errno(errno.ENOENT, os.open, "x", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------- rename

def test_rename_plain(m):
    write_file(m.mnt / "a", b"content a")
    ino = os.stat(m.mnt / "a").st_ino
    os.mkdir(m.mnt / "sub")
    os.rename(m.mnt / "a", m.mnt / "sub" / "b")
    expect_errno(errno.ENOENT, os.stat, m.mnt / "a")
    assert os.stat(m.mnt / "sub" / "b").st_ino == ino
    assert read_file(m.mnt / "sub" / "b") == b"content a"
    assert read_file(m.backing / "sub" / "b") == b"content a"
    assert not os.path.exists(m.backing / "a")
    # rename to itself is a no-op
    os.rename(m.mnt / "sub" / "b", m.mnt / "sub" / "b")
    assert read_file(m.mnt / "sub" / "b") == b"content a"
    # rename of one hard link onto another of the same inode: no-op, both stay
    os.link(m.mnt / "sub" / "b", m.mnt / "sub" / "c")
    os.rename(m.mnt / "sub" / "b", m.mnt / "sub" / "c")
    assert sorted(os.listdir(m.mnt / "sub")) == ["b", "c"]
    assert os.stat(m.mnt / "sub" / "b").st_nlink == 2


def test_rename_over_existing_file(m):
    write_file(m.mnt / "src", b"new")
    write_file(m.mnt / "dst", b"old content")
    os.link(m.mnt / "dst", m.mnt / "dst-other-link")
    src_ino = os.stat(m.mnt / "src").st_ino
    assert os.stat(m.mnt / "dst-other-link").st_nlink == 2
    fd = os.open(m.mnt / "dst", os.O_RDONLY)
    try:
        os.rename(m.mnt / "src", m.mnt / "dst")
        # the replaced inode lost a link; an open descriptor still reads the old data
        assert os.pread(fd, 100, 0) == b"old content"
    finally:
        os.close(fd)
    assert os.stat(m.mnt / "dst").st_ino == src_ino
    assert read_file(m.mnt / "dst") == b"new"
    assert os.stat(m.mnt / "dst-other-link").st_nlink == 1
    assert read_file(m.mnt / "dst-other-link") == b"old content"
    assert sorted(os.listdir(m.mnt)) == ["dst", "dst-other-link"]
    assert read_file(m.backing / "dst") == b"new"
    assert_mirrors(m, "dst")
    assert_mirrors(m, "dst-other-link")


def test_rename_dir_over_empty_dir(m):
    os.makedirs(m.mnt / "a" / "inner")
    write_file(m.mnt / "a" / "inner" / "f", b"deep")
    os.mkdir(m.mnt / "b")
    os.rename(m.mnt / "a", m.mnt / "b")
    assert os.listdir(m.mnt) == ["b"]
    assert read_file(m.mnt / "b" / "inner" / "f") == b"deep"
    assert read_file(m.backing / "b" / "inner" / "f") == b"deep"
    assert os.stat(m.mnt).st_nlink == 3
    assert_mirrors(m, "b")
    assert_mirrors(m, ".")


def test_renameat2_noreplace(m, plain):
    for root in (m.mnt, plain):
        write_file(root / "a", b"A")
        write_file(root / "b", b"B")
        expect_errno(errno.EEXIST, renameat2, root / "a", root / "b", RENAME_NOREPLACE)
        assert read_file(root / "a") == b"A" and read_file(root / "b") == b"B"
        renameat2(root / "a", root / "c", RENAME_NOREPLACE)
        assert not os.path.exists(root / "a")
        assert read_file(root / "c") == b"A"
    assert sorted(os.listdir(m.backing)) == ["b", "c"]


def test_renameat2_exchange(m):
    write_file(m.mnt / "f", b"file")
    os.mkdir(m.mnt / "d")
    write_file(m.mnt / "d" / "in", b"inside")
    fi, di = os.stat(m.mnt / "f").st_ino, os.stat(m.mnt / "d").st_ino
    renameat2(m.mnt / "f", m.mnt / "d", RENAME_EXCHANGE)
    assert stat.S_ISDIR(os.stat(m.mnt / "f").st_mode)
    assert stat.S_ISREG(os.stat(m.mnt / "d").st_mode)
    assert os.stat(m.mnt / "f").st_ino == di and os.stat(m.mnt / "d").st_ino == fi
    assert read_file(m.mnt / "d") == b"file"
    assert read_file(m.mnt / "f" / "in") == b"inside"
    assert read_file(m.backing / "d") == b"file"
    assert read_file(m.backing / "f" / "in") == b"inside"
    # exchange across directories
    os.mkdir(m.mnt / "x")
    write_file(m.mnt / "x" / "g", b"g")
    renameat2(m.mnt / "x" / "g", m.mnt / "d", RENAME_EXCHANGE)
    assert read_file(m.mnt / "d") == b"g"
    assert read_file(m.mnt / "x" / "g") == b"file"
    expect_errno(errno.ENOENT, renameat2, m.mnt / "d", m.mnt / "missing", RENAME_EXCHANGE)
    for n in ("f", "d", "x/g"):
        assert_mirrors(m, n)


# --------------------------------------------------------------------------------- link

def test_link_counts(m):
    write_file(m.mnt / "a", b"data")
    assert os.stat(m.mnt / "a").st_nlink == 1
    os.link(m.mnt / "a", m.mnt / "b")
    assert os.stat(m.mnt / "a").st_nlink == 2
    assert os.stat(m.mnt / "b").st_nlink == 2
    os.mkdir(m.mnt / "d")
    os.link(m.mnt / "b", m.mnt / "d" / "c")
    for n in ("a", "b", "d/c"):
        assert os.stat(m.mnt / n).st_nlink == 3
        assert_mirrors(m, n)
    os.unlink(m.mnt / "a")
    assert os.stat(m.mnt / "b").st_nlink == 2
    assert os.stat(m.mnt / "d" / "c").st_nlink == 2
    os.unlink(m.mnt / "b")
    assert os.stat(m.mnt / "d" / "c").st_nlink == 1
    assert read_file(m.mnt / "d" / "c") == b"data"
    assert_mirrors(m, "d/c")


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


# ---------------------------------------------------------------------------- readdir

DTYPE_OF = {stat.S_IFREG: DT_REG, stat.S_IFDIR: DT_DIR, stat.S_IFLNK: DT_LNK, stat.S_IFIFO: DT_FIFO,
            stat.S_IFSOCK: DT_SOCK, stat.S_IFCHR: DT_CHR, stat.S_IFBLK: DT_BLK}


def test_readdir_many_entries_names_types_inodes(m):
    d = m.mnt / "big"
    os.mkdir(d)
    names = {f"file-{i:04d}-{'x' * (i % 40)}" for i in range(1000)}
    for n in names:
        os.close(os.open(d / n, os.O_CREAT | os.O_WRONLY, 0o644))
    odd = ["with space", "ünïcödé-名前", "a\nnewline", "-dash", ".hidden", "..dots", "x" * 255, "tab\there"]
    for n in odd:
        write_file(d / n, b"")
    os.mkdir(d / "subdir")
    os.symlink("file-0001-x", d / "symlink")
    os.mkfifo(d / "fifo")
    bind_socket(d / "sock").close()
    os.mknod(d / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    expected = names | set(odd) | {"subdir", "symlink", "fifo", "sock", "chr"}

    assert_mirrors(m, "big")   # the directory's own size and times after 1000 creates
    listed = os.listdir(d)
    assert len(listed) == len(set(listed)), "duplicate names"
    assert set(listed) == expected
    assert set(os.listdir(m.backing / "big")) == expected

    raw = raw_readdir(d)
    raw_names = [n for n, _, _ in raw]
    assert len(raw_names) == len(set(raw_names)), "duplicate names"
    assert set(raw_names) == expected | {".", ".."}
    for name, dtype, dino in raw:
        if name in (".", ".."):
            continue
        st = os.lstat(d / name)
        assert dtype == DTYPE_OF[stat.S_IFMT(st.st_mode)], (name, dtype)
        assert dino == st.st_ino == os.lstat(m.backing / "big" / name).st_ino, name

    with os.scandir(d) as it:
        entries = {e.name: e for e in it}
    assert set(entries) == expected
    assert entries["subdir"].is_dir(follow_symlinks=False)
    assert entries["symlink"].is_symlink() and not entries["symlink"].is_dir()
    assert entries["symlink"].is_file()  # follows to file-0001-x
    assert entries["file-0007-xxxxxxx"].is_file(follow_symlinks=False)
    assert not entries["fifo"].is_file() and not entries["fifo"].is_dir()
    assert entries["file-0003-xxx"].inode() == os.stat(d / "file-0003-xxx").st_ino


def test_readdir_reflects_changes_and_seekdir(m):
    d = m.mnt / "d"
    os.mkdir(d)
    for i in range(300):
        write_file(d / f"n{i:03d}", b"")
    assert len(os.listdir(d)) == 300
    for i in range(0, 300, 3):
        os.unlink(d / f"n{i:03d}")
    for i in range(20):
        os.mkdir(d / f"new{i}")
    want = {f"n{i:03d}" for i in range(300) if i % 3} | {f"new{i}" for i in range(20)}
    assert set(os.listdir(d)) == want
    assert len(os.listdir(d)) == len(want)
    # telldir/seekdir give back the same stream
    dirp = libc.opendir(os.fsencode(d))
    assert dirp
    try:
        first = [libc.readdir(dirp).contents.d_name for _ in range(100)]
        pos = libc.telldir(dirp)
        rest = []
        while True:
            e = libc.readdir(dirp)
            if not e:
                break
            rest.append(e.contents.d_name)
        libc.seekdir(dirp, pos)
        again = []
        while True:
            e = libc.readdir(dirp)
            if not e:
                break
            again.append(e.contents.d_name)
        assert again == rest
        assert len(set(first) | set(rest)) == len(want) + 2
    finally:
        libc.closedir(dirp)


def test_remove_tree_while_reading_directory(m):
    # rm -rf style: unlink every entry while iterating the directory stream
    d = m.mnt / "tree"
    os.mkdir(d)
    for i in range(600):
        write_file(d / f"entry-with-a-longer-name-{i:04d}", b"x")
    removed = 0
    with os.scandir(d) as it:
        for e in it:
            os.unlink(e.path)
            removed += 1
    assert removed == 600
    assert os.listdir(d) == []
    os.rmdir(d)
    assert os.listdir(m.backing) == []


# ----------------------------------------------------------------------------- statfs

def test_statvfs_matches_backing(m):
    a, b = os.statvfs(m.mnt), os.statvfs(m.backing)
    assert a.f_bsize == b.f_bsize
    assert a.f_frsize == b.f_frsize
    assert a.f_blocks == b.f_blocks
    assert a.f_files == b.f_files
    assert a.f_namemax == b.f_namemax == 255
    assert abs(a.f_bfree - b.f_bfree) <= max(1, b.f_blocks // 100)
    assert abs(a.f_bavail - b.f_bavail) <= max(1, b.f_blocks // 100)
    assert abs(a.f_ffree - b.f_ffree) <= max(1, b.f_files // 100)
    fd = os.open(m.mnt, os.O_RDONLY)
    try:
        c = os.fstatvfs(fd)
        assert c.f_blocks == b.f_blocks
    finally:
        os.close(fd)
    # statfs of a path inside the mount is the same filesystem
    write_file(m.mnt / "f", b"")
    assert os.statvfs(m.mnt / "f").f_blocks == b.f_blocks


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


def setlk(fd, typ, start=0, length=0):
    fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi4x", typ, 0, start, length, 0))


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


# ----------------------------------------------------------- permissions as non-root

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


def _perm_tree(r):
    write_file(r / "secret", b"root only")
    os.chmod(r / "secret", 0o600)
    write_file(r / "readable", b"everyone reads")
    os.chmod(r / "readable", 0o644)
    write_file(r / "shared", b"everyone writes")
    os.chmod(r / "shared", 0o666)
    os.mkdir(r / "rootdir", 0o755)
    write_file(r / "rootdir" / "inside", b"x")
    os.mkdir(r / "private", 0o700)
    write_file(r / "private" / "inside", b"x")
    os.mkdir(r / "noread")
    os.chmod(r / "noread", 0o711)
    write_file(r / "noread" / "inside", b"x")
    os.mkdir(r / "sticky")
    os.chmod(r / "sticky", 0o1777)
    write_file(r / "sticky" / "rootfile", b"x")
    write_file(r / "mine", b"nobody's")
    os.chown(r / "mine", 65534, 65534)
    os.mkdir(r / "open")
    os.chmod(r / "open", 0o777)


PERM_CASES = [
    # (id, expected errno name, python statement run as nobody)
    ("read-0600-root-file", "EACCES", "os.open(P+'/secret', os.O_RDONLY)"),
    ("write-0644-root-file", "EACCES", "os.open(P+'/readable', os.O_WRONLY)"),
    ("read-0644-root-file", "OK", "os.open(P+'/readable', os.O_RDONLY)"),
    ("write-0666-root-file", "OK", "os.open(P+'/shared', os.O_WRONLY)"),
    ("create-in-0755-root-dir", "EACCES", "os.open(P+'/rootdir/new', os.O_CREAT|os.O_WRONLY, 0o644)"),
    ("mkdir-in-0755-root-dir", "EACCES", "os.mkdir(P+'/rootdir/new')"),
    ("unlink-in-0755-root-dir", "EACCES", "os.unlink(P+'/rootdir/inside')"),
    ("rename-in-0755-root-dir", "EACCES", "os.rename(P+'/rootdir/inside', P+'/rootdir/moved')"),
    ("symlink-in-0755-root-dir", "EACCES", "os.symlink('x', P+'/rootdir/sl')"),
    ("chmod-by-non-owner", "EPERM", "os.chmod(P+'/readable', 0o777)"),
    ("chown-by-non-owner", "EPERM", "os.chown(P+'/readable', 65534, 65534)"),
    ("chown-own-file-to-root", "EPERM", "os.chown(P+'/mine', 0, -1)"),
    ("chmod-own-file", "OK", "os.chmod(P+'/mine', 0o600)"),
    ("traverse-0700-dir", "EACCES", "os.stat(P+'/private/inside')"),
    ("list-0700-dir", "EACCES", "os.listdir(P+'/private')"),
    ("list-0711-dir", "EACCES", "os.listdir(P+'/noread')"),
    ("traverse-0711-dir", "OK", "os.stat(P+'/noread/inside')"),
    ("unlink-others-file-in-sticky-dir", "EPERM", "os.unlink(P+'/sticky/rootfile')"),
    ("create-in-sticky-dir", "OK", "os.close(os.open(P+'/sticky/mine', os.O_CREAT|os.O_WRONLY, 0o644))"),
    ("utime-explicit-on-others-0666-file", "EPERM", "os.utime(P+'/shared', (1, 1))"),
    ("utime-now-on-others-0666-file", "OK", "os.utime(P+'/shared')"),
    ("utime-now-on-others-0644-file", "EACCES", "os.utime(P+'/readable')"),
    ("truncate-0644-root-file", "EACCES", "os.truncate(P+'/readable', 0)"),
    ("setxattr-0644-root-file", "EACCES", "os.setxattr(P+'/readable', 'user.x', b'1')"),
    ("getxattr-0644-root-file", "ENODATA", "os.getxattr(P+'/readable', 'user.x')"),
    ("getxattr-0600-root-file", "EACCES", "os.getxattr(P+'/secret', 'user.x')"),
    ("hardlink-others-0600-file", "EPERM" if open("/proc/sys/fs/protected_hardlinks").read().strip() == "1"
     else "OK", "os.link(P+'/secret', P+'/sticky/stolen')"),
    ("chown-to-own-uid-noop", "OK", "os.chown(P+'/mine', 65534, 65534)"),
    ("utime-explicit-own-file", "OK", "os.utime(P+'/mine', (1, 1))"),
    ("mknod-char-device", "EPERM", "os.mknod(P+'/open/dev', 0o20600, os.makedev(1, 3))"),
    ("mkfifo-in-open-dir", "OK", "os.mkfifo(P+'/open/fifo')"),
    ("rename-others-file-in-sticky-dir", "EPERM", "os.rename(P+'/sticky/rootfile', P+'/sticky/moved')"),
    ("o-noatime-on-others-file", "EPERM", "os.open(P+'/readable', os.O_RDONLY | os.O_NOATIME)"),
    ("o-noatime-on-own-file", "OK", "os.open(P+'/mine', os.O_RDONLY | os.O_NOATIME)"),
    ("access-read-0600-root-file", "EACCES", "acc(P+'/secret', os.R_OK)"),
    ("access-write-0644-root-file", "EACCES", "acc(P+'/readable', os.W_OK)"),
    ("access-read-0644-root-file", "OK", "acc(P+'/readable', os.R_OK)"),
    ("access-exec-0711-dir", "OK", "acc(P+'/noread', os.X_OK)"),
    ("access-exec-0644-file", "EACCES", "acc(P+'/readable', os.X_OK)"),
    ("write-after-chmod-by-owner", "EACCES",
     "(os.chmod(P+'/mine', 0o400), os.open(P+'/mine', os.O_WRONLY))"),
]


@pytest.mark.parametrize("want,stmt", [c[1:] for c in PERM_CASES], ids=[c[0] for c in PERM_CASES])
def test_permissions_as_nobody(m, plain, want, stmt):
    got = {}
    for name, root in (("snapfs", m.mnt), ("plain", plain)):
        _perm_tree(root)
        r = run_as_nobody([NOBODY_PYTHON, "-c", NOBODY_PRELUDE + f"t(lambda: {stmt})\n", str(root)], timeout=30)
        assert r.returncode == 0, r.stderr
        got[name] = r.stdout.strip()
    assert got["plain"] == want, f"test premise wrong on plain ext4: {got}"
    assert got["snapfs"] == got["plain"], f"snapfs differs from local fs: {got}"


def test_cat_as_nobody_permission_denied(m):
    write_file(m.mnt / "secret", b"top secret\n")
    os.chmod(m.mnt / "secret", 0o600)
    r = run_as_nobody(["cat", str(m.mnt / "secret")], timeout=30)
    assert r.returncode != 0
    assert "Permission denied" in r.stderr
    assert "top secret" not in r.stdout
    os.chmod(m.mnt / "secret", 0o604)
    r = run_as_nobody(["cat", str(m.mnt / "secret")], timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "top secret\n"
    # a permission change is seen by the kernel at once: take it back
    os.chmod(m.mnt / "secret", 0o600)
    r = run_as_nobody(["cat", str(m.mnt / "secret")], timeout=30)
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_files_created_by_nobody_belong_to_nobody(m, plain):
    code = ("import os,sys,socket\nP=sys.argv[1]\n"
            "os.close(os.open(P+'/f', os.O_CREAT|os.O_WRONLY, 0o644))\n"
            "os.mkdir(P+'/d')\nos.symlink('f', P+'/l')\nos.mkfifo(P+'/p')\n"
            "os.link(P+'/f', P+'/hl')\n"
            "s=socket.socket(socket.AF_UNIX); s.bind(P+'/s'); s.close()\n"
            "os.close(os.open(P+'/sg/f', os.O_CREAT|os.O_WRONLY, 0o644))\nos.mkdir(P+'/sg/d')\n"
            # set-ID bits asked for at creation and by chmod, in and out of the sgid dir
            "os.close(os.open(P+'/sg/sgid', os.O_CREAT|os.O_WRONLY, 0o2755))\n"
            "os.close(os.open(P+'/suid', os.O_CREAT|os.O_WRONLY, 0o6755))\n"
            "os.close(os.open(P+'/sg/chm', os.O_CREAT|os.O_WRONLY, 0o644)); os.chmod(P+'/sg/chm', 0o2755)\n"
            "os.mkdir(P+'/sg/d2', 0o1777)\n")
    for root in (m.mnt, plain):
        os.mkdir(root / "work")
        os.chmod(root / "work", 0o777)
        os.mkdir(root / "work" / "sg")
        os.chown(root / "work" / "sg", 0, 1234)
        os.chmod(root / "work" / "sg", 0o2777)
        r = run_as_nobody([NOBODY_PYTHON, "-c", code, str(root / "work")], timeout=30)
        assert r.returncode == 0, r.stderr
        for n in ("f", "d", "l", "p", "s", "hl"):
            st = os.lstat(root / "work" / n)
            assert (st.st_uid, st.st_gid) == (65534, 65534), (root, n)
        # set-group-ID directory: new entries take the directory's group, subdirs keep the bit
        f, d = os.stat(root / "work" / "sg" / "f"), os.stat(root / "work" / "sg" / "d")
        assert (f.st_uid, f.st_gid) == (65534, 1234), root
        assert (d.st_uid, d.st_gid) == (65534, 1234), root
        assert d.st_mode & stat.S_ISGID, root
    for n in ("work/f", "work/d", "work/l", "work/p", "work/s", "work/sg/f", "work/sg/d",
              "work/sg/sgid", "work/suid", "work/sg/chm", "work/sg/d2"):
        assert_mirrors(m, n)
        a, b = os.lstat(m.mnt / n), os.lstat(plain / n)
        assert (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid), n


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


# ------------------------------------------------------------------ names as bytes

def test_names_are_bytes_not_strings(m):
    # Linux names are byte strings: invalid UTF-8 must survive, and the NFC and NFD
    # spellings of one character are two different names.
    mb, bb = os.fsencode(m.mnt), os.fsencode(m.backing)
    raw = [b"\xff\xfe-invalid-utf8", b"latin1-\xe9t\xe9", b"\x80", b"back\\slash", b"colon:star*?"]
    for i, n in enumerate(raw):
        write_file(mb + b"/" + n, str(i).encode())
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    write_file(m.mnt / nfc, b"nfc")
    write_file(m.mnt / nfd, b"nfd")
    want = set(raw) | {nfc.encode(), nfd.encode()}
    assert set(os.listdir(mb)) == want
    assert set(os.listdir(bb)) == want
    assert len(os.listdir(mb)) == len(want)
    for i, n in enumerate(raw):
        assert read_file(mb + b"/" + n) == str(i).encode()
        assert read_file(bb + b"/" + n) == str(i).encode()
        assert os.stat(mb + b"/" + n).st_ino == os.stat(bb + b"/" + n).st_ino
    assert read_file(m.mnt / nfc) == b"nfc" and read_file(m.mnt / nfd) == b"nfd"
    assert os.stat(m.mnt / nfc).st_ino != os.stat(m.mnt / nfd).st_ino
    os.unlink(m.mnt / nfc)
    assert read_file(m.mnt / nfd) == b"nfd"
    expect_errno(errno.ENOENT, os.stat, m.mnt / nfc)
    # rename between byte names, symlink targets and xattr values as raw bytes
    os.rename(mb + b"/\x80", mb + b"/\x81\xff")
    assert read_file(bb + b"/\x81\xff") == b"2"
    os.symlink(b"\xff\xfe-invalid-utf8", mb + b"/link\xfe")
    assert os.readlink(mb + b"/link\xfe") == b"\xff\xfe-invalid-utf8"
    assert os.readlink(bb + b"/link\xfe") == b"\xff\xfe-invalid-utf8"
    assert read_file(mb + b"/link\xfe") == b"0"
    raw_entries = {n for n, _, _ in raw_readdir(m.mnt)}
    assert os.fsdecode(b"\x81\xff") in raw_entries


# ---------------------------------------------------------------------- large offsets

def test_offsets_beyond_4gib(m):
    p = m.mnt / "huge"
    T = 1 << 40   # 1 TiB, sparse
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"at-5GiB", 5 << 30)
        os.pwrite(fd, b"at-1TiB", T)
        assert os.fstat(fd).st_size == T + 7
        assert os.pread(fd, 7, 5 << 30) == b"at-5GiB"
        assert os.pread(fd, 7, T) == b"at-1TiB"
        assert os.pread(fd, 4, (5 << 30) - 2) == b"\0\0at"
        assert os.lseek(fd, 0, os.SEEK_DATA) == (5 << 30) // 4096 * 4096
        assert os.lseek(fd, (5 << 30) + 7, os.SEEK_HOLE) < T
        assert os.lseek(fd, (6 << 30), os.SEEK_DATA) == T // 4096 * 4096
        fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 5 << 30, 4096)
        assert os.pread(fd, 7, 5 << 30) == bytes(7)
        os.ftruncate(fd, (3 << 32) + 5)
        assert os.fstat(fd).st_size == (3 << 32) + 5
        # lock ranges beyond 4 GiB
        setlk(fd, fcntl.F_WRLCK, 1 << 33, 10)
    finally:
        os.close(fd)
    st = assert_mirrors(m, "huge")
    assert st.st_size == (3 << 32) + 5
    assert st.st_blocks < 1000
    # copy_file_range at large offsets
    src = os.open(p, os.O_RDWR)
    dst = os.open(m.mnt / "copy", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(src, b"far data", 3 << 32)
        assert os.copy_file_range(src, dst, 8, 3 << 32, 6 << 30) == 8
        assert os.pread(dst, 8, 6 << 30) == b"far data"
        assert os.fstat(dst).st_size == (6 << 30) + 8
    finally:
        os.close(src)
        os.close(dst)
    assert_mirrors(m, "copy")


# ---------------------------------------------------------------------- O_DIRECT, tmpfile

def test_o_direct_read_write(m, plain):
    got = {}
    for name, root in (("snapfs", m.mnt), ("plain", plain)):
        def go():
            buf = mmap.mmap(-1, 8192)   # page-aligned buffer, as O_DIRECT wants
            buf.write(b"D" * 4096 + b"E" * 4096)
            fd = os.open(root / "direct", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
            try:
                assert os.pwrite(fd, buf, 0) == 8192
                back = mmap.mmap(-1, 8192)
                assert os.preadv(fd, [back], 0) == 8192
                assert back[:] == b"D" * 4096 + b"E" * 4096
            finally:
                os.close(fd)
        got[name] = errno_of(go)
    assert got["plain"] == "OK"
    assert got["snapfs"] == got["plain"], f"O_DIRECT write: {got}"
    assert read_file(m.mnt / "direct") == read_file(plain / "direct")
    assert read_file(m.backing / "direct") == b"D" * 4096 + b"E" * 4096



def test_o_tmpfile_and_linkat(m, plain):
    got = {}
    for name, root in (("snapfs", m.mnt), ("plain", plain)):
        def go():
            fd = os.open(root, os.O_TMPFILE | os.O_RDWR, 0o640)
            try:
                os.write(fd, b"anonymous")
                assert os.fstat(fd).st_nlink == 0
                # os.link() calls link(2), which does not follow /proc/self/fd/N; linkat does
                _check(libc.linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD,
                                   os.fsencode(root / "named"), AT_SYMLINK_FOLLOW), "linkat")
                assert os.fstat(fd).st_nlink == 1
            finally:
                os.close(fd)
        got[name] = errno_of(go)
    assert got["plain"] == "OK"
    assert got["snapfs"] == got["plain"], f"O_TMPFILE: {got}"
    assert read_file(m.mnt / "named") == b"anonymous"
    assert read_file(m.backing / "named") == b"anonymous"
    assert stat.S_IMODE(os.stat(m.mnt / "named").st_mode) == 0o640


def test_o_tmpfile_excl_is_never_linkable_and_belongs_to_its_creator(m, plain):
    code = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "root = sys.argv[1]\n"
        "fd = os.open(root, os.O_TMPFILE | os.O_WRONLY, 0o666)\n"
        "os.write(fd, b'mine')\n"
        "st = os.fstat(fd)\n"
        "r = libc.linkat(-100, f'/proc/self/fd/{fd}'.encode(), -100, (root + '/kept').encode(), 0x400)\n"
        "fx = os.open(root, os.O_TMPFILE | os.O_WRONLY | os.O_EXCL, 0o600)\n"
        "rx = libc.linkat(-100, f'/proc/self/fd/{fx}'.encode(), -100, (root + '/never').encode(), 0x400)\n"
        "print(st.st_uid, st.st_gid, oct(st.st_mode & 0o777), r, rx, ctypes.get_errno())\n"
    )
    out = {}
    for name, root in (("snapfs", m.mnt / "tmpdir"), ("plain", plain / "tmpdir")):
        os.mkdir(root)
        os.chmod(root, 0o777)
        r = run_as_nobody(["sh", "-c", f"umask 022; exec {NOBODY_PYTHON} -c \"$0\" \"$1\"", code, str(root)], timeout=30)
        assert r.returncode == 0, (name, r.stderr)
        out[name] = r.stdout.split()
    assert out["plain"] == ["65534", "65534", "0o644", "0", "-1", str(errno.ENOENT)]
    assert out["snapfs"] == out["plain"]
    assert read_file(m.mnt / "tmpdir" / "kept") == b"mine"
    assert os.stat(m.backing / "tmpdir" / "kept").st_uid == 65534
    assert not os.path.exists(m.mnt / "tmpdir" / "never")


# ---------------------------------------------------- exchange and inode identity

def test_exchange_dir_and_file_across_parents_fixes_nlink(m):
    os.makedirs(m.mnt / "A" / "sub")
    os.mkdir(m.mnt / "B")
    write_file(m.mnt / "B" / "file", b"f")
    assert os.stat(m.mnt / "A").st_nlink == 3 and os.stat(m.mnt / "B").st_nlink == 2
    renameat2(m.mnt / "A" / "sub", m.mnt / "B" / "file", RENAME_EXCHANGE)
    assert stat.S_ISREG(os.stat(m.mnt / "A" / "sub").st_mode)
    assert stat.S_ISDIR(os.stat(m.mnt / "B" / "file").st_mode)
    assert os.stat(m.mnt / "A").st_nlink == 2
    assert os.stat(m.mnt / "B").st_nlink == 3
    assert os.stat(m.mnt / "B" / "file" / "..").st_ino == os.stat(m.mnt / "B").st_ino
    for n in ("A", "B", "A/sub", "B/file"):
        assert_mirrors(m, n)


def test_inode_identity_survives_cache_drop(m):
    # Dropping the kernel's dentry and inode caches makes it FORGET snapfs's nodes;
    # the next lookups must find the same backing objects and the open files must
    # keep working.
    os.makedirs(m.mnt / "a" / "b")
    write_file(m.mnt / "a" / "b" / "f", b"payload")
    os.link(m.mnt / "a" / "b" / "f", m.mnt / "hard")
    before = {n: os.lstat(m.mnt / n).st_ino for n in ("a", "a/b", "a/b/f", "hard")}
    fd = os.open(m.mnt / "a" / "b" / "f", os.O_RDWR)
    try:
        for _ in range(2):
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("2")
            after = {n: os.lstat(m.mnt / n).st_ino for n in before}
            assert after == before
            assert read_file(m.mnt / "hard") == b"payload"
        os.pwrite(fd, b"P", 0)
        assert read_file(m.mnt / "hard") == b"Payload"
        assert os.stat(m.mnt / "hard").st_nlink == 2
        os.rename(m.mnt / "a", m.mnt / "a2")
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")
        assert read_file(m.mnt / "a2" / "b" / "f") == b"Payload"
        os.pwrite(fd, b"!", 7)
    finally:
        os.close(fd)
    assert read_file(m.backing / "a2" / "b" / "f") == b"Payload!"
    assert not os.path.exists(m.mnt / "a")


# --------------------------------------------------------------- concurrent clients

CHURN = r"""
import os, sys
d, tag = sys.argv[1], sys.argv[2]
for i in range(150):
    p = f"{d}/{tag}-{i}"
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, f"{tag}{i}".encode())
    os.close(fd)
    os.rename(p, p + ".r")
    if i % 3 == 0:
        os.unlink(p + ".r")
    if i % 10 == 0:
        os.mkdir(f"{d}/dir-{tag}-{i}")
        os.rmdir(f"{d}/dir-{tag}-{i}")
    os.listdir(d)
"""


def test_concurrent_processes_churning_one_directory(m):
    d = m.mnt / "churn"
    os.mkdir(d)
    procs = [subprocess.Popen([sys.executable, "-c", CHURN, str(d), f"p{k}"]) for k in range(6)]
    for pr in procs:
        assert pr.wait(60) == 0
    want = {f"p{k}-{i}.r" for k in range(6) for i in range(150) if i % 3}
    assert set(os.listdir(d)) == want
    assert set(os.listdir(m.backing / "churn")) == want
    for k in range(6):
        assert read_file(d / f"p{k}-149.r") == f"p{k}149".encode()
    assert os.stat(d).st_nlink == 2
    assert_mirrors(m, "churn")


# ------------------------------------------------------------------------ POSIX ACLs

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20


def acl_xattr(*entries):
    """system.posix_acl_* value: version 2, then (tag, perm, id) entries sorted by tag."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i & 0xFFFFFFFF)
                                           for t, p, i in sorted(entries))


ACL_CASES = [
    # (id, file mode, ACL entries, what nobody gets on a local fs)
    ("named-user-granted-read", 0o600,
     [(ACL_USER_OBJ, 6, -1), (ACL_USER, 4, 65534), (ACL_GROUP_OBJ, 0, -1), (ACL_MASK, 4, -1), (ACL_OTHER, 0, -1)],
     "OK"),
    ("named-user-denied-despite-other-read", 0o644,
     [(ACL_USER_OBJ, 6, -1), (ACL_USER, 0, 65534), (ACL_GROUP_OBJ, 4, -1), (ACL_MASK, 4, -1), (ACL_OTHER, 4, -1)],
     "EACCES"),
]


@pytest.mark.parametrize("mode,entries,want", [c[1:] for c in ACL_CASES], ids=[c[0] for c in ACL_CASES])
def test_posix_acl_access_enforced(m, plain, mode, entries, want):
    got = {}
    for name, root in (("snapfs", m.mnt), ("plain", plain)):
        write_file(root / "f", b"guarded")
        os.chmod(root / "f", mode)
        os.setxattr(root / "f", "system.posix_acl_access", acl_xattr(*entries))
        r = run_as_nobody([NOBODY_PYTHON, "-c", NOBODY_PRELUDE + "t(lambda: open(P, 'rb').read())\n",
                           str(root / "f")], timeout=30)
        assert r.returncode == 0, r.stderr
        got[name] = r.stdout.strip()
    assert got["plain"] == want, f"test premise wrong on plain ext4: {got}"
    assert got["snapfs"] == got["plain"], f"ACL not enforced like the local fs: {got}"
    assert os.getxattr(m.backing / "f", "system.posix_acl_access") == \
        os.getxattr(plain / "f", "system.posix_acl_access")


def test_default_acl_replaces_umask(m, plain):
    rwx = [(ACL_USER_OBJ, 7, -1), (ACL_GROUP_OBJ, 7, -1), (ACL_OTHER, 7, -1)]
    got = {}
    old = os.umask(0o022)
    try:
        for name, root in (("snapfs", m.mnt), ("plain", plain)):
            os.mkdir(root / "d")
            os.setxattr(root / "d", "system.posix_acl_default", acl_xattr(*rwx))
            os.close(os.open(root / "d" / "f", os.O_CREAT | os.O_WRONLY, 0o666))
            os.mkdir(root / "d" / "sub", 0o777)
            got[name] = (oct(stat.S_IMODE(os.stat(root / "d" / "f").st_mode)),
                         oct(stat.S_IMODE(os.stat(root / "d" / "sub").st_mode)))
    finally:
        os.umask(old)
    assert got["plain"] == ("0o666", "0o777"), f"test premise wrong on plain ext4: {got}"
    assert got["snapfs"] == got["plain"], f"default ACL not applied like the local fs: {got}"
