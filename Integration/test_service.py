"""snapfs under a service manager: the readiness protocol of systemd's Type=notify (a
datagram socket named by NOTIFY_SOCKET gets READY=1 once the mount can be used and
STOPPING=1 when it goes away), and the unit file shipped in dist/systemd."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from lib.common import REPO, SNAPFS
from lib.mount import is_mounted


def receive(sock, timeout):
    """The next datagram as a dict of its KEY=value lines, or None after `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096).decode()
    except socket.timeout:
        return None
    return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_and_stopping_reach_the_notify_socket(workdir, abstract):
    backing, mnt = workdir / "backing", workdir / "mnt"
    backing.mkdir()
    mnt.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"snapfs-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        address = "@" + name
    else:
        address = str(workdir / "notify.sock")
        sock.bind(address)
    env = dict(os.environ, NOTIFY_SOCKET=address)
    daemon = subprocess.Popen([SNAPFS, "mount", "--foreground", str(backing), str(mnt)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = receive(sock, 60)
        assert ready is not None, "no READY=1 within 60 s"
        # Ready means usable: mounted, and a write goes through.
        assert ready.get("READY") == "1", ready
        assert ready.get("MAINPID") == str(daemon.pid), ready
        assert is_mounted(mnt)
        (mnt / "f").write_text("through the mount")
        assert (backing / "f").read_text() == "through the mount"

        daemon.send_signal(signal.SIGTERM)
        stopping = receive(sock, 60)
        assert stopping is not None and stopping.get("STOPPING") == "1", stopping
        assert daemon.wait(timeout=60) == 0
        assert not is_mounted(mnt)
    finally:
        if daemon.poll() is None:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
            daemon.kill()
            daemon.wait()
        sock.close()


def test_without_a_notify_socket_nothing_changes(workdir):
    """A NOTIFY_SOCKET that names nothing is ignored: the mount comes up and serves."""
    backing, mnt = workdir / "backing", workdir / "mnt"
    backing.mkdir()
    mnt.mkdir()
    env = dict(os.environ, NOTIFY_SOCKET=str(workdir / "nobody-listens.sock"))
    r = subprocess.run([SNAPFS, "mount", str(backing), str(mnt)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        (mnt / "g").write_text("x")
        assert (backing / "g").read_text() == "x"
    finally:
        subprocess.run([SNAPFS, "unmount", str(mnt)], capture_output=True, timeout=60)
    assert not is_mounted(mnt)


def test_the_unit_file_is_valid(workdir):
    """dist/systemd/snapfs@.service passes systemd's own check (with the binary under test)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (REPO / "dist" / "systemd" / "snapfs@.service").read_text()
    assert "Type=notify" in unit and "--foreground" in unit
    copy = workdir / "snapfs@.service"
    copy.write_text(unit.replace("/usr/local/bin/snapfs", SNAPFS))
    r = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
