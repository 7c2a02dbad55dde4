"""POSIX conformance through a real snapfs mount: lookup and getattr, setattr, set-ID bits
(killpriv).

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import os
import stat
import subprocess
import sys
import time

import pytest

from lib.libc import AT_SYMLINK_NOFOLLOW, UTIME_NOW, UTIME_OMIT, utimensat
from lib.posix import PAUSE, SAME_FIELDS, assert_mirrors, bind_socket, read_file, write_file
from lib.users import NOBODY_PYTHON, run_as_nobody


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
