"""More inodes than the daemon may have descriptors: snapfs closes idle O_PATH
descriptors and reopens them by file handle, so a tree larger than its descriptor
limit stays fully usable through the mount."""

import os
import subprocess

from lib.common import SNAPFS, cannot
from lib.mount import Mount, is_mounted


def test_tree_larger_than_the_descriptor_limit(workdir):
    backing, mnt = workdir / "backing", workdir / "mnt"
    backing.mkdir()
    mnt.mkdir()
    limit = 512
    # The daemon inherits the limit; it cannot raise it above the hard limit.
    cmd = ["prlimit", f"--nofile={limit}:{limit}", SNAPFS, "mount", str(backing), str(mnt),
           "--pid-file", str(workdir / "pid")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        cannot(f"snapfs mount failed ({r.returncode}): {r.stderr.strip()}")
    m = Mount(backing, mnt)
    m.pid = int((workdir / "pid").read_text())
    try:
        count = 3000  # six times the limit
        for i in range(count):
            d = mnt / f"d{i % 10}"
            d.mkdir(exist_ok=True)
            with open(d / f"f{i}", "w") as f:
                f.write(f"content {i}")
        open_fds = len(os.listdir(f"/proc/{m.pid}/fd"))
        assert open_fds < limit, f"daemon holds {open_fds} descriptors with a limit of {limit}"
        # Every inode the kernel still holds works: stat, read, xattr, rename, link, unlink.
        for i in range(count):
            p = mnt / f"d{i % 10}" / f"f{i}"
            assert os.stat(p).st_ino == os.stat(backing / f"d{i % 10}" / f"f{i}").st_ino
            assert p.read_text() == f"content {i}"
        for i in range(0, count, 7):
            p = mnt / f"d{i % 10}" / f"f{i}"
            os.setxattr(p, "user.n", str(i).encode())
            os.rename(p, mnt / f"d{(i + 1) % 10}" / f"moved{i}")
        for i in range(0, count, 7):
            q = mnt / f"d{(i + 1) % 10}" / f"moved{i}"
            assert os.getxattr(q, "user.n") == str(i).encode()
            os.link(q, mnt / f"link{i}")
            assert os.stat(q).st_nlink == 2
            os.unlink(q)
            assert (mnt / f"link{i}").read_text() == f"content {i}"
        total = sum(len(os.listdir(mnt / f"d{k}")) for k in range(10))
        assert total == count - len(range(0, count, 7))
        assert len(os.listdir(f"/proc/{m.pid}/fd")) < limit
        assert m.alive()
    finally:
        m.stop()
    assert not is_mounted(mnt)
