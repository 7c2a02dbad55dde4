"""Mounted tests of what keeps a mount safe to share and what users see when something is
wrong: one daemon per backing directory (a lock held for the daemon's life), a dead mount
named as such, --pid-file/--log-file and counts checked before mounting, and root-only
commands refused in words with their exit code (77) while `status` stays open to all."""

import fcntl
import os
import signal
import subprocess

import pytest

from lib.cli import assert_one_snapfs_line, run
from lib.common import SNAPFS, wait_until
from lib.mount import mounts_under, pid_alive, snapfs_pids_naming

BACKING_IN_USE = 19
DEAD_MOUNT = 23
NOT_PERMITTED = 77
USAGE = 64


def refused(r, code):
    assert r.returncode == code, f"exit {r.returncode}; stderr={r.stderr!r}"
    return assert_one_snapfs_line(r.stderr)


@pytest.mark.parametrize("how", ["same", "symlink", "subdirectory", "parent", "bind_mount"])
def test_second_mount_of_a_backing_directory_is_refused(env, how):
    """A second daemon over the same backing directory (under any name), or over one
    inside or around it, would write into files the first one's snapshots share: it is
    refused with exit 19 while the first runs, and the first mount keeps working."""
    b, m, m2 = env.dirs("top/b", "m", "m2")
    (b / "sub").mkdir()
    (b / "f").write_text("first")
    backing, second = b, b
    if how == "parent":
        backing, second = b / "sub", b
    elif how == "subdirectory":
        second = b / "sub"
    elif how == "symlink":
        second = env.path("alias")
        second.symlink_to(b)
    elif how == "bind_mount":
        (second,) = env.dirs("bound")
        assert run(["mount", "--bind", b, second]).returncode == 0
    first = env.mounted(backing, m)
    r, _ = env.mount(second, m2, tag="second")
    line = refused(r, BACKING_IN_USE)
    assert "already served by snapfs" in line, line
    assert [rec[0] for rec in mounts_under(env.dir) if rec[1] == "fuse.snapfs"] == [str(m)]
    assert snapfs_pids_naming(env.dir) == [first]
    (m / "g").write_text("still served")
    assert (backing / "g").read_text() == "still served"


def test_lock_outlives_nothing_but_the_daemon(env):
    """The lock goes with the daemon, whatever kills it: after SIGKILL the mountpoint is a
    dead mount, which `snapfs mount` names (exit 23, with the command that clears it);
    once cleared, the backing directory mounts again."""
    b, m, m2 = env.dirs("b", "m", "m2")
    (b / "f").write_text("data")
    first = env.mounted(b, m)
    assert refused(env.mount(b, m2, tag="second")[0], BACKING_IN_USE)
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(first))
    line = refused(run([SNAPFS, "mount", b, m]), DEAD_MOUNT)
    assert "dead snapfs mount" in line and f"fusermount3 -u {m}" in line, line
    assert "does not exist" not in line
    assert run(["fusermount3", "-u", m]).returncode == 0
    env.mounted(b, m, tag="again")
    assert (m / "f").read_text() == "data"


def test_a_user_cannot_take_the_lock_first(env, users):
    """The lock is not in the backing directory, where any user who can read it could
    hold it and keep root from mounting: a user's flock on the backing directory (and on
    the would-be lock place) changes nothing."""
    b, m = env.dirs("b", "m")
    os.chmod(b, 0o755)
    holder = users.alice.popen(["python3", "-c", (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"), str(b)], stdout=subprocess.PIPE, text=True)
    env.children.append(holder)
    assert holder.stdout.readline().strip() == "locked"
    env.mounted(b, m)
    # The lock files are root's alone.
    st = os.stat("/run/snapfs")
    assert st.st_uid == 0 and st.st_mode & 0o077 == 0, oct(st.st_mode)
    r = users.alice.run(["ls", "/run/snapfs"])
    assert r.returncode != 0


def test_dead_mount_is_named_for_any_backing_directory(env):
    """A dead mount is named as one whatever made it (here a snapfs daemon of another
    backing directory)."""
    b, b2, m = env.dirs("b", "b2", "m")
    first = env.mounted(b, m)
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(first))
    line = refused(run([SNAPFS, "mount", b2, m]), DEAD_MOUNT)
    assert "fusermount3 -u" in line


@pytest.mark.parametrize("flag", ["--pid-file", "--log-file"])
def test_pid_and_log_file_in_a_missing_directory(env, flag):
    b, m = env.dirs("b", "m")
    r = run([SNAPFS, "mount", b, m, flag, env.path("missing/file")])
    line = refused(r, USAGE)
    assert flag in line and "missing" in line, line
    assert mounts_under(env.dir) == []
    assert snapfs_pids_naming(env.dir) == []


@pytest.mark.parametrize("args,words", [
    (["--keep-last", "-3"], "--keep-last must be a whole number ≥ 0"),
    (["--keep-daily", "-1"], "--keep-daily must be a whole number ≥ 0"),
    (["--cache-size", "-1"], "cache_size=-1 is not a size"),
    (["--dirty-age", "-5s"], "dirty_age=-5s is not a duration"),
    (["-o", "keep_last=-3"], "must be a whole number ≥ 0"),
], ids=["keep-last", "keep-daily", "cache-size", "dirty-age", "o-keep_last"])
def test_negative_numbers_are_a_clear_error(env, args, words):
    b, m = env.dirs("b", "m")
    line = refused(run([SNAPFS, "mount", b, m, *args]), USAGE)
    assert words in line and "Missing value" not in line, line
    assert mounts_under(env.dir) == []


@pytest.mark.parametrize("command", [["snapshot"], ["prune"], ["delete", "{snap}"], ["hold", "{snap}"],
                                     ["release", "{snap}"], ["restore", "{snap}", "f"]])
def test_root_only_commands_say_so(env, users, command):
    """A user who is not root gets a sentence saying that only root may do this, and exit
    77, not a bare errno; `status` and `list` stay open to everyone."""
    b, m = env.dirs("b", "m")
    os.chmod(env.dir, 0o755)
    env.mounted(b, m)
    (m / "f").write_text("x")
    snap = run([SNAPFS, "snapshot", m]).stdout.strip()
    argv = [a.format(snap=snap) for a in command]
    r = users.alice.run([SNAPFS, argv[0], m, *argv[1:]])
    line = refused(r, NOT_PERMITTED)
    assert "only root may" in line, line
    assert "Invalid argument" not in line and "errno" not in line
    assert users.alice.run([SNAPFS, "status", m]).returncode == 0
    assert users.alice.run([SNAPFS, "list", m]).returncode == 0


@pytest.mark.parametrize("call", ["link", "rename"])
def test_snapshots_are_another_filesystem_for_link_and_rename(make_mount, users, call):
    """As with a ZFS snapshot, a hard link or a rename between `.snapshots/` and the live
    tree fails with EXDEV, in both directions (a link out of a snapshot would give a
    user a writable name for a snapshot's file)."""
    m = make_mount()
    os.chmod(m.mnt, 0o777)
    r = users.alice.python("import sys; open(sys.argv[1], 'w').write('mine')", str(m.mnt / "f"))
    assert r.returncode == 0, r.stderr
    snap = run([SNAPFS, "snapshot", m.mnt]).stdout.strip()
    inside = m.mnt / ".snapshots" / snap / "f"
    program = (
        "import errno, os, sys\n"
        f"op = os.{call}\n"
        "try:\n"
        "    op(sys.argv[1], sys.argv[2])\n"
        "    print('done')\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno])\n")
    for source, target in [(inside, m.mnt / "g"), (m.mnt / "f", m.mnt / ".snapshots" / snap / "h")]:
        r = users.alice.python(program, str(source), str(target))
        assert r.stdout.strip() == "EXDEV", (source, target, r.stdout, r.stderr)
    assert not (m.mnt / "g").exists()
    assert (m.mnt / "f").read_text() == "mine" and inside.read_text() == "mine"
