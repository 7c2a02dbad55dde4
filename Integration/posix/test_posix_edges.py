"""POSIX conformance through a real snapfs mount: names as bytes, large offsets, O_DIRECT and
O_TMPFILE, exchange and inode identity, concurrent clients.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import errno
import fcntl
import mmap
import os
import stat
import subprocess
import sys

from lib.libc import (AT_FDCWD, AT_SYMLINK_FOLLOW, RENAME_EXCHANGE, FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE, check, fallocate, libc, raw_readdir, renameat2)
from lib.posix import assert_mirrors, errno_of, expect_errno, read_file, setlk, write_file
from lib.users import NOBODY_PYTHON, run_as_nobody


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
                check(libc.linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD,
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
