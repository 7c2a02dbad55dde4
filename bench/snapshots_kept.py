#!/usr/bin/env python3
"""Snapshot time with the btrfs strategy as snapshots accumulate.

A btrfs subvolume snapshot is constant in the size of the tree; what snapfs does around it
may not be constant in the number of snapshots already kept. On a fresh loop btrfs, snapfs
(and, with --baseline-bin, another build on its own loop btrfs, alternating snapshot by
snapshot) takes N snapshots of a small tree, one file changed before each; the wall time
of each (`echo snapshot > MOUNT/.snapfs-control`) is recorded, and the medians over windows
of the count kept are printed as a Markdown table.

    python3 bench/snapshots_kept.py --count 400 --baseline-bin OLD/.build/release/snapfs
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lib  # noqa: F401  (puts the repository on sys.path)
from Integration.lib.control import control
from Integration.lib.loopfs import LoopFS
from Integration.lib.mount import Mount

REPO = Path(__file__).resolve().parent.parent


def take(mnt):
    """One snapshot through the control file; its wall time in milliseconds."""
    start = time.perf_counter()
    err, result, _ = control(mnt, "snapshot")
    elapsed = (time.perf_counter() - start) * 1000
    if err or not result.startswith("ok snapshot"):
        sys.exit(f"snapshot failed: {result}")
    return elapsed


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=400, help="snapshots to take (default 400)")
    p.add_argument("--window", type=int, default=20, help="snapshots per reported window (default 20)")
    p.add_argument("--snapfs-bin", default=str(REPO / ".build" / "release" / "snapfs"))
    p.add_argument("--baseline-bin", help="another build, measured alternately on its own file system")
    args = p.parse_args(argv)

    builds = [("snapfs", args.snapfs_bin)] + ([("baseline", args.baseline_bin)] if args.baseline_bin else [])
    times = {name: [] for name, _ in builds}
    with tempfile.TemporaryDirectory(prefix="snapshots-kept-") as tmp:
        work = Path(tmp)
        mounts, loops = {}, []
        try:
            for name, binary in builds:
                loop = LoopFS(work, "btrfs", size=1 << 30, name=f"{name}-fs").open()
                loops.append(loop)
                (loop.dir / "tree").mkdir()
                for i in range(100):
                    (loop.dir / "tree" / f"f{i}").write_bytes(os.urandom(4096))
                mnt = work / f"{name}-mnt"
                mnt.mkdir()
                mounts[name] = Mount(loop.dir, mnt, options=["strategy=btrfs"], extra_args=["--sqlite", "off"],
                                     binary=binary).start()
            for n in range(args.count):
                for name, _ in builds:
                    mnt = mounts[name].mnt
                    (mnt / "tree" / f"f{n % 100}").write_bytes(os.urandom(4096))
                    times[name].append(take(mnt))
        finally:
            for m in mounts.values():
                m.stop()
            for loop in loops:
                loop.close()

    names = [name for name, _ in builds]
    print(f"Snapshot wall time (ms), btrfs strategy, median per window of {args.window}, {args.count} snapshots.\n")
    print("| snapshots kept | " + " | ".join(names) + (" | snapfs/baseline" if len(names) == 2 else "") + " |")
    print("|---" * (len(names) + 1 + (len(names) == 2)) + "|")
    for start in range(0, args.count, args.window):
        medians = [statistics.median(times[name][start:start + args.window]) for name in names]
        row = f"| {start}–{min(start + args.window, args.count) - 1} | " + " | ".join(f"{v:.1f}" for v in medians)
        if len(names) == 2:
            row += f" | {medians[0] / medians[1]:.2f}"
        print(row + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
