#!/usr/bin/env python3
"""SQLite commit snapshots: transactions per second with a 100 MB database, one run.

Targets, interleaved in each repetition: native ext4; snapfs on ext4 with detection on
and no snapshots (--sqlite detect); snapfs on ext4 with a snapshot at every commit
(hardlink strategy); snapfs on ext4 with --sqlite-min-interval 1s; native XFS (an image
made with mkfs.xfs -m reflink=1 on a loop device); snapfs on XFS with a snapshot at every
commit (reflink strategy), and with --sqlite-min-interval 1s; bindfs on ext4; libfuse's
passthrough_ll example on ext4 (C, built at run time from libfuse3-dev: what a FUSE
passthrough that does nothing but forward costs here). Workload:
python's sqlite3, one 200-byte INSERT per BEGIN/COMMIT, synchronous=FULL, journal_mode DELETE and WAL, on a database filled to
100 MB first. Prints tx/s (median of the repetitions), the ratios to native on the same
filesystem, and each transaction's latency (median and 99th percentile): the commit
snapshot's cost is the latency above the detection-only run.

    python3 bench/sqlite_commits.py                 # 3 repetitions of 10 s per target and mode
    python3 bench/sqlite_commits.py --quick         # 1 repetition of 3 s, 20 MB database
    python3 bench/sqlite_commits.py --baseline OLD/.build/release/snapfs   # A/B against another build
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import passthrough_ll
from trees import remove_tree

REPO = Path(__file__).resolve().parent.parent
SNAPFS = os.environ.get("SNAPFS_BIN", str(REPO / ".build" / "release" / "snapfs"))

WORKER = r"""
import json, os, sqlite3, sys, time
db, mode, seconds, max_tx = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
c = sqlite3.connect(db, isolation_level=None)
assert c.execute("PRAGMA journal_mode=" + mode).fetchone()[0] == mode
c.execute("PRAGMA synchronous=FULL")
row = os.urandom(100).hex()
for _ in range(5):
    c.execute("BEGIN"); c.execute("INSERT INTO t(v) VALUES (?)", (row,)); c.execute("COMMIT")
lat = []
start = time.perf_counter()
while time.perf_counter() - start < seconds and len(lat) < max_tx:
    t0 = time.perf_counter()
    c.execute("BEGIN"); c.execute("INSERT INTO t(v) VALUES (?)", (row,)); c.execute("COMMIT")
    lat.append(time.perf_counter() - t0)
elapsed = time.perf_counter() - start
c.close()
print(json.dumps({"tx": len(lat), "seconds": elapsed, "latencies": lat}))
"""


def run(*cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed: {r.stderr.strip()}")
    return r


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def make_database(path, megabytes):
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    c.execute("CREATE TABLE fill (b BLOB)")
    blob = os.urandom(64 << 10)
    for _ in range(megabytes * 16):
        c.execute("INSERT INTO fill VALUES (?)", (blob,))
    c.commit()
    c.close()


class XFSImage:
    def __init__(self, root, megabytes):
        self.image = root / "xfs.img"
        self.dir = root / "xfs"
        self.megabytes = megabytes
        self.device = None

    def __enter__(self):
        self.dir.mkdir()
        with open(self.image, "wb") as f:
            f.truncate(self.megabytes << 20)
        self.device = run("losetup", "-f", "--show", str(self.image)).stdout.strip()
        run("mkfs.xfs", "-q", "-f", "-m", "reflink=1", self.device)
        run("mount", self.device, str(self.dir))
        return self

    def __exit__(self, *exc):
        run("umount", str(self.dir), check=False)
        if self.device:
            run("losetup", "-d", self.device, check=False)
        self.image.unlink(missing_ok=True)


class Target:
    """A directory the workload runs in, set up and torn down around each measurement."""

    def __init__(self, name, fs, base, kind, args=(), binary=None):
        self.name, self.fs, self.base, self.kind, self.args = name, fs, Path(base), kind, list(args)
        self.binary = binary or SNAPFS
        self.backing = self.base / f"{name}-backing"
        self.mnt = self.base / f"{name}-mnt"
        self.pid = None

    @property
    def workdir(self):
        return self.backing if self.kind == "native" else self.mnt

    def setup(self, template):
        remove_tree(self.backing)
        self.backing.mkdir(parents=True)
        shutil.copyfile(template, self.backing / "bench.db")
        if self.kind == "snapfs":
            self.mnt.mkdir(exist_ok=True)
            pid_file = self.base / f"{self.name}.pid"
            run(self.binary, "mount", str(self.backing), str(self.mnt), "--pid-file", str(pid_file), *self.args)
            self.pid = int(pid_file.read_text())
        elif self.kind == "bindfs":
            self.mnt.mkdir(exist_ok=True)
            run("bindfs", "--no-allow-other", str(self.backing), str(self.mnt))
        elif self.kind == "passthrough_ll":
            self.mnt.mkdir(exist_ok=True)
            run(*passthrough_ll.command(self.binary, self.backing, self.mnt))

    def snapshot_durations(self):
        meta = self.backing / ".snapshots" / ".meta"
        if not meta.exists():
            return []
        return [json.loads(p.read_text()).get("durationMs", 0) for p in meta.glob("*.json")]

    def teardown(self):
        if self.kind != "native":
            run("fusermount3", "-u", str(self.mnt), check=False)
            if self.pid:
                for _ in range(600):
                    if not os.path.exists(f"/proc/{self.pid}") or open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
                    time.sleep(0.05)
                self.pid = None
        remove_tree(self.backing)


def measure(target, template, mode, seconds, max_tx):
    target.setup(template)
    try:
        run("sync")
        out = run(sys.executable, "-c", WORKER, str(target.workdir / "bench.db"), mode, str(seconds), str(max_tx),
                  timeout=seconds + 600).stdout
        r = json.loads(out)
        snaps = target.snapshot_durations()
        count = 0
        if target.kind == "snapfs":
            status = dict(l.split(": ", 1) for l in (target.mnt / ".snapfs-control").read_text().splitlines() if ": " in l)
            count = int(status.get("sqlite-snapshots", "0"))
        return r["tx"] / r["seconds"], r["latencies"], snaps, count
    finally:
        target.teardown()


def pct(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repetitions", type=int)
    p.add_argument("--seconds", type=float)
    p.add_argument("--megabytes", type=int)
    p.add_argument("--modes", default="delete,wal")
    p.add_argument("--uring", action="store_true",
                   help="also each snapfs target with -o uring (requests over io_uring, Linux >= 6.14)")
    p.add_argument("--only", default=None, help="comma-separated target names (after --uring and --baseline add theirs)")
    p.add_argument("--baseline", default=None, metavar="SNAPFS",
                   help="another snapfs binary (an earlier build): each snapfs target also runs with it, as NAME-baseline")
    p.add_argument("--work", default=None, help="scratch directory on the root filesystem (default: a new one in /var/tmp)")
    a = p.parse_args(argv)
    reps = a.repetitions or (1 if a.quick else 3)
    seconds = a.seconds or (3 if a.quick else 10)
    megabytes = a.megabytes or (20 if a.quick else 100)
    if not os.path.exists(SNAPFS):
        raise SystemExit(f"build snapfs first (swift build -c release): {SNAPFS} is missing")
    base = Path(a.work or tempfile.mkdtemp(prefix="snapfs-sqlite-bench-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    template = base / "template.db"
    log(f"filling a {megabytes} MB database")
    make_database(template, megabytes)
    results = {}
    with XFSImage(base, max(1024, megabytes * 12)) as xfs:
        ext4 = base / "ext4"
        ext4.mkdir(exist_ok=True)
        # The hardlink strategy copies the database up at the commit after each snapshot:
        # bounded by keep-last so that the run's disk use stays bounded too.
        targets = [
            Target("native-ext4", "ext4", ext4, "native"),
            Target("snapfs-detect", "ext4", ext4, "snapfs", ["--sqlite", "detect"]),
            Target("snapfs-every-hardlink", "ext4", ext4, "snapfs", ["--strategy", "hardlink", "--keep-last", "20"]),
            Target("snapfs-interval-1s", "ext4", ext4, "snapfs", ["--sqlite-min-interval", "1s"]),
            Target("bindfs", "ext4", ext4, "bindfs"),
            Target("passthrough_ll", "ext4", ext4, "passthrough_ll"),
            Target("native-xfs", "xfs", xfs.dir, "native"),
            Target("snapfs-xfs-detect", "xfs", xfs.dir, "snapfs", ["--sqlite", "detect"]),
            Target("snapfs-every-reflink", "xfs", xfs.dir, "snapfs", ["--strategy", "reflink"]),
            Target("snapfs-xfs-interval-1s", "xfs", xfs.dir, "snapfs", ["--strategy", "reflink", "--sqlite-min-interval", "1s"]),
        ]
        if a.uring:
            targets += [Target(t.name + "-uring", t.fs, t.base, t.kind, t.args + ["-o", "uring"])
                        for t in targets if t.kind == "snapfs"]
        if a.baseline:
            targets += [Target(t.name + "-baseline", t.fs, t.base, t.kind, t.args, binary=a.baseline)
                        for t in targets if t.kind == "snapfs"]
        if a.only:
            wanted = set(a.only.split(","))
            targets = [t for t in targets if t.name in wanted or t.name.startswith("native")]
        for t in targets:
            if t.kind == "passthrough_ll":
                try:
                    t.binary = passthrough_ll.build(base / "passthrough_ll")
                except RuntimeError as e:
                    raise SystemExit(str(e))
        for rep in range(reps):
            for mode in a.modes.split(","):
                for t in targets:
                    log(f"rep {rep + 1}/{reps} {mode:6} {t.name}")
                    rate, lat, snaps, count = measure(t, template, mode, seconds, 1_000_000)
                    entry = results.setdefault((mode, t.name), {"rates": [], "lat": [], "snap_ms": [], "fs": t.fs, "count": 0})
                    entry["count"] += count
                    entry["rates"].append(rate)
                    entry["lat"] += lat
                    entry["snap_ms"] += snaps
    remove_tree(base)

    print(f"\nSQLite commits, {megabytes} MB database, one 200-byte INSERT per transaction, synchronous=FULL, "
          f"median of {reps} × {seconds:g} s\n")
    print("| mode | target | tx/s | × native (same fs) | latency p50 ms | latency p99 ms | snapshots taken | snapshot build p50 / p99 ms (kept ones) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    report = {}
    for (mode, name), e in results.items():
        rate = statistics.median(e["rates"])
        native = statistics.median(results[(mode, "native-" + e["fs"])]["rates"])
        snaps = e["snap_ms"]
        build = f"{pct(snaps, 0.5):.1f} / {pct(snaps, 0.99):.1f}" if snaps else "-"
        print(f"| {mode} | {name} | {rate:,.0f} | {rate / native:.2f} | {pct(e['lat'], 0.5) * 1000:.2f} | "
              f"{pct(e['lat'], 0.99) * 1000:.2f} | {e['count']} | {build} |")
        report[f"{mode}/{name}"] = {"tx_per_s": e["rates"], "p50_ms": pct(e["lat"], 0.5) * 1000,
                                   "p99_ms": pct(e["lat"], 0.99) * 1000, "snapshots": e["count"]}
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sqlite-commits-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
