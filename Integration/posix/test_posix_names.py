"""POSIX conformance through a real snapfs mount: readlink and symlink, mknod,
mkdir/rmdir/unlink, rename, link.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import errno
import os
import socket
import stat

import pytest

from lib.libc import AT_SYMLINK_NOFOLLOW, RENAME_NOREPLACE, RENAME_EXCHANGE, renameat2, utimensat
from lib.posix import assert_mirrors, bind_socket, expect_errno, read_file, write_file


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
