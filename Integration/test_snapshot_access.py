"""Snapshots give nobody access the live tree did not give (issue 18, defects 2 and 3).

A commit snapshot of one database recreates the directories on its path with their live
owner, mode and ACLs, so a database in another user's private directory stays private
under MOUNT/.snapshots and BACKING/.snapshots. The store BACKING/.snapshots is root's
alone (0700), and an older open store is made so at mount; MOUNT/.snapshots stays
browsable. Every check acts as an unprivileged user (`users`)."""

import json
import os
import stat
import subprocess

import pytest

from lib.common import EVERY_COMMIT, SNAPFS

WRITE_DB = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("CREATE TABLE IF NOT EXISTS t(n INTEGER)")
c.execute("INSERT INTO t VALUES (?)", (int(sys.argv[2]),))
c.close()
"""

READ_DB = """
import sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(c.execute("SELECT max(n) FROM t").fetchone()[0])
"""


def commit_snapshots(m, database):
    """Names of the commit snapshots of `database` (read as root from the backing store)."""
    meta = m.backing / ".snapshots" / ".meta"
    out = [json.loads(p.read_text()) for p in meta.glob("*.json")]
    return sorted(d["name"] for d in out if d.get("sqlite") and d["sqlite"]["database"] == database)


def user_dir(path, user, mode):
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    os.chmod(path, mode)


def commit_as(user, db, n):
    r = user.python(WRITE_DB, str(db), str(n))
    assert r.returncode == 0, r.stderr


def reads(user, path):
    """Whether `user` can read the database at `path` (and what it holds)."""
    r = user.python(READ_DB, str(path))
    return r.stdout.strip() if r.returncode == 0 else None


def setfacl(*args):
    r = subprocess.run(["setfacl", *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("depth", [0, 3], ids=["in-home", "three-below"])
def test_a_database_in_a_private_directory_stays_private_in_its_snapshots(make_mount, users, depth):
    m = make_mount(extra_args=EVERY_COMMIT)
    alice, bob = users.alice, users.bob
    (m.mnt / "home").mkdir()
    user_dir(m.mnt / "home" / "bob", bob, 0o700)
    relative = "home/bob"
    for level in range(depth):
        relative += f"/d{level}"
        user_dir(m.mnt / relative, bob, 0o755)
    relative += "/app.db"
    commit_as(bob, m.mnt / relative, 7)
    names = commit_snapshots(m, relative)
    assert names
    for root in (m.mnt / ".snapshots", m.backing / ".snapshots"):
        copy = root / names[-1] / relative
        assert reads(alice, copy) is None, f"alice read {copy}"
        assert alice.run(["ls", copy.parent]).returncode != 0
    # Bob still reads his own through the mount, and every directory is as it is live.
    assert reads(bob, m.mnt / ".snapshots" / names[-1] / relative) == "7"
    parts = relative.split("/")[:-1]
    for i in range(len(parts) + 1):
        sub = "/".join(parts[:i])
        live, copy = os.stat(m.backing / sub), os.stat(m.backing / ".snapshots" / names[-1] / sub)
        assert (copy.st_mode, copy.st_uid, copy.st_gid) == (live.st_mode, live.st_uid, live.st_gid), sub or "/"


def test_acls_on_the_path_grant_and_deny_in_snapshots_as_they_do_live(make_mount, users):
    m = make_mount(extra_args=EVERY_COMMIT)
    alice, bob = users.alice, users.bob
    (m.mnt / "home").mkdir()
    # Granted: bob's private directory, opened to alice alone by an ACL.
    user_dir(m.mnt / "home" / "bob", bob, 0o700)
    setfacl("-m", f"u:{alice.uid}:rx", m.mnt / "home" / "bob")
    # Denied: an open directory closed to alice alone by an ACL.
    user_dir(m.mnt / "home" / "shared", bob, 0o755)
    setfacl("-m", f"u:{alice.uid}:---", m.mnt / "home" / "shared")
    commit_as(bob, m.mnt / "home/bob/granted.db", 1)
    commit_as(bob, m.mnt / "home/shared/denied.db", 2)
    assert reads(alice, m.mnt / "home/bob/granted.db") == "1"
    assert reads(alice, m.mnt / "home/shared/denied.db") is None
    granted = commit_snapshots(m, "home/bob/granted.db")[-1]
    denied = commit_snapshots(m, "home/shared/denied.db")[-1]
    assert reads(alice, m.mnt / ".snapshots" / granted / "home/bob/granted.db") == "1"
    assert reads(alice, m.mnt / ".snapshots" / denied / "home/shared/denied.db") is None
    assert reads(bob, m.mnt / ".snapshots" / denied / "home/shared/denied.db") == "2"
    acl = subprocess.run(["getfacl", "-n", "-p", m.backing / ".snapshots" / denied / "home/shared"],
                         capture_output=True, text=True).stdout
    assert f"user:{alice.uid}:---" in acl


def test_a_directory_mode_changed_between_two_commits(make_mount, users):
    """Each snapshot keeps the modes of its own moment, as ZFS snapshots do."""
    m = make_mount(extra_args=EVERY_COMMIT)
    alice, bob = users.alice, users.bob
    user_dir(m.mnt / "bob", bob, 0o755)
    commit_as(bob, m.mnt / "bob/app.db", 1)
    first = commit_snapshots(m, "bob/app.db")[-1]
    bob.run(["chmod", "700", m.mnt / "bob"])
    commit_as(bob, m.mnt / "bob/app.db", 2)
    second = commit_snapshots(m, "bob/app.db")[-1]
    assert second != first
    assert reads(alice, m.mnt / ".snapshots" / first / "bob/app.db") == "1"
    assert reads(alice, m.mnt / ".snapshots" / second / "bob/app.db") is None
    assert reads(bob, m.mnt / ".snapshots" / second / "bob/app.db") == "2"


def test_a_tree_snapshot_keeps_the_modes_of_parent_directories(make_mount, users):
    m = make_mount(extra_args=["--sqlite-scope", "tree", *EVERY_COMMIT])
    alice, bob = users.alice, users.bob
    (m.mnt / "home").mkdir()
    user_dir(m.mnt / "home" / "bob", bob, 0o700)
    commit_as(bob, m.mnt / "home/bob/app.db", 3)
    name = commit_snapshots(m, "home/bob/app.db")[-1]
    for root in (m.mnt / ".snapshots", m.backing / ".snapshots"):
        assert reads(alice, root / name / "home/bob/app.db") is None
    assert reads(bob, m.mnt / ".snapshots" / name / "home/bob/app.db") == "3"


# ---------------------------------------------------------------- the store (defect 3)

def test_the_backing_store_is_roots_alone_and_the_mount_view_stays_browsable(make_mount, users):
    m = make_mount()
    alice = users.alice
    sticky = m.mnt / "tmp"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    r = alice.run(["sh", "-c", f"echo original > {sticky}/alice.txt"])
    assert r.returncode == 0, r.stderr
    (m.mnt / ".snapfs-control").write_text("snapshot --force\n")
    name = [p.name for p in (m.backing / ".snapshots").iterdir() if not p.name.startswith(".")][-1]
    st = os.stat(m.backing / ".snapshots")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 0, 0)
    store = m.backing / ".snapshots" / name
    # The three attacks: plant a file in a 1777 directory, rewrite one's own file, list.
    assert alice.run(["sh", "-c", f"echo planted > {store}/tmp/planted"]).returncode != 0
    assert alice.run(["sh", "-c", f"echo changed > {store}/tmp/alice.txt"]).returncode != 0
    assert alice.run(["ls", m.backing / ".snapshots"]).returncode != 0
    assert not (store / "tmp" / "planted").exists()
    assert (store / "tmp" / "alice.txt").read_text() == "original\n"
    # Through the mount: browsable, read-only, permission-checked.
    view = os.stat(m.mnt / ".snapshots")
    assert stat.S_IMODE(view.st_mode) == 0o555
    r = alice.run(["ls", m.mnt / ".snapshots"])
    assert r.returncode == 0 and name in r.stdout.split()
    assert alice.run(["cat", m.mnt / ".snapshots" / name / "tmp" / "alice.txt"]).stdout == "original\n"
    r = alice.run(["sh", "-c", f"echo x > {m.mnt}/.snapshots/{name}/tmp/planted"])
    assert r.returncode != 0 and "Read-only" in r.stderr


def test_a_setuid_binary_fixed_live_cannot_be_run_from_the_store(make_mount, users):
    m = make_mount()
    tool = m.mnt / "tool"
    tool.write_text("#!/bin/sh\nid -u\n")
    os.chmod(tool, 0o4755)
    (m.mnt / ".snapfs-control").write_text("snapshot --force\n")
    os.chmod(tool, 0o755)
    name = [p.name for p in (m.backing / ".snapshots").iterdir() if not p.name.startswith(".")][-1]
    r = users.alice.run([m.backing / ".snapshots" / name / "tool"])
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_an_open_store_made_before_is_made_private_at_mount(make_mount, workdir, users):
    """A store as earlier versions left it: .snapshots and .meta 0755, a snapshot with a
    1777 directory inside."""
    backing = workdir / "backing"
    snapshot = backing / ".snapshots" / "20250101T000000.000Z"
    (snapshot / "tmp").mkdir(parents=True)
    os.chmod(snapshot / "tmp", 0o1777)
    (backing / ".snapshots" / ".meta").mkdir()
    for d in (backing / ".snapshots", backing / ".snapshots" / ".meta", snapshot):
        os.chmod(d, 0o755)
    os.chown(backing / ".snapshots", users.alice.uid, users.alice.gid)
    assert users.alice.run(["touch", snapshot / "tmp" / "before"]).returncode == 0
    m = make_mount(backing=backing)
    st = os.stat(backing / ".snapshots")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 0, 0)
    meta = os.stat(backing / ".snapshots" / ".meta")
    assert (stat.S_IMODE(meta.st_mode), meta.st_uid) == (0o711, 0)
    assert users.alice.run(["touch", snapshot / "tmp" / "after"]).returncode != 0
    # The old snapshot still browses through the mount.
    r = users.alice.run(["ls", m.mnt / ".snapshots" / snapshot.name / "tmp"])
    assert r.returncode == 0 and "before" in r.stdout.split()


def test_a_database_reached_through_a_symlink_keeps_its_real_directories(make_mount, users):
    """Bob opens his database through a symlink in an open directory: the snapshot holds it
    at its real path, under his private directory."""
    m = make_mount(extra_args=EVERY_COMMIT)
    alice, bob = users.alice, users.bob
    user_dir(m.mnt / "bob", bob, 0o700)
    user_dir(m.mnt / "bob" / "priv", bob, 0o755)
    user_dir(m.mnt / "pub", bob, 0o755)
    os.symlink("../bob/priv", m.mnt / "pub" / "link")
    commit_as(bob, m.mnt / "pub/link/app.db", 5)
    names = commit_snapshots(m, "bob/priv/app.db")
    assert names and not commit_snapshots(m, "pub/link/app.db")
    assert reads(alice, m.mnt / ".snapshots" / names[-1] / "bob/priv/app.db") is None
    assert reads(bob, m.mnt / ".snapshots" / names[-1] / "bob/priv/app.db") == "5"


SWAPPER = """
import os, sys, time
base, target, until = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3])
d, aside = os.path.join(base, "d"), os.path.join(base, "d.real")
while time.time() < until:
    try:
        os.rename(d, aside)
        os.symlink(target, d)
        os.unlink(d)
        os.rename(aside, d)
    except OSError:
        pass
"""


COMMIT_LOOP = """
import sqlite3, sys, time
until, n = time.time() + float(sys.argv[2]), 0
while time.time() < until:
    n += 1
    try:
        c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=1)
        c.execute("INSERT INTO t VALUES (?)", (n,))
        c.close()
    except sqlite3.Error:
        pass
"""


def test_swapping_a_directory_on_the_path_for_a_symlink_during_commits(make_mount, users):
    """Alice commits her database while her other process swaps its directory for a symlink
    to bob's private directory (which holds a database of the same name): no snapshot ever
    holds bob's directory or data, and every snapshot made keeps alice's directories."""
    m = make_mount(extra_args=EVERY_COMMIT)
    alice, bob = users.alice, users.bob
    user_dir(m.mnt / "bob", bob, 0o700)
    # Bob's mark is negative: alice's loop counts up from 1 and could reach any positive mark.
    commit_as(bob, m.mnt / "bob/app.db", -999)
    user_dir(m.mnt / "alice", alice, 0o755)
    user_dir(m.mnt / "alice" / "d", alice, 0o711)
    commit_as(alice, m.mnt / "alice/d/app.db", 0)
    swapper = alice.popen(["python3", "-c", SWAPPER, m.mnt / "alice", str(m.mnt / "bob"), "1.5"])
    r = alice.python(COMMIT_LOOP, str(m.mnt / "alice/d/app.db"), "1.5", timeout=60)
    assert r.returncode == 0, r.stderr
    swapper.wait(timeout=30)
    names = commit_snapshots(m, "alice/d/app.db")
    assert names
    for name in names:
        d = m.backing / ".snapshots" / name / "alice" / "d"
        st = os.stat(d, follow_symlinks=False)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == alice.uid and stat.S_IMODE(st.st_mode) == 0o711, name
        assert reads(alice, m.mnt / ".snapshots" / name / "alice/d/app.db") != "-999"


def test_other_users_see_no_database_paths_in_list(make_mount, users):
    """Metadata that names a database (or the files of a snapshot) is root's: bob's `snapfs
    list` shows root everything, alice the snapshots without bob's paths; metadata of tree
    snapshots stays readable by all. An old store's readable metadata is made so at mount."""
    m = make_mount(extra_args=EVERY_COMMIT)
    os.chmod(m.mnt, 0o755)
    user_dir(m.mnt / "bob", users.bob, 0o700)
    commit_as(users.bob, m.mnt / "bob" / "secret-plans.db", 1)
    (m.mnt / "f").write_text("x")
    tree = subprocess.run([SNAPFS, "snapshot", m.mnt, "--force"], capture_output=True, text=True).stdout.strip()
    root = subprocess.run([SNAPFS, "list", m.mnt], capture_output=True, text=True)
    assert root.returncode == 0 and "secret-plans.db" in root.stdout
    alice = users.alice.run([SNAPFS, "list", m.mnt])
    assert alice.returncode == 0, alice.stderr
    assert "secret-plans.db" not in alice.stdout and tree in alice.stdout
    row = [line for line in alice.stdout.splitlines() if line.startswith(tree)][0]
    assert "command" in row  # the tree snapshot's own metadata is readable
    alice_json = users.alice.run([SNAPFS, "list", m.mnt, "--json"])
    assert alice_json.returncode == 0 and "secret-plans" not in alice_json.stdout
    r = users.alice.run(["ls", m.mnt / ".snapshots" / ".meta"])
    assert r.returncode != 0
    # At the next mount, metadata made readable by hand (as earlier versions wrote it) is root's again.
    meta = m.backing / ".snapshots" / ".meta"
    private = [p for p in meta.glob("*.json") if "secret-plans" in p.read_text()]
    assert private and all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in private)
    for p in private:
        os.chmod(p, 0o644)
    m.stop()
    m2 = make_mount(backing=m.backing, name="again")
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in private)
    m2.stop()
