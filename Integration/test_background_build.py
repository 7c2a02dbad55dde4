"""Tree snapshots built in the background with copy-before-write at the gate.

`snapshot --no-wait` answers at the snapshot's moment (its epoch), while the tree is still
being built. Every kind of change is then made through the mount, each to a part of the
tree the build has most likely not reached yet, and the published snapshot must still
equal the tree as it was at the epoch: names, types, contents, modes, times, extended
attributes, symlink targets, and which names are hard links of one another.
"""

import os
import signal
import stat
import subprocess
import time

import pytest

from lib.control import control, status, wait_published
from lib.loopfs import LoopFS

DIRECTORIES = 160
FILES = 150          # per directory: 24,000 files, so that the build outlasts the changes
# Hard links are made fastest: a larger tree, so that the build still outlasts the changes.
DIRECTORIES_BY_STRATEGY = {"hardlink": 480}


def populate(root, directories=DIRECTORIES):
    """The tree, made natively in the backing directory before the mount."""
    for d in range(directories):
        directory = root / f"d{d:03d}"
        directory.mkdir()
        for f in range(FILES):
            (directory / f"f{f:03d}").write_bytes(f"{d}/{f}\n".encode() * 4)
    os.link(root / "d010" / "f000", root / "d011" / "link0")
    os.symlink("../d000/f000", root / "d012" / "s0")
    (root / "empty").mkdir()
    deep = root / "nested" / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / "file").write_bytes(b"deep\n")
    (root / "d015" / "big").write_bytes(os.urandom(1 << 20))
    os.setxattr(root / "d003" / "f001", "user.kept", b"at the epoch")


def manifest(root):
    """relative path -> what a snapshot must keep of it; and the hard-link groups."""
    out, inodes = {}, {}
    for parent, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (parent == str(root) and d == ".snapshots")]
        for name in dirs + files:
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            entry = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "mtime": st.st_mtime_ns}
            if kind == stat.S_IFREG:
                with open(path, "rb") as f:
                    entry["data"] = f.read()
                inodes.setdefault(st.st_ino, []).append(rel)
            elif kind == stat.S_IFLNK:
                entry["target"] = os.readlink(path)
            if kind in (stat.S_IFREG, stat.S_IFDIR):
                entry["xattrs"] = {a: os.getxattr(path, a) for a in os.listxattr(path) if a.startswith("user.")}
            out[rel] = entry
    links = sorted(sorted(names) for names in inodes.values() if len(names) > 1)
    return out, links


def changes(mnt):
    """One change of every kind, each where the build has most likely not been yet (the
    walk takes the root's subdirectories last-listed first, so the low numbers last)."""
    with open(mnt / "d000" / "f000", "ab") as f:           # data of a file
        f.write(b"appended after the epoch\n")
    os.truncate(mnt / "d001" / "f000", 0)                    # size
    os.chmod(mnt / "d002" / "f000", 0o600)                   # mode
    os.setxattr(mnt / "d003" / "f000", "user.new", b"x")     # xattrs
    os.removexattr(mnt / "d003" / "f001", "user.kept")
    os.rename(mnt / "d004" / "f000", mnt / "d005" / "moved")  # a file between directories
    os.unlink(mnt / "d006" / "f000")                          # a removal
    os.rename(mnt / "d007", mnt / "d008" / "d007-moved")       # a directory, with its files
    with open(mnt / "d008" / "d007-moved" / "f001", "ab") as f:
        f.write(b"written in the moved directory\n")
    os.rmdir(mnt / "empty")                                   # an empty directory
    (mnt / "d009" / "new").write_bytes(b"made after the epoch\n")
    with open(mnt / "d010" / "f000", "r+b") as f:            # a file with two names
        f.write(b"XX")
    os.utime(mnt / "d012" / "s0", ns=(1, 1), follow_symlinks=False)  # a symlink's times
    os.chmod(mnt / "d013", 0o700)                             # a directory's own attributes
    with open(mnt / "nested" / "a" / "b" / "c" / "d" / "file", "ab") as f:  # deep, unlisted parents
        f.write(b"deeper\n")
    (mnt / "d014" / "sub").mkdir()                            # a new directory, and a file in it
    (mnt / "d014" / "sub" / "inside").write_bytes(b"new\n")
    with open(mnt / "d015" / "big", "r+b") as f:             # the middle of a large file
        f.seek(512 << 10)
        f.write(b"\0" * 4096)
    os.rename(mnt / "d016" / "f001", mnt / "d016" / "f000")   # a rename over a file
    os.link(mnt / "d017" / "f000", mnt / "d017" / "another")  # a new name for an old file
    with open(mnt / "d017" / "f000", "ab") as f:
        f.write(b"through a new link\n")


@pytest.fixture(params=["hardlink", "copy", "reflink"])
def populated_mount(request, workdir, make_mount):
    kind = request.param
    if kind != "reflink":
        backing = workdir / "backing"
        backing.mkdir()
        populate(backing, DIRECTORIES_BY_STRATEGY.get(kind, DIRECTORIES))
        yield kind, make_mount(options=[f"strategy={kind}"], backing=backing)
        return
    with LoopFS(workdir, "xfs") as loop:
        backing = loop.dir / "data"
        backing.mkdir()
        populate(backing)
        m = make_mount(options=[f"strategy={kind}"], backing=backing)
        try:
            yield kind, m
        finally:
            m.stop()


def test_a_snapshot_built_while_everything_changes_is_the_tree_at_its_epoch(populated_mount):
    kind, m = populated_mount
    assert status(m.mnt)["build"] == "background"
    before, links_before = manifest(m.mnt)
    assert ["d010/f000", "d011/link0"] in links_before

    err, result, _ = control(m.mnt, "snapshot --no-wait --force epoch")
    assert err == 0, result
    words = result.split()
    assert words[:2] == ["ok", "started"], result
    name = words[2]
    seen_building = "building" in status(m.mnt)
    changes(m.mnt)
    still_building = "building" in status(m.mnt)
    wait_published(m.mnt, name)
    # The changes overlapped the build (otherwise this test would prove nothing).
    assert seen_building, "the build was over before the first change"

    after, links_after = manifest(m.mnt / ".snapshots" / name)
    assert sorted(after) == sorted(before)
    for path, entry in before.items():
        assert after[path] == entry, (kind, path, still_building)
    assert links_after == links_before

    # The live tree has every change, and the store holds nothing but the snapshot.
    assert (m.mnt / "d000" / "f000").read_bytes().endswith(b"appended after the epoch\n")
    assert (m.mnt / "d008" / "d007-moved" / "f001").read_bytes().endswith(b"written in the moved directory\n")
    assert not (m.mnt / "empty").exists()
    store = sorted(p.name for p in (m.backing / ".snapshots").iterdir())
    assert store == [".meta", name], store


def test_a_trigger_during_a_build_waits_for_it_and_takes_the_later_moment(populated_mount):
    kind, m = populated_mount
    err, result, _ = control(m.mnt, "snapshot --no-wait --force first")
    assert err == 0 and result.startswith("ok started "), result
    first = result.split()[2]
    target = m.mnt / "d001" / "f005"
    old = target.read_bytes()
    target.write_bytes(b"between the two\n")
    err, result, _ = control(m.mnt, "snapshot --force second")   # waits for the first build
    assert err == 0 and result.startswith("ok snapshot "), result
    second = result.split()[2]
    assert first < second
    assert (m.mnt / ".snapshots" / first / "d001" / "f005").read_bytes() == old
    assert (m.mnt / ".snapshots" / second / "d001" / "f005").read_bytes() == b"between the two\n"


def test_a_build_cut_short_by_a_crash_leaves_nothing_after_the_next_mount(workdir, make_mount):
    backing = workdir / "backing"
    backing.mkdir()
    populate(backing)
    m = make_mount(options=["strategy=copy"], backing=backing)
    err, result, _ = control(m.mnt, "snapshot --no-wait --force cut")
    assert err == 0 and result.startswith("ok started "), result
    with open(m.mnt / "d000" / "f000", "ab") as f:   # a capture into the stash
        f.write(b"after the epoch\n")
    assert "building" in status(m.mnt), "the build was over before the crash"
    os.kill(m.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while m.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)], capture_output=True)
    m.pid = None
    left = sorted(p.name for p in (backing / ".snapshots").iterdir())
    assert any(name.startswith(".building-") for name in left), left   # what the crash left

    again = make_mount(options=["strategy=copy"], backing=backing, name="again")
    assert sorted(p.name for p in (backing / ".snapshots").iterdir()) == [".meta"]
    assert (again.mnt / "d000" / "f000").read_bytes().endswith(b"after the epoch\n")
    name = control(again.mnt, "snapshot --force whole")[1].split()[2]
    assert (again.mnt / ".snapshots" / name / "d000" / "f000").read_bytes().endswith(b"after the epoch\n")


@pytest.mark.parametrize("kind", ["hardlink", "copy"])
def test_a_large_file_open_for_writing_is_copied_by_chunks_as_it_was_at_the_epoch(workdir, make_mount, kind):
    """A large file open for writing at the epoch is copied chunk by chunk, each chunk
    before a change overwrites or cuts it off; the snapshot holds it as it was."""
    backing = workdir / "backing"
    backing.mkdir()
    populate(backing)
    m = make_mount(options=[f"strategy={kind}"], backing=backing)
    size = 6 << 20
    original = os.urandom(size)
    quiet = os.urandom(3 << 20)
    (m.mnt / "quiet.db").write_bytes(quiet)          # open at the epoch, never written after
    (m.mnt / "busy.db").write_bytes(original)
    os.chmod(m.mnt / "busy.db", 0o640)
    os.utime(m.mnt / "busy.db", ns=(1_000_000_000, 2_000_000_000))
    backing_inode = os.stat(backing / "busy.db").st_ino
    busy = os.open(m.mnt / "busy.db", os.O_RDWR)
    idle = os.open(m.mnt / "quiet.db", os.O_RDWR)
    try:
        err, result, _ = control(m.mnt, "snapshot --no-wait --force chunks")
        assert err == 0 and result.startswith("ok started "), result
        name = result.split()[2]
        os.pwrite(busy, b"A" * 4096, 0)
        os.pwrite(busy, b"B" * 100_000, (2 << 20) - 50_000)        # across a chunk boundary
        os.fsync(busy)
        os.ftruncate(busy, (3 << 20) + 12345)                     # cuts the last chunks off
        os.pwrite(busy, b"C" * 4096, 5 << 20)                      # and writes past the cut
        os.fsync(busy)
        wait_published(m.mnt, name)
    finally:
        os.close(busy)
        os.close(idle)
    snapshot = m.mnt / ".snapshots" / name
    assert (snapshot / "busy.db").read_bytes() == original
    assert (snapshot / "quiet.db").read_bytes() == quiet
    st = os.stat(snapshot / "busy.db")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o640, 2_000_000_000)
    # Not linked into the snapshot, so never copied up: the backing file is the same one.
    assert os.stat(backing / "busy.db").st_ino == backing_inode
    live = (m.mnt / "busy.db").read_bytes()
    assert len(live) == (5 << 20) + 4096
    assert live[:4096] == b"A" * 4096 and live[(2 << 20) - 50_000:(2 << 20) + 50_000] == b"B" * 100_000
    assert live[-4096:] == b"C" * 4096
