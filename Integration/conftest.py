"""Fixtures for mounted tests: each test gets a real `snapfs mount` process over
temporary directories. In CI (CI=true) a mount that cannot be made fails the test;
elsewhere it is skipped with the reason. The helpers themselves live in lib/ (test
modules import them from there, never from each other or from here)."""

import os
import pathlib
import shutil
import subprocess
import tempfile
import types

import pytest

from lib.cli import Env
from lib.common import snapfs_available
from lib.loopfs import LoopFS
from lib.mount import Mount
from lib.users import alice_and_bob

URING_PARAMETER = pathlib.Path("/sys/module/fuse/parameters/enable_uring")


def pytest_collection_modifyitems(items):
    """Markers that follow from the fixtures a test uses (pytest.ini lists them)."""
    for item in items:
        if "users" in item.fixturenames or "uring_parameter" in item.fixturenames:
            item.add_marker(pytest.mark.root)
        # A snapshot strategy as a parameter: reflink runs on a loop XFS, btrfs on a loop btrfs.
        params = getattr(item, "callspec", None)
        params = params.params if params else {}
        kind = params.get("strategy_mount", params.get("strategy"))
        if kind in ("reflink", "btrfs"):
            item.add_marker(pytest.mark.root)
            item.add_marker(pytest.mark.xfs if kind == "reflink" else pytest.mark.btrfs)


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


@pytest.fixture
def users(workdir):
    """Two unprivileged users, `users.alice` and `users.bob` (uids 61001, 61002). The test's
    work directory is made traversable so that they reach the mount inside it."""
    alice, bob = alice_and_bob()
    os.chmod(workdir, 0o755)
    return types.SimpleNamespace(alice=alice, bob=bob)


@pytest.fixture
def env(workdir):
    """The command-line tests' directory (lib.cli.Env): cleans up every mount and process."""
    snapfs_available()
    e = Env(workdir)
    try:
        yield e
    finally:
        e.cleanup()


STRATEGIES = ["hardlink", "copy", "reflink", "btrfs"]


@pytest.fixture(params=STRATEGIES)
def strategy_mount(request, workdir, make_mount):
    """(strategy, Mount) for each snapshot strategy: reflink on a loop XFS, btrfs on a loop
    btrfs, the others on the work directory's file system."""
    kind = request.param
    if kind in ("hardlink", "copy"):
        yield kind, make_mount(options=[f"strategy={kind}"])
        return
    fs = "xfs" if kind == "reflink" else "btrfs"
    with LoopFS(workdir, fs) as loop:
        backing = loop.dir / "data" if kind == "reflink" else loop.dir
        backing.mkdir(exist_ok=True)
        m = make_mount(options=[f"strategy={kind}"], backing=backing)
        try:
            yield kind, m
        finally:
            m.stop()


@pytest.fixture
def uring_parameter():
    """FUSE's io_uring switched on for the test (skipped where the kernel has none), put
    back as it was afterwards."""
    if not URING_PARAMETER.exists():
        pytest.skip("this kernel's FUSE has no io_uring support")
    before = URING_PARAMETER.read_text().strip()
    yield
    URING_PARAMETER.write_text(before)
