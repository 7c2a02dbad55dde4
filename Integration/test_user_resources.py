"""Resources one user can make snapfs spend, tried as unprivileged users: descriptors
(open files and directories, bounded per user), disk blocks (a user's writes stop where
ext4 stops them natively: at the blocks reserved for root, and at the user's quota), and
the snapshot machinery (only root or the owner of the backing directory may use the
control file)."""

import errno
import os
import subprocess

import pytest

from lib.common import SNAPFS, cannot, wait_until
from lib.control import snapfs_status as status
from lib.loopfs import LoopFS, LoopFSError

# Alice holds files open until she gets EMFILE, reports how many she got, then waits.
HOLD_FILES = r"""
import errno, os, sys
d = sys.argv[1]
held = []
for i in range(8):
    held.append(os.open(os.path.join(d, f"f{i}"), os.O_CREAT | os.O_RDWR, 0o600))
failure = None
while len(held) < 500:
    try:
        held.append(os.open(os.path.join(d, f"f{len(held) % 8}"), os.O_RDONLY))
    except OSError as e:
        failure = e.errno
        break
dirs = []
dir_failure = None
while len(dirs) < 500:
    try:
        dirs.append(os.open(d, os.O_RDONLY | os.O_DIRECTORY))
    except OSError as e:
        dir_failure = e.errno
        break
print(len(held), failure, len(dirs), dir_failure, flush=True)
sys.stdin.readline()
"""


def test_one_user_cannot_exhaust_descriptors_for_others(make_mount, users):
    mount = make_mount(options=["max_files_per_user=40", "max_dirs_per_user=6"])
    for user in (users.alice, users.bob):
        home = mount.mnt / user.name
        home.mkdir()
        os.chown(home, user.uid, user.gid)
    alice = users.alice.popen(["python3", "-c", HOLD_FILES, str(mount.mnt / users.alice.name)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        opened, failure, dirs, dir_failure = alice.stdout.readline().split()
        # Alice stops at her bound, with the error a process past its own limit gets.
        assert (int(opened), int(failure)) == (40, errno.EMFILE)
        assert (int(dirs), int(dir_failure)) == (6, errno.EMFILE)
        # Bob still opens, creates and lists; root still snapshots.
        r = users.bob.python(
            "import os, sys\n"
            "d = sys.argv[1]\n"
            "fds = [os.open(os.path.join(d, f'b{i}'), os.O_CREAT | os.O_RDWR, 0o600) for i in range(30)]\n"
            "os.write(fds[0], b'bob')\n"
            "print(len(os.listdir(d)))\n",
            str(mount.mnt / users.bob.name))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "30"
        r = subprocess.run([SNAPFS, "snapshot", str(mount.mnt), "--label", "while-alice-holds"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        st = status(mount)
        assert st["open-handles-top-user"] == f"uid {users.alice.uid} holds 46"
        assert st["open-limit-per-user"] == "40 files, 6 directories"
        in_use, limit = st["descriptors"].split(" of ")
        assert int(in_use) >= 46 and int(limit) >= 1024
    finally:
        alice.communicate("\n", timeout=30)
    # Her descriptors are given back when she closes them.
    assert wait_until(lambda: "open-handles-top-user" not in status(mount) or
                      f"uid {users.alice.uid}" not in status(mount)["open-handles-top-user"])


def test_daemon_descriptor_limit_is_the_most_allowed(snapfs_mount):
    with open(f"/proc/{snapfs_mount.pid}/limits") as f:
        line = next(l for l in f if l.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    # The soft limit is raised to the hard one (and the hard one to fs.nr_open where root may).
    assert soft == hard
    with open("/proc/self/limits") as f:
        mine = next(l for l in f if l.startswith("Max open files")).split()[4]
    assert int(hard) >= int(mine)


def test_control_file_refuses_other_users(snapfs_mount, users):
    control = snapfs_mount.mnt / ".snapfs-control"
    before = status(snapfs_mount)["snapshots"]
    r = users.alice.python(
        "import sys\n"
        "try:\n"
        "    open(sys.argv[1], 'w').write('snapshot\\n')\n"
        "except PermissionError:\n"
        "    print('refused')\n", str(control))
    assert r.stdout.strip() == "refused", r.stderr
    r = users.alice.run([SNAPFS, "snapshot", str(snapfs_mount.mnt)])
    assert r.returncode != 0
    assert status(snapfs_mount)["snapshots"] == before


# ---- disk blocks ----------------------------------------------------------------------

FILL = r"""
import errno, os, sys
path = sys.argv[1]
chunk = b"x" * (256 << 10)
fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
written, failure = 0, None
try:
    while written < (64 << 20):
        written += os.write(fd, chunk)
    os.fsync(fd)
except OSError as e:
    failure = e.errno
try:
    os.close(fd)
except OSError as e:
    failure = failure or e.errno
print(written, failure)
"""


def _fill_as(user, path):
    r = user.python(FILL, str(path), timeout=120)
    assert r.returncode == 0, r.stderr
    written, failure = r.stdout.split()
    return int(written), None if failure == "None" else int(failure)


@pytest.fixture
def reserved_fs(workdir):
    """A 40 MiB loop ext4 that keeps 25% of its blocks for root."""
    with LoopFS(workdir, "ext4", 40 << 20, name="reserved", mkfs_args=["-m", "25"]) as fs:
        yield fs.dir


def test_user_writes_stop_at_the_root_reserve(reserved_fs, make_mount, users, workdir):
    alice = users.alice
    os.chmod(reserved_fs, 0o755)
    area = reserved_fs / "alice"
    area.mkdir()
    os.chown(area, alice.uid, alice.gid)
    # Natively: alice's writes stop with ENOSPC where the reserve begins.
    native, failure = _fill_as(alice, area / "native")
    assert failure == errno.ENOSPC
    os.unlink(area / "native")
    os.sync()
    mount = make_mount(backing=reserved_fs, options=["strategy=copy"])
    through, failure = _fill_as(alice, mount.mnt / "alice" / "through")
    assert failure == errno.ENOSPC
    # As much as natively (give or take a few blocks of metadata), not the reserve too.
    assert through <= native + (1 << 20), (through, native)
    st = os.statvfs(reserved_fs)
    assert st.f_bfree * st.f_frsize >= 8 << 20
    # Root's own writes through the mount may still use the reserve, as natively.
    with open(mount.mnt / "root-file", "wb") as f:
        f.write(b"r" * (1 << 20))
        f.flush()
        os.fsync(f.fileno())


@pytest.mark.root
def test_user_writes_are_held_to_their_quota(workdir, make_mount, users):
    fs = LoopFS(workdir, "ext4", 64 << 20, name="quota", mkfs_args=["-O", "quota", "-E", "quotatype=usrquota"],
                options="usrquota")
    try:
        fs.open()
    except LoopFSError as e:
        if e.stage != "mount":
            cannot(str(e))
        # A kernel without quota support (CONFIG_QFMT_V2) cannot mount it; nothing to test.
        pytest.skip(f"this kernel cannot mount an ext4 filesystem with quotas: {e}")
    root = fs.dir
    try:
        alice = users.alice
        subprocess.run(["setquota", "-u", str(alice.uid), "0", "4096", "0", "0", str(root)], check=True)
        os.chmod(root, 0o755)
        area = root / "alice"
        area.mkdir()
        os.chown(area, alice.uid, alice.gid)
        written, failure = _fill_as(alice, area / "native")
        assert failure == errno.EDQUOT and written <= 4 << 20
        os.unlink(area / "native")
        mount = make_mount(backing=root, options=["strategy=copy"])
        written, failure = _fill_as(alice, mount.mnt / "alice" / "through")
        assert failure == errno.EDQUOT and written <= 4 << 20
    finally:
        for m in list(workdir.glob("mnt")):
            subprocess.run(["fusermount3", "-u", "-z", str(m)], capture_output=True)
        fs.close()
