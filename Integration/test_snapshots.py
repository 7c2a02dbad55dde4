"""Snapshots through a real mount, for every strategy: hardlink and copy on the root
ext4, reflink on an XFS image (reflink=1) and btrfs on a btrfs image, both made on loop
devices by the tests. What is checked: a snapshot equals the live tree at its trigger
(content, modes, owners, times, xattrs, symlinks, special files); nothing done through
the mount afterwards changes any snapshot; `.snapshots` is read-only; writers racing a
snapshot land wholly before or after it; the control file's protocol and errors;
skipping unchanged snapshots; retention; the timer; crash leftovers."""

import errno
import hashlib
import json
import mmap
import os
import random
import stat
import subprocess
import threading
import time

import pytest

from lib.common import SNAPFS
from lib.control import CONTROL, control, snapshot
from lib.loopfs import LoopFS
from lib.mount import is_mounted

# ---------------------------------------------------------------- helpers

def manifest(root, skip_top=(".snapshots",)):
    """Everything a snapshot must preserve, per relative path."""
    out = {}
    root = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip_top]
            filenames = [f for f in filenames if f not in skip_top and f != CONTROL]
        for name in dirnames + filenames + ["."] if rel_dir == "." else dirnames + filenames:
            path = os.path.join(dirpath, name) if name != "." else dirpath
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            entry = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
                     "mtime": st.st_mtime_ns}
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entry["sha"] = hashlib.sha256(f.read()).hexdigest()
                entry["size"] = st.st_size
                entry["atime"] = st.st_atime_ns
            elif stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                entry["rdev"] = st.st_rdev
            if not stat.S_ISLNK(st.st_mode) and rel != ".":
                entry["xattrs"] = {k: os.getxattr(path, k, follow_symlinks=False)
                                   for k in sorted(os.listxattr(path, follow_symlinks=False))}
            out[rel] = entry
    return out


def build_tree(mnt, files=40, seed=1):
    rnd = random.Random(seed)
    for d in ["a", "a/b", "a/b/c", "empty", "sp ace"]:
        os.makedirs(mnt / d, exist_ok=True)
    for i in range(files):
        d = rnd.choice(["", "a", "a/b", "a/b/c", "sp ace"])
        p = mnt / d / f"f{i}"
        p.write_bytes(rnd.randbytes(rnd.choice([0, 1, 100, 4096, 70000])))
    os.chmod(mnt / "a/f_exec", 0o755) if (mnt / "a/f_exec").exists() else None
    (mnt / "setuid").write_bytes(b"x")
    os.chmod(mnt / "setuid", 0o4755)
    os.chmod(mnt / "a/b", 0o2775)
    (mnt / "owned").write_bytes(b"nobody's")
    os.chown(mnt / "owned", 65534, 65534)
    os.setxattr(mnt / "owned", "user.colour", b"blue")
    os.setxattr(mnt / "a", "user.dir", b"yes")
    os.symlink("a/b/c", mnt / "link")
    os.symlink("/nonexistent/target", mnt / "dangling")
    os.mkfifo(mnt / "fifo")
    os.mknod(mnt / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (mnt / "hard1").write_bytes(b"shared by two names")
    os.link(mnt / "hard1", mnt / "hard2")
    os.utime(mnt / "a/b", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    os.utime(mnt / "owned", ns=(1_500_000_000_123_456_789, 1_500_000_000_987_654_321))


def without_atime(m, regular_mtime=False):
    """The manifest without access times (and, if asked, without regular files' mtimes)."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "atime" and not (regular_mtime and kk == "mtime" and "sha" in v)}
            for k, v in m.items()}


def mutate_everything(mnt, seed=7):
    """Every kind of change, through the mount."""
    rnd = random.Random(seed)
    regular = [p for p in mnt.rglob("*") if p.is_file() and not p.is_symlink()
               and ".snapshots" not in p.parts and stat.S_ISREG(p.lstat().st_mode)
               and not p.name.startswith("f_open")]
    for p in regular:
        action = rnd.randrange(8)
        if action == 0:
            with open(p, "r+b") as f:
                f.seek(rnd.randrange(max(1, p.stat().st_size)))
                f.write(b"CHANGED")
        elif action == 1:
            with open(p, "ab") as f:
                f.write(b"appended")
        elif action == 2:
            os.truncate(p, rnd.randrange(max(1, p.stat().st_size)))
        elif action == 3:
            os.chmod(p, 0o600)
        elif action == 4:
            os.chown(p, 65534, 65534)
        elif action == 5:
            os.setxattr(p, "user.changed", b"1")
        elif action == 6:
            os.utime(p, ns=(1, 2))
        else:
            p.write_bytes(b"rewritten with O_TRUNC")
    with open(mnt / "hard1", "r+b") as f:
        f.write(b"SHARED")
    os.chmod(mnt / "hard2", 0o640)
    os.setxattr(mnt / "owned", "user.colour", b"red")
    if (mnt / "a/b/c").exists():
        os.rename(mnt / "a/b/c", mnt / "moved")
    else:
        os.rename(mnt / "moved", mnt / "a/b/c")
    os.unlink(mnt / "link")
    os.symlink(f"elsewhere{seed}", mnt / "link")
    if (mnt / "empty").exists():
        os.rmdir(mnt / "empty")
    else:
        os.mkdir(mnt / "empty")
    os.chmod(mnt / "a", 0o700 if seed % 2 else 0o750)


# ---------------------------------------------------------------- strategies

# strategy_mount (conftest.py) gives a mount of each strategy.


# ---------------------------------------------------------------- tests

def test_snapshot_equals_the_live_tree_at_the_trigger(strategy_mount):
    kind, m = strategy_mount
    build_tree(m.mnt)
    before = manifest(m.mnt)
    name = snapshot(m.mnt, "first")
    assert name.endswith("-first")
    through_mount = manifest(m.mnt / ".snapshots" / name)
    in_backing = manifest(m.backing / ".snapshots" / name)
    # With the kernel's write-back cache (the default) the live tree shows the kernel's
    # modification times of regular files: those of the system calls, while the backing
    # file's come from snapfs's own writes, a little later.
    loose = "no_writeback_cache" not in m.options
    assert without_atime(through_mount, loose) == without_atime(before, loose)
    assert without_atime(in_backing, loose) == without_atime(before, loose)
    if loose:
        for rel, entry in before.items():
            if "sha" in entry:
                assert abs(entry["mtime"] - in_backing[rel]["mtime"]) < 1_000_000_000, rel
    meta = json.loads((m.backing / ".snapshots/.meta" / f"{name}.json").read_text())
    assert meta["name"] == name and meta["label"] == "first" and meta["strategy"] == kind
    assert meta["trigger"]["kind"] == "control" and meta["scope"] == "tree"
    if kind != "btrfs":
        assert meta["files"] == sum(1 for k, v in before.items() if not stat.S_ISDIR(v["mode"]))
    if kind == "hardlink":
        assert os.stat(m.backing / "f0").st_ino == os.stat(m.backing / ".snapshots" / name / "f0").st_ino \
            if (m.backing / "f0").exists() else True


def test_nothing_done_through_the_mount_changes_a_snapshot(strategy_mount):
    kind, m = strategy_mount
    build_tree(m.mnt)
    held_open = open(m.mnt / "a/f_open", "w+b")
    held_open.write(b"before the snapshot")
    held_open.flush()
    first = snapshot(m.mnt, "one")
    frozen = manifest(m.backing / ".snapshots" / first)
    # A descriptor opened before the snapshot writes into the live file only.
    held_open.seek(0)
    held_open.write(b"AFTER")
    held_open.flush()
    mutate_everything(m.mnt)
    second = snapshot(m.mnt, "two")
    frozen2 = manifest(m.backing / ".snapshots" / second)
    mutate_everything(m.mnt, seed=8)
    held_open.write(b"more")
    held_open.close()
    assert without_atime(manifest(m.backing / ".snapshots" / first)) == without_atime(frozen)
    assert without_atime(manifest(m.mnt / ".snapshots" / first)) == without_atime(frozen)
    assert without_atime(manifest(m.backing / ".snapshots" / second)) == without_atime(frozen2)
    assert (m.mnt / ".snapshots" / first / "a/f_open").read_bytes() == b"before the snapshot"
    assert (m.mnt / ".snapshots" / second / "a/f_open").read_bytes() == b"AFTERe the snapshot"
    assert (m.mnt / "a/f_open").read_bytes() == b"AFTERmoree snapshot"
    assert (m.mnt / ".snapshots" / first / "hard1").read_bytes() == b"shared by two names"


def test_snapshots_are_read_only(strategy_mount):
    kind, m = strategy_mount
    (m.mnt / "f").write_bytes(b"data")
    os.mkdir(m.mnt / "d")
    name = snapshot(m.mnt)
    snap = m.mnt / ".snapshots" / name
    attempts = [
        lambda: open(snap / "f", "r+b"),
        lambda: open(snap / "f", "wb"),
        lambda: open(snap / "new", "wb"),
        lambda: os.truncate(snap / "f", 0),
        lambda: os.chmod(snap / "f", 0o777),
        lambda: os.chown(snap / "f", 1, 1),
        lambda: os.utime(snap / "f", (1, 1)),
        lambda: os.setxattr(snap / "f", "user.x", b"1"),
        lambda: os.unlink(snap / "f"),
        lambda: os.rename(snap / "f", snap / "g"),
        lambda: os.mkdir(snap / "newdir"),
        lambda: os.rmdir(snap / "d"),
        lambda: os.symlink("x", snap / "sym"),
        lambda: os.rmdir(m.mnt / ".snapshots" / name),
        lambda: os.mkdir(m.mnt / ".snapshots" / "mine"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno in (errno.EROFS,), attempt
    # Between a snapshot and the live tree, as between filesystems (ZFS): EXDEV.
    for attempt in [lambda: os.rename(snap / "f", m.mnt / "stolen"), lambda: os.rename(m.mnt / "f", snap / "planted"),
                    lambda: os.link(m.mnt / "f", snap / "hard"), lambda: os.link(snap / "f", m.mnt / "hard")]:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EXDEV, attempt
    assert (snap / "f").read_bytes() == b"data"
    for attempt in [lambda: os.rmdir(m.mnt / ".snapshots"), lambda: os.rename(m.mnt / ".snapshots", m.mnt / "x"),
                    lambda: os.unlink(m.mnt / CONTROL), lambda: os.mkdir(m.mnt / ".snapshots")]:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno in (errno.EBUSY, errno.EEXIST, errno.EROFS)


def test_snapshots_and_control_file_are_hidden_but_reachable(snapfs_mount):
    m = snapfs_mount
    (m.mnt / "f").write_bytes(b"x")
    name = snapshot(m.mnt)
    assert sorted(os.listdir(m.mnt)) == ["f"]
    assert os.path.isdir(m.mnt / ".snapshots")
    assert name in os.listdir(m.mnt / ".snapshots")
    st = os.stat(m.mnt / CONTROL)
    assert stat.S_ISREG(st.st_mode)
    assert (m.backing / ".snapshots" / name / "f").read_bytes() == b"x"
    assert not (m.backing / CONTROL).exists()


def test_control_file_protocol_and_errors(snapfs_mount):
    m = snapfs_mount
    (m.mnt / "f").write_bytes(b"x")
    # From a shell, as the README shows.
    r = subprocess.run(["sh", "-c", f"echo snapshot nightly > {m.mnt}/{CONTROL}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    names = [n for n in os.listdir(m.mnt / ".snapshots") if not n.startswith(".")]
    assert len(names) == 1 and names[0].endswith("Z-nightly")
    # Nothing changed: no new snapshot, unless forced.
    err, result, status = control(m.mnt, "snapshot")
    assert err == 0 and result == f"ok unchanged {names[0]}"
    assert status["snapshots"] == "1" and status["newest"] == names[0] and status["changed"] == "no"
    forced = snapshot(m.mnt, force=True)
    assert forced > names[0]
    for bad, code in [("", errno.EINVAL), ("snapshot a/b", errno.EINVAL), ("snapshot -x", errno.EINVAL),
                      ("snapshot .hidden", errno.EINVAL), ("snapshot two words", errno.EINVAL),
                      ("snapshot tab\tlabel", errno.EINVAL), ("frobnicate", errno.EINVAL),
                      ("delete 20990101T000000.000Z", errno.ENOENT), ("hold nope", errno.ENOENT),
                      ("prune extra", errno.EINVAL)]:
        err, result, _ = control(m.mnt, bad)
        assert err == code, (bad, result)
        assert result.startswith("error "), result
    fd = os.open(m.mnt / CONTROL, os.O_RDWR)
    try:
        os.write(fd, bytes(range(256)))
    except OSError as e:
        assert e.errno == errno.EINVAL
    else:
        raise AssertionError("binary garbage accepted")
    finally:
        os.close(fd)
    # Hold protects from delete; release lets it go.
    assert control(m.mnt, f"hold {forced}")[0] == 0
    err, result, _ = control(m.mnt, f"delete {forced}")
    assert err == errno.EBUSY and "held" in result
    meta = json.loads((m.backing / ".snapshots/.meta" / f"{forced}.json").read_text())
    assert meta["held"] is True
    assert control(m.mnt, f"release {forced}")[0] == 0
    err, result, _ = control(m.mnt, f"delete {forced}")
    assert err == 0 and result == f"ok deleted {forced}"
    assert not (m.backing / ".snapshots" / forced).exists()
    assert not (m.mnt / ".snapshots" / forced).exists()
    assert m.alive()


def test_unchanged_snapshots_can_be_kept(make_mount):
    m = make_mount(extra_args=["--snapshot-unchanged"])
    a = snapshot(m.mnt)
    b = snapshot(m.mnt)
    assert a < b


@pytest.mark.parametrize("options", [("no_writeback_cache",), ()], ids=["no-kernel-cache", "kernel-cache"])
def test_writers_racing_a_snapshot_land_wholly_before_or_after(make_mount, options):
    """Every record acknowledged before a snapshot's trigger is in it. Without the kernel's
    write-back cache each write is a request through the freeze gate, so a racing write is
    wholly before or after it and each file is a prefix of its writes. With it (the
    default) the kernel writes pages back in an order of its own, as it does to a local
    disk: a record written while the trigger is handled may be in the snapshot without one
    written just before it (the one missing reads as zeros), as in a btrfs or LVM snapshot
    of a filesystem being written; no record is ever torn or misplaced."""
    m = make_mount(options=options)
    ordered = "no_writeback_cache" in options
    record = 4096
    stop = threading.Event()
    done = [0, 0, 0]

    def writer(index):
        fd = os.open(m.mnt / f"log{index}", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        n = 0
        # Bounded: the kernel's cache takes writes at memory speed.
        while not stop.is_set() and n < 50_000:
            os.write(fd, (f"{index}:{n:08d}:".encode()).ljust(record, b"."))
            n += 1
            done[index] = n
        os.close(fd)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    taken = []
    try:
        for _ in range(5):
            time.sleep(0.1)
            acknowledged = list(done)
            taken.append((snapshot(m.mnt, force=True), acknowledged))
    finally:
        stop.set()
        for t in threads:
            t.join()
    for name, acknowledged in taken:
        for i in range(3):
            p = m.backing / ".snapshots" / name / f"log{i}"
            if not p.exists():
                assert acknowledged[i] == 0, (name, i)
                continue
            data = p.read_bytes()
            assert len(data) % record == 0, (name, i, len(data))
            assert len(data) // record >= acknowledged[i], (name, i)
            for n in range(len(data) // record):
                got = data[n * record:n * record + 11]
                want = f"{i}:{n:08d}:".encode()[:11]
                if ordered or n < acknowledged[i]:
                    assert got == want, (name, i, n, acknowledged[i])
                else:
                    assert got in (want, bytes(11)), (name, i, n)


def test_mmap_writes_without_fsync_are_in_the_snapshot(snapfs_mount):
    m = snapfs_mount
    p = m.mnt / "mapped"
    p.write_bytes(b"\0" * 8192)
    with open(p, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 8192)
        mm[100:113] = b"through mmap!"
        name = snapshot(m.mnt)
        mm.close()
    assert (m.backing / ".snapshots" / name / "mapped").read_bytes()[100:113] == b"through mmap!"


def test_retention_keeps_the_newest(make_mount):
    m = make_mount(extra_args=["--keep-last", "2"])
    names = []
    for i in range(4):
        (m.mnt / "f").write_text(str(i))
        names.append(snapshot(m.mnt, f"n{i}"))
    left = sorted(n for n in os.listdir(m.mnt / ".snapshots") if not n.startswith("."))
    assert left == names[2:]
    # (.meta also holds the durability marker, `durable`.)
    assert sorted(n for n in os.listdir(m.backing / ".snapshots/.meta") if n.endswith(".json")) == [n + ".json" for n in names[2:]]


def test_timer_takes_snapshots(make_mount):
    m = make_mount(extra_args=["--every", "1s"])
    (m.mnt / "f").write_text("x")
    deadline = time.time() + 10
    while time.time() < deadline:
        names = [n for n in os.listdir(m.backing / ".snapshots") if not n.startswith(".")]
        if names:
            break
        time.sleep(0.2)
    assert names, "no timed snapshot within 10 s"
    meta = json.loads((m.backing / ".snapshots/.meta" / f"{names[0]}.json").read_text())
    assert meta["trigger"]["kind"] == "timer"
    # Nothing changes any more: no further snapshots.
    time.sleep(2.5)
    assert len([n for n in os.listdir(m.backing / ".snapshots") if not n.startswith(".")]) == 1


def test_half_built_snapshots_are_removed_at_mount(workdir, make_mount):
    backing = workdir / "backing"
    (backing / ".snapshots" / ".building-20260101T000000.000Z" / "sub").mkdir(parents=True)
    (backing / ".snapshots" / ".building-20260101T000000.000Z" / "sub" / "f").write_text("half")
    m = make_mount(backing=backing)
    assert not (backing / ".snapshots" / ".building-20260101T000000.000Z").exists()
    assert m.alive()


def test_kill_during_a_snapshot_leaves_no_half_snapshot(workdir, make_mount):
    m = make_mount(options=["strategy=copy"])
    blob = os.urandom(1 << 20)
    for i in range(60):
        (m.mnt / f"big{i}").write_bytes(blob)
    started = threading.Event()

    def trigger():
        started.set()
        try:
            control(m.mnt, "snapshot")
        except OSError:
            pass

    t = threading.Thread(target=trigger)
    t.start()
    started.wait()
    time.sleep(0.05)
    os.kill(m.pid, 9)
    t.join(timeout=30)
    subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)], capture_output=True)
    m.pid = None
    m2 = make_mount(backing=m.backing, name="mnt2")
    leftovers = [n for n in os.listdir(m2.backing / ".snapshots") if n.startswith(".building-")]
    assert leftovers == []
    for name in os.listdir(m2.backing / ".snapshots"):
        if name.startswith("."):
            continue
        assert len(os.listdir(m2.backing / ".snapshots" / name)) == 60


def test_bad_strategy_and_retention_options_are_refused(workdir):
    (workdir / "b").mkdir()
    (workdir / "m").mkdir()
    for args in (["--strategy", "zfs"], ["--keep-last", "-1"], ["--every", "soon"], ["-o", "every=0s"],
                 ["--strategy", "btrfs"], ["--strategy", "reflink"]):
        r = subprocess.run([SNAPFS, "mount", str(workdir / "b"), str(workdir / "m"), *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 64, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("snapfs: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not is_mounted(workdir / "m")


@pytest.mark.btrfs
def test_a_btrfs_store_is_a_subvolume_of_its_own(workdir, make_mount):
    """With the btrfs strategy a new store (`.snapshots`) is a btrfs subvolume, so a
    snapshot of the backing subvolume holds it as one empty directory, not every kept
    snapshot (which the new one would have to shed). A store that is already a plain
    directory stays one and keeps working."""
    with LoopFS(workdir, "btrfs") as loop:
        backing = loop.dir
        m = make_mount(options=["strategy=btrfs"], backing=backing)
        (m.mnt / "f").write_text("one")
        first = snapshot(m.mnt)
        (m.mnt / "f").write_text("two")
        second = snapshot(m.mnt)
        store = os.stat(backing / ".snapshots")
        assert store.st_ino == 256, "the store is the root of a subvolume"
        assert store.st_dev != os.stat(backing).st_dev
        assert stat.S_IMODE(store.st_mode) == 0o700
        for name, content in ((first, "one"), (second, "two")):
            assert (backing / ".snapshots" / name / "f").read_text() == content
            assert not (backing / ".snapshots" / name / ".snapshots").exists()
            assert (m.mnt / ".snapshots" / name / "f").read_text() == content
        m.stop()

        # A plain directory from before stays a plain directory.
        other = loop.dir / "old"
        subprocess.run(["btrfs", "subvolume", "create", str(other)], check=True, capture_output=True)
        (other / ".snapshots").mkdir(mode=0o700)
        m = make_mount(options=["strategy=btrfs"], backing=other, name="old-mnt")
        (m.mnt / "g").write_text("kept")
        name = snapshot(m.mnt)
        assert os.stat(other / ".snapshots").st_ino != 256
        assert (other / ".snapshots" / name / "g").read_text() == "kept"
        assert not (other / ".snapshots" / name / ".snapshots").exists()
        m.stop()
