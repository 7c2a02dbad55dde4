"""Exclusions: `--exclude GLOB` / `-o exclude=GLOB` leave paths out of tree snapshots.

A pattern without `/` matches names at any depth, one with `/` the path from the mount's
root (fnmatch(3), FNM_PATHNAME: `*` does not cross `/`); an excluded directory is left out
whole. Each strategy is checked (hard links and copies on the work directory's file system,
reflink on a loop XFS, btrfs on a loop btrfs), built inside the gate and in the background:
the excluded entries are absent from the snapshot and everything else is there, identical.
"""

import os
import stat
import subprocess
import time

import pytest

from lib.common import SNAPFS
from lib.control import control, snapfs_status, snapshot, status, wait_published
from lib.loopfs import LoopFS
from lib.mount import is_mounted

PATTERNS = ["*.tmp", ".cache", "build/cache", "*/node_modules", "/top-only"]
# What PATTERNS leave out of the tree `build_tree` makes (with everything below each).
EXCLUDED = {"x.tmp", "z.tmp", "keep/y.tmp", "keep/sub/w.tmp", ".cache", "keep/.cache", "build/cache",
            "web/node_modules", "top-only"}


def build_tree(root):
    """Excluded and kept entries of every kind, at the top and below it."""
    for d in ("keep/sub", "keep/.cache/deep", ".cache", "build/cache/objects", "build/out", "web/node_modules/pkg",
              "a/b/node_modules", "top-only", "keep/top-only", "empty"):
        (root / d).mkdir(parents=True, exist_ok=True)
    files = {
        "keep/a.txt": b"kept\n", "keep/sub/b.txt": b"kept below\n", "x.tmp": b"scratch\n", "keep/y.tmp": b"y\n",
        "keep/sub/w.tmp": b"w\n", "keep/.cache/deep/f": b"cached\n", ".cache/f": b"cached\n",
        "build/cache/objects/1.o": os.urandom(70_000), "build/out/bin": os.urandom(50_000),
        "web/node_modules/pkg/index.js": b"module\n", "a/b/node_modules/kept": b"two levels down: kept\n",
        "top-only/f": b"top\n", "keep/top-only/f": b"not at the top: kept\n", "keep/tmp": b"no dot: kept\n",
        "keep/cachefile": b"kept\n",
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.symlink("keep/a.txt", root / "z.tmp")                    # an excluded symlink
    os.symlink("x.tmp", root / "keep" / "to-excluded")           # a kept one pointing at it
    os.link(root / "keep" / "a.txt", root / "keep" / "a-link")    # kept hard links
    os.link(root / "keep" / "a.txt", root / "build" / "cache" / "a-link")  # and an excluded one
    os.chmod(root / "keep" / "sub", 0o750)


def is_excluded(rel):
    parts = rel.split("/")
    return any("/".join(parts[:i]) in EXCLUDED for i in range(1, len(parts) + 1))


def manifest(root, exclude=False, left_out=None):
    """relative path -> type, mode, data or target; without the excluded paths when
    `exclude` (those `is_excluded`, or those `left_out(rel)` says when it is given)."""
    left_out = left_out or is_excluded
    out = {}
    for parent, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (parent == str(root) and d == ".snapshots")]
        for name in dirs + files:
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, root)
            if exclude and left_out(rel):
                continue
            st = os.lstat(path)
            entry = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode)}
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    entry["data"] = f.read()
            elif stat.S_ISLNK(st.st_mode):
                entry["target"] = os.readlink(path)
            out[rel] = entry
    return out


def dir_mtimes(root, names):
    return {name: os.stat(root / name).st_mtime_ns for name in names}


def loop_mount(workdir, make_mount, kind, options):
    """A LoopFS context (or None) and the backing directory for `kind`."""
    if kind in ("hardlink", "copy"):
        backing = workdir / "backing"
        backing.mkdir()
        return None, backing
    loop = LoopFS(workdir, "xfs" if kind == "reflink" else "btrfs").__enter__()
    backing = loop.dir / "data" if kind == "reflink" else loop.dir
    backing.mkdir(exist_ok=True)
    return loop, backing


@pytest.mark.parametrize("strategy,build", [("hardlink", "background"), ("copy", "background"),
                                            ("reflink", "background"), ("btrfs", "whole"),
                                            ("hardlink", "frozen"), ("copy", "frozen"), ("reflink", "frozen")])
def test_excluded_paths_are_absent_and_everything_else_is_identical(workdir, make_mount, strategy, build):
    loop, backing = loop_mount(workdir, make_mount, strategy, [])
    try:
        options = [f"strategy={strategy}"] + [f"exclude={p}" for p in PATTERNS]
        if build == "frozen":
            options.append("frozen_build")
        m = make_mount(options=options, backing=backing)
        if build != "whole":
            assert status(m.mnt)["build"] == build
        build_tree(m.mnt)
        live = manifest(m.mnt)
        wanted = manifest(m.mnt, exclude=True)
        # The tree really holds what is left out, and what is kept.
        assert EXCLUDED <= set(live), sorted(EXCLUDED - set(live))
        assert len(wanted) < len(live)
        kept_dirs = ["keep", "keep/sub", "build", "web", "a/b"]
        times = dir_mtimes(m.mnt, kept_dirs)

        name = snapshot(m.mnt, "excluded", force=True)
        for root in (m.mnt / ".snapshots" / name, m.backing / ".snapshots" / name):
            taken = manifest(root)
            assert sorted(taken) == sorted(wanted), (sorted(set(taken) - set(wanted)), sorted(set(wanted) - set(taken)))
            for rel, entry in wanted.items():
                assert taken[rel] == entry, rel
            # Directories that lost an entry keep the live tree's times (btrfs removes them
            # from its whole-subvolume snapshot).
            assert dir_mtimes(root, kept_dirs) == times
        snap = m.mnt / ".snapshots" / name
        assert (snap / "a/b/node_modules/kept").read_bytes() == b"two levels down: kept\n"
        assert (snap / "keep/top-only/f").exists() and not (snap / "top-only").exists()
        assert not os.path.lexists(snap / "z.tmp")
        assert os.stat(snap / "keep/a.txt").st_ino == os.stat(snap / "keep/a-link").st_ino
        # The live tree keeps everything.
        assert manifest(m.mnt) == live
        # diff against the live tree reports the excluded paths as added since (they are
        # not in the snapshot), nothing else.
        r = subprocess.run([SNAPFS, "diff", str(m.mnt), name], capture_output=True, text=True, timeout=60)
        assert r.returncode in (0, 1), r.stderr
        changed = {line.split(None, 1)[1] for line in r.stdout.splitlines() if line.strip()}
        assert changed and all(is_excluded(path.rstrip("/")) for path in changed), changed
        m.stop()
    finally:
        if loop:
            loop.__exit__(None, None, None)


DIRECTORIES = 160
FILES = 150
# Copies and hard links are made fastest: larger trees, so that the build outlasts the changes.
DIRECTORIES_BY_STRATEGY = {"hardlink": 480, "copy": 320}


def populate(root, directories=DIRECTORIES):
    """A tree large enough for a background build to outlast the changes, with an
    excluded `.cache` in every directory and an excluded `build/cache`."""
    for d in range(directories):
        directory = root / f"d{d:03d}"
        (directory / ".cache").mkdir(parents=True)
        for f in range(FILES):
            (directory / f"f{f:03d}").write_bytes(f"{d}/{f}\n".encode() * 4)
        for f in range(5):
            (directory / ".cache" / f"c{f}").write_bytes(b"cache\n")
        (directory / "scratch.tmp").write_bytes(b"tmp\n")
    (root / "build" / "cache").mkdir(parents=True)
    (root / "build" / "cache" / "big").write_bytes(os.urandom(6 << 20))
    (root / "build" / "cache" / "small").write_bytes(b"small\n")
    (root / "build" / "out").write_bytes(b"out\n")


def background_excluded(rel):
    """What the background test's patterns leave out."""
    parts = rel.split("/")
    return ".cache" in parts or parts[-1].endswith(".tmp") or rel.startswith("build/cache")


def background_manifest(root, exclude=False):
    return manifest(root, exclude, left_out=background_excluded)


@pytest.mark.parametrize("strategy", ["hardlink", "copy", "reflink"])
def test_a_background_build_leaves_out_what_changes_in_excluded_paths(workdir, make_mount, strategy):
    """Writes into excluded and kept paths while the tree is built in the background: the
    snapshot is the tree at its epoch less the excluded paths, whatever was captured of
    them meanwhile (a large excluded file open for writing included)."""
    loop, backing = loop_mount(workdir, make_mount, strategy, [])
    try:
        populate(backing, DIRECTORIES_BY_STRATEGY.get(strategy, DIRECTORIES))
        m = make_mount(options=[f"strategy={strategy}", "exclude=.cache", "exclude=*.tmp", "exclude=build/cache"],
                       backing=backing)
        assert status(m.mnt)["build"] == "background"
        wanted = background_manifest(m.mnt, exclude=True)
        big = os.open(m.mnt / "build" / "cache" / "big", os.O_RDWR)   # open for writing at the epoch
        try:
            err, result, _ = control(m.mnt, "snapshot --no-wait --force during")
            assert err == 0 and result.startswith("ok started "), result
            name = result.split()[2]
            seen_building = "building" in status(m.mnt)
            for d in range(0, DIRECTORIES, 7):
                directory = m.mnt / f"d{d:03d}"
                with open(directory / ".cache" / "c0", "ab") as f:       # data in an excluded directory
                    f.write(b"after the epoch\n")
                os.chmod(directory / ".cache", 0o700)                     # its own attributes
                (directory / ".cache" / "new").write_bytes(b"new\n")     # an entry made in it
                (directory / ".cache" / "sub").mkdir()
                os.unlink(directory / ".cache" / "c1")
                with open(directory / "scratch.tmp", "ab") as f:         # an excluded file
                    f.write(b"more\n")
                with open(directory / "f000", "ab") as f:                # a kept file
                    f.write(b"kept, changed after the epoch\n")
                os.rename(directory / "f001", directory / ".cache" / "moved-in")   # kept -> excluded
                os.rename(directory / ".cache" / "c2", directory / "moved-out")    # excluded -> kept
            os.pwrite(big, b"X" * 100_000, 1 << 20)
            os.ftruncate(big, 2 << 20)
            (m.mnt / "build" / "cache" / "small").write_bytes(b"changed\n")
            wait_published(m.mnt, name)
        finally:
            os.close(big)
        assert seen_building, "the build was over before the first change"
        taken = background_manifest(m.mnt / ".snapshots" / name)
        assert sorted(taken) == sorted(wanted), (sorted(set(taken) - set(wanted))[:10], sorted(set(wanted) - set(taken))[:10])
        for rel, entry in wanted.items():
            assert taken[rel] == entry, rel
        # The live tree has every change, and the store holds nothing but the snapshot.
        assert (m.mnt / "d000" / ".cache" / "c0").read_bytes().endswith(b"after the epoch\n")
        assert (m.mnt / "d007" / ".cache" / "moved-in").exists() and (m.mnt / "d007" / "moved-out").exists()
        assert os.stat(m.mnt / "build" / "cache" / "big").st_size == 2 << 20
        assert sorted(p.name for p in (m.backing / ".snapshots").iterdir()) == [".meta", name]
        m.stop()
    finally:
        if loop:
            loop.__exit__(None, None, None)


def test_restoring_a_snapshot_leaves_the_excluded_paths_of_the_live_tree_alone(make_mount):
    """A snapshot does not have the excluded paths; restoring it makes the rest of the tree
    equal to it and neither removes them nor touches them."""
    m = make_mount(options=["exclude=.cache", "exclude=build/cache", "exclude=*.tmp"])
    build_tree(m.mnt)
    name = snapshot(m.mnt, "before", force=True)
    wanted = manifest(m.mnt, exclude=True)
    (m.mnt / "keep" / "a.txt").write_bytes(b"changed after\n")
    (m.mnt / "keep" / "sub" / "b.txt").unlink()
    (m.mnt / "keep" / "added").write_bytes(b"added after\n")
    (m.mnt / "build" / "cache" / "later.o").write_bytes(b"built after\n")
    (m.mnt / "keep" / "later.tmp").write_bytes(b"scratch after\n")
    excluded_now = {rel: entry for rel, entry in manifest(m.mnt).items() if is_excluded(rel) or rel.endswith(".tmp")}
    r = subprocess.run([SNAPFS, "restore", str(m.mnt), name], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    after = manifest(m.mnt)
    assert {rel: e for rel, e in after.items() if not (is_excluded(rel) or rel.endswith(".tmp"))} == wanted
    assert {rel: e for rel, e in after.items() if is_excluded(rel) or rel.endswith(".tmp")} == excluded_now
    assert (m.mnt / "build" / "cache" / "later.o").read_bytes() == b"built after\n"
    assert not (m.mnt / "keep" / "added").exists()


def test_status_shows_the_patterns(make_mount):
    m = make_mount(options=["exclude=*.tmp"],
                   extra_args=["--exclude", "build/cache", "--exclude", "-dash*", "--exclude", "My Cache", "--exclude", "a\\*b"])
    expected = "*.tmp build/cache -dash* My\\x20Cache a\\\\*b"
    assert status(m.mnt)["exclude"] == expected
    assert snapfs_status(m)["exclude"] == expected
    plain = make_mount(name="plain")
    assert "exclude" not in status(plain.mnt)


@pytest.mark.parametrize("args,message", [
    (["-o", "exclude="], "exclude= needs a glob"),
    (["--exclude", "cache/"], "exclude pattern cache/ has an empty component"),
    (["--exclude", "a//b"], "exclude pattern a//b has an empty component"),
    (["--exclude", "../x"], "has a . or .. component"),
    (["--exclude", "/"], "would leave out the whole tree"),
    (["--exclude", "x" * 4097], "exclude pattern of 4097 bytes: at most 4096"),
    ([arg for i in range(65) for arg in ("--exclude", f"p{i}")], "65 exclude patterns: at most 64"),
    (["--exclude", "a,b"], "a pattern cannot hold a comma"),
])
def test_a_bad_pattern_or_too_many_is_refused_at_mount(workdir, args, message):
    (workdir / "b").mkdir()
    (workdir / "m").mkdir()
    r = subprocess.run([SNAPFS, "mount", str(workdir / "b"), str(workdir / "m"), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert r.stderr.startswith("snapfs: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr, r.stderr
    assert not is_mounted(workdir / "m")
