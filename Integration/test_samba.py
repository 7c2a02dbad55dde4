"""Windows "Previous Versions" of an SMB share of the mount (issue 22, item 1).

A real `smbd` (Samba) shares the snapfs mount with `vfs objects = shadow_copy2` and
`shadow:snapdir = .snapshots/.gmt`, the view that names each tree snapshot by its second
(`@GMT-YYYY.MM.DD-HH.MM.SS`, the newest snapshot of that second); `smbclient` asks for the
versions of a file (`allinfo`) and reads old contents through `@GMT-…` paths, as Windows
Explorer does. smbd runs on 127.0.0.1 on an unused unprivileged port, with its own
configuration, state, lock, pid and log directories under the test's directory, and is
stopped by its pid. The view itself (hidden, read-only, checked like `.snapshots`) is
tested through the mount too. In CI (CI=true) an smbd that cannot start fails the test."""

import errno
import os
import shutil
import socket
import sqlite3
import subprocess
import time

import pytest

from lib.common import EVERY_COMMIT, cannot
from lib.control import metadata, snapshot

SHARE = "data"


def token(name):
    """The @GMT token of a snapshot name (`20261125T112233.456Z-x` -> `@GMT-2026.11.25-11.22.33`)."""
    t = name[:15]
    return f"@GMT-{t[0:4]}.{t[4:6]}.{t[6:8]}-{t[9:11]}.{t[11:13]}.{t[13:15]}"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Smbd:
    """One smbd sharing `mnt` (the mount or a folder in it) as //127.0.0.1/data (guests map
    to `nobody`), all its files under `root`."""

    def __init__(self, root, mnt):
        self.root = root
        self.port = free_port()
        for d in ("lock", "state", "cache", "private", "pid", "log", "ncalrpc"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.conf = root / "smb.conf"
        self.conf.write_text(f"""[global]
  server role = standalone server
  interfaces = 127.0.0.1
  bind interfaces only = yes
  smb ports = {self.port}
  disable netbios = yes
  lock directory = {root}/lock
  state directory = {root}/state
  cache directory = {root}/cache
  private dir = {root}/private
  pid directory = {root}/pid
  ncalrpc dir = {root}/ncalrpc
  log file = {root}/log/smbd.log
  log level = 1
  map to guest = Bad User
  guest account = nobody
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes

[{SHARE}]
  path = {mnt}
  read only = yes
  guest ok = yes
  vfs objects = shadow_copy2
  shadow:snapdir = .snapshots/.gmt
  shadow:sort = desc
""")
        self.proc = None

    def start(self):
        for tool in ("smbd", "smbclient"):
            if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
                cannot(f"{tool} is not installed (apt-get install samba smbclient)")
        smbd = shutil.which("smbd") or "/usr/sbin/smbd"
        self.output = open(self.root / "log" / "smbd.out", "w")
        # A session of its own: smbd ends by signalling its whole process group, which with
        # --no-process-group would otherwise be the test run's.
        self.proc = subprocess.Popen([smbd, "-s", str(self.conf), "--foreground", "--no-process-group"],
                                     stdout=self.output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        cannot(f"smbd did not start: {(self.root / 'log' / 'smbd.out').read_text()[-2000:]}")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait(timeout=20)
        self.output.close()
        self.proc = None

    def client(self, command):
        """Runs one smbclient command line as a guest; returns the CompletedProcess."""
        return subprocess.run(["smbclient", "-s", str(self.conf), "-p", str(self.port), "-N",
                               f"//127.0.0.1/{SHARE}", "-c", command],
                              capture_output=True, text=True, timeout=60)

    def versions(self, path):
        """{token: size} of the previous versions `allinfo` lists for `path`."""
        r = self.client(f"allinfo {path}")
        assert r.returncode == 0, r.stdout + r.stderr
        found, current = {}, None
        for line in r.stdout.splitlines():
            if line.startswith("@GMT-"):
                current = line.strip()
                found[current] = None
            elif current and line.startswith("size:"):
                found[current] = int(line.split()[1])
        return found

    def get(self, path, into):
        """The bytes of `path` on the share (fetched to `into`), or the failure's output."""
        if into.exists():
            into.unlink()
        r = self.client(f"get {path} {into}")
        return into.read_bytes() if r.returncode == 0 and into.exists() else (r.stdout + r.stderr)


@pytest.fixture
def smbd(workdir, snapfs_mount):
    """(Mount, Smbd): a mount and an smbd sharing it. The work directory is made traversable
    so that smbd, acting as the guest `nobody`, reaches the mount inside it."""
    os.chmod(workdir, 0o755)
    server = Smbd(workdir / "samba", snapfs_mount.mnt)
    server.start()
    try:
        yield snapfs_mount, server
    finally:
        server.stop()


def snapshots_in_one_second(m, write, count):
    """Takes `count` snapshots within one second (write(i) before the i-th); returns their
    names. Retries when they straddle a second."""
    for _ in range(10):
        frac = time.time() % 1
        if frac > 0.5:
            time.sleep(1.02 - frac)
        names = []
        for i in range(count):
            write(i)
            names.append(snapshot(m.mnt))
        if len({n[:15] for n in names}) == 1:
            return names
    pytest.fail("could not take the snapshots within one second")


def next_second():
    time.sleep(1.02 - time.time() % 1)


def test_previous_versions_of_a_file(smbd, workdir):
    """`allinfo` lists one @GMT version per snapshot (newest first, with its size), and a
    @GMT path reads each old content, files in folders included; the live file is as it is."""
    m, server = smbd
    (m.mnt / "d").mkdir()
    (m.mnt / "f").write_text("one\n")
    (m.mnt / "d" / "g").write_text("first\n")
    first = snapshot(m.mnt)
    next_second()
    (m.mnt / "f").write_text("second!\n")
    (m.mnt / "d" / "g").write_text("second version\n")
    second = snapshot(m.mnt)
    (m.mnt / "f").write_text("live\n")

    versions = server.versions("f")
    assert versions == {token(second): 8, token(first): 4}
    assert list(versions) == [token(second), token(first)]   # shadow:sort = desc
    out = workdir / "out"
    assert server.get(f"{token(first)}/f", out) == b"one\n"
    assert server.get(f"{token(second)}/f", out) == b"second!\n"
    assert server.get(f"{token(first)}/d/g", out) == b"first\n"
    assert server.get(f"{token(second)}/d/g", out) == b"second version\n"
    assert server.get("f", out) == b"live\n"
    # A folder has the versions too.
    assert set(server.versions("d")) == {token(first), token(second)}
    # A second that has no snapshot names no version.
    got = server.get("@GMT-2001.01.01-00.00.00/f", out)
    assert isinstance(got, str) and "NOT_FOUND" in got, got


def test_one_version_per_second_the_newest(smbd, workdir):
    """Three snapshots in one second are one version, holding the newest's content."""
    m, server = smbd
    names = snapshots_in_one_second(m, lambda i: (m.mnt / "f").write_text("x" * (i + 1)), 3)
    assert sorted(os.listdir(m.backing / ".snapshots"))[-3:] == sorted(names)
    assert os.listdir(m.mnt / ".snapshots" / ".gmt") == [token(names[0])]
    assert server.versions("f") == {token(names[0]): 3}
    assert server.get(f"{token(names[0])}/f", workdir / "out") == b"xxx"


def test_private_folder_stays_private(smbd, workdir):
    """A folder that was 0700 root at the snapshot is not readable by the guest through
    its previous version, though the guest reads the share's other old files."""
    m, server = smbd
    (m.mnt / "open").write_text("anyone\n")
    (m.mnt / "secret").mkdir(mode=0o700)
    (m.mnt / "secret" / "s").write_text("root only\n")
    name = snapshot(m.mnt)
    os.chmod(m.mnt / "secret", 0o755)
    os.chmod(m.mnt / "secret" / "s", 0o644)
    out = workdir / "out"
    assert server.get(f"{token(name)}/open", out) == b"anyone\n"
    assert server.get("secret/s", out) == b"root only\n"                 # live: open now
    # smbd reports a file below a folder it may not search as not found.
    got = server.get(f"{token(name)}/secret/s", out)
    assert isinstance(got, str) and ("ACCESS_DENIED" in got or "NOT_FOUND" in got), got
    # The same path in a version taken after the chmod reads: the modes of each moment decide.
    next_second()
    later = snapshot(m.mnt, force=True)
    assert server.get(f"{token(later)}/secret/s", out) == b"root only\n"
    got = server.get(f"{token(name)}/secret/s", out)
    assert isinstance(got, str), got


def test_commit_snapshots_are_not_versions(workdir, make_mount):
    """A commit snapshot of one database (scope `files`) is not a version: only tree
    snapshots are listed, so the database's versions are those of the tree."""
    m = make_mount(extra_args=EVERY_COMMIT)
    os.chmod(workdir, 0o755)
    db = m.mnt / "app.db"
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(n)")
    c.close()
    tree = snapshot(m.mnt, force=True)
    next_second()
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("INSERT INTO t VALUES (1)")
    c.close()
    deadline = time.time() + 10
    while time.time() < deadline and not [d for d in metadata(m) if d.get("scope") == "files" and d["name"] > tree]:
        time.sleep(0.05)
    commits = [d["name"] for d in metadata(m) if d.get("scope") == "files" and d["name"] > tree]
    assert commits, "no commit snapshot was taken"
    assert all(token(n) != token(tree) for n in commits)
    assert os.listdir(m.mnt / ".snapshots" / ".gmt") == [token(tree)]
    server = Smbd(workdir / "samba", m.mnt).start()
    try:
        assert list(server.versions("app.db")) == [token(tree)]
    finally:
        server.stop()


def test_share_of_a_folder_in_the_mount(snapfs_mount, workdir):
    """A share of a folder below the mount's root finds the view at the mount's root
    (shadow_copy2 looks for `shadow:snapdir` at the mount point) and maps paths below it."""
    m = snapfs_mount
    os.chmod(workdir, 0o755)
    (m.mnt / "projects" / "a").mkdir(parents=True)
    (m.mnt / "projects" / "a" / "plan").write_text("draft\n")
    name = snapshot(m.mnt)
    (m.mnt / "projects" / "a" / "plan").write_text("final\n")
    server = Smbd(workdir / "samba", m.mnt / "projects").start()
    try:
        assert server.versions("a/plan") == {token(name): 6}
        assert server.get(f"{token(name)}/a/plan", workdir / "out") == b"draft\n"
        assert server.get("a/plan", workdir / "out") == b"final\n"
    finally:
        server.stop()


def test_view_is_hidden_and_read_only(snapfs_mount, users):
    """`.snapshots/.gmt` is not listed in `.snapshots`, names only tokens of seconds with a
    tree snapshot, refuses every change, and keeps each entry's mode of its moment."""
    m = snapfs_mount
    (m.mnt / "mine").mkdir(mode=0o700)
    os.chown(m.mnt / "mine", users.alice.uid, users.alice.gid)
    (m.mnt / "mine" / "f").write_text("alice's\n")
    os.chown(m.mnt / "mine" / "f", users.alice.uid, users.alice.gid)
    name = snapshot(m.mnt)
    gmt = m.mnt / ".snapshots" / ".gmt"
    assert ".gmt" not in os.listdir(m.mnt / ".snapshots")
    assert os.listdir(gmt) == [token(name)]
    assert oct(os.stat(gmt).st_mode & 0o7777) == oct(0o555)
    # Not the same inode as `.snapshots` (find would take it for a loop), nor as the snapshot.
    assert os.stat(gmt).st_ino != os.stat(m.mnt / ".snapshots").st_ino
    assert os.stat(gmt / token(name)).st_ino != os.stat(m.mnt / ".snapshots" / name).st_ino
    assert (gmt / token(name) / "mine" / "f").read_text() == "alice's\n"
    # Only tokens resolve: not the snapshot's own name, not a second without a snapshot.
    for bad in (name, "@GMT-2001.01.01-00.00.00", "@GMT-2026.13.01-00.00.00", "@GMT-x", ".meta"):
        with pytest.raises(FileNotFoundError):
            os.stat(gmt / bad)
    for change in (lambda: (gmt / "new").mkdir(), lambda: (gmt / token(name) / "new").write_text("x"),
                   lambda: os.rename(gmt / token(name), gmt / "other"),
                   lambda: (gmt / token(name) / "mine" / "f").write_text("x")):
        with pytest.raises(OSError) as e:
            change()
        assert e.value.errno == errno.EROFS
    # Modes of the moment: alice reads her private folder, bob does not.
    os.chmod(m.mnt.parent, 0o755)
    assert users.alice.run(["cat", gmt / token(name) / "mine" / "f"]).stdout == "alice's\n"
    r = users.bob.run(["cat", gmt / token(name) / "mine" / "f"])
    assert r.returncode != 0 and "Permission denied" in r.stderr
    # find walks the view without taking it for a loop.
    r = subprocess.run(["find", str(gmt)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert str(gmt / token(name) / "mine" / "f") in r.stdout.splitlines()
