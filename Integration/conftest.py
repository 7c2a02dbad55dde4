"""Fixtures for mounted tests: each test gets a real `snapfs mount` process over
temporary directories. In CI (CI=true) a mount that cannot be made fails the test;
elsewhere it is skipped with the reason."""

import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SNAPFS = os.environ.get("SNAPFS_BIN", str(REPO / ".build" / "release" / "snapfs"))
# Mount arguments for a snapshot at every commit: the default policy (`auto`) may cover
# several commits with one snapshot, and tests of what each commit's snapshot holds need one each.
EVERY_COMMIT = ["--sqlite-min-interval", "0"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _cannot(reason):
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == path:
                return True
    return False


class Mount:
    """A running snapfs mount: `backing` and `mnt` are pathlib.Paths, `pid` the daemon's pid."""

    def __init__(self, backing, mnt, options=(), extra_args=()):
        self.backing = pathlib.Path(backing)
        self.mnt = pathlib.Path(mnt)
        self.options = list(options)
        self.extra_args = list(extra_args)
        self.pid = None
        self.pid_file = self.mnt.parent / (self.mnt.name + ".pid")
        self.log_file = self.mnt.parent / (self.mnt.name + ".log")

    def start(self):
        cmd = [SNAPFS, "mount", str(self.backing), str(self.mnt),
               "--pid-file", str(self.pid_file), "--log-file", str(self.log_file)]
        if self.options:
            cmd += ["-o", ",".join(self.options)]
        cmd += self.extra_args
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            _cannot(f"snapfs mount failed ({r.returncode}): {r.stderr.strip()}")
        self.pid = int(self.pid_file.read_text().strip())
        return self

    def alive(self):
        """True while the daemon runs. A zombie (exited, not yet reaped by init, which can
        take seconds here) counts as gone."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            return state not in ("Z", "X")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False

    def stop(self, timeout=30):
        """Unmount the way a user would and wait for the daemon to exit."""
        if self.pid is None:
            return
        if is_mounted(self.mnt):
            subprocess.run([SNAPFS, "unmount", str(self.mnt)], capture_output=True, timeout=60)
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        deadline = time.time() + timeout
        while self.alive() and time.time() < deadline:
            time.sleep(0.05)
        if self.alive():
            os.kill(self.pid, 9)
            raise AssertionError("snapfs daemon did not exit after unmount")
        self.pid = None


def wait_until(predicate, timeout=10.0, interval=0.02):
    """Polls `predicate` until it holds or `timeout` seconds pass; returns its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def snapfs_available():
    if not os.path.exists(SNAPFS):
        _cannot(f"snapfs binary not built at {SNAPFS}")
    if not os.path.exists("/dev/fuse"):
        _cannot("/dev/fuse is missing")


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="snapfs-test-")
    yield pathlib.Path(d)
    subprocess.run(["fusermount3", "-u", "-z", os.path.join(d, "mnt")], capture_output=True)
    # Snapshots are sealed (chattr +i) against change; rm copes with trees deeper than
    # Python's recursion limit (some tests make them).
    subprocess.run(["chattr", "-R", "-f", "-i", d], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", d], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def mount_defaults():
    """-o options every make_mount mount gets first; a test module overrides this fixture
    to run all its mounts in another mode (e.g. no_writeback_cache)."""
    return ()


@pytest.fixture
def make_mount(workdir, mount_defaults):
    """Factory: make_mount(options=(), extra_args=(), backing=None) -> started Mount."""
    snapfs_available()
    mounts = []

    def factory(options=(), extra_args=(), backing=None, name="mnt"):
        b = pathlib.Path(backing) if backing else workdir / ("backing" if name == "mnt" else f"backing-{name}")
        m = workdir / name
        b.mkdir(exist_ok=True)
        m.mkdir(exist_ok=True)
        mount = Mount(b, m, [*mount_defaults, *options], extra_args).start()
        mounts.append(mount)
        return mount

    yield factory
    for mount in mounts:
        mount.stop()


@pytest.fixture
def snapfs_mount(make_mount):
    """A snapfs mount with default options, usable by root and (allow_other) other users."""
    return make_mount()


def run_as_nobody(args, **kw):
    """Run a command as an unprivileged user (uid/gid 65534) with no supplementary groups."""
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *args],
                          capture_output=True, text=True, **kw)


class User:
    """An unprivileged local account that tests act as (created on first use)."""

    def __init__(self, name, uid):
        self.name = name
        self.uid = uid
        self.gid = uid

    def command(self, args):
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *map(str, args)]

    def run(self, args, **kw):
        """Runs `args` as this user; returns the CompletedProcess (text, captured)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.command(args), **kw)

    def popen(self, args, **kw):
        return subprocess.Popen(self.command(args), **kw)

    def python(self, code, *args, **kw):
        """Runs a Python program as this user."""
        return self.run(["python3", "-c", code, *args], **kw)


def _ensure_user(name, uid):
    """Creates the group and user `name` with id `uid` unless they exist. useradd takes a
    lock on /etc/passwd, so a concurrent creation is retried."""
    for _ in range(50):
        if subprocess.run(["getent", "passwd", name], capture_output=True).returncode == 0:
            return
        if subprocess.run(["getent", "group", name], capture_output=True).returncode != 0:
            subprocess.run(["groupadd", "-g", str(uid), name], capture_output=True)
        subprocess.run(["useradd", "-u", str(uid), "-g", str(uid), "-M", "-N", "-d", "/nonexistent",
                        "-s", "/usr/sbin/nologin", name], capture_output=True)
        time.sleep(0.1)
    _cannot(f"cannot create the test user {name}")


@pytest.fixture
def users(workdir):
    """Two unprivileged users, `users.alice` and `users.bob` (uids 61001, 61002). The test's
    work directory is made traversable so that they reach the mount inside it."""
    alice, bob = User("snapfs-alice", 61001), User("snapfs-bob", 61002)
    for user in (alice, bob):
        _ensure_user(user.name, user.uid)
    os.chmod(workdir, 0o755)

    class Users:
        pass

    u = Users()
    u.alice, u.bob = alice, bob
    return u
