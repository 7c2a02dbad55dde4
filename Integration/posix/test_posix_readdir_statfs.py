"""POSIX conformance through a real snapfs mount: readdir, statfs.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import os
import stat

from lib.libc import DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK, libc, raw_readdir
from lib.posix import assert_mirrors, bind_socket, write_file


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
