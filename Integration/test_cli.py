"""Mounted tests of the snapfs command line: `snapfs mount` (daemon and --foreground),
its documented exit codes and error lines, `snapfs unmount` (plain, busy, --lazy),
shutdown by signal or fusermount3, --debug/--log-file, -o ro, allow_other, and the
mount(8)/fstab helper path (mount.fuse3 running `snapfs BACKING MOUNTPOINT -o ...`).

Every test runs a real snapfs process and cleans up whatever it mounted or started:
mounts under its own temporary directory are detached with `fusermount3 -u -z`, and
only snapfs processes whose command line names that directory are signalled."""

import errno
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from lib.cli import TIMEOUT, assert_one_snapfs_line, listing, run
from lib.common import SNAPFS, wait_until
from lib.mount import is_mounted, mount_records, mounts_under, pid_alive, proc_stat, snapfs_pids_naming
from lib.users import NOBODY, run_as_nobody

# Its tests hide /dev/fuse, mount tmpfs, use mount(8) and fstab, and act as uid 65534.
pytestmark = pytest.mark.root


# ---------------------------------------------------------------- --version, --help

def test_version():
    r = run([SNAPFS, "--version"])
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+\s*", r.stdout), r.stdout


def test_help_mentions_both_commands():
    r = run([SNAPFS, "--help"])
    assert r.returncode == 0, r.stderr
    assert "mount" in r.stdout and "unmount" in r.stdout, r.stdout


def test_mount_help():
    r = run([SNAPFS, "mount", "--help"])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for word in ("<backing>", "<mountpoint>", "--foreground", "-o", "--debug", "--pid-file", "--log-file"):
        assert word in out, f"{word} missing from `snapfs mount --help`:\n{out}"
    assert "--ready-fd" not in out  # internal


def test_unmount_help():
    r = run([SNAPFS, "unmount", "--help"])
    assert r.returncode == 0, r.stderr
    assert "--lazy" in r.stdout and "<mountpoint>" in r.stdout, r.stdout


# ---------------------------------------------------------------- daemon mode

def test_mount_returns_when_ready_and_daemon_is_detached(env):
    b, m = env.dirs("b", "m")
    (b / "before").write_text("written before mount\n")
    start = time.time()
    r, pid = env.mount(b, m)
    elapsed = time.time() - start
    # Nothing may be awaited here: the mount must be usable the moment the command returns.
    recs = mount_records(m)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", (r.stdout, r.stderr)
    assert len(recs) == 1, recs
    assert recs[0][1] == "fuse.snapfs", recs
    assert recs[0][2] == str(b), recs
    assert (m / "before").read_text() == "written before mount\n"
    (b / "after").write_text("written to backing after mount\n")
    assert (m / "after").read_text() == "written to backing after mount\n"
    assert elapsed < 10, elapsed

    assert pid is not None and pid_alive(pid), "daemon pid from --pid-file is not alive"
    state, ppid, pgrp, session = proc_stat(pid)
    assert ppid != os.getpid(), "daemon is still a child of the test"
    assert session == pid, f"daemon is not a session leader (setsid): sid={session} pid={pid}"
    assert session != os.getsid(0)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert str(m).encode() in f.read()
    # A daemon does not keep the caller's terminal or pipes: stdin/stdout are /dev/null.
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/1") == "/dev/null"


def test_mount_with_relative_paths(env):
    """Relative BACKING, MOUNTPOINT, --pid-file and --log-file are taken from the
    caller's working directory, although the daemon changes to /."""
    b, m = env.dirs("b", "m")
    (b / "f").write_text("rel")
    r = run([SNAPFS, "mount", "b", "m", "--pid-file", "rel.pid", "--log-file", "rel.log"], cwd=env.dir)
    assert r.returncode == 0, r.stderr
    pid = int(env.path("rel.pid").read_text())
    env.daemon_pids.add(pid)
    recs = mount_records(m)
    assert len(recs) == 1 and recs[0][1] == "fuse.snapfs" and recs[0][2] == str(b), recs
    assert (m / "f").read_text() == "rel"
    assert "serving" in env.path("rel.log").read_text()
    assert run([SNAPFS, "unmount", "m"], cwd=env.dir).returncode == 0
    assert not is_mounted(m)
    assert wait_until(lambda: not pid_alive(pid), timeout=10)


def test_mount_without_subcommand(env):
    """`snapfs BACKING MOUNTPOINT -o ...` mounts too (what mount -t fuse.snapfs runs)."""
    b, m = env.dirs("b", "m")
    (b / "f").write_text("x")
    r = run([SNAPFS, b, m, "-o", "noatime", "--pid-file", env.path("p.pid")])
    assert r.returncode == 0, r.stderr
    env.daemon_pids.add(int(env.path("p.pid").read_text()))
    assert mount_records(m)[0][1] == "fuse.snapfs"
    assert (m / "f").read_text() == "x"


# ---------------------------------------------------------------- mount errors

def expect_mount_error(env, args, code, watched=(), run_args=None):
    """Runs `snapfs mount ARGS` (or RUN_ARGS) and checks the exit code, the single
    `snapfs:` line, that nothing got mounted under the test directory, that no snapfs
    process is left, and that the watched paths did not change."""
    before = {str(p): listing(p) for p in watched}
    r = run(run_args if run_args is not None else [SNAPFS, "mount", *args])
    assert r.returncode == code, f"exit {r.returncode}, expected {code}; stderr={r.stderr!r}"
    assert r.stdout == "", r.stdout
    line = assert_one_snapfs_line(r.stderr)
    assert mounts_under(env.dir) == [], mounts_under(env.dir)
    assert wait_until(lambda: snapfs_pids_naming(env.dir) == [], timeout=5), "a snapfs process was left behind"
    for p in watched:
        assert listing(p) == before[str(p)], f"{p} changed"
    return line


def test_backing_missing(env):
    (m,) = env.dirs("m")
    line = expect_mount_error(env, [env.path("nope"), m], 10, watched=[m, env.path("nope")])
    assert "nope" in line


def test_backing_is_a_file(env):
    (m,) = env.dirs("m")
    f = env.path("file")
    f.write_text("not a dir")
    line = expect_mount_error(env, [f, m], 10, watched=[m, f])
    assert "not a directory" in line


def test_mountpoint_missing(env):
    (b,) = env.dirs("b")
    (b / "x").write_text("x")
    line = expect_mount_error(env, [b, env.path("nope")], 11, watched=[b, env.path("nope")])
    assert "nope" in line


def test_mountpoint_is_a_file(env):
    (b,) = env.dirs("b")
    f = env.path("file")
    f.write_text("not a dir")
    line = expect_mount_error(env, [b, f], 11, watched=[b, f])
    assert "not a directory" in line


def test_mountpoint_not_empty_then_nonempty(env):
    b, m = env.dirs("b", "m")
    (m / "old").write_text("under the mount")
    (b / "new").write_text("from backing")
    line = expect_mount_error(env, [b, m], 12, watched=[b, m])
    assert "nonempty" in line

    env.mounted(b, m, "-o", "nonempty")
    assert mount_records(m)[0][1] == "fuse.snapfs"
    assert sorted(os.listdir(m)) == ["new"]
    assert (m / "new").read_text() == "from backing"
    r = run([SNAPFS, "unmount", m])
    assert r.returncode == 0, r.stderr
    assert (m / "old").read_text() == "under the mount"


def test_mountpoint_already_a_snapfs_mount(env):
    b, b2, m = env.dirs("b", "b2", "m")
    (b / "f").write_text("first")
    first = env.mounted(b, m)
    r = run([SNAPFS, "mount", b2, m])
    assert r.returncode == 13, f"exit {r.returncode}; stderr={r.stderr!r}"
    assert r.stdout == ""
    assert_one_snapfs_line(r.stderr)
    recs = mount_records(m)
    assert len(recs) == 1 and recs[0][2] == str(b), recs
    assert snapfs_pids_naming(env.dir) == [first]
    assert (m / "f").read_text() == "first"


def test_mountpoint_already_a_foreign_mount(env):
    b, m = env.dirs("b", "m")
    r = run(["mount", "-t", "tmpfs", "tmpfs", m])
    assert r.returncode == 0, r.stderr
    try:
        r = run([SNAPFS, "mount", b, m])
        assert r.returncode == 13, f"exit {r.returncode}; stderr={r.stderr!r}"
        assert_one_snapfs_line(r.stderr)
        recs = mount_records(m)
        assert [x[1] for x in recs] == ["tmpfs"], recs
    finally:
        run(["umount", "-l", m])


def test_dev_fuse_missing(env):
    """In a private mount namespace whose /dev is an empty tmpfs (plus /dev/null), the
    check of /dev/fuse fails with ENOENT."""
    b, m = env.dirs("b", "m")
    script = ('mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && '
              'test ! -e /dev/fuse && exec "$@"')
    line = expect_mount_error(env, None, 14, watched=[b, m],
                              run_args=["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                                        "sh", SNAPFS, "mount", b, m])
    assert "/dev/fuse" in line


def test_dev_fuse_not_accessible(env):
    """As an unprivileged user, with /dev/fuse a mode-0600 FUSE device (bound over the
    real one in a private mount namespace, so the result does not depend on the host's
    mode), opening /dev/fuse fails with EACCES."""
    os.chmod(env.dir, 0o755)
    b, m = env.dirs("b", "m")
    node = env.path("fuse-0600")
    os.mknod(node, stat.S_IFCHR | 0o600, os.stat("/dev/fuse").st_rdev)
    script = 'mount --bind "$1" /dev/fuse && shift && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"'
    line = expect_mount_error(env, None, 14, watched=[b, m],
                              run_args=["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                                        "sh", node, SNAPFS, "mount", b, m])
    assert "/dev/fuse" in line and "ermission" in line, line


def test_dev_fuse_not_a_fuse_device(env):
    """/dev/fuse that opens but is not the FUSE device (/dev/null bound over it): the
    pre-check passes and the kernel refuses the mount. That is not "missing or not
    accessible", so the documented code is 16 (the mount failed for another reason)."""
    b, m = env.dirs("b", "m")
    script = 'mount --bind /dev/null /dev/fuse && exec "$@"'
    expect_mount_error(env, None, 16, watched=[b, m],
                       run_args=["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                                 "sh", SNAPFS, "mount", b, m])


@pytest.mark.parametrize("layout", ["same", "mountpoint_inside_backing", "backing_inside_mountpoint",
                                    "symlink_to_same"])
def test_overlap(env, layout):
    if layout == "same":
        (b,) = env.dirs("d")
        m = b
    elif layout == "mountpoint_inside_backing":
        (b,) = env.dirs("b")
        (m,) = env.dirs("b/m")
    elif layout == "backing_inside_mountpoint":
        (m,) = env.dirs("m")
        (b,) = env.dirs("m/b")
    else:
        (b,) = env.dirs("d")
        m = env.path("alias")
        m.symlink_to(b)
    line = expect_mount_error(env, [b, m], 15, watched=[b, m])
    assert "overlap" in line


@pytest.mark.parametrize("args", [
    ["mount"],
    ["mount", "{b}"],
    ["mount", "{b}", "{m}", "extra"],
    ["mount", "{b}", "{m}", "--no-such-flag"],
    ["mount", "{b}", "{m}", "-o"],
    ["mount", "{b}", "{m}", "--pid-file"],
    ["unmount"],
    ["unmount", "{m}", "--no-such-flag"],
], ids=["no-args", "one-arg", "extra-arg", "unknown-flag", "o-without-value", "pid-file-without-value",
        "unmount-no-arg", "unmount-unknown-flag"])
def test_bad_arguments_exit_64(env, args):
    b, m = env.dirs("b", "m")
    argv = [a.format(b=b, m=m) for a in args]
    r = run([SNAPFS, *argv])
    assert r.returncode == 64, f"exit {r.returncode}; stderr={r.stderr!r}"
    assert mounts_under(env.dir) == []
    assert snapfs_pids_naming(env.dir) == []


@pytest.mark.parametrize("args", [
    ["mount", "{b}", "{m}", "extra"],
    ["mount", "{b}", "{m}", "--no-such-flag"],
    ["unmount"],
], ids=["extra-arg", "unknown-flag", "unmount-no-arg"])
def test_bad_arguments_error_is_one_snapfs_line(env, args):
    """README: "Every error is one line on stderr that starts with `snapfs:`"."""
    b, m = env.dirs("b", "m")
    r = run([SNAPFS, *[a.format(b=b, m=m) for a in args]])
    assert r.returncode == 64
    assert_one_snapfs_line(r.stderr)


@pytest.mark.parametrize("option", ["no_such_option", "max_read=abc", "allow_other=3"])
def test_malformed_o_option(env, option):
    """A malformed or unknown -o option is a bad argument: exit 64, one `snapfs:` line,
    nothing mounted."""
    b, m = env.dirs("b", "m")
    expect_mount_error(env, [b, m, "-o", option], 64, watched=[b, m])


def test_ignored_mount8_words_are_accepted(env):
    """mount(8)'s own words are accepted and ignored (README)."""
    b, m = env.dirs("b", "m")
    env.mounted(b, m, "-o", "defaults,auto,noauto,user,nofail,_netdev,x-systemd.automount,rw")
    assert mount_records(m)[0][1] == "fuse.snapfs"


# ---------------------------------------------------------------- snapfs unmount

def test_unmount_flushes_and_stops_daemon(env):
    b, m = env.dirs("b", "m")
    pid = env.mounted(b, m)
    with open(m / "data", "w") as f:
        f.write("x" * 100000)
    os.mkdir(m / "sub")
    (m / "sub" / "small").write_text("small")
    r = run([SNAPFS, "unmount", m])
    assert r.returncode == 0, r.stderr
    assert r.stderr == "" and r.stdout == ""
    assert not is_mounted(m)
    assert wait_until(lambda: not pid_alive(pid), timeout=10), "daemon did not exit after unmount"
    assert (b / "data").read_text() == "x" * 100000
    assert (b / "sub" / "small").read_text() == "small"
    assert os.listdir(m) == []


@pytest.mark.parametrize("kind", ["plain_dir", "missing", "tmpfs"])
def test_unmount_not_a_snapfs_mount(env, kind):
    (d,) = env.dirs("d")
    target = d
    if kind == "missing":
        target = env.path("missing")
    elif kind == "tmpfs":
        assert run(["mount", "-t", "tmpfs", "tmpfs", d]).returncode == 0
    try:
        r = run([SNAPFS, "unmount", target])
        assert r.returncode == 17, f"exit {r.returncode}; stderr={r.stderr!r}"
        line = assert_one_snapfs_line(r.stderr)
        assert "not a snapfs mount" in line
        if kind == "tmpfs":
            assert [x[1] for x in mount_records(d)] == ["tmpfs"], "unmount touched a foreign mount"
    finally:
        if kind == "tmpfs":
            run(["umount", "-l", d])


@pytest.mark.parametrize("holder", ["cwd", "open_file"])
def test_unmount_busy_then_lazy(env, holder):
    b, m = env.dirs("b", "m")
    (b / "f").write_text("content")
    pid = env.mounted(b, m)
    (m / "written").write_text("before unmount")
    held = None
    proc = None
    try:
        if holder == "cwd":
            proc = env.popen(["sleep", "60"], cwd=m)
            assert wait_until(lambda: os.readlink(f"/proc/{proc.pid}/cwd") == str(m), timeout=5)
        else:
            held = open(m / "f")
        r = run([SNAPFS, "unmount", m])
        assert r.returncode == 16, f"exit {r.returncode}; stderr={r.stderr!r}"
        line = assert_one_snapfs_line(r.stderr)
        assert "busy" in line.lower(), line
        assert is_mounted(m) and mount_records(m)[-1][1] == "fuse.snapfs"
        assert pid_alive(pid)
        assert (m / "f").read_text() == "content"

        r = run([SNAPFS, "unmount", m, "--lazy"])
        assert r.returncode == 0, r.stderr
        assert not is_mounted(m)
        assert (b / "written").read_text() == "before unmount"
        if held is not None:
            assert held.read() == "content"  # an open file keeps working after a lazy unmount
    finally:
        if held is not None:
            held.close()
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
    assert wait_until(lambda: not pid_alive(pid), timeout=10), "daemon did not exit once the lazy mount was released"


# ---------------------------------------------------------------- shutdown

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_daemon(env, sig):
    b, m = env.dirs("b", "m")
    pid = env.mounted(b, m)
    (m / "f").write_text("written before the signal")
    os.kill(pid, sig)
    assert wait_until(lambda: not pid_alive(pid), timeout=10), "daemon still running after signal"
    assert not is_mounted(m)
    assert (b / "f").read_text() == "written before the signal"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_foreground_with_exit_0(env, sig):
    b, m = env.dirs("b", "m")
    p = env.popen([SNAPFS, "mount", b, m, "--foreground"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert wait_until(lambda: is_mounted(m) or p.poll() is not None, timeout=10)
    assert is_mounted(m), f"foreground snapfs exited {p.poll()}: {p.stderr.read()}"
    (m / "f").write_text("data")
    p.send_signal(sig)
    assert p.wait(timeout=10) == 0
    assert not is_mounted(m)
    assert (b / "f").read_text() == "data"


# Runs `snapfs mount ...` as a child subreaper, so that the detached daemon is
# re-parented to this helper when the command exits, and reports the daemon's exit status.
_REAPER = r"""
import ctypes, os, subprocess, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl failed")
r = subprocess.run(sys.argv[1:], timeout=60)
print("MOUNT", r.returncode, flush=True)
if r.returncode == 0:
    pid, status = os.wait()
    print("DAEMON", pid, os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "snapfs_unmount", "fusermount3_u"])
def test_daemon_exit_status(env, how):
    """The daemon exits with 0 after a clean shutdown (it has nothing to report: the
    mount ended because it was asked to)."""
    b, m = env.dirs("b", "m")
    pid_file = env.path("d.pid")
    helper = env.popen(["python3", "-c", _REAPER, SNAPFS, "mount", b, m, "--pid-file", pid_file],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = helper.stdout.readline().split()
    assert first == ["MOUNT", "0"], (first, helper.stderr.read() if helper.poll() is not None else "")
    pid = int(pid_file.read_text())
    env.daemon_pids.add(pid)
    assert is_mounted(m)
    (m / "f").write_text("data")
    if how == "SIGTERM":
        os.kill(pid, signal.SIGTERM)
    elif how == "SIGINT":
        os.kill(pid, signal.SIGINT)
    elif how == "snapfs_unmount":
        assert run([SNAPFS, "unmount", m]).returncode == 0
    else:
        assert run(["fusermount3", "-u", m]).returncode == 0
    out, _ = helper.communicate(timeout=15)
    fields = out.split()
    assert fields[:2] == ["DAEMON", str(pid)], out
    assert int(fields[2]) == 0, f"daemon exited with {fields[2]} after {how}"
    assert not is_mounted(m)
    assert (b / "f").read_text() == "data"


def test_fusermount_u_stops_daemon(env):
    b, m = env.dirs("b", "m")
    pid = env.mounted(b, m)
    (m / "f").write_text("data")
    r = run(["fusermount3", "-u", m])
    assert r.returncode == 0, r.stderr
    assert not is_mounted(m)
    assert wait_until(lambda: not pid_alive(pid), timeout=10), "daemon did not exit after fusermount3 -u"
    assert (b / "f").read_text() == "data"


def test_foreground(env):
    b, m = env.dirs("b", "m")
    (b / "f").write_text("fg")
    pid_file = env.path("fg.pid")
    p = env.popen([SNAPFS, "mount", b, m, "-f", "--pid-file", pid_file],
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert wait_until(lambda: is_mounted(m) or p.poll() is not None, timeout=10)
    assert p.poll() is None, f"foreground snapfs exited {p.returncode}: {p.stderr.read()}"
    assert mount_records(m)[0][1] == "fuse.snapfs"
    assert (m / "f").read_text() == "fg"
    assert wait_until(pid_file.exists, timeout=5)
    assert int(pid_file.read_text()) == p.pid, "the foreground process is not the one serving"
    time.sleep(0.2)
    assert p.poll() is None, "the --foreground process exited while mounted"
    r = run(["fusermount3", "-u", m])
    assert r.returncode == 0, r.stderr
    assert p.wait(timeout=10) == 0
    assert not is_mounted(m)


# ---------------------------------------------------------------- logging

@pytest.mark.parametrize("flag", [["--debug"], ["-d"], ["-o", "debug"]], ids=["--debug", "-d", "-o debug"])
def test_debug_log_shows_requests(env, flag):
    b, m = env.dirs("b", "m")
    (b / "known").write_text("k")
    env.mounted(b, m, *flag, tag="dbg")
    log = env.path("dbg.log")

    def count(op):
        return len(re.findall(rf"\b{op}\b", log.read_text(), flags=re.IGNORECASE))

    lookups = count("lookup")
    os.stat(m / "known")
    assert wait_until(lambda: count("lookup") > lookups, timeout=5), log.read_text()
    lookups = count("lookup")
    with pytest.raises(FileNotFoundError):
        os.stat(m / "absent-name")
    assert wait_until(lambda: count("lookup") > lookups, timeout=5), log.read_text()
    reads = count("read")
    with open(m / "known", "r+") as f:   # read-only opens are read by the kernel (passthrough)
        assert f.read() == "k"
    assert wait_until(lambda: count("open") >= 1 and count("read") > reads, timeout=5), log.read_text()


def test_log_quiet_without_debug(env):
    b, m = env.dirs("b", "m")
    (b / "known").write_text("k")
    env.mounted(b, m, tag="quiet")
    log = env.path("quiet.log")
    os.stat(m / "known")
    (m / "known").read_text()
    (m / "new").write_text("n")
    os.listdir(m)
    with pytest.raises(FileNotFoundError):
        os.stat(m / "absent")
    time.sleep(0.2)
    text = log.read_text()
    assert "serving" in text, text  # the log file is in use ...
    for op in ("lookup", "getattr", "open", "read", "write", "create", "debug"):
        assert not re.search(rf"\b{op}\b", text, flags=re.IGNORECASE), f"{op!r} in quiet log:\n{text}"
    assert len(text.splitlines()) <= 2, text


def test_foreground_log_file_receives_log(env):
    """--log-file "appends the daemon's log to PATH"; -d logs "to stderr, or to
    --log-file". With --foreground the option is accepted, so the log must go there."""
    b, m = env.dirs("b", "m")
    log = env.path("fg.log")
    p = env.popen([SNAPFS, "mount", b, m, "-f", "--debug", "--log-file", log],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: is_mounted(m) or p.poll() is not None, timeout=10)
    assert p.poll() is None
    os.stat(m)
    os.listdir(m)
    r = run(["fusermount3", "-u", m])
    assert r.returncode == 0
    assert p.wait(timeout=10) == 0
    assert log.exists(), "--log-file was ignored with --foreground"
    assert re.search(r"\blookup\b|\bgetattr\b|\bopendir\b", log.read_text(), flags=re.IGNORECASE)


# ---------------------------------------------------------------- -o ro

def test_read_only(env):
    b, m = env.dirs("b", "m")
    (b / "f").write_text("original")
    (b / "d").mkdir()
    env.mounted(b, m, "-o", "ro")
    rec = mount_records(m)[0]
    assert "ro" in rec[3].split(","), rec
    assert (m / "f").read_text() == "original"
    assert sorted(os.listdir(m)) == ["d", "f"]

    def erofs(fn):
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno == errno.EROFS, e.value

    erofs(lambda: open(m / "f", "a"))
    erofs(lambda: open(m / "new", "w"))
    erofs(lambda: os.mkdir(m / "newdir"))
    erofs(lambda: os.unlink(m / "f"))
    erofs(lambda: os.rmdir(m / "d"))
    erofs(lambda: os.rename(m / "f", m / "g"))
    erofs(lambda: os.chmod(m / "f", 0o600))
    erofs(lambda: os.symlink("f", m / "link"))
    assert sorted(os.listdir(b)) == ["d", "f"]
    assert (b / "f").read_text() == "original"


# ---------------------------------------------------------------- allow_other

def test_other_users_by_default_as_root(env):
    os.chmod(env.dir, 0o755)
    b, m = env.dirs("b", "m")
    (b / "public").write_text("readable")
    os.chmod(b / "public", 0o644)
    (b / "private").write_text("secret")
    os.chmod(b / "private", 0o600)
    (b / "shared").mkdir()
    os.chmod(b / "shared", 0o777)
    env.mounted(b, m)
    opts = mount_records(m)[0][4].split(",")
    assert "allow_other" in opts and "default_permissions" in opts, opts

    r = run_as_nobody(["cat", str(m / "public")], timeout=TIMEOUT)
    assert r.returncode == 0 and r.stdout == "readable", r.stderr
    r = run_as_nobody(["cat", str(m / "private")], timeout=TIMEOUT)
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.returncode, r.stderr)
    r = run_as_nobody(["sh", "-c", f"echo x >> {m / 'public'}"], timeout=TIMEOUT)
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.returncode, r.stderr)
    r = run_as_nobody(["sh", "-c", f"echo mine > {m / 'shared' / 'byNobody'}"], timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    st = os.stat(b / "shared" / "byNobody")
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), (st.st_uid, st.st_gid)
    assert (b / "public").read_text() == "readable"


def test_noallow_other(env):
    os.chmod(env.dir, 0o755)
    b, m = env.dirs("b", "m")
    (b / "public").write_text("readable")
    os.chmod(b / "public", 0o644)
    env.mounted(b, m, "-o", "noallow_other")
    opts = mount_records(m)[0][4].split(",")
    assert "allow_other" not in opts, opts
    assert (m / "public").read_text() == "readable"  # root, the owner of the mount
    r = run_as_nobody(["cat", str(m / "public")], timeout=TIMEOUT)
    assert r.returncode != 0 and r.stdout == "", (r.returncode, r.stdout)
    r = run_as_nobody(["stat", str(m)], timeout=TIMEOUT)
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.returncode, r.stderr)


# ---------------------------------------------------------------- mount(8), fstab

def _bin_dir_with_snapfs(env):
    (bin_dir,) = env.dirs("bin")
    (bin_dir / "snapfs").symlink_to(os.path.realpath(SNAPFS))
    return bin_dir


def test_mount_fuse3_helper_finds_snapfs_on_path(env):
    """What mount(8) runs for `-t fuse.snapfs`: `mount.fuse3 B M -o OPTS -t fuse.snapfs`,
    which starts `snapfs B M -o OPTS` from PATH."""
    b, m = env.dirs("b", "m")
    (b / "hello").write_text("via helper")
    bin_dir = _bin_dir_with_snapfs(env)
    helper = "/sbin/mount.fuse3" if os.path.exists("/sbin/mount.fuse3") else "mount.fuse3"
    path = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    r = run(["env", f"PATH={path}", helper, b, m, "-o", "defaults,nofail", "-t", "fuse.snapfs"])
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    recs = mount_records(m)
    assert len(recs) == 1 and recs[0][1] == "fuse.snapfs" and recs[0][2] == str(b), recs
    assert (m / "hello").read_text() == "via helper"
    pids = snapfs_pids_naming(env.dir)
    assert len(pids) == 1, pids
    r = run(["umount", m])
    assert r.returncode == 0, r.stderr
    assert not is_mounted(m)
    assert wait_until(lambda: not pid_alive(pids[0]), timeout=10), "daemon did not exit after umount"


@pytest.mark.parametrize("how", ["mount_-t", "fstab"])
def test_mount8_and_fstab(env, how):
    """`mount -t fuse.snapfs B M -o defaults,nofail` and the README's fstab line with
    `mount M`. mount(8) runs its helpers without the caller's PATH, so snapfs must be
    in a standard directory (README: /usr/local/bin). To leave the host alone, this
    runs in a private mount namespace where /usr/local/bin is a directory holding only
    `snapfs` and /etc/fstab holds only the test's line."""
    b, m = env.dirs("b", "m")
    (b / "hello").write_text("via mount(8)")
    bin_dir = _bin_dir_with_snapfs(env)
    fstab = env.path("fstab")
    fstab.write_text(f"{b}   {m}   fuse.snapfs   defaults,nofail   0 0\n")
    mount_cmd = f'mount -t fuse.snapfs "{b}" "{m}" -o defaults,nofail' if how == "mount_-t" else f'mount "{m}"'
    script = f"""
        mount --bind "{bin_dir}" /usr/local/bin || exit 90
        mount --bind "{fstab}" /etc/fstab || exit 91
        {mount_cmd}
        echo "MOUNT_RC=$?"
        grep " {m} " /proc/self/mountinfo
        echo "CONTENT=$(cat "{m}/hello")"
        umount "{m}"
        echo "UMOUNT_RC=$?"
        echo "AFTER=$(grep -c " {m} " /proc/self/mountinfo)"
    """
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script])
    out = r.stdout
    assert r.returncode == 0, f"exit {r.returncode}\n{out}\n{r.stderr}"
    assert "MOUNT_RC=0" in out, f"{out}\n{r.stderr}"
    assert re.search(rf" {re.escape(str(m))} .* - fuse\.snapfs {re.escape(str(b))} ", out), out
    assert "CONTENT=via mount(8)" in out, out
    assert "UMOUNT_RC=0" in out, f"{out}\n{r.stderr}"
    assert "AFTER=0" in out, out
    assert wait_until(lambda: snapfs_pids_naming(env.dir) == [], timeout=10), "daemon did not exit after umount"
    assert not is_mounted(m)
