"""Mounted tests of replication to a restic repository on a real S3 server (SeaweedFS's
`weed mini`, started once for the session, loopback only) with Debian's restic:
`snapfs replicate`, `snapfs list --from`, `snapfs restore --from`, and a mount's
continuous replication (`-o replicate_to=`), with the repository going away and back.

Restores run as another machine would: with a fresh restic cache, from the repository
alone, into a new directory; every database restored must pass integrity_check and hold a
committed prefix, every file must match the snapshot's sha256 manifest."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from lib.cli import assert_one_snapfs_line
from lib.common import SNAPFS, wait_until
from lib.control import control, snapshot, status
from lib.loopfs import LoopFS
from lib.mount import proc_stat
from lib.s3 import S3Server, TCPProxy, restic, restic_binary

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def s3():
    restic_binary()
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


class Repo:
    """One repository of the test bucket, its password file, and snapfs run against it."""

    def __init__(self, s3, workdir, name):
        self.s3 = s3
        self.location = s3.repository(f"{name}-{time.time_ns()}")
        self.password_file = workdir / f"{name}.password"
        self.password_file.write_text(PASSWORD + "\n")
        # Another machine: its own restic cache.
        self.cache = workdir / f"{name}.cache"

    def env(self, cache=None):
        env = self.s3.environment()
        env["XDG_CACHE_HOME"] = str(cache or self.cache)
        for name in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_REPOSITORY"):
            env.pop(name, None)
        return env

    def snapfs(self, *args, timeout=300, cache=None, password=True):
        extra = ["--password-file", str(self.password_file)] if password else []
        return subprocess.run([SNAPFS, *map(str, args), *extra], capture_output=True, text=True,
                              timeout=timeout, env=self.env(cache))

    def replicate(self, path, *args, check=True):
        r = self.snapfs("replicate", path, "--to", self.location, "--json", *args)
        if check:
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)
        return r

    def listed(self, cache=None):
        r = self.snapfs("list", "--from", self.location, "--json", cache=cache)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def restore(self, name, target, *paths, cache=None):
        return self.snapfs("restore", "--from", self.location, name, *paths, "--to", target, cache=cache)

    def restic(self, *args, timeout=600):
        return restic(self.s3, self.location, self.password_file, *args, timeout=timeout, env=self.env())


def manifest(root):
    """Relative path -> sha256 of each regular file, target of each symlink, under `root`."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            else:
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
        for name in dirs:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                out[os.path.relpath(path, root)] = "-> " + os.readlink(path)
    return out


def committed_prefix(path):
    """The rows of table t in the database at `path`, checked to be 0..k-1 (a committed
    prefix: each transaction added the next number); integrity_check must pass."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok", path
        if not c.execute("SELECT 1 FROM sqlite_master WHERE name = 't'").fetchone():
            return 0  # committed before the table was (the journal mode set, say)
        rows = [r[0] for r in c.execute("SELECT n FROM t ORDER BY n")]
    finally:
        c.close()
    assert rows == list(range(len(rows))), f"{path}: not a committed prefix: {rows[:5]}…"
    return len(rows)


def write_tree(root, files, dirs=30, size=64):
    for i in range(files):
        d = root / f"d{i % dirs:02d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:05d}").write_bytes(f"file {i}\n".encode() * (size // 8))


def snapshot_dir(m, name):
    return m.backing / ".snapshots" / name


def record(m):
    directory = m.backing / ".snapshots" / ".meta" / "replication"
    records = [json.loads(p.read_text()) for p in directory.glob("*.json")] if directory.exists() else []
    return records


# ---------------------------------------------------------------- replicate, restore elsewhere

def test_replicated_snapshots_restore_elsewhere(s3, workdir, make_mount):
    m = make_mount()
    repo = Repo(s3, workdir, "elsewhere")
    write_tree(m.mnt, 200, dirs=10)
    (m.mnt / "link").symlink_to("d00/f00000")
    (m.mnt / "big.bin").write_bytes(os.urandom(3 << 20))
    wal = sqlite3.connect(str(m.mnt / "wal.db"), isolation_level=None)
    wal.execute("PRAGMA journal_mode=WAL")
    wal.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    rollback = sqlite3.connect(str(m.mnt / "d01" / "rollback.db"), isolation_level=None)
    rollback.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    n = 0
    for round in range(3):
        for _ in range(20):
            for c in (wal, rollback):
                c.execute("BEGIN")
                c.execute("INSERT INTO t VALUES (?, randomblob(300))", (n,))
                c.execute("COMMIT")
            n += 1
        (m.mnt / "d02" / "f00002").write_text(f"round {round}\n")
        (m.mnt / f"new-{round}").write_bytes(os.urandom(1000))
        snapshot(m.mnt, label=f"round{round}")
    wal.close()
    rollback.close()
    # The commit snapshots the default policy deferred (the final states) are taken.
    assert wait_until(lambda: status(m.mnt).get("sqlite-pending") == "0", timeout=30)
    report = repo.replicate(m.mnt, "--init")
    sent = [s["name"] for s in report["sent"]]
    assert sent == sorted(sent)
    local = {d.name for d in (m.backing / ".snapshots").iterdir() if not d.name.startswith(".")}
    tree = {name for name in local if "-round" in name}
    assert tree <= set(sent)
    passed = {name for s in report["sent"] for name in s["passedOver"]}
    assert set(sent) | passed == local, "every snapshot is either sent or passed over"

    listed = repo.listed(cache=workdir / "other-machine-cache")
    assert [s["name"] for s in listed] == sent
    by_name = {s["name"]: s for s in listed}
    for name in tree:
        assert by_name[name]["trigger"] in ("control", "command")
        assert by_name[name]["label"] == name.split("-", 1)[1]
        assert by_name[name]["source"] == str(os.path.realpath(m.backing))
    commits = [s for s in listed if s["trigger"] == "sqlite"]
    assert {s["database"] for s in commits} == {"wal.db", "d01/rollback.db"}

    # Each snapshot sent, restored on "another machine", is its snapshot exactly.
    finals = {}
    for item in listed:
        target = workdir / f"restored-{item['name']}"
        r = repo.restore(item["name"], target, cache=workdir / "other-machine-cache")
        assert r.returncode == 0, r.stderr
        assert manifest(target) == manifest(snapshot_dir(m, item["name"])), item["name"]
        for db in ("wal.db", "d01/rollback.db"):
            if (target / db).exists():
                rows = committed_prefix(target / db)
                if item["database"] == db:
                    finals[db] = max(finals.get(db, 0), rows)
    # The final state of each database was sent.
    assert finals == {"wal.db": n, "d01/rollback.db": n}

    # One path, into a new directory.
    target = workdir / "one-path"
    newest_tree = max(tree)
    r = repo.restore(newest_tree, target, "d02/f00002")
    assert r.returncode == 0, r.stderr
    assert (target / "d02" / "f00002").read_text() == "round 2\n"
    assert [p.name for p in target.rglob("*") if p.is_file()] == ["f00002"]
    r = repo.restore(newest_tree, workdir / "missing-path", "no/such/file")
    assert r.returncode == 21
    assert_one_snapfs_line(r.stderr)
    assert not (workdir / "missing-path").exists()
    r = repo.restore(newest_tree, target)
    assert r.returncode == 64, "restoring into a directory that is not empty is refused"
    assert_one_snapfs_line(r.stderr)
    r = repo.restore("20200101T000000.000Z", workdir / "nothing")
    assert r.returncode == 20
    assert_one_snapfs_line(r.stderr)
    assert not (workdir / "nothing").exists()

    # Two restic snapshots with one snapfs name (two stores in one repository): the
    # restore by name, which runs beside the listing, is undone and the IDs are shown.
    other = workdir / "other-store"
    other.mkdir()
    (other / "g").write_text("other\n")
    r = subprocess.run([restic_binary(), "-r", repo.location, "--password-file", str(repo.password_file), "backup", ".",
                        "--tag", f"snapfs,snapfs-name={newest_tree}", "--time", "2030-01-01 00:00:00"],
                       cwd=other, capture_output=True, text=True, timeout=300, env=repo.env())
    assert r.returncode == 0, r.stderr
    r = repo.restore(newest_tree, workdir / "ambiguous")
    assert r.returncode == 64, r.stderr
    line = assert_one_snapfs_line(r.stderr)
    assert f"2 snapshots named {newest_tree}" in line, line
    assert not (workdir / "ambiguous").exists()
    r = repo.restic("forget", "--tag", f"snapfs-name={newest_tree}", "--host", os.uname().nodename, "--path", str(other))
    assert r.returncode == 0, r.stderr

    # Plain restic reads what snapfs wrote, and the repository is whole.
    plain = workdir / "plain-restic"
    r = repo.restic("restore", by_name[newest_tree]["id"], "--target", str(plain))
    assert r.returncode == 0, r.stderr
    assert manifest(plain) == manifest(snapshot_dir(m, newest_tree))
    r = repo.restic("check", "--read-data")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no errors were found" in r.stdout

    # The record says what was sent; a second run sends nothing.
    [rec] = record(m)
    assert set(rec["replicated"]) == set(sent)
    assert set(rec["skipped"]) == passed
    assert rec.get("lastError") is None
    again = repo.replicate(m.mnt)
    assert again["sent"] == [] and again["alreadyThere"] == 0


@pytest.mark.parametrize("strategy", ["hardlink", "copy"])
def test_one_changed_file_is_the_only_one_read(s3, workdir, make_mount, strategy):
    """Hard-link snapshots share inodes and change every file's ctime (link count); copies
    give every file a new inode and ctime: either way only the changed file is read."""
    m = make_mount(options=[f"strategy={strategy}"])
    repo = Repo(s3, workdir, f"incremental-{strategy}")
    write_tree(m.mnt, 3000, dirs=30)
    snapshot(m.mnt, label="full")
    first = repo.replicate(m.mnt, "--init")
    [full] = first["sent"]
    assert full["summary"]["files_new"] == 3000
    assert repo.replicate(m.mnt)["sent"] == []

    (m.mnt / "d07" / "f00007").write_text("changed\n")
    snapshot(m.mnt, label="one-change")
    [one] = repo.replicate(m.mnt)["sent"]
    s = one["summary"]
    print(f"{strategy}: 1-file change in 3000 files: files_changed={s['files_changed']} files_new={s['files_new']} "
          f"files_unmodified={s['files_unmodified']} data_blobs={s['data_blobs']} tree_blobs={s['tree_blobs']} "
          f"data_added={s['data_added']} "
          f"total_duration={s['total_duration']:.2f}s")
    assert one["parent"] == full["id"][:8]
    assert s["files_changed"] == 1 and s["files_new"] == 0
    assert s["files_unmodified"] == 2999
    # Of the files' data, only the changed file's is new. Every directory listing is sent
    # again (restic keeps each file's inode, link count and ctime in it, which every
    # snapshot changes), a few hundred bytes per file.
    assert s["data_blobs"] == 1, s
    assert s["tree_blobs"] <= 31, s
    assert s["data_added"] < 3000 * 1024, s


def restic_logging(workdir):
    """A directory holding a `restic` that logs its subcommand to calls.log, then runs the
    real one: how many restic processes a run starts, and which."""
    bindir = workdir / "logging-restic"
    bindir.mkdir(exist_ok=True)
    log = bindir / "calls.log"
    wrapper = bindir / "restic"
    wrapper.write_text(f"#!/bin/sh\necho \"$1\" >> {log}\nexec {restic_binary()} \"$@\"\n")
    wrapper.chmod(0o755)
    return bindir, log


def test_a_run_that_can_trust_its_record_starts_restic_only_to_send(s3, workdir, make_mount):
    """Each restic start costs about half a second: once a run has ended cleanly, the next
    sends with one restic (`backup`), its parent and the repository's ID from the record.
    A record left by a killed run is noticed, and so is a parent the repository no longer
    has (forgotten, or another repository at the same location): the run then asks the
    repository what it holds."""
    m = make_mount()
    repo = Repo(s3, workdir, "trusted")
    bindir, log = restic_logging(workdir)

    def replicate_logged():
        log.write_text("")
        env = repo.env()
        env["PATH"] = f"{bindir}:{env['PATH']}"
        r = subprocess.run([SNAPFS, "replicate", m.mnt, "--to", repo.location, "--json",
                            "--password-file", repo.password_file], capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout), log.read_text().split()

    (m.mnt / "f").write_text("0\n")
    snapshot(m.mnt, label="first")
    repo.replicate(m.mnt, "--init")
    (m.mnt / "f").write_text("1\n")
    second = snapshot(m.mnt, label="second")
    report, calls = replicate_logged()
    assert [s["name"] for s in report["sent"]] == [second]
    assert calls == ["backup"], calls
    # Nothing to send: by hand, the repository is still opened (a wrong password is said).
    report, calls = replicate_logged()
    assert report["sent"] == [] and calls == ["cat"], calls

    # A run killed while restic sent: the record still names the snapshot in flight.
    [path] = (m.backing / ".snapshots" / ".meta" / "replication").glob("*.json")
    rec = json.loads(path.read_text())
    rec["inFlight"] = second
    path.write_text(json.dumps(rec))
    report, calls = replicate_logged()
    assert report["sent"] == [] and report["alreadyThere"] == 0, report
    assert "snapshots" in calls and "unlock" in calls, calls
    assert json.loads(path.read_text()).get("inFlight") is None

    # Another repository at the same location: the record's parent is unknown there.
    r = repo.restic("forget", "--prune", *[s["id"] for s in repo.listed()])
    assert r.returncode == 0, r.stderr
    (m.mnt / "f").write_text("2\n")
    third = snapshot(m.mnt, label="third")
    report, calls = replicate_logged()
    assert calls[0] == "backup" and "snapshots" in calls, calls
    assert [s["name"] for s in report["sent"]] == [third], report
    assert [s["name"] for s in repo.listed()] == [third]


@pytest.mark.parametrize("victim", ["restic", "snapfs"])
def test_killed_upload_is_resumed(s3, workdir, make_mount, victim):
    m = make_mount()
    repo = Repo(s3, workdir, f"killed-{victim}")
    for i in range(16):
        (m.mnt / f"blob{i:02d}").write_bytes(os.urandom(6 << 20))
    snapshot(m.mnt, label="first")
    write_tree(m.mnt, 100, dirs=5)
    snapshot(m.mnt, label="second")
    r = repo.snapfs("replicate", m.mnt, "--to", repo.location, "--init", "--commit-interval", "0")
    assert r.returncode == 0, r.stderr  # makes the repository and sends both
    for i in range(16):
        (m.mnt / f"blob{i:02d}").write_bytes(os.urandom(6 << 20))
    name = snapshot(m.mnt, label="third")

    proc = subprocess.Popen([SNAPFS, "replicate", m.mnt, "--to", repo.location, "--password-file", repo.password_file],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=repo.env())
    try:
        child = None

        def restic_reading():
            nonlocal child
            child = child or restic_child(proc.pid)
            return child is not None and bytes_read(child) > (24 << 20)
        assert wait_until(restic_reading, timeout=120, interval=0.01), "restic never read the snapshot"
        argv = open(f"/proc/{child}/cmdline", "rb").read().decode(errors="replace")
        environ = open(f"/proc/{child}/environ", "rb").read().decode(errors="replace")
        assert PASSWORD not in argv and s3.environment()["AWS_SECRET_ACCESS_KEY"] not in argv
        assert "RESTIC_PASSWORD_FILE=" in environ and "SNAPFS_BIN" not in environ
        os.kill(child if victim == "restic" else proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        if victim == "restic":
            assert proc.returncode == 24, (out, err)
            assert_one_snapfs_line(err)
            [rec] = record(m)
            assert name not in rec["replicated"], "a killed upload is not recorded"
            assert rec.get("lastError")
        else:
            # The orphaned restic may finish on its own, or die writing to the dead process;
            # the next run waits for it (it holds the run's lock). Its lock in the repository
            # is stale once it is gone and reaped, and the next run removes it.
            assert wait_until(lambda: not os.path.exists(f"/proc/{child}"), timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    again = repo.replicate(m.mnt)
    names = [s["name"] for s in again["sent"]]
    assert names == [name] or (victim == "snapfs" and names == [] and again["alreadyThere"] == 1)
    [rec] = record(m)
    assert name in rec["replicated"] and rec.get("lastError") is None
    listed = repo.listed()
    assert [s["name"] for s in listed].count(name) == 1
    target = workdir / "restored"
    r = repo.restore(name, target, cache=workdir / "fresh-cache")
    assert r.returncode == 0, r.stderr
    assert manifest(target) == manifest(snapshot_dir(m, name))
    r = repo.restic("check", "--read-data")
    assert r.returncode == 0, r.stdout + r.stderr


def restic_child(pid):
    """The pid of the `restic backup` child of process `pid`, or None."""
    for c in (e for e in os.listdir("/proc") if e.isdigit()):
        st = proc_stat(int(c))
        if st is None or st[1] != pid:
            continue
        try:
            argv = open(f"/proc/{c}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"restic" and b"backup" in argv:
            return int(c)
    return None


def bytes_read(pid):
    try:
        for line in open(f"/proc/{pid}/io"):
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- errors record nothing

def test_wrong_repository_or_password_is_a_clear_error(s3, workdir, make_mount):
    m = make_mount()
    (m.mnt / "f").write_text("x\n")
    snapshot(m.mnt)
    repo = Repo(s3, workdir, "errors")

    r = repo.replicate(m.mnt, check=False)
    assert r.returncode == 24
    line = assert_one_snapfs_line(r.stderr)
    assert "no restic repository" in line and repo.location in line

    assert repo.replicate(m.mnt, "--init")["sent"]
    before = record(m)
    repo.password_file.write_text("not the password\n")
    r = repo.replicate(m.mnt, check=False)
    assert r.returncode == 24
    assert "wrong password" in assert_one_snapfs_line(r.stderr)
    r = repo.snapfs("list", "--from", repo.location)
    assert r.returncode == 24 and "wrong password" in assert_one_snapfs_line(r.stderr)
    r = repo.snapfs("replicate", m.mnt, "--to", repo.location, password=False)
    assert r.returncode == 24 and "--password-file" in assert_one_snapfs_line(r.stderr)
    assert record(m) == before, "a failed run records nothing"

    # Bad input: one line, the documented code, nothing recorded.
    plain = workdir / "plain"
    plain.mkdir()
    for args, code in ((["replicate", plain, "--to", repo.location], 17),
                       (["replicate", m.mnt, "--to", repo.location, "--commit-interval", "soon"], 64),
                       (["list", m.mnt, "--from", repo.location], 64),
                       (["restore", "--from", repo.location, "latest"], 64),
                       (["restore", m.mnt, "x", "--to", workdir / "t"], 64)):
        r = repo.snapfs(*args)
        assert r.returncode == code, (args, r.stderr)
        assert_one_snapfs_line(r.stderr)
    r = subprocess.run([SNAPFS, "mount", workdir / "b2", workdir / "m2", "-o", f"ro,replicate_to={repo.location}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 64 and "read-only" in assert_one_snapfs_line(r.stderr)
    assert record(m) == before

    # Nothing listens there: a clear error, quickly.
    down = Repo(s3, workdir, "down")
    down.location = "s3:http://127.0.0.1:9/snapfs/nothing"
    r = down.replicate(m.mnt, check=False)
    assert r.returncode == 24
    assert "cannot reach" in assert_one_snapfs_line(r.stderr)
    assert record(m) == before


# ---------------------------------------------------------------- the mount replicates

def test_mount_replicates_continuously_and_survives_the_repository_going_away(s3, workdir, make_mount, monkeypatch):
    proxy = TCPProxy(s3.port).up()
    try:
        run_continuous_replication(s3, workdir, make_mount, monkeypatch, proxy)
    finally:
        proxy.down()


def replicating_mount(s3, workdir, make_mount, monkeypatch, proxy, name, *options):
    """A new repository reached through `proxy` (which the test can take down), and a mount
    replicating to it; the daemon gets the credentials in its environment."""
    repo = Repo(s3, workdir, name)
    repo.location = repo.location.replace(f":{s3.port}/", f":{proxy.port}/")
    r = repo.restic("init")
    assert r.returncode == 0, r.stderr
    for key, value in repo.env().items():
        if key.startswith("AWS_") or key == "XDG_CACHE_HOME":  # restic's cache in the test's directory
            monkeypatch.setenv(key, value)
    m = make_mount(options=[f"replicate_to={repo.location}", f"replicate_password_file={repo.password_file}", *options])
    return repo, m


def run_continuous_replication(s3, workdir, make_mount, monkeypatch, proxy):
    repo, m = replicating_mount(s3, workdir, make_mount, monkeypatch, proxy, "continuous", "replicate_commit_interval=1s")

    def caught_up():
        st = status(m.mnt)
        return st.get("sqlite-pending") == "0" and st.get("replication-waiting") == "0"

    write_tree(m.mnt, 50, dirs=5)
    first = snapshot(m.mnt, label="first")
    db = sqlite3.connect(str(m.mnt / "app.db"), isolation_level=None)
    db.execute("CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB)")
    n = 0
    deadline = time.time() + 3
    while time.time() < deadline:
        db.execute("INSERT INTO t VALUES (?, randomblob(100))", (n,))
        n += 1
        time.sleep(0.01)
    db.close()
    assert wait_until(caught_up, timeout=90, interval=0.2), status(m.mnt)
    st = status(m.mnt)
    assert st["replicate-to"] == repo.location
    assert st["replication-oldest-waiting"] == "-"
    assert st["replication-last-error"] == "-"
    listed = repo.listed()
    names = [s["name"] for s in listed]
    assert first in names
    commits = [s for s in listed if s["trigger"] == "sqlite"]
    seconds = [int(s["time"][17:19]) + 60 * int(s["time"][14:16]) for s in commits]
    assert len(seconds) == len(set(seconds)), f"more than one commit snapshot in a 1 s interval: {names}"
    # The final state is there.
    target = workdir / "final"
    r = repo.restore(commits[-1]["name"], target)
    assert r.returncode == 0, r.stderr
    assert committed_prefix(target / "app.db") == n

    # The repository goes away: the mount and its snapshots go on, status says why.
    proxy.down()
    (m.mnt / "while-down").write_text("written while the repository was away\n")
    started = time.time()
    away = [snapshot(m.mnt, label=f"away{i}", force=True) for i in range(3)]
    assert time.time() - started < 20
    assert (m.mnt / "while-down").read_text() == "written while the repository was away\n"

    def reports_error():
        st = status(m.mnt)
        return "cannot reach" in st.get("replication-last-error", "")
    assert wait_until(reports_error, timeout=60, interval=0.2), status(m.mnt)
    st = status(m.mnt)
    assert int(st["replication-waiting"]) == 3
    assert st["replication-oldest-waiting"] == away[0]
    r = subprocess.run([SNAPFS, "status", m.mnt, "--json"], capture_output=True, text=True, timeout=30)
    assert json.loads(r.stdout)["replication-waiting"] == 3
    assert "cannot reach" in m.log_file.read_text()

    # Back: the backlog goes out, oldest first.
    proxy.up()
    assert wait_until(caught_up, timeout=120, interval=0.2), status(m.mnt)
    assert status(m.mnt)["replication-last-error"] == "-"
    names = [s["name"] for s in repo.listed()]
    assert names[-3:] == away
    [rec] = record(m)
    assert set(away) <= set(rec["replicated"])
    r = repo.restic("check")
    assert r.returncode == 0, r.stdout + r.stderr


def test_unmount_interrupts_the_upload_and_the_next_run_finishes_it(s3, workdir, make_mount, monkeypatch):
    proxy = TCPProxy(s3.port).up()
    try:
        repo, m = replicating_mount(s3, workdir, make_mount, monkeypatch, proxy, "unmount")
        for i in range(16):
            (m.mnt / f"blob{i:02d}").write_bytes(os.urandom(6 << 20))
        name = snapshot(m.mnt, label="big")
        daemon = m.pid
        child = None

        def uploading():
            nonlocal child
            child = child or restic_child(daemon)
            return child is not None and bytes_read(child) > (24 << 20)
        assert wait_until(uploading, timeout=120, interval=0.01), "the daemon never started restic backup"
        started = time.time()
        m.stop()
        assert time.time() - started < 30
        assert not os.path.exists(f"/proc/{child}") or wait_until(lambda: not os.path.exists(f"/proc/{child}"), timeout=30)
        # Nothing half-published: the snapshot is not in the repository, nor recorded.
        assert name not in [s["name"] for s in repo.listed()]
        assert all(name not in rec["replicated"] for rec in record(m))
        # A run by hand (or the next mount) sends it; restic's lock is gone.
        report = repo.replicate(m.backing)
        assert [s["name"] for s in report["sent"]] == [name]
        r = repo.restic("check")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        proxy.down()


# ---------------------------------------------------------------- retention carries over

def test_retention_and_holds_carry_over_and_never_remove_what_is_not_replicated(s3, workdir, make_mount, monkeypatch):
    proxy = TCPProxy(s3.port).up()
    try:
        repo, m = replicating_mount(s3, workdir, make_mount, monkeypatch, proxy, "retention", "keep_last=2")

        def local():
            return sorted(d.name for d in (m.backing / ".snapshots").iterdir() if not d.name.startswith("."))

        def caught_up():
            return status(m.mnt).get("replication-waiting") == "0"

        (m.mnt / "f").write_text("0\n")
        kept = snapshot(m.mnt, label="kept")
        r = subprocess.run([SNAPFS, "hold", m.mnt, kept], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert wait_until(caught_up, timeout=60, interval=0.2), status(m.mnt)

        # Away: keep_last=2 would remove the older ones, but they are not replicated yet.
        proxy.down()
        away = []
        for i in range(4):
            (m.mnt / "f").write_text(f"{i + 1}\n")
            away.append(snapshot(m.mnt, label=f"away{i}"))
        assert local() == sorted([kept] + away), "retention removed a snapshot not yet replicated"
        assert status(m.mnt)["replication-waiting"] == "4"

        # Back: everything is sent, then both sides keep the newest two and the held one.
        proxy.up()
        assert wait_until(caught_up, timeout=120, interval=0.2), status(m.mnt)

        def remote_mirrors():
            return [s["name"] for s in repo.listed()] == sorted([kept] + away[-2:])
        assert wait_until(remote_mirrors, timeout=60, interval=1), repo.listed()
        held = [s for s in repo.listed() if s["held"]]
        assert [s["name"] for s in held] == [kept]
        r = repo.restic("snapshots", "--tag", "snapfs-held", "--json")
        assert [t for s in json.loads(r.stdout) for t in s["tags"] if t.startswith("snapfs-name=")] == [f"snapfs-name={kept}"]
        r = subprocess.run([SNAPFS, "prune", m.mnt], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert local() == sorted([kept] + away[-2:])
        [rec] = record(m)
        assert set(local()) <= set(rec["replicated"])
        # The first forget is followed by restic prune, and the repository is whole.
        assert wait_until(lambda: "forgot 2 snapshots" in m.log_file.read_text() and "pruned" in m.log_file.read_text()), \
            m.log_file.read_text()
        r = repo.restic("check", "--read-data")
        assert r.returncode == 0, r.stdout + r.stderr
        target = workdir / "held"
        r = repo.restore(kept, target)
        assert r.returncode == 0, r.stderr
        assert (target / "f").read_text() == "0\n"
    finally:
        proxy.down()


def test_replicate_by_hand_mirrors_the_mounts_retention(s3, workdir, make_mount):
    m = make_mount(options=["keep_last=1"])
    repo = Repo(s3, workdir, "by-hand-retention")
    (m.mnt / "f").write_text("1\n")
    first = snapshot(m.mnt, label="one")
    assert [s["name"] for s in repo.replicate(m.mnt, "--init")["sent"]] == [first]
    (m.mnt / "f").write_text("2\n")
    second = snapshot(m.mnt, label="two")
    report = repo.replicate(m.mnt, "--prune")
    assert [s["name"] for s in report["sent"]] == [second]
    assert report["forgotten"] == [first] and report["pruned"]
    assert [s["name"] for s in repo.listed()] == [second]
    # Given the backing directory, there are no rules to mirror: nothing is forgotten.
    (m.mnt / "f").write_text("3\n")
    third = snapshot(m.mnt, label="three")
    report = repo.replicate(m.backing)
    assert report["forgotten"] == [] and [s["name"] for s in repo.listed()] == [second, third]
    r = repo.restic("check")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.root
def test_below_the_floor_new_snapshots_are_skipped_before_unreplicated_ones_go(workdir, make_mount):
    """With the repository unreachable, keep_last=1 removes nothing: on a small disk the
    snapshots stop at the free-space floor instead, and the log says why."""
    password = workdir / "pw"
    password.write_text(PASSWORD + "\n")
    with LoopFS(workdir, "ext4", 64 << 20, name="small") as fs:
        backing = fs.dir / "data"
        backing.mkdir()
        m = make_mount(backing=backing, options=["strategy=copy", "keep_last=1", "replicate_to=s3:http://127.0.0.1:9/none/x",
                                                 f"replicate_password_file={password}"])
        taken = []
        for i in range(30):
            (m.mnt / "big").write_bytes(os.urandom(6 << 20))
            err, result, _ = control(m.mnt, f"snapshot round{i}")
            if err:
                break
            taken.append(result.split()[2])
        st = status(m.mnt)
        assert int(st["skipped-for-space"]) >= 1, st
        assert 2 <= len(taken) < 30
        left = sorted(d.name for d in (backing / ".snapshots").iterdir() if not d.name.startswith("."))
        assert left == taken, "retention removed a snapshot that was never replicated"
        assert int(st["replication-waiting"]) == len(taken)
        assert "not yet replicated are kept" in m.log_file.read_text()
        m.stop()
