#!/usr/bin/env python3
"""SQLite commit snapshots: transactions per second with a 100 MB database, one run.

Targets, interleaved in each repetition, on three filesystems: ext4 (the root
filesystem), XFS (an image made with mkfs.xfs -m reflink=1 on a loop device) and btrfs (an
image on a loop device; each backing directory a subvolume, so the strategy is btrfs).
On each: native; snapfs with detection on and no snapshots (--sqlite detect); the real
default mount (no options: its commit policy, sqlite_min_interval=auto); a snapshot at
every commit (--sqlite-min-interval 0: hard links on ext4, reflinks on XFS, btrfs on
btrfs). On ext4 and XFS also --sqlite-min-interval 1s; on ext4 also bindfs and libfuse's
passthrough_ll example (C, built at run time from libfuse3-dev: what a FUSE passthrough
that does nothing but forward costs here).

Workload: python's sqlite3, one 200-byte INSERT per BEGIN/COMMIT (row i holds i),
synchronous=FULL, journal_mode DELETE and WAL, on a database filled to 100 MB first.
Prints tx/s (median of the repetitions), the ratios to native on the same filesystem, and
each transaction's latency (median and 99th percentile): the commit snapshot's cost is the
latency above the detection-only run.

For the targets that take snapshots, a second table: the rate and p99 latency against
detection-only on the same filesystem; the snapshots published (the daemon's count) and
how many commits each covers; how long after the last commit a published snapshot held
the final state (polled every 10 ms); the longest gap between two kept snapshots (the
recovery point should the machine stop); the daemon's peak RSS; and the kept snapshots
checked after the unmount (PRAGMA integrity_check ok, and the rows a committed prefix of
what was inserted): the newest and others spread over the rest, --verify N in all.

    python3 bench/sqlite_commits.py                 # 3 repetitions of 10 s per target and mode
    python3 bench/sqlite_commits.py --quick         # 1 repetition of 3 s, 20 MB database
    python3 bench/sqlite_commits.py --only snapfs-default,snapfs-detect   # (natives always run)
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

from lib import passthrough_ll
from lib.databases import make_database, row_value
from lib.harness import DEFAULT_SNAPFS as SNAPFS, REPO
from lib.stats import pct
from lib.trees import remove_tree

from Integration.lib.loopfs import LoopFS, LoopFSError
from Integration.lib.mount import Mount, peak_rss_kib, wait_gone

# Row i (from 1) holds row_value(i): a snapshot's rows can be checked to be a prefix of
# what was committed. The connection stays open until the caller says (a line on stdin),
# so the final state is reached with the log still there, as a running application has it.
WORKER = r"""
import json, os, sqlite3, sys, time
db, mode, seconds, max_tx = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
def row_value(i):
    return f"{i:09d}".ljust(200, "x")
c = sqlite3.connect(db, isolation_level=None)
assert c.execute("PRAGMA journal_mode=" + mode).fetchone()[0] == mode
c.execute("PRAGMA synchronous=FULL")
n = 0
for _ in range(5):
    n += 1
    c.execute("BEGIN"); c.execute("INSERT INTO t(id, v) VALUES (?, ?)", (n, row_value(n))); c.execute("COMMIT")
lat = []
start = time.perf_counter()
while time.perf_counter() - start < seconds and len(lat) < max_tx:
    t0 = time.perf_counter()
    n += 1
    c.execute("BEGIN"); c.execute("INSERT INTO t(id, v) VALUES (?, ?)", (n, row_value(n))); c.execute("COMMIT")
    lat.append(time.perf_counter() - t0)
elapsed = time.perf_counter() - start
print(json.dumps({"tx": len(lat), "seconds": elapsed, "latencies": lat, "rows": n, "last_commit": time.time()}), flush=True)
sys.stdin.readline()
c.close()
"""

def run(*cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed: {r.stderr.strip()}")
    return r


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class LoopImage:
    """A file system of `kind` (xfs with reflinks, or btrfs) on a loop device, mounted at
    ROOT/KIND while in use (Integration/lib's LoopFS); one that cannot be made stops the run."""

    def __init__(self, root, megabytes, kind):
        self.fs = LoopFS(root, kind, megabytes << 20, name=kind)
        self.dir = self.fs.dir

    def __enter__(self):
        try:
            self.fs.open()
        except LoopFSError as e:
            raise SystemExit(str(e))
        return self

    def __exit__(self, *exc):
        self.fs.close()


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

    @property
    def snapshots(self):
        """Whether this target takes commit snapshots."""
        return self.kind == "snapfs" and "detect" not in self.args

    def setup(self, template):
        remove_tree(self.backing)
        if self.fs == "btrfs":
            # A subvolume: the root of one is what the btrfs strategy snapshots.
            run("btrfs", "subvolume", "create", str(self.backing))
        else:
            self.backing.mkdir(parents=True)
        shutil.copyfile(template, self.backing / "bench.db")
        if self.kind == "snapfs":
            self.mnt.mkdir(exist_ok=True)
            mount = Mount(self.backing, self.mnt, extra_args=self.args, binary=self.binary,
                          pid_file=self.base / f"{self.name}.pid", log_file=self.base / f"{self.name}.log")
            r = mount.launch()
            if r.returncode != 0:
                raise SystemExit(f"{' '.join(mount.command())} failed: {r.stderr.strip()}")
            self.pid = mount.pid
        elif self.kind == "bindfs":
            self.mnt.mkdir(exist_ok=True)
            run("bindfs", "--no-allow-other", str(self.backing), str(self.mnt))
        elif self.kind == "passthrough_ll":
            self.mnt.mkdir(exist_ok=True)
            run(*passthrough_ll.command(self.binary, self.backing, self.mnt))

    def metadata(self):
        """The kept snapshots' metadata, oldest first."""
        meta = self.backing / ".snapshots" / ".meta"
        if not meta.exists():
            return []
        return sorted((json.loads(p.read_text()) for p in meta.glob("*.json")), key=lambda d: d["name"])

    def snapshot_durations(self):
        return [d.get("durationMs", 0) for d in self.metadata()]

    def status(self):
        text = (self.mnt / ".snapfs-control").read_text()
        return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)

    def peak_rss_mb(self):
        """The daemon's peak resident set (VmHWM), MB."""
        kib = peak_rss_kib(self.pid)
        return float("nan") if kib is None else kib / 1024

    def unmount(self):
        if self.kind != "native":
            run("fusermount3", "-u", str(self.mnt), check=False)
            if self.pid:
                wait_gone(self.pid, timeout=30)
                self.pid = None

    def teardown(self):
        self.unmount()
        remove_tree(self.backing)


def rows_of(path):
    """(integrity_check, rows of t as (id, v), oldest first) of a database, opened read-only."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        check = c.execute("PRAGMA integrity_check").fetchone()[0]
        return check, c.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    finally:
        c.close()


def holds_rows(path, rows):
    """Whether the database at `path` (read-only) has `rows` rows in t; False if unreadable."""
    try:
        c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return c.execute("SELECT count(*) FROM t").fetchone()[0] == rows
        finally:
            c.close()
    except sqlite3.Error:
        return False


def verify(target, inserted, sample):
    """Checks the kept commit snapshots (the newest and others spread over the rest, `sample`
    in all): integrity_check ok, and rows 1..k exactly as inserted, k <= `inserted`.
    Returns (checked, good, longest gap between consecutive kept snapshots in ms)."""
    kept = [d for d in target.metadata() if d.get("sqlite")]
    if not kept:
        return 0, 0, float("nan")
    times = [time.mktime(time.strptime(d["name"][:15], "%Y%m%dT%H%M%S")) + int(d["name"][16:19]) / 1000 for d in kept]
    gap = max((b - a for a, b in zip(times, times[1:])), default=float("nan")) * 1000
    picks = {len(kept) - 1}
    if sample > 1 and len(kept) > 1:
        step = (len(kept) - 1) / min(sample - 1, len(kept) - 1)
        picks |= {round(i * step) for i in range(min(sample - 1, len(kept) - 1))}
    good = 0
    for i in sorted(picks):
        d = kept[i]
        check, rows = rows_of(target.backing / ".snapshots" / d["name"] / d["sqlite"]["database"])
        prefix = len(rows) <= inserted and all(r == (j, row_value(j)) for j, r in enumerate(rows, start=1))
        good += check == "ok" and prefix
        if check != "ok" or not prefix:
            log(f"  snapshot {d['name']}: integrity_check {check[:60]}, {'a committed prefix' if prefix else 'NOT a committed prefix'}")
    return len(picks), good, gap


def measure(target, template, mode, seconds, max_tx, sample):
    """One run of the workload on `target`. Returns a dict of what was measured."""
    target.setup(template)
    try:
        run("sync")
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(target.workdir / "bench.db"), mode, str(seconds), str(max_tx)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            r = json.loads(worker.stdout.readline())
            out = {"rate": r["tx"] / r["seconds"], "lat": r["latencies"], "count": 0}
            if target.snapshots:
                # How long after the last commit a published snapshot holds the final state.
                deadline = time.time() + 60
                final = float("nan")
                while time.time() < deadline:
                    newest = target.status().get("newest", "-")
                    if newest != "-" and holds_rows(target.backing / ".snapshots" / newest / "bench.db", r["rows"]):
                        final = (time.time() - r["last_commit"]) * 1000
                        break
                    time.sleep(0.01)
                out["final_ms"] = final
        finally:
            worker.stdin.close()
            worker.wait(timeout=120)
        if target.kind == "snapfs":
            st = target.status()
            out.update(count=int(st.get("sqlite-snapshots", "0")), commits=int(st.get("sqlite-commits", "0")),
                       failures=int(st.get("sqlite-failures", "0")), rss_mb=target.peak_rss_mb())
        target.unmount()
        out["snap_ms"] = target.snapshot_durations()
        if target.snapshots:
            out["checked"], out["good"], out["gap_ms"] = verify(target, r["rows"], sample)
        return out
    finally:
        target.teardown()


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
    p.add_argument("--verify", type=int, default=5, metavar="N",
                   help="kept commit snapshots checked after each run: the newest and N-1 spread over the rest (default 5)")
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
    try:
        with LoopImage(base, max(1024, megabytes * 12), "xfs") as xfs, LoopImage(base, max(1024, megabytes * 12), "btrfs") as btrfs:
            ext4 = base / "ext4"
            ext4.mkdir(exist_ok=True)
            # The hardlink strategy copies the database up at the commit after each snapshot:
            # bounded by keep-last so that the run's disk use stays bounded too.
            targets = [
                Target("native-ext4", "ext4", ext4, "native"),
                Target("snapfs-detect", "ext4", ext4, "snapfs", ["--sqlite", "detect"]),
                Target("snapfs-default", "ext4", ext4, "snapfs"),
                Target("snapfs-every-hardlink", "ext4", ext4, "snapfs",
                       ["--strategy", "hardlink", "--sqlite-min-interval", "0", "--keep-last", "20"]),
                Target("snapfs-interval-1s", "ext4", ext4, "snapfs", ["--sqlite-min-interval", "1s"]),
                Target("bindfs", "ext4", ext4, "bindfs"),
                Target("passthrough_ll", "ext4", ext4, "passthrough_ll"),
                Target("native-xfs", "xfs", xfs.dir, "native"),
                Target("snapfs-xfs-detect", "xfs", xfs.dir, "snapfs", ["--sqlite", "detect"]),
                Target("snapfs-xfs-default", "xfs", xfs.dir, "snapfs"),
                Target("snapfs-every-reflink", "xfs", xfs.dir, "snapfs", ["--strategy", "reflink", "--sqlite-min-interval", "0"]),
                Target("snapfs-xfs-interval-1s", "xfs", xfs.dir, "snapfs", ["--strategy", "reflink", "--sqlite-min-interval", "1s"]),
                Target("native-btrfs", "btrfs", btrfs.dir, "native"),
                Target("snapfs-btrfs-detect", "btrfs", btrfs.dir, "snapfs", ["--sqlite", "detect"]),
                Target("snapfs-btrfs-default", "btrfs", btrfs.dir, "snapfs"),
                Target("snapfs-every-btrfs", "btrfs", btrfs.dir, "snapfs", ["--strategy", "btrfs", "--sqlite-min-interval", "0"]),
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
                        m = measure(t, template, mode, seconds, 1_000_000, a.verify)
                        extra = (f", {m['count']} snapshots of {m['commits']} commits, final state after {m['final_ms']:.0f} ms, "
                                 f"{m['good']}/{m['checked']} checked ok" if t.snapshots else "")
                        log(f"  {m['rate']:,.0f} tx/s, p99 {pct(m['lat'], 0.99) * 1000:.2f} ms{extra}")
                        entry = results.setdefault((mode, t.name), {"rates": [], "lat": [], "snap_ms": [], "fs": t.fs, "count": 0,
                                                                    "commits": 0, "failures": 0, "final_ms": [], "gap_ms": [],
                                                                    "checked": 0, "good": 0, "rss_mb": [], "snapshots": t.snapshots})
                        entry["count"] += m["count"]
                        entry["rates"].append(m["rate"])
                        entry["lat"] += m["lat"]
                        entry["snap_ms"] += m["snap_ms"]
                        for key in ("commits", "failures", "checked", "good"):
                            entry[key] += m.get(key, 0)
                        for key in ("final_ms", "gap_ms", "rss_mb"):
                            if key in m:
                                entry[key].append(m[key])
    finally:
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
                                   "p99_ms": pct(e["lat"], 0.99) * 1000, "snapshots": e["count"],
                                   "commits": e["commits"], "failures": e["failures"], "final_state_ms": e["final_ms"],
                                   "longest_gap_ms": e["gap_ms"], "checked": e["checked"], "good": e["good"],
                                   "peak_rss_mb": e["rss_mb"]}

    detect = {"ext4": "snapfs-detect", "xfs": "snapfs-xfs-detect", "btrfs": "snapfs-btrfs-detect"}
    print("\nThe commit policies against detection only on the same filesystem. Published: the daemon's count of "
          "commit snapshots; checked: kept snapshots with integrity_check ok and a committed prefix, of those "
          "checked; final state: ms from the last commit until a published snapshot held it (median, max); "
          "longest gap: between two kept snapshots (ms, max over the runs); RSS: the daemon's peak, MB.\n")
    print("| mode | target | tx/s | × detect | p50 ms | p99 ms | p99 × detect | published | commits per snapshot | "
          "checked | final state ms | longest gap ms | RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (mode, name), e in results.items():
        if not e["snapshots"]:
            continue
        rate = statistics.median(e["rates"])
        base_entry = results.get((mode, detect[e["fs"]]))
        ratio = rate / statistics.median(base_entry["rates"]) if base_entry else float("nan")
        p99_ratio = pct(e["lat"], 0.99) / pct(base_entry["lat"], 0.99) if base_entry else float("nan")
        per = e["commits"] / e["count"] if e["count"] else float("nan")
        final = f"{statistics.median(e['final_ms']):.0f}, {max(e['final_ms']):.0f}" if e["final_ms"] else "-"
        gap = f"{max(e['gap_ms']):.0f}" if e["gap_ms"] else "-"
        rss = f"{max(e['rss_mb']):.0f}" if e["rss_mb"] else "-"
        print(f"| {mode} | {name} | {rate:,.0f} | {ratio:.2f} | {pct(e['lat'], 0.5) * 1000:.2f} | "
              f"{pct(e['lat'], 0.99) * 1000:.2f} | {p99_ratio:.2f} | {e['count']} | {per:.1f} | {e['good']}/{e['checked']} | "
              f"{final} | {gap} | {rss} |")
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sqlite-commits-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
