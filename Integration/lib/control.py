"""A mount's control file (MOUNT/.snapfs-control) and `snapfs status`: snapshots on
demand, the status lines."""

import json
import os
import subprocess
import time

from .common import SNAPFS

CONTROL = ".snapfs-control"


def control(mnt, command):
    """Writes one command to the control file; returns (errno or 0, result line, every line as a dict)."""
    fd = os.open(mnt / CONTROL, os.O_RDWR)
    try:
        err = 0
        try:
            os.write(fd, command.encode() + b"\n")
        except OSError as e:
            err = e.errno
        text = os.pread(fd, 65536, 0).decode()
    finally:
        os.close(fd)
    lines = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return err, lines["result"], lines


def snapshot(mnt, label=None, force=False):
    """Takes a snapshot through the control file; returns its name."""
    command = "snapshot" + (" --force" if force else "") + (f" {label}" if label else "")
    err, result, _ = control(mnt, command)
    assert err == 0, result
    words = result.split()
    assert words[:2] == ["ok", "snapshot"], result
    return words[2]


def status(mnt):
    """The status lines, read from the control file of the mount at `mnt`, as a dict."""
    text = (mnt / CONTROL).read_text()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def snapfs_status(m):
    """The status lines as `snapfs status MOUNT` prints them (for a Mount `m`), as a dict."""
    r = subprocess.run([SNAPFS, "status", str(m.mnt)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)


def metadata(m):
    """Metadata of every snapshot, oldest first (read from the backing directory). A file
    that retention removes between the listing and its reading (it prunes on a thread of
    its own, after the commits) is left out, as its snapshot is gone."""
    meta = m.backing / ".snapshots" / ".meta"
    if not meta.exists():
        return []
    out = []
    for p in meta.glob("*.json"):
        try:
            out.append(json.loads(p.read_text()))
        except FileNotFoundError:
            continue
    return sorted(out, key=lambda d: d["name"])


def wait_published(mnt, name, timeout=120):
    """Waits until snapshot `name`, started with --no-wait, is published under
    `mnt/.snapshots` and no build is in progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (mnt / ".snapshots" / name).is_dir() and "building" not in status(mnt):
            return
        time.sleep(0.05)
    raise AssertionError(f"snapshot {name} was not published within {timeout} s: {status(mnt)}")
