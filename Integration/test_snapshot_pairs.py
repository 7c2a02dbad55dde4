"""Mounted tests of pre/post pairs of snapshots (issue 22): `snapfs snapshot MOUNT --label L
-- COMMAND` takes a snapshot before COMMAND and one after it, runs COMMAND as the caller
(environment, working directory, terminal, user), passes its exit code on, and takes the
post snapshot also when COMMAND fails, is killed, or cannot be run; `snapfs list` shows the
pair (PAIR column, "pair" in --json), `snapfs diff MOUNT --pair L` shows what COMMAND
changed. Also the progress line of `diff` and `restore`: on a terminal (a pseudo-terminal
here), and never without one or with --json."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

from lib.common import SNAPFS, wait_until

TIMEOUT = 120
NAME = r"\d{8}T\d{6}\.\d{3}Z"


def snapfs(*args, check=None, **kw):
    """Runs `snapfs ARGS`; with check=N asserts the exit code is N."""
    r = subprocess.run([SNAPFS, *[str(a) for a in args]], capture_output=True, text=True, timeout=TIMEOUT, **kw)
    if check is not None:
        assert r.returncode == check, (args, r.returncode, r.stdout, r.stderr)
    return r


def pair_names(stderr):
    """The pre and post names that `snapshot -- COMMAND` reported on stderr."""
    pre = re.search(rf"^pre snapshot: ({NAME}\S*)$", stderr, re.M)
    post = re.search(rf"^post snapshot: ({NAME}\S*)$", stderr, re.M)
    assert pre and post, stderr
    return pre.group(1), post.group(1)


def listed(m):
    return {x["name"]: x for x in json.loads(snapfs("list", m.mnt, "--json", check=0).stdout)}


def diff_lines(*args):
    return snapfs("diff", *args, check=0).stdout.splitlines()


def table(text):
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


# ---------------------------------------------------------------- pairs

def test_a_pair_around_a_command_that_writes_through_the_mount(snapfs_mount):
    m = snapfs_mount
    (m.mnt / "kept").write_text("same")
    snapfs("snapshot", m.mnt, check=0)
    # Nothing changed since: the pre snapshot is taken all the same (forced).
    r = snapfs("snapshot", m.mnt, "--label", "upgrade", "--", "sh", "-c", f"echo x > '{m.mnt}/f'; echo said", check=0)
    assert r.stdout == "said\n"  # the command's output is its own; snapfs reports on stderr
    pre, post = pair_names(r.stderr)
    assert pre < post and pre.endswith("-upgrade") and post.endswith("-upgrade")
    assert (m.mnt / "f").read_text() == "x\n"
    assert not (m.mnt / ".snapshots" / pre / "f").exists()
    assert (m.mnt / ".snapshots" / post / "f").read_text() == "x\n"

    meta = listed(m)
    assert meta[pre]["pair"] == {"role": "pre", "pre": pre, "post": post}
    assert meta[post]["pair"] == {"role": "post", "pre": pre, "post": post}
    assert meta[pre]["label"] == meta[post]["label"] == "upgrade"
    assert meta[pre]["trigger"] == {"kind": "command", "detail": None}
    assert [x["pair"] for x in meta.values() if x["name"] not in (pre, post)] == [None]
    # The stored metadata of the pre cannot know its post; list fills it in.
    stored = json.loads((m.backing / ".snapshots" / ".meta" / f"{pre}.json").read_text())
    assert stored["pair"] == {"role": "pre", "pre": pre, "post": None}

    rows = {row[0]: row for row in table(snapfs("list", m.mnt, check=0).stdout)}
    assert rows["NAME"][4] == "PAIR"
    assert rows[pre][4] == "pre" and rows[post][4] == "post"
    assert [row[4] for name, row in rows.items() if name not in ("NAME", pre, post)] == ["-"]

    # The shorthand: exactly the command's change, by label or by either name.
    assert diff_lines(m.mnt, "--pair", "upgrade") == ["+ f"]
    assert diff_lines(m.mnt, "--pair", pre) == diff_lines(m.mnt, "--pair", post) == ["+ f"]
    assert diff_lines(m.mnt, pre, post) == ["+ f"]
    assert json.loads(snapfs("diff", m.mnt, "--pair", "upgrade", "--json", check=0).stdout) == \
        [{"change": "added", "path": "f"}]


def test_the_newest_pair_of_a_label_and_a_command_that_changes_nothing(snapfs_mount):
    m = snapfs_mount
    (m.mnt / "f").write_text("1")
    first = pair_names(snapfs("snapshot", m.mnt, "--label", "job", "--", "sh", "-c", f"echo 2 > '{m.mnt}/f'", check=0).stderr)
    # Nothing changes: both snapshots are still taken (forced), and the diff is empty.
    second = pair_names(snapfs("snapshot", m.mnt, "--label", "job", "--", "true", check=0).stderr)
    assert len(set(first + second)) == 4
    assert diff_lines(m.mnt, "--pair", "job") == []
    assert diff_lines(m.mnt, "--pair", first[0]) == ["M f"]
    pairs = [x["pair"] for x in listed(m).values() if x["pair"]]
    assert [(p["pre"], p["post"]) for p in pairs] == [first, first, second, second]


def test_a_pair_without_a_label_is_found_by_name(snapfs_mount):
    m = snapfs_mount
    pre, post = pair_names(snapfs("snapshot", m.mnt, "--", "touch", m.mnt / "t", check=0).stderr)
    assert re.fullmatch(NAME, pre) and re.fullmatch(NAME, post)
    assert diff_lines(m.mnt, "--pair", post) == ["+ t"]
    assert listed(m)[post]["pair"] == {"role": "post", "pre": pre, "post": post}


def test_a_post_snapshot_that_fails_is_exit_22_and_says_why(make_mount, workdir):
    """A pre-snapshot hook that refuses once the command has run: the pre snapshot is
    taken, the post is not; snapfs says what the command did and which pre there is."""
    flag = workdir / "command-ran"
    m = make_mount(extra_args=["--pre-snapshot", f"test ! -e {flag}"])
    r = snapfs("snapshot", m.mnt, "--label", "half", "--", "touch", flag)
    assert r.returncode == 22, r.stderr
    pre = re.search(rf"^pre snapshot: ({NAME}-half)$", r.stderr, re.M).group(1)
    assert "post snapshot:" not in r.stderr
    [line] = [line for line in r.stderr.splitlines() if line.startswith("snapfs:")]
    assert line.startswith("snapfs: the command exited with 0, but the post snapshot failed") and pre in line, line
    assert flag.exists()
    assert [x["pair"]["role"] for x in listed(m).values()] == ["pre"]
    r = snapfs("diff", m.mnt, "--pair", "half")
    assert r.returncode == 20 and "no post snapshot" in r.stderr


def test_a_failing_command_passes_its_exit_code_on_and_the_post_snapshot_is_taken(snapfs_mount):
    m = snapfs_mount
    r = snapfs("snapshot", m.mnt, "--label", "broken", "--", "sh", "-c", f"echo y > '{m.mnt}/g'; exit 3")
    assert r.returncode == 3, r.stderr
    pre, post = pair_names(r.stderr)
    assert "snapfs:" not in r.stderr  # the command speaks for itself
    assert listed(m)[post]["pair"]["role"] == "post"
    assert diff_lines(m.mnt, "--pair", "broken") == ["+ g"]


def test_a_command_killed_by_a_signal(snapfs_mount):
    m = snapfs_mount
    r = snapfs("snapshot", m.mnt, "--label", "killed", "--", "sh", "-c", f"echo z > '{m.mnt}/h'; kill -TERM $$")
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    pre, post = pair_names(r.stderr)
    assert [line for line in r.stderr.splitlines() if line.startswith("snapfs:")] == \
        ["snapfs: the command was killed by SIGTERM"]
    assert diff_lines(m.mnt, "--pair", "killed") == ["+ h"]


def test_ctrl_c_reaches_the_command_and_snapfs_takes_the_post_snapshot(snapfs_mount):
    """SIGINT to the whole foreground process group, as the terminal sends it: the command
    dies of it, snapfs (which ignores it while the command runs) takes the post snapshot."""
    m = snapfs_mount
    started = m.mnt / "started"
    p = subprocess.Popen([SNAPFS, "snapshot", m.mnt, "--label", "interrupted", "--",
                          "sh", "-c", f"echo 1 > '{started}'; exec sleep 60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_until(started.exists, timeout=30)
        time.sleep(0.2)  # sleep has replaced the shell
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 128 + signal.SIGINT, err
    pre, post = pair_names(err)
    assert "killed by SIGINT" in err
    assert diff_lines(m.mnt, "--pair", "interrupted") == ["+ started"]


def test_a_command_that_cannot_be_run(snapfs_mount):
    m = snapfs_mount
    r = snapfs("snapshot", m.mnt, "--label", "missing", "--", "/nonexistent/program")
    assert r.returncode == 127, r.stderr
    pre, post = pair_names(r.stderr)
    assert "/nonexistent/program" in r.stderr and "No such file" in r.stderr
    (m.mnt / "plain").write_text("not executable")
    r = snapfs("snapshot", m.mnt, "--label", "noexec", "--", str(m.mnt / "plain"))
    assert r.returncode == 126, r.stderr
    assert diff_lines(m.mnt, "--pair", "missing") == []


def test_the_command_gets_the_callers_environment_and_directory(snapfs_mount, workdir):
    m = snapfs_mount
    env = dict(os.environ, PAIR_TEST_VALUE="from the caller")
    snapfs("snapshot", m.mnt, "--label", "env", "--", "sh", "-c", f'echo "$PAIR_TEST_VALUE" > "{m.mnt}/env"; pwd > "{m.mnt}/cwd"',
           env=env, cwd=workdir, check=0)
    assert (m.mnt / "env").read_text() == "from the caller\n"
    assert (m.mnt / "cwd").read_text() == f"{workdir}\n"


def test_the_command_runs_as_the_calling_user(make_mount, users):
    """The owner of the mount's root may take snapshots; the command runs as that user."""
    m = make_mount()
    os.chown(m.mnt, users.alice.uid, users.alice.gid)
    r = users.alice.run([SNAPFS, "snapshot", m.mnt, "--label", "mine", "--", "sh", "-c", f"id -u > '{m.mnt}/who'"],
                        timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert (m.mnt / "who").read_text() == f"{users.alice.uid}\n"
    assert (m.mnt / "who").stat().st_uid == users.alice.uid
    assert diff_lines(m.mnt, "--pair", "mine") == ["+ who"]


def test_pair_errors(snapfs_mount):
    m = snapfs_mount
    (m.mnt / "f").write_text("1")
    r = snapfs("diff", m.mnt, "--pair", "nothing")
    assert r.returncode == 20 and r.stderr.startswith("snapfs: there is no pair"), r.stderr
    a = snapfs("snapshot", m.mnt, check=0).stdout.strip()
    assert snapfs("diff", m.mnt, "--pair", a).returncode == 20  # a snapshot taken alone is no pair
    assert snapfs("diff", m.mnt, a, "--pair", "x").returncode == 64
    assert snapfs("diff", m.mnt).returncode == 64
    r = snapfs("snapshot", m.mnt, "--no-wait", "--", "true")
    assert r.returncode == 64 and not (set(listed(m)) - {a}), r.stderr
    r = snapfs("snapshot", m.mnt, "--label", "bad label", "--", "touch", m.mnt / "never")
    assert r.returncode == 64 and not (m.mnt / "never").exists()
    # A pre without its post (the command still runs, or the post failed), made by hand.
    control = m.mnt / ".snapfs-control"
    with open(control, "w") as f:
        f.write("snapshot --force --pair=pre lonely\n")
    r = snapfs("diff", m.mnt, "--pair", "lonely")
    assert r.returncode == 20 and "no post snapshot" in r.stderr, r.stderr
    [lonely] = [x for x in listed(m).values() if x["label"] == "lonely"]
    assert lonely["pair"] == {"role": "pre", "pre": lonely["name"], "post": None}
    # The control file refuses a malformed pair.
    for bad in ("--pair=middle", "--pair=post:", "--pair=post:not-a-name"):
        fd = os.open(control, os.O_RDWR)
        try:
            try:
                os.write(fd, f"snapshot --force {bad}\n".encode())
                raise AssertionError(f"{bad} was accepted")
            except OSError as e:
                assert e.errno == 22
            assert "--pair is pre, or post:NAME" in os.pread(fd, 4096, 0).decode()
        finally:
            os.close(fd)


def test_the_pre_snapshot_failing_runs_no_command(snapfs_mount, users):
    """With the pre snapshot refused, the command never runs and nothing else is taken."""
    m = snapfs_mount
    before = set(listed(m))
    # Only root (the owner of the mount's root) may take snapshots: bob is refused (77) first.
    r = users.bob.run([SNAPFS, "snapshot", m.mnt, "--label", "x", "--", "sh", "-c", "echo ran"], timeout=TIMEOUT)
    assert r.returncode == 77 and "ran" not in r.stdout, (r.stdout, r.stderr)
    assert set(listed(m)) == before


# ---------------------------------------------------------------- progress

def under_terminal(args):
    """Runs `args` with stderr on a pseudo-terminal (stdout a pipe); returns (code, stdout,
    what the terminal received)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    received = b""
    out = b""
    open_ends = {master, p.stdout}
    try:
        while open_ends:
            ready, _, _ = select.select(list(open_ends), [], [], TIMEOUT)
            assert ready, "no output for too long"
            if p.stdout in ready:
                chunk = p.stdout.read1(65536)
                out += chunk
                if not chunk:
                    open_ends.discard(p.stdout)
            if master in ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the last holder of the terminal closed it
                    chunk = b""
                received += chunk
                if not chunk:
                    open_ends.discard(master)
        p.wait(timeout=TIMEOUT)
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out.decode(), received.decode()


def big_tree(m, files):
    """`files` files in 100 directories, made in the backing directory (quick), then a
    snapshot of them."""
    for i in range(files):
        d = m.backing / "big" / f"d{i % 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_text(str(i))
    return snapfs("snapshot", m.mnt, "--label", "big", check=0).stdout.strip()


PROGRESS = re.compile(r"\r(\d+) entries (compared|restored)")


def test_diff_and_restore_show_progress_on_a_terminal_only(snapfs_mount):
    """Walks of 2,101 entries through the mount (long enough for several updates), with
    one change: the commands' results are as without a terminal, the line is extra."""
    m = snapfs_mount
    name = big_tree(m, 2000)
    (m.mnt / "big" / "d001" / "f1").write_text("changed")
    (m.mnt / "big" / "d002" / "f2").unlink()

    code, out, terminal = under_terminal([SNAPFS, "diff", m.mnt, name])
    assert code == 0, terminal
    assert out.splitlines() == ["M big/d001/f1", "- big/d002/f2"]
    counts = [int(c) for c, verb in PROGRESS.findall(terminal) if verb == "compared"]
    assert counts and counts == sorted(counts) and counts[-1] <= 2101, terminal
    assert terminal.endswith("\r\x1b[K"), repr(terminal[-40:])  # the line is erased at the end

    # --json: no line, even on a terminal.
    code, out, terminal = under_terminal([SNAPFS, "diff", m.mnt, name, "--json"])
    assert code == 0 and len(json.loads(out)) == 2
    assert terminal == "", repr(terminal)

    # Without a terminal: no line.
    r = snapfs("diff", m.mnt, name, check=0)
    assert r.stderr == "" and r.stdout.splitlines() == ["M big/d001/f1", "- big/d002/f2"]

    code, out, terminal = under_terminal([SNAPFS, "restore", m.mnt, name, "big"])
    assert code == 0, (out, terminal)
    counts = [int(c) for c, verb in PROGRESS.findall(terminal) if verb == "restored"]
    assert counts and counts == sorted(counts) and counts[-1] <= 2101, terminal
    assert terminal.endswith("\r\x1b[K")
    assert "2 written" in out and "1998 unchanged" in out, out
    assert (m.mnt / "big" / "d001" / "f1").read_text() == "1"

    (m.mnt / "big" / "d001" / "f1").write_text("changed again")
    r = snapfs("restore", m.mnt, name, "big", check=0)
    assert r.stderr == "" and "1 written" in r.stdout


def test_delete_shows_progress_on_a_terminal_only(snapfs_mount):
    """The daemon removes the tree while `delete` waits on the control file: on a terminal
    the command shows the daemon's `deleting:` count; without one, nothing."""
    m = snapfs_mount
    name = big_tree(m, 100_000)  # long enough to remove for several 100 ms polls
    code, out, terminal = under_terminal([SNAPFS, "delete", m.mnt, name])
    assert code == 0, terminal
    assert out.strip() == f"deleted {name}"
    counts = [int(c) for c in re.findall(r"\r(\d+) entries removed", terminal)]
    assert counts and counts == sorted(counts) and counts[-1] <= 100_000 + 101, terminal
    assert terminal.endswith("\r\x1b[K"), repr(terminal[-40:])
    assert not (m.backing / ".snapshots" / name).exists()
    assert "deleting" not in snapfs("status", m.mnt).stdout

    other = snapfs("snapshot", m.mnt, "--force", "--label", "again").stdout.strip()
    r = snapfs("delete", m.mnt, other, check=0)
    assert r.returncode == 0 and r.stderr == "", r.stderr
