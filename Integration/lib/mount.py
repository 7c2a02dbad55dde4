"""Mounts and the processes behind them: /proc/self/mountinfo, a process's state, and
`Mount`, one `snapfs mount` daemon (started, waited for, unmounted the way a user does)."""

import os
import pathlib
import re
import subprocess
import time

from .common import SNAPFS, cannot


def _unescape(field):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_records(path=None):
    """(mountpoint, fstype, source, mount options, super options) of each mount in
    /proc/self/mountinfo, optionally only those at `path`."""
    records = []
    want = os.path.realpath(path) if path is not None else None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            rec = (_unescape(fields[4]), fields[dash + 1], _unescape(fields[dash + 2]),
                   fields[5], fields[dash + 3] if dash + 3 < len(fields) else "")
            if want is None or rec[0] == want:
                records.append(rec)
    return records


def mounts_under(directory):
    d = os.path.realpath(directory)
    return [r for r in mount_records() if r[0] == d or r[0].startswith(d + "/")]


def mount_fields(path):
    """The /proc/self/mountinfo fields of the mount exactly at `path`, or None."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[4]) == path:
                return fields
    return None


def is_mounted(path):
    return mount_fields(path) is not None


def proc_stat(pid):
    """(state, ppid, pgrp, session) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return rest[0], int(rest[1]), int(rest[2]), int(rest[3])


def pid_alive(pid):
    """True while the process runs. A zombie (exited, not yet reaped by init, which can
    take seconds here) counts as gone."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def wait_gone(pid, timeout=30, interval=0.05):
    """Waits up to `timeout` seconds for process `pid` to exit; True if it did."""
    deadline = time.time() + timeout
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(interval)
    return not pid_alive(pid)


def peak_rss_kib(pid):
    """The process's peak resident set (VmHWM) in KiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def snapfs_pids_naming(directory):
    """Pids of snapfs processes whose command line names a path inside `directory`."""
    d = os.path.realpath(directory)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != "snapfs":
            continue
        if any(a == d or a.startswith(d + "/") for a in argv[1:]):
            pids.append(int(entry))
    return pids


def log_text(m):
    """What a Mount's daemon has logged so far."""
    return m.log_file.read_text() if m.log_file.exists() else ""


class Mount:
    """A snapfs mount: `backing` and `mnt` are pathlib.Paths, `pid` the daemon's pid once
    started. The pid and log files sit beside the mount point (MNT.pid, MNT.log) unless
    given."""

    def __init__(self, backing, mnt, options=(), extra_args=(), binary=None, pid_file=None, log_file=None):
        self.backing = pathlib.Path(backing)
        self.mnt = pathlib.Path(mnt)
        self.options = list(options)
        self.extra_args = list(extra_args)
        self.binary = str(binary or SNAPFS)
        self.pid = None
        self.pid_file = pathlib.Path(pid_file) if pid_file else self.mnt.parent / (self.mnt.name + ".pid")
        self.log_file = pathlib.Path(log_file) if log_file else self.mnt.parent / (self.mnt.name + ".log")

    def command(self):
        cmd = [self.binary, "mount", str(self.backing), str(self.mnt),
               "--pid-file", str(self.pid_file), "--log-file", str(self.log_file)]
        if self.options:
            cmd += ["-o", ",".join(self.options)]
        return cmd + [str(a) for a in self.extra_args]

    def launch(self, timeout=60):
        """Runs `snapfs mount` (which returns once the mount is ready) and returns its
        CompletedProcess, whatever its exit code; `pid` is set when the pid file holds one.
        A mount that does not return within `timeout` raises subprocess.TimeoutExpired."""
        r = subprocess.run(self.command(), capture_output=True, text=True, timeout=timeout)
        try:
            self.pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            pass
        return r

    def start(self):
        """Mounts; in a test, a mount that cannot be made fails it in CI and skips it elsewhere."""
        r = self.launch()
        if r.returncode != 0:
            cannot(f"snapfs mount failed ({r.returncode}): {r.stderr.strip()}")
        self.pid = int(self.pid_file.read_text().strip())
        return self

    def alive(self):
        """True while the daemon runs (a zombie counts as gone)."""
        return self.pid is not None and pid_alive(self.pid)

    def stop(self, timeout=30):
        """Unmounts the way a user would and waits for the daemon to exit."""
        if self.pid is None:
            return
        if is_mounted(self.mnt):
            subprocess.run([self.binary, "unmount", str(self.mnt)], capture_output=True, timeout=60)
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        if not wait_gone(self.pid, timeout):
            os.kill(self.pid, 9)
            raise AssertionError("snapfs daemon did not exit after unmount")
        self.pid = None
