"""POSIX conformance through a real snapfs mount: the fixtures of the test_posix_*.py
files here, one per group of FUSE operations.

Every FUSE operation snapfs serves is exercised through the mount point, and most
results are cross-checked two ways: against the backing directory (what snapfs wrote
there must be what the application sees), and against the same operation on a plain
directory of the same ext4 filesystem (the errno and the visible effect must be the
ones a local filesystem gives).

The kernel caches names and attributes for a long time on a snapfs mount, so the
time-stamp and link-count checks below really check that snapfs (and the kernel's
FUSE code with it) invalidates those caches on every change.
"""

import itertools
import os
import pathlib
import shutil
import subprocess
import tempfile
import types

import pytest

from lib.common import snapfs_available
from lib.mount import Mount
from lib.posix import write_file

# ---------------------------------------------------------------------------- fixtures
#
# One snapfs mount serves each test module; each test works in its own fresh
# subdirectory of it (and of a plain directory next to it on the same ext4). A mount
# per test would cost more in teardown than the tests themselves, and a long-lived
# mount is also what exercises the kernel's attribute and name caches. Tests that
# need a mount of their own (a second mount for EXDEV) use conftest's make_mount.

_counter = itertools.count()


# Every test runs on both kinds of mount: the default, with the kernel's write-back cache,
# and -o no_writeback_cache (every write a request; passthrough of read-only opens).
@pytest.fixture(scope="module", params=[(), ("no_writeback_cache",)], ids=["kernel-cache", "no-kernel-cache"])
def shared(request):
    snapfs_available()
    work = pathlib.Path(tempfile.mkdtemp(prefix="snapfs-posix-"))
    os.chmod(work, 0o755)   # uid 65534 must reach the mount and the plain directory
    (work / "backing").mkdir()
    (work / "mnt").mkdir()
    (work / "plain").mkdir()
    mount = Mount(work / "backing", work / "mnt", options=request.param)
    try:
        mount.start()
        mount.work = work
        yield mount
    finally:
        mount.stop()
        subprocess.run(["fusermount3", "-u", "-z", str(work / "mnt")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def ro_mount():
    """A second module-wide mount, read-only (-o ro), over a backing dir holding one file."""
    snapfs_available()
    work = pathlib.Path(tempfile.mkdtemp(prefix="snapfs-posix-ro-"))
    (work / "backing").mkdir()
    (work / "mnt").mkdir()
    write_file(work / "backing" / "f", b"keep")
    os.chmod(work / "backing" / "f", 0o644)
    mount = Mount(work / "backing", work / "mnt", options=["ro"])
    try:
        mount.start()
        yield mount
    finally:
        mount.stop()
        subprocess.run(["fusermount3", "-u", "-z", str(work / "mnt")], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def m(shared):
    """This test's directory in the shared mount: .mnt, .backing (pathlib.Paths), .top (the Mount)."""
    assert shared.alive(), "snapfs daemon died during an earlier test"
    name = f"t{next(_counter):03d}"
    os.mkdir(shared.mnt / name, 0o755)
    os.chmod(shared.mnt / name, 0o755)
    return types.SimpleNamespace(mnt=shared.mnt / name, backing=shared.backing / name, top=shared,
                                 work=shared.work, name=name)


@pytest.fixture
def plain(m):
    """A plain directory on the same ext4 as the backing directory, for comparison."""
    p = m.work / "plain" / m.name
    p.mkdir(mode=0o755)
    os.chmod(p, 0o755)
    return p


@pytest.fixture
def outside(m):
    """A directory outside the mount (same ext4)."""
    p = m.work / ("outside-" + m.name)
    p.mkdir()
    return p
