#!/usr/bin/env python3
"""What one reflink snapshot of a database costs on XFS, and why it grows: the time of a
FICLONE (the whole-file clone the reflink strategy makes at a commit) of a 100 MiB file
against the number of extents the file has, and how fast a database that is cloned at
every commit fragments. No FUSE, no snapfs: this is the floor any reflink snapshot pays.

    python3 bench/clone_cost.py [--commits N]

Makes a 2 GiB XFS (mkfs.xfs -m reflink=1) on a loop device under a temporary directory
(root needed), and removes it at the end.
Part 1: files of 100 MiB with 1, 10, 100, 1,000 and 4,000 extents (one 4 KiB block written
every 100 MiB / K, in reverse order so the blocks are not adjacent on disk); the median
of 9 clones of each.
Part 2: a 100 MB SQLite database (written contiguously), N one-row DELETE-mode commits
(synchronous=FULL) without snapshots, then on a second such database N commits each
followed by a FICLONE of it into a new file, as `--strategy reflink` does: both rates,
the time in the clones and in the copy-on-write that follows them, the database's
extents at the end, and the clone time over the first and the last 100 commits.
"""
import argparse
import fcntl
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from lib.databases import make_database

from Integration.lib.loopfs import LoopFS, LoopFSError

FICLONE = 0x40049409
BLOCK = 4096
SIZE = 100 << 20


def extents(path):
    """Data extents of `path`, as xfs_bmap lists them (holes are not counted)."""
    out = subprocess.run(["xfs_bmap", str(path)], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines()[1:] if "hole" not in line)


def clone_ms(source_fd, target):
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        start = time.perf_counter()
        fcntl.ioctl(fd, FICLONE, source_fd)
        return (time.perf_counter() - start) * 1000
    finally:
        os.close(fd)


def by_extents(root):
    print("| extents of the 100 MiB file | FICLONE median ms | µs per extent |")
    print("|---:|---:|---:|")
    for k in (1, 10, 100, 1000, 4000):
        path = root / f"file-{k}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if k == 1:
                chunk = os.urandom(1 << 20)
                for i in range(SIZE >> 20):
                    os.pwrite(fd, chunk, i << 20)
            else:
                os.ftruncate(fd, SIZE)
                step = SIZE // BLOCK // k
                for i in reversed(range(k)):
                    os.pwrite(fd, os.urandom(BLOCK), i * step * BLOCK)
            os.fsync(fd)
            times = [clone_ms(fd, root / f"file-{k}.clone-{i}") for i in range(9)]
        finally:
            os.close(fd)
        for i in range(9):
            os.unlink(root / f"file-{k}.clone-{i}")
        found = extents(path)
        median = statistics.median(times)
        print(f"| {found:,} | {median:.3f} | {median * 1000 / found:.1f} |")
        path.unlink()


def every_commit(root, commits, clone):
    """tx/s of `commits` one-row commits, each followed by a FICLONE of the database if
    `clone`; with the clone times and the database's extents before and after."""
    db = root / ("t.db" if clone else "plain.db")
    make_database(db, 100)   # written by SQLite itself: contiguous, not a reflinked copy
    os.sync()
    before = extents(db)
    snaps = root / "snaps"
    snaps.mkdir(exist_ok=True)
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=delete")
    c.execute("PRAGMA synchronous=FULL")
    row = os.urandom(100).hex()
    source = os.open(db, os.O_RDONLY)
    times = []
    start = time.perf_counter()
    try:
        for i in range(commits):
            c.execute("INSERT INTO t(v) VALUES (?)", (row,))
            if clone:
                times.append(clone_ms(source, snaps / f"{db.name}-{i}"))
    finally:
        elapsed = time.perf_counter() - start
        os.close(source)
        c.close()
    return commits / elapsed, times, before, extents(db)


def commits_with_clones(root, commits):
    plain, _, _, _ = every_commit(root, commits, clone=False)
    cloned, times, before, after = every_commit(root, commits, clone=True)
    print()
    print(f"{commits:,} DELETE-mode commits (one row, synchronous=FULL) on a 100 MB database, natively, no snapfs:")
    print(f"- without snapshots: {plain:,.0f} tx/s")
    print(f"- a FICLONE of the database after each: {cloned:,.0f} tx/s ({cloned / plain:.2f} ×); "
          f"{statistics.mean(times):.3f} ms of each commit in the clone itself, "
          f"{1000 / cloned - 1000 / plain - statistics.mean(times):.3f} ms more elsewhere in the commit (the copy-on-write of the blocks the clone shared)")
    print(f"- database extents: {before:,} before, {after:,} after")
    print(f"- FICLONE median ms: first 100 commits {statistics.median(times[:100]):.3f}, "
          f"last 100 {statistics.median(times[-100:]):.3f}; p99 of all {sorted(times)[int(len(times) * 0.99)]:.3f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commits", type=int, default=1500)
    a = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("error: needs root (a loop device and mount)")
    with tempfile.TemporaryDirectory(prefix="snapfs-clone-") as tmp:
        xfs = LoopFS(Path(tmp), "xfs", 2048 << 20, name="xfs")
        try:
            try:
                xfs.open()
            except LoopFSError as e:
                raise SystemExit(f"error: {e}")
            by_extents(xfs.dir)
            commits_with_clones(xfs.dir, a.commits)
        finally:
            xfs.close()


if __name__ == "__main__":
    main()
