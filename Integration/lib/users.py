"""Unprivileged users the tests act as: uid 65534 (nobody) and local accounts made on
first use."""

import os
import subprocess
import sys
import time

from .common import cannot

NOBODY = 65534
# an interpreter uid 65534 can surely run (the test's own may live under /root, mode 0700)
NOBODY_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


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


def ensure_user(name, uid):
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
    cannot(f"cannot create the test user {name}")


def alice_and_bob():
    """The two test users, `alice` and `bob` (uids 61001, 61002), created if missing."""
    alice, bob = User("snapfs-alice", 61001), User("snapfs-bob", 61002)
    for user in (alice, bob):
        ensure_user(user.name, user.uid)
    return alice, bob
