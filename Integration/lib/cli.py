"""What the command-line tests run with: `run` (a command, text captured, with a timeout)
and `Env`, a test's directory that cleans up every mount and process the test made."""

import os
import pathlib
import signal
import subprocess

from .common import wait_until
from .mount import Mount, mounts_under, pid_alive, snapfs_pids_naming

TIMEOUT = 30


def run(args, timeout=TIMEOUT, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, **kw)



def assert_one_snapfs_line(stderr):
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("snapfs: "), \
        f"expected exactly one stderr line starting with 'snapfs: ', got {stderr!r}"
    return lines[0]



def listing(path):
    p = pathlib.Path(path)
    if not p.exists():
        return None
    if not p.is_dir():
        return ("file", p.read_bytes())
    return sorted(os.listdir(p))



class Env:
    """A test's temporary directory, with everything it needs to clean up."""

    def __init__(self, workdir):
        self.dir = pathlib.Path(os.path.realpath(workdir))
        self.children = []       # Popen objects this test started
        self.daemon_pids = set()

    def path(self, name):
        return self.dir / name

    def dirs(self, *names):
        out = []
        for name in names:
            p = self.dir / name
            p.mkdir(parents=True, exist_ok=True)
            out.append(p)
        return out

    def mount(self, backing, mnt, *extra, tag=None):
        """`snapfs mount BACKING MNT --pid-file --log-file EXTRA...`; returns (result, pid or None)."""
        tag = tag or pathlib.Path(mnt).name
        m = Mount(backing, mnt, extra_args=extra, pid_file=self.dir / f"{tag}.pid", log_file=self.dir / f"{tag}.log")
        r = m.launch(timeout=TIMEOUT)
        pid = m.pid if r.returncode == 0 else None
        if pid is not None:
            self.daemon_pids.add(pid)
        return r, pid

    def mounted(self, backing, mnt, *extra, tag=None):
        r, pid = self.mount(backing, mnt, *extra, tag=tag)
        assert r.returncode == 0, f"snapfs mount failed ({r.returncode}): {r.stderr}"
        assert pid is not None, "snapfs mount did not write the pid file"
        return pid

    def popen(self, args, **kw):
        p = subprocess.Popen([str(a) for a in args], **kw)
        self.children.append(p)
        return p

    def cleanup(self):
        for p in self.children:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for rec in sorted(mounts_under(self.dir), key=lambda r: -len(r[0])):
            if rec[1].startswith("fuse"):
                subprocess.run(["fusermount3", "-u", "-z", rec[0]], capture_output=True, timeout=TIMEOUT)
            else:
                subprocess.run(["umount", "-l", rec[0]], capture_output=True, timeout=TIMEOUT)
        pids = {p for p in self.daemon_pids if pid_alive(p)} | set(snapfs_pids_naming(self.dir))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in pids:
            if not wait_until(lambda: not pid_alive(pid), timeout=5):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
