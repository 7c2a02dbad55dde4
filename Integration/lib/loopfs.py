"""File systems on loop devices: a sparse image, `losetup`, mkfs, mount. The tests use them
for what the machine's own file system is not (XFS with reflinks, btrfs, a small ext4
that fills up, one with quotas); the benchmarks for the snapshot strategies."""

import subprocess

from .common import cannot
from .mount import is_mounted

MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
}


class LoopFSError(Exception):
    """A step of making the file system failed: `stage` is "losetup", "mkfs" or "mount"."""

    def __init__(self, stage, message):
        super().__init__(message)
        self.stage = stage


def _run(*cmd):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True)


class LoopFS:
    """A fresh `kind` file system ("ext4", "xfs" with reflink=1, or "btrfs") on a sparse
    image of `size` bytes, PARENT/NAME.img, mounted at `dir` (PARENT/NAME, NAME by default
    KIND-fs) on loop device `device`. `mkfs_args` are added to mkfs's, `options` are the
    mount's -o. `open()` raises LoopFSError and `close()` undoes it; as a context manager
    (in a test) a failure to make it fails the test in CI and skips it elsewhere."""

    def __init__(self, parent, kind, size=400 << 20, name=None, mkfs_args=(), options=None):
        name = name or f"{kind}-fs"
        self.kind = kind
        self.image = parent / f"{name}.img"
        self.dir = parent / name
        self.size = size
        self.mkfs_args = list(mkfs_args)
        self.options = options
        self.device = None

    def open(self):
        self.dir.mkdir(exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(self.size)
        r = _run("losetup", "-f", "--show", self.image)
        if r.returncode != 0:
            self.close()
            raise LoopFSError("losetup", f"losetup failed: {r.stderr.strip()}")
        self.device = r.stdout.strip()
        mkfs = MKFS[self.kind] + self.mkfs_args
        r = _run(*mkfs, self.device)
        if r.returncode != 0:
            self.close()
            raise LoopFSError("mkfs", f"{mkfs[0]} failed: {(r.stderr or r.stdout).strip()}")
        r = _run("mount", *(["-o", self.options] if self.options else []), self.device, self.dir)
        if r.returncode != 0:
            self.close()
            raise LoopFSError("mount", f"cannot mount the {self.kind} image: {r.stderr.strip()}")
        return self

    def close(self):
        """Unmounts (lazily if it is busy), detaches the loop device and removes the image;
        never raises. Returns False when the file system is still mounted."""
        if is_mounted(self.dir):
            for cmd in (["umount", self.dir], ["umount", "-l", self.dir]):
                if _run(*cmd).returncode == 0:
                    break
        if is_mounted(self.dir):
            return False
        if self.device:
            _run("losetup", "-d", self.device)
            self.device = None
        self.image.unlink(missing_ok=True)
        return True

    def __enter__(self):
        try:
            return self.open()
        except LoopFSError as e:
            cannot(str(e))

    def __exit__(self, *exc):
        self.close()
