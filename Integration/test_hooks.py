"""`--pre-snapshot` and `--post-snapshot`: real shell commands run around each snapshot,
with what they need in their environment; a failing or hung pre-hook skips the snapshot;
the post-hook always runs; commit snapshots run no hooks unless asked."""

import os
import sqlite3
import subprocess
import time

import pytest

from lib.cli import assert_one_snapfs_line, run
from lib.common import EVERY_COMMIT, SNAPFS, wait_until
from lib.control import control, snapshot, status

# Appends the hook's stage and its SNAPFS_ variables, one line per run, to LOG.
RECORD = 'env | grep ^SNAPFS_ | sort | tr "\\n" " " >> {log}; echo >> {log}'


def runs(log):
    """Each hook run as a dict of its SNAPFS_ variables."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        out.append(dict(word.split("=", 1) for word in line.split() if "=" in word))
    return out


def snapshot_names(m):
    return sorted(n for n in os.listdir(m.backing / ".snapshots") if not n.startswith("."))


def test_hooks_run_around_a_snapshot_with_its_facts(make_mount, workdir):
    log = workdir / "hooks.log"
    pre = RECORD.format(log=log) + '; echo "before $SNAPFS_LABEL" > "$SNAPFS_MOUNT/flushed-by-hook"'
    m = make_mount(extra_args=["--pre-snapshot", pre, "--post-snapshot", RECORD.format(log=log)])
    (m.mnt / "data").write_text("x")
    r = run([SNAPFS, "snapshot", m.mnt, "--label", "nightly"])
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip().split()[-1]
    before, after = runs(log)
    assert before["SNAPFS_HOOK"] == "pre" and after["SNAPFS_HOOK"] == "post"
    for facts in (before, after):
        assert facts["SNAPFS_TRIGGER"] == "command"
        assert facts["SNAPFS_LABEL"] == "nightly"
        assert facts["SNAPFS_MOUNT"] == str(m.mnt)
        assert facts["SNAPFS_BACKING"] == str(m.backing)
    assert "SNAPFS_SNAPSHOT" not in before
    assert after["SNAPFS_RESULT"] == "created"
    assert after["SNAPFS_SNAPSHOT"] == name
    assert after["SNAPFS_SNAPSHOT_PATH"] == f"{m.mnt}/.snapshots/{name}"
    # What the pre-hook wrote through the mount came before the snapshot's moment.
    assert (m.mnt / ".snapshots" / name / "flushed-by-hook").read_text() == "before nightly\n"
    st = status(m.mnt)
    assert st["hooks-skipped"] == "0" and st["hooks-post-failed"] == "0"
    assert st["hooks"].startswith("pre=yes post=yes timeout=60000ms")


def test_a_failing_pre_hook_skips_the_snapshot_and_the_post_hook_still_runs(make_mount, workdir):
    log = workdir / "hooks.log"
    m = make_mount(extra_args=["--pre-snapshot", "echo database is busy >&2; exit 3",
                               "--post-snapshot", RECORD.format(log=log)])
    (m.mnt / "data").write_text("x")
    before = snapshot_names(m)
    r = run([SNAPFS, "snapshot", m.mnt])
    assert r.returncode != 0
    line = assert_one_snapfs_line(r.stderr)
    assert "pre-snapshot hook exited with status 3: database is busy" in line, line
    assert snapshot_names(m) == before
    err, result, _ = control(m.mnt, "snapshot")
    assert err != 0 and "pre-snapshot hook" in result
    assert snapshot_names(m) == before
    assert status(m.mnt)["hooks-skipped"] == "2"
    assert [run["SNAPFS_RESULT"] for run in runs(log)] == ["skipped", "skipped"]
    assert "pre-snapshot hook exited with status 3" in m.log_file.read_text()


def test_a_hung_pre_hook_is_killed_with_what_it_started(make_mount, workdir):
    marker = f"{os.getpid()}{time.monotonic_ns() % 1000}.5"
    m = make_mount(extra_args=["--pre-snapshot", f"sleep {marker} & sleep {marker}", "--hook-timeout", "1s"])
    (m.mnt / "data").write_text("x")
    started = time.monotonic()
    err, result, _ = control(m.mnt, "snapshot")
    assert err != 0 and "killed after its timeout" in result, result
    assert time.monotonic() - started < 15
    # The background sleep went with the group.
    assert wait_until(lambda: subprocess.run(["pgrep", "-f", f"^sleep {marker}"], capture_output=True).returncode != 0,
                      timeout=5)
    assert status(m.mnt)["hooks-skipped"] == "1"
    assert snapshot_names(m) == []


def test_a_failing_post_hook_is_counted_and_changes_nothing(make_mount):
    m = make_mount(extra_args=["--post-snapshot", "exit 1"])
    (m.mnt / "data").write_text("x")
    name = snapshot(m.mnt)
    assert snapshot_names(m) == [name]
    assert status(m.mnt)["hooks-post-failed"] == "1"


def test_a_build_that_does_not_wait_runs_the_post_hook_once_published(make_mount, workdir):
    log = workdir / "hooks.log"
    m = make_mount(extra_args=["--post-snapshot", RECORD.format(log=log)])
    for i in range(200):
        (m.mnt / f"f{i}").write_text(str(i))
    err, result, _ = control(m.mnt, "snapshot --no-wait")
    assert err == 0 and result.startswith("ok started"), result
    name = result.split()[2]
    assert wait_until(lambda: runs(log), timeout=30)
    (after,) = runs(log)
    assert after["SNAPFS_RESULT"] == "created" and after["SNAPFS_SNAPSHOT"] == name
    assert (m.backing / ".snapshots" / name / "f199").read_text() == "199"


@pytest.mark.parametrize("on_commits", [False, True])
def test_commit_snapshots_run_hooks_only_when_asked(make_mount, workdir, on_commits):
    log = workdir / "hooks.log"
    args = ["--pre-snapshot", RECORD.format(log=log), *EVERY_COMMIT] + (["--hooks-on-commits"] if on_commits else [])
    m = make_mount(extra_args=args)
    db = sqlite3.connect(m.mnt / "app.db", isolation_level=None)
    db.execute("CREATE TABLE t(x)")
    for i in range(3):
        db.execute("INSERT INTO t VALUES (?)", (i,))
    db.close()
    assert wait_until(lambda: int(status(m.mnt).get("sqlite-snapshots", "0")) >= 3, timeout=20)
    triggers = [run["SNAPFS_TRIGGER"] for run in runs(log)]
    if on_commits:
        assert triggers and set(triggers) == {"sqlite"}
    else:
        assert triggers == []
    snapshot(m.mnt, force=True)
    assert runs(log)[-1]["SNAPFS_TRIGGER"] == "control"


@pytest.mark.parametrize("args", [["--hook-timeout", "forever"], ["--hook-timeout", "10ms"], ["--pre-snapshot", " "],
                                  ["-o", "post_snapshot="]])
def test_bad_hook_options_are_refused(workdir, args):
    (workdir / "b").mkdir()
    (workdir / "m").mkdir()
    r = run([SNAPFS, "mount", workdir / "b", workdir / "m", *args])
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert "hook" in assert_one_snapfs_line(r.stderr) or "snapshot" in r.stderr
