"""Mounted tests of the snapshot commands (issue 4, snapshot-spec.md): `snapfs snapshot`,
`list` (table and --json, on the mount and on the backing directory), `diff` (+ - M T),
`versions`, `restore` (one file, the whole tree, with its safety snapshot), `hold`,
`release`, `delete`, `prune`, `status`, and every documented error: unknown snapshot (20),
path outside the mount or missing in the snapshot (21), not a snapfs mount (17), the
daemon's refusal (22), bad label (64)."""

import json
import os
import re
import stat
import subprocess

import pytest

from lib.common import SNAPFS

TIMEOUT = 60
NAME_RE = re.compile(r"^\d{8}T\d{6}\.\d{3}Z(-[^\s/]+)?$")
METADATA_KEYS = {"format", "name", "time", "label", "trigger", "strategy", "scope", "paths",
                 "files", "directories", "bytes", "durationMs", "gateMs", "held", "sqlite", "pair"}


# ---------------------------------------------------------------- helpers

def snapfs(*args, check=None):
    """Runs `snapfs ARGS`; with check=N asserts the exit code is N."""
    r = subprocess.run([SNAPFS, *[str(a) for a in args]], capture_output=True, text=True, timeout=TIMEOUT)
    if check is not None:
        assert r.returncode == check, (args, r.returncode, r.stdout, r.stderr)
    return r


def one_error_line(r, code):
    """A failed command: exit code `code` and exactly one `snapfs: ...` line on stderr."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snapfs: "), r.stderr
    return lines[0]


def take(mount, label=None, force=False):
    args = ["snapshot", mount.mnt]
    if label:
        args += ["--label", label]
    if force:
        args += ["--force"]
    r = snapfs(*args, check=0)
    name = r.stdout.strip()
    assert NAME_RE.match(name), r.stdout
    if label:
        assert name.endswith("-" + label)
    return name


def table(text):
    """Rows of a table whose columns are separated by two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()]


def list_json(path):
    return json.loads(snapfs("list", path, "--json", check=0).stdout)


def names(path):
    return [m["name"] for m in list_json(path)]


def write(path, text, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        os.chmod(path, mode)


# ---------------------------------------------------------------- snapshot and list

def test_snapshot_prints_the_name_and_skips_unchanged(snapfs_mount):
    m = snapfs_mount
    write(m.mnt / "a.txt", "one")
    first = take(m, "first")
    # Nothing changed: no snapshot, a note on stderr, exit 0.
    r = snapfs("snapshot", m.mnt, check=0)
    assert r.stdout == ""
    assert r.stderr.strip() == f"unchanged since {first}"
    forced = take(m, force=True)
    assert forced > first
    write(m.mnt / "a.txt", "two")
    second = take(m)
    assert second > forced
    assert names(m.mnt) == [first, forced, second]
    # The snapshot holds what was written before it.
    assert (m.mnt / ".snapshots" / first / "a.txt").read_text() == "one"
    assert (m.mnt / ".snapshots" / second / "a.txt").read_text() == "two"


def test_list_table_and_json(snapfs_mount):
    m = snapfs_mount
    write(m.mnt / "d" / "f", "x" * 3000)
    write(m.mnt / "g", "y")
    a = take(m, "nightly")
    write(m.mnt / "g", "changed")
    b = take(m)

    rows = table(snapfs("list", m.mnt, check=0).stdout)
    assert rows[0] == ["NAME", "TIME", "TRIGGER", "LABEL", "PAIR", "FILES", "SIZE", "STRATEGY", "HELD", "DURABLE"]
    assert [r[0] for r in rows[1:]] == [a, b]
    ra = rows[1]
    assert ra[1].startswith(f"{a[0:4]}-{a[4:6]}-{a[6:8]} {a[9:11]}:{a[11:13]}:{a[13:15]}")
    assert ra[2] == "command"
    assert ra[3] == "nightly"
    assert rows[2][3] == "-"
    assert ra[4] == "-"  # not one of a pair
    assert int(ra[5]) >= 2
    assert re.match(r"^\d+(\.\d)? (B|KiB|MiB|GiB)$", ra[6]), ra[6]
    assert ra[7] in ("hardlink", "reflink", "btrfs", "copy")
    assert ra[8] == "no"
    assert ra[9] == "yes"  # taken explicitly: durable when `snapfs snapshot` returned

    meta = list_json(m.mnt)
    assert [x["name"] for x in meta] == [a, b]
    x = meta[0]
    assert set(x) == METADATA_KEYS | {"durable"}
    assert x["durable"] is True
    assert x["format"] == 1
    assert x["label"] == "nightly" and meta[1]["label"] is None
    assert x["trigger"] == {"kind": "command", "detail": None}
    assert x["time"] == f"{a[0:4]}-{a[4:6]}-{a[6:8]}T{a[9:11]}:{a[11:13]}:{a[13:19]}Z"
    assert x["scope"] == "tree" and x["paths"] == []
    assert x["files"] >= 2 and x["directories"] >= 1 and x["bytes"] >= 3001
    assert x["held"] is False and x["sqlite"] is None
    assert isinstance(x["durationMs"], (int, float))
    # How long changes were held: a tree snapshot's epoch, within its whole time.
    assert isinstance(x["gateMs"], (int, float)) and 0 <= x["gateMs"] <= x["durationMs"] + 1

    # The backing directory lists the same, with snapfs running and after unmount.
    assert names(m.backing) == [a, b]
    m.stop()
    assert names(m.backing) == [a, b]
    assert [r[0] for r in table(snapfs("list", m.backing, check=0).stdout)[1:]] == [a, b]
    # The metadata files are where the spec says.
    on_disk = json.loads((m.backing / ".snapshots" / ".meta" / f"{a}.json").read_text())
    # The same, less what list adds (durable: not stored, it changes after the snapshot).
    assert "durable" not in on_disk and on_disk == {k: v for k, v in meta[0].items() if k != "durable"}


def test_status(snapfs_mount):
    m = snapfs_mount
    write(m.mnt / "f", "1")
    name = take(m)
    r = snapfs("status", m.mnt, check=0)
    status = dict(line.split(": ", 1) for line in r.stdout.strip().splitlines())
    assert "result" not in status
    assert status["backing"] == str(m.backing.resolve())
    assert status["snapshots"] == "1"
    assert status["newest"] == name
    assert status["strategy"] in ("hardlink", "reflink", "btrfs", "copy")
    assert status["changed"] in ("yes", "no")


# ---------------------------------------------------------------- diff

def test_diff_between_snapshots_and_with_the_live_tree(snapfs_mount):
    m = snapfs_mount
    write(m.mnt / "modified", "aaa")
    write(m.mnt / "deleted", "gone")
    write(m.mnt / "retyped", "file")
    write(m.mnt / "chmodded", "same", mode=0o644)
    write(m.mnt / "same", "same")
    write(m.mnt / "dir" / "inner", "1")
    os.symlink("same", m.mnt / "link")
    os.mkdir(m.mnt / "olddir")
    write(m.mnt / "olddir" / "x", "x")
    before = take(m)

    write(m.mnt / "modified", "aab")          # same size, other bytes
    os.unlink(m.mnt / "deleted")
    os.unlink(m.mnt / "retyped")
    os.mkdir(m.mnt / "retyped")
    write(m.mnt / "retyped" / "child", "c")
    os.chmod(m.mnt / "chmodded", 0o600)
    write(m.mnt / "added", "new")
    write(m.mnt / "dir" / "new", "n")
    os.unlink(m.mnt / "link")
    os.symlink("modified", m.mnt / "link")
    os.unlink(m.mnt / "olddir" / "x")
    os.rmdir(m.mnt / "olddir")
    os.setxattr(m.mnt / "same", "user.tag", b"v")
    os.utime(m.mnt / "dir" / "inner", (1, 1))  # times alone are no change

    expected = ["+ added", "M chmodded", "- deleted", "+ dir/new", "M link", "M modified",
                "- olddir", "- olddir/x", "T retyped", "+ retyped/child", "M same"]
    r = snapfs("diff", m.mnt, before, check=0)
    assert r.stdout.splitlines() == expected
    assert ".snapshots" not in r.stdout and ".snapfs-control" not in r.stdout

    after = take(m)
    assert snapfs("diff", m.mnt, before, after, check=0).stdout.splitlines() == expected
    assert snapfs("diff", m.mnt, after, check=0).stdout == ""
    back = snapfs("diff", m.mnt, after, before, check=0).stdout.splitlines()
    assert "- added" in back and "+ deleted" in back and "+ olddir/x" in back


# ---------------------------------------------------------------- versions

def test_versions_of_one_file(snapfs_mount):
    m = snapfs_mount
    f = m.mnt / "notes" / "todo.txt"
    write(f, "v1")
    s1 = take(m)
    write(m.mnt / "other", "o")    # a change elsewhere: same version of todo.txt
    s2 = take(m)
    write(f, "version 2")
    s3 = take(m)
    os.unlink(f)
    write(m.mnt / "other", "p")
    s4 = take(m)                   # the file is missing here: skipped
    write(f, "version 2")
    s5 = take(m)                   # back, with the same content as in s3
    write(f, "live!")

    for path in ["notes/todo.txt", str(m.mnt / "notes" / "todo.txt")]:
        rows = table(snapfs("versions", m.mnt, path, check=0).stdout)
        assert rows[0] == ["SIZE", "MODIFIED", "SNAPSHOTS"]
        versions = [(r[0], r[2].split(", ")) for r in rows[1:]]
        assert versions == [("2 B", [s1, s2]), ("9 B", [s3, s5]), ("5 B", ["live"])]
    assert s4 not in snapfs("versions", m.mnt, "notes/todo.txt", check=0).stdout


# ---------------------------------------------------------------- restore

def test_restore_one_file_takes_a_safety_snapshot(snapfs_mount):
    m = snapfs_mount
    write(m.mnt / "doc.txt", "good", mode=0o640)
    write(m.mnt / "other.txt", "other")
    good = take(m)
    write(m.mnt / "doc.txt", "broken", mode=0o600)
    write(m.mnt / "other.txt", "other changed")

    r = snapfs("restore", m.mnt, good, "doc.txt", check=0)
    safety = re.search(r"safety snapshot: (\S+)", r.stdout).group(1)
    assert safety.endswith("-pre-restore")
    assert (m.mnt / "doc.txt").read_text() == "good"
    assert stat.S_IMODE(os.stat(m.mnt / "doc.txt").st_mode) == 0o640
    assert (m.mnt / "other.txt").read_text() == "other changed"
    # The safety snapshot holds the tree as it was before the restore; the source is untouched.
    assert (m.mnt / ".snapshots" / safety / "doc.txt").read_text() == "broken"
    assert (m.mnt / ".snapshots" / good / "doc.txt").read_text() == "good"
    meta = {x["name"]: x for x in list_json(m.mnt)}
    assert meta[safety]["trigger"]["kind"] == "restore"
    assert meta[safety]["label"] == "pre-restore"
    assert names(m.mnt) == [good, safety]
    # The backing directory has the restored file: the daemon saw the change.
    m.stop()
    assert (m.backing / "doc.txt").read_text() == "good"


def test_restore_whole_tree(snapfs_mount):
    m = snapfs_mount
    write(m.mnt / "a", "a")
    write(m.mnt / "d" / "b", "b", mode=0o600)
    os.symlink("a", m.mnt / "link")
    os.setxattr(m.mnt / "a", "user.k", b"1")
    old = take(m, "old")
    write(m.mnt / "a", "changed")
    os.removexattr(m.mnt / "a", "user.k")
    os.unlink(m.mnt / "d" / "b")
    write(m.mnt / "d" / "extra", "e")
    write(m.mnt / "new" / "deep", "n")
    os.unlink(m.mnt / "link")
    os.mkdir(m.mnt / "link")
    newer = take(m, "newer")

    r = snapfs("restore", m.mnt, old, check=0)
    assert "safety snapshot: " in r.stdout
    assert snapfs("diff", m.mnt, old, check=0).stdout == ""
    assert (m.mnt / "a").read_text() == "a"
    assert os.getxattr(m.mnt / "a", "user.k") == b"1"
    assert os.readlink(m.mnt / "link") == "a"
    assert not (m.mnt / "new").exists()
    # Newer snapshots are kept, unchanged.
    assert newer in names(m.mnt)
    assert (m.mnt / ".snapshots" / newer / "new" / "deep").read_text() == "n"


# ---------------------------------------------------------------- hold, release, delete, prune

def test_hold_release_delete(snapfs_mount):
    m = snapfs_mount
    write(m.mnt / "f", "1")
    a = take(m)
    write(m.mnt / "f", "2")
    b = take(m)
    assert snapfs("hold", m.mnt, a, check=0).stdout.strip() == f"held {a}"
    assert {x["name"]: x["held"] for x in list_json(m.mnt)} == {a: True, b: False}
    assert table(snapfs("list", m.mnt, check=0).stdout)[1][8] == "yes"
    line = one_error_line(snapfs("delete", m.mnt, a), 22)
    assert "held" in line
    assert snapfs("release", m.mnt, a, check=0).stdout.strip() == f"released {a}"
    assert snapfs("delete", m.mnt, a, check=0).stdout.strip() == f"deleted {a}"
    assert names(m.mnt) == [b]
    assert not (m.backing / ".snapshots" / a).exists()
    assert not (m.backing / ".snapshots" / ".meta" / f"{a}.json").exists()


def test_prune_applies_the_mount_rules(make_mount):
    m = make_mount(extra_args=["--keep-last", "2"])
    made = []
    for i in range(3):
        write(m.mnt / "f", str(i))
        made.append(take(m))
        if i == 0:
            snapfs("hold", m.mnt, made[0], check=0)
    # Pruning after each snapshot kept the held one and the last two.
    assert names(m.mnt) == made
    write(m.mnt / "f", "3")
    made.append(take(m))
    assert names(m.mnt) == [made[0], made[2], made[3]]
    snapfs("release", m.mnt, made[0], check=0)
    r = snapfs("prune", m.mnt, check=0)
    assert r.stdout.split() == [made[0]]
    assert names(m.mnt) == made[2:]
    # Nothing more to prune.
    assert snapfs("prune", m.mnt, check=0).stdout == ""


def test_prune_without_rules_keeps_everything(snapfs_mount):
    m = snapfs_mount
    made = []
    for i in range(3):
        write(m.mnt / "f", str(i))
        made.append(take(m))
    assert snapfs("prune", m.mnt, check=0).stdout == ""
    assert names(m.mnt) == made


# ---------------------------------------------------------------- errors

def test_unknown_snapshot_is_exit_20(snapfs_mount):
    m = snapfs_mount
    write(m.mnt / "f", "1")
    name = take(m)
    missing = "20000101T000000.000Z"
    for args in (["diff", m.mnt, missing], ["diff", m.mnt, name, missing], ["restore", m.mnt, missing],
                 ["delete", m.mnt, missing], ["hold", m.mnt, missing], ["release", m.mnt, missing],
                 ["diff", m.mnt, "not-a-name"]):
        line = one_error_line(snapfs(*args), 20)
        assert "no snapshot" in line
    assert (m.mnt / "f").read_text() == "1"
    assert names(m.mnt) == [name]


def test_path_outside_the_mount_or_missing_in_the_snapshot_is_exit_21(snapfs_mount, workdir):
    m = snapfs_mount
    write(m.mnt / "f", "1")
    name = take(m)
    outside = workdir / "elsewhere.txt"
    outside.write_text("x")
    for args in (["versions", m.mnt, str(outside)], ["versions", m.mnt, "../elsewhere.txt"],
                 ["versions", m.mnt, "/etc/passwd"], ["restore", m.mnt, name, str(outside)],
                 ["versions", m.mnt, "never-existed"], ["restore", m.mnt, name, ".snapshots"]):
        one_error_line(snapfs(*args), 21)
    # A path missing in the snapshot stops the restore before any change, safety snapshot included.
    write(m.mnt / "f", "2")
    write(m.mnt / "later", "l")
    one_error_line(snapfs("restore", m.mnt, name, "f", "later"), 21)
    assert (m.mnt / "f").read_text() == "2"
    assert names(m.mnt) == [name]


def test_not_a_snapfs_mount_is_exit_17(workdir):
    plain = workdir / "plain"
    plain.mkdir()
    for args in (["snapshot", plain], ["status", plain], ["list", plain], ["diff", plain, "x"],
                 ["versions", plain, "f"], ["restore", plain, "x"], ["prune", plain],
                 ["delete", plain, "x"], ["hold", plain, "x"], ["release", plain, "x"],
                 ["snapshot", workdir / "does-not-exist"]):
        line = one_error_line(snapfs(*args), 17)
        assert "not a snapfs mount" in line or "neither" in line


def test_bad_label_is_exit_64(snapfs_mount):
    m = snapfs_mount
    write(m.mnt / "f", "1")
    for label in ["a/b", "a b", "tab\there", "new\nline", "bell\x07", ".hidden", "-dash", "x" * 65]:
        line = one_error_line(snapfs("snapshot", m.mnt, f"--label={label}"), 64)
        assert "label" in line
    assert names(m.mnt) == []


def test_a_refused_command_is_exit_22(snapfs_mount):
    m = snapfs_mount
    write(m.mnt / "f", "1")
    name = take(m)
    snapfs("hold", m.mnt, name, check=0)
    line = one_error_line(snapfs("delete", m.mnt, name), 22)
    assert name in line
    assert names(m.mnt) == [name]


def test_status_diff_and_versions_speak_json(snapfs_mount):
    """`--json` on status, diff and versions: the same facts as the text, in the schemas of
    docs/options.md."""
    m = snapfs_mount
    write(m.mnt / "keep.txt", "same")
    write(m.mnt / "doc.txt", "one")
    write(m.mnt / "gone.txt", "x")
    first = take(m, label="first")
    write(m.mnt / "doc.txt", "two, longer")
    (m.mnt / "gone.txt").unlink()
    write(m.mnt / "new" / "file.txt", "n")
    second = take(m, label="second")

    text = dict(line.split(": ", 1) for line in snapfs("status", m.mnt, check=0).stdout.splitlines())
    status = json.loads(snapfs("status", m.mnt, "--json", check=0).stdout)
    assert set(status) == set(text)
    assert status["snapshots"] == 2 and isinstance(status["snapshots"], int)
    assert status["strategy"] == text["strategy"] and isinstance(status["strategy"], str)
    assert status["newest"] == second

    diff = json.loads(snapfs("diff", m.mnt, first, second, "--json", check=0).stdout)
    assert diff == [{"change": "modified", "path": "doc.txt"}, {"change": "deleted", "path": "gone.txt"},
                    {"change": "added", "path": "new"}, {"change": "added", "path": "new/file.txt"}]
    lines = snapfs("diff", m.mnt, first, second, check=0).stdout.splitlines()
    assert len(lines) == len(diff)

    write(m.mnt / "doc.txt", "three")
    versions = json.loads(snapfs("versions", m.mnt, "doc.txt", "--json", check=0).stdout)
    assert [v["snapshots"] for v in versions] == [[first], [second], ["live"]]
    assert [v["size"] for v in versions] == [3, 11, 5]
    assert all(v["type"] == "file" and isinstance(v["modified"], int) for v in versions)
    same = json.loads(snapfs("versions", m.mnt, "keep.txt", "--json", check=0).stdout)
    assert [v["snapshots"] for v in same] == [[first, second, "live"]]
