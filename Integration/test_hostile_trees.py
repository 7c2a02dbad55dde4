"""Mounted tests of what root does on users' behalf in a tree that users change while it
works (issue 18, defects 1, 6 and 9): `restore` never follows a symlink a user swapped in,
`versions` never leaves the tree through one, every walk (snapshot, diff, restore, delete)
copes with a tree tens of thousands of levels deep without a descriptor or a stack frame
per level, and an empty PATH is an error, not "the whole tree"."""

import os
import stat
import subprocess
import time

import pytest

from lib.common import SNAPFS

TIMEOUT = 300


def snapfs(*args, check=None, timeout=TIMEOUT):
    r = subprocess.run([SNAPFS, *[str(a) for a in args]], capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert r.returncode == check, (args, r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    return r


def take(mount):
    r = snapfs("snapshot", mount.mnt, "--force", check=0)
    return r.stdout.strip()


def daemon_descriptors(mount):
    return len(os.listdir(f"/proc/{mount.pid}/fd"))


def limited(*args):
    """A command with 256 descriptors and a 1 MiB stack: a walk that takes either per level
    fails long before 3,000 levels."""
    return ["prlimit", "--nofile=256", "--stack=1048576", *map(str, args)]


def take_with_few_descriptors(mount):
    """A snapshot while the daemon may open only 500 more descriptors than it holds."""
    soft, hard = subprocess.run(["prlimit", f"--pid={mount.pid}", "--nofile", "--raw", "--noheadings",
                                 "--output=SOFT,HARD"], capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["prlimit", f"--pid={mount.pid}", f"--nofile={daemon_descriptors(mount) + 500}:{hard}"], check=True)
    try:
        return take(mount)
    finally:
        subprocess.run(["prlimit", f"--pid={mount.pid}", f"--nofile={soft}:{hard}"], check=True)


# ------------------------------------------------------------ restore and symlink swaps

SWAPPER = r"""
import os, sys, time
directory, target, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
end = time.time() + seconds
n = 0

def swap(name):
    global n
    tmp = os.path.join(directory, f".swap{n}")
    n += 1
    try:
        os.symlink(target, tmp)
        os.rename(tmp, os.path.join(directory, name))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass

while time.time() < end:
    # Every file, and the files restore is just making under their temporary names.
    for name in os.listdir(directory):
        if not name.startswith(".swap"):
            swap(name)
"""


@pytest.mark.slow
def test_restore_never_acts_on_a_symlink_a_user_swaps_in(make_mount, users, workdir):
    """alice owns a directory in the tree and keeps replacing every file in it by a symlink to
    a root-owned 0600 file outside the mount while root restores her directory again and
    again. The outside file keeps its mode, owner and bytes, and the restores either finish
    or stop with a clear error."""
    mount = make_mount()
    mnt = mount.mnt
    home = mnt / "alice"
    home.mkdir()
    os.chown(home, users.alice.uid, users.alice.gid)
    for i in range(40):
        p = home / f"f{i}"
        p.write_bytes(b"x" * (i + 1))
        os.chown(p, users.alice.uid, users.alice.gid)
        os.chmod(p, 0o666)
    snap = take(mount)
    secret = workdir / "secret"
    secret.write_bytes(b"root only\n")
    os.chmod(secret, 0o600)
    before = os.lstat(secret)

    swapper = users.alice.popen(["python3", "-c", SWAPPER, str(home), str(secret), "6"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 5
        runs = 0
        while time.time() < deadline:
            r = snapfs("restore", mnt, snap, "alice")
            assert r.returncode in (0, 1), (r.returncode, r.stderr)
            runs += 1
            after = os.lstat(secret)
            assert stat.S_IMODE(after.st_mode) == 0o600, oct(after.st_mode)
            assert (after.st_uid, after.st_gid) == (0, 0)
            assert secret.read_bytes() == b"root only\n"
    finally:
        swapper.wait(timeout=30)
    assert runs >= 1
    after = os.lstat(secret)
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_size, after.st_mtime_ns) == \
        (0o600, 0, before.st_size, before.st_mtime_ns)
    # Once alice stops, a restore puts her files back as they were.
    snapfs("restore", mnt, snap, "alice", check=0)
    for i in range(40):
        p = home / f"f{i}"
        st = os.lstat(p)
        assert stat.S_ISREG(st.st_mode) and p.read_bytes() == b"x" * (i + 1)
        assert st.st_uid == users.alice.uid and stat.S_IMODE(st.st_mode) == 0o666


def test_restore_replaces_a_symlinked_directory_instead_of_following_it(make_mount, users, workdir):
    """A directory of the snapshot that alice replaced by a symlink to a directory outside the
    mount is made a directory again; nothing outside changes."""
    mount = make_mount()
    mnt = mount.mnt
    (mnt / "d").mkdir()
    (mnt / "d" / "f").write_text("inside\n")
    snap = take(mount)
    outside = workdir / "outside"
    outside.mkdir()
    (outside / "f").write_text("outside\n")
    os.chmod(outside / "f", 0o600)
    subprocess.run(["rm", "-rf", str(mnt / "d")], check=True)
    os.symlink(outside, mnt / "d")
    snapfs("restore", mnt, snap, "d/f", check=0)
    assert not os.path.islink(mnt / "d") and (mnt / "d" / "f").read_text() == "inside\n"
    assert (outside / "f").read_text() == "outside\n"
    assert stat.S_IMODE(os.stat(outside / "f").st_mode) == 0o600


def test_restore_with_an_empty_path_is_an_error(make_mount):
    mount = make_mount()
    (mount.mnt / "keep").write_text("1")
    snap = take(mount)
    (mount.mnt / "new").write_text("2")
    r = snapfs("restore", mount.mnt, snap, "")
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert "empty" in r.stderr
    assert (mount.mnt / "new").exists()


# ------------------------------------------------------------ versions and symlinks

def test_versions_does_not_follow_a_symlink_out_of_the_tree(make_mount, users, workdir):
    mount = make_mount()
    outside = workdir / "host"
    outside.mkdir()
    (outside / "shadow").write_text("secret\n")
    (mount.mnt / "shared").mkdir()
    os.symlink(outside, mount.mnt / "shared" / "esc")
    take(mount)
    r = snapfs("versions", mount.mnt, "shared/esc/shadow")
    assert r.returncode == 21, (r.returncode, r.stdout, r.stderr)
    assert "secret" not in r.stdout
    # The symlink itself is a version of its own.
    r = snapfs("versions", mount.mnt, "shared/esc", check=0)
    assert "symlink" in r.stdout


# ------------------------------------------------------------ deep trees

DEEP = 3000

MAKE_DEEP = r"""
import os, sys
root, depth = sys.argv[1], int(sys.argv[2])
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
for _ in range(depth):
    os.mkdir("d", dir_fd=fd)
    nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = nxt
f = os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.write(f, sys.argv[3].encode())
os.close(f)
"""

CHANGE_BOTTOM = r"""
import os, sys
root, depth = sys.argv[1], int(sys.argv[2])
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
for _ in range(depth):
    nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = nxt
if len(sys.argv) > 3:
    f = os.open("bottom", os.O_WRONLY | os.O_TRUNC, dir_fd=fd)
    os.write(f, sys.argv[3].encode())
    os.close(f)
else:
    f = os.open("bottom", os.O_RDONLY, dir_fd=fd)
    print(os.read(f, 100).decode())
"""


@pytest.mark.slow
def test_a_tree_three_thousand_levels_deep_stops_nothing(make_mount, users):
    """alice makes a tree 3,000 directories deep. Snapshots of the tree still work (and hold
    the deep file), `diff` finds a change at the bottom, `restore` puts it back, `delete`
    removes such a snapshot, and building or deleting a snapshot costs the daemon no
    descriptor per level. (Deeper trees work the same; 3,000 keeps the test short, and is
    far past the depth where snapshot building switches to its cursor walk.)"""
    mount = make_mount()
    mnt = mount.mnt
    (mnt / "alice").mkdir()
    os.chown(mnt / "alice", users.alice.uid, users.alice.gid)
    r = users.alice.python(MAKE_DEEP, str(mnt / "alice"), str(DEEP), "v1", timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    first = take_with_few_descriptors(mount)
    r = subprocess.run(["python3", "-c", CHANGE_BOTTOM, str(mnt / ".snapshots" / first / "alice"), str(DEEP)],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and r.stdout.strip() == "v1", r.stderr[-500:]

    r = users.alice.python(CHANGE_BOTTOM, str(mnt / "alice"), str(DEEP), "v2-longer", timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    second = take(mount)

    r = subprocess.run(limited(SNAPFS, "diff", mnt, first, second), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-500:]
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("M alice/d/d/") and lines[0].endswith("/d/bottom"), r.stdout[:300]

    r = subprocess.run(limited(SNAPFS, "restore", mnt, first, "alice"), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-500:]
    r = subprocess.run(["python3", "-c", CHANGE_BOTTOM, str(mnt / "alice"), str(DEEP)],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.stdout.strip() == "v1", r.stderr[-500:]

    # The daemon holds a descriptor for each inode the kernel knows (the walks above made it
    # learn those of the snapshots too); building and deleting snapshots adds none per level.
    held = daemon_descriptors(mount)
    third = take_with_few_descriptors(mount)
    for name in sorted(os.listdir(mount.backing / ".snapshots")):
        if not name.startswith("."):
            snapfs("delete", mnt, name, check=0)
    assert not (mount.backing / ".snapshots" / second).exists()
    assert daemon_descriptors(mount) < held + 100
    assert mount.alive()


# ------------------------------------------------------------ names that are not text

def test_names_with_a_newline_or_bad_utf8_are_exact_and_printed_escaped(make_mount):
    """A newline in a name cannot forge a line of `diff`; a name that is not UTF-8 prints as
    its bytes' escapes; `versions` and `restore` take such names byte for byte."""
    mount = make_mount()
    mnt = bytes(mount.mnt)
    newline, bad, lookalike = b"a\n+ forged", b"bad\xff", b"bad\xfe"
    for name in (newline, bad, lookalike):
        with open(os.path.join(mnt, name), "wb") as f:
            f.write(b"one")
    first = take(mount)
    for name in (newline, bad):
        with open(os.path.join(mnt, name), "wb") as f:
            f.write(b"two")
    r = snapfs("diff", mount.mnt, first, check=0)
    assert sorted(r.stdout.splitlines()) == ["M a\\n+ forged", "M bad\\xff"], r.stdout

    r = subprocess.run([os.fsencode(SNAPFS), b"versions", mnt, bad], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.decode().strip().splitlines()) == 3  # header, the snapshot's version, live

    r = subprocess.run([os.fsencode(SNAPFS), b"restore", mnt, first.encode(), bad], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert open(os.path.join(mnt, bad), "rb").read() == b"one"
    assert open(os.path.join(mnt, newline), "rb").read() == b"two"  # not restored: not named
    assert open(os.path.join(mnt, lookalike), "rb").read() == b"one"
