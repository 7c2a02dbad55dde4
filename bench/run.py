#!/usr/bin/env python3
"""snapfs benchmark: the same workloads on native ext4, on snapfs and on the FUSE
passthrough peers (bindfs, libfuse's passthrough_ll with and without the kernel's
write-back cache).

    python3 bench/run.py                 # full run: 1 GiB files, 3 repetitions
    python3 bench/run.py --quick         # smoke run, about a minute
    python3 bench/run.py --only seqwrite-1m,smallfiles --targets native,snapfs
    python3 bench/run.py --targets native,snapfs,snapfs-alt --only sqlite-mixed   # two snapfs modes
    python3 bench/run.py --list          # the workloads and what they measure
    python3 bench/run.py --snapshots     # runs bench/snapshot_time.py (snapshot time vs cp -al / cp --reflink / btrfs snapshot)

Must run as root (it drops the page cache and mounts FUSE file systems). Needs fio,
a C compiler (for bench/workers/smallfiles.c and libfuse's passthrough_ll example, built into a
scratch dir at run time from libfuse3-dev's copy), bindfs for the bindfs target and the
snapfs binary (SNAPFS_BIN, default .build/release/snapfs) for the snapfs targets.

Targets (--targets; the default is native, snapfs, bindfs, passthrough_ll,
passthrough_ll-wb, so every run measures snapfs against every FUSE passthrough peer):

    native             a plain directory on the backing file system
    snapfs             snapfs mount --sqlite detect (--snapfs-args)
    snapfs-alt         the same with --alt-args appended (default -o no_writeback_cache)
    snapfs-uring       the same with -o uring appended
    snapfs-base        another build (--baseline-bin) with --snapfs-args
    bindfs             Debian's bindfs (libfuse 2)
    passthrough_ll     libfuse's example, -o cache=always
    passthrough_ll-wb  the same with -o writeback (the kernel's write-back cache)
    passthrough_ll-wb-dp  the same with -o default_permissions: not a peer, it shows what
                       the kernel's permission checks (which snapfs always has) cost

Every target gets fresh directories on the same file system under
/var/tmp/snapfs-bench/ (--work-dir): `native` is a plain directory, the others are FUSE
mounts over their own backing directory. Each repetition mounts every FUSE target
afresh, runs every workload on every target in turn (native, snapfs, bindfs, native,
snapfs, ...: machine drift hits all targets alike), records each daemon's peak RSS
(VmHWM) just before unmounting, and removes its directories. Before every measurement
the harness runs sync and drops the page cache, dentries and inodes (echo 3 >
/proc/sys/vm/drop_caches), so each target starts cold and no target pays for another's
writeback. The report gives the median over the repetitions, each snapfs target against
native and against the best peer, the speed targets as pass/fail, and for the
snapfs targets the requests per operation: each workload reads the daemon's request
counters (the `requests:` line of `snapfs status`) around its timed part.

Results go to bench/out/results-<timestamp>.json and .md (--json PATH to choose). The
targets are in lib/targets.py, the workers the workloads run in child processes in workers/;
bench/README.md describes the method.

Adding a workload: subclass Workload, give it a name, a description and its metrics
(Metric(name, unit, higher_is_better, per)), implement prepare() (untimed set-up, runs
before the cache drop) and run() (returns {metric name: value}; on a snapfs target,
ctx.control is its control file, and run() may call ctx.note_requests(metric, ops,
counts) with the requests the metric's ops made, see lib/request_counts.py), optionally
cleanup(), and decorate the class with @register. Workloads run in registration
order; a workload may rely on files an earlier one left (and must create them in
prepare() if they are missing, so that --only works).
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

from lib import request_counts
from lib.harness import (BENCH, DEFAULT_SNAPFS, DEFAULT_WORK, MiB, BenchError, Interrupted, announce_run,
                         finish_run, ignore_signals, human_size, log, machine_info, parse_size, remove_tree,
                         report_header, start_run)
from lib.stats import fmt, ratio, spread
from lib.targets import (BindfsTarget, NativeTarget, PassthroughLLPermissionsTarget, PassthroughLLTarget,
                         PassthroughLLWritebackTarget,
                         SnapfsAltTarget, SnapfsBaseTarget, SnapfsTarget, SnapfsUringTarget)
from workers import sqlite_mixed

ALL_TARGETS = ["native", "snapfs", "snapfs-alt", "snapfs-uring", "snapfs-base", "bindfs", "passthrough_ll",
               "passthrough_ll-wb", "passthrough_ll-wb-dp"]
DEFAULT_TARGETS = ["native", "snapfs", "bindfs", "passthrough_ll", "passthrough_ll-wb"]
SNAPFS_TARGETS = ["snapfs", "snapfs-alt", "snapfs-uring", "snapfs-base"]
# The FUSE passthroughs snapfs must be ahead of ("≥ 1.0 × the best peer" passes at 0.95 ×).
PEERS = ["bindfs", "passthrough_ll", "passthrough_ll-wb"]


# ---------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------

class Metric:
    def __init__(self, name, unit, higher_is_better=True, per=None):
        """per: what requests are counted per (write(), file, transaction ...)."""
        self.name, self.unit, self.higher_is_better, self.per = name, unit, higher_is_better, per


class Workload:
    name = ""
    description = ""
    metrics = []
    needs_fio = False

    def prepare(self, ctx, d):
        pass

    def run(self, ctx, d):
        raise NotImplementedError

    def cleanup(self, ctx, d):
        pass


WORKLOADS = []


def register(cls):
    WORKLOADS.append(cls())
    return cls


class SeqWrite(Workload):
    needs_fio = True
    bs = "1M"
    keep = False

    @property
    def metrics(self):
        return [Metric(self.name, "MiB/s", per="write()")]

    def file(self, d):
        return d / ("seq.dat" if self.keep else f"seq-{self.bs}.dat")

    def prepare(self, ctx, d):
        self.file(d).unlink(missing_ok=True)

    def run(self, ctx, d):
        job = ctx.counted(self.name, lambda: ctx.fio(self.name, self.file(d), "write", self.bs, ctx.cfg.seq_size,
                                                     ["--end_fsync=1"]),
                          lambda job: job["write"]["total_ios"])
        return {self.name: job["write"]["bw_bytes"] / MiB}

    def cleanup(self, ctx, d):
        if not self.keep:
            self.file(d).unlink(missing_ok=True)


@register
class SeqWrite1M(SeqWrite):
    name = "seqwrite-1m"
    bs = "1M"
    keep = True  # the sequential reads read this file
    description = "fio sequential write of a new SEQ_SIZE file, 1 MiB requests, psync, fsync at the end (included in the time)"


@register
class SeqWrite4K(SeqWrite):
    name = "seqwrite-4k"
    bs = "4k"
    description = "same with 4 KiB requests"


class SeqRead(Workload):
    needs_fio = True
    bs = "1M"

    @property
    def metrics(self):
        return [Metric(self.name, "MiB/s", per="read()")]

    def prepare(self, ctx, d):
        ctx.ensure_file(d / "seq.dat", ctx.cfg.seq_size)

    def run(self, ctx, d):
        job = ctx.counted(self.name, lambda: ctx.fio(self.name, d / "seq.dat", "read", self.bs, ctx.cfg.seq_size),
                          lambda job: job["read"]["total_ios"])
        return {self.name: job["read"]["bw_bytes"] / MiB}


@register
class SeqRead1M(SeqRead):
    name = "seqread-1m"
    bs = "1M"
    description = "fio sequential read of the SEQ_SIZE file, 1 MiB requests, psync, page cache dropped first (cold)"


@register
class SeqRead4K(SeqRead):
    name = "seqread-4k"
    bs = "4k"
    description = "same with 4 KiB requests"


class RandIO(Workload):
    needs_fio = True
    rw = "randread"

    @property
    def metrics(self):
        return [Metric(self.name, "IOPS", per="read()" if self.rw == "randread" else "write()")]

    def prepare(self, ctx, d):
        ctx.ensure_file(d / "rand.dat", ctx.cfg.rand_size)

    def run(self, ctx, d):
        extra = [f"--runtime={ctx.cfg.rand_cap}"]
        if self.rw == "randwrite":
            extra.append("--end_fsync=1")
        side_name = "read" if self.rw == "randread" else "write"
        job = ctx.counted(self.name, lambda: ctx.fio(self.name, d / "rand.dat", self.rw, "4k", ctx.cfg.rand_size, extra),
                          lambda job: job[side_name]["total_ios"])
        return {self.name: job[side_name]["iops"]}


@register
class RandRead4K(RandIO):
    name = "randread-4k"
    rw = "randread"
    description = ("fio random 4 KiB reads of a RAND_SIZE file, psync, every block read once "
                   "(fio's random map, fixed seed), page cache dropped first (cold), capped at RAND_CAP s")


@register
class RandWrite4K(RandIO):
    name = "randwrite-4k"
    rw = "randwrite"
    description = ("fio random 4 KiB overwrites of the RAND_SIZE file, psync, every block written "
                   "once, fsync at the end (included), capped at RAND_CAP s")


@register
class SmallFiles(Workload):
    name = "smallfiles"
    description = ("C helper (bench/workers/smallfiles.c): create+write 4 KiB+close SMALL_FILES files "
                   "spread over SMALL_DIRS subdirectories; then stat() them all STAT_PASSES times "
                   "(warm: right after creation, no cache drop); then unlink them all. "
                   "sync between phases, untimed (the requests of each phase are counted after its sync)")
    metrics = [Metric("smallfiles-create", "files/s", per="file"), Metric("smallfiles-stat", "files/s", per="stat()"),
               Metric("smallfiles-delete", "files/s", per="file")]

    def prepare(self, ctx, d):
        ctx.helper("smallfiles")
        sd = d / "small"
        if sd.exists():
            shutil.rmtree(sd)
        sd.mkdir()

    def run(self, ctx, d):
        cfg = ctx.cfg
        out = ctx.run([str(ctx.helper("smallfiles")), str(d / "small"), str(cfg.small_files),
                       str(cfg.small_dirs), str(cfg.stat_passes), str(ctx.control or "-")], 900, "smallfiles")
        r = json.loads(out)
        n = r["files"]
        seen = r.get("requests")
        if seen:
            # Read twice before the create phase, then after each phase (and its sync).
            first, second, *ends = seen
            ops = {"smallfiles-create": n, "smallfiles-stat": n * r["stat_passes"], "smallfiles-delete": n}
            for metric, before, end in zip(ops, [second] + ends, ends):
                ctx.note_requests(metric, ops[metric], request_counts.between(first, second, before, end))
        return {"smallfiles-create": n / r["create_s"],
                "smallfiles-stat": n * r["stat_passes"] / r["stat_s"],
                "smallfiles-delete": n / r["delete_s"]}

    def cleanup(self, ctx, d):
        shutil.rmtree(d / "small", ignore_errors=True)


class SQLiteTx(Workload):
    mode = "delete"

    @property
    def metrics(self):
        return [Metric(self.name, "tx/s", per="transaction")]

    def db(self, d):
        return d / f"bench-{self.mode}.db"

    def prepare(self, ctx, d):
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(str(self.db(d)) + suffix).unlink(missing_ok=True)

    def run(self, ctx, d):
        cfg = ctx.cfg
        out = ctx.run([sys.executable, str(BENCH / "workers" / "sqlite_tx.py"),
                       str(self.db(d)), self.mode, str(cfg.sqlite_tx), str(cfg.sqlite_seconds),
                       str(ctx.control or "-")],
                      cfg.sqlite_seconds + 300, self.name)
        r = json.loads(out)
        ctx.note_requests(self.name, r["tx"], r.get("requests"))
        return {self.name: r["tx"] / r["seconds"]}

    cleanup = prepare


@register
class SQLiteDelete(SQLiteTx):
    name = "sqlite-delete"
    mode = "delete"
    description = ("python sqlite3: one 200-byte INSERT per BEGIN/COMMIT transaction, "
                   "journal_mode=DELETE, synchronous=FULL; SQLITE_TX transactions or SQLITE_SECONDS s, "
                   "whichever comes first (after 10 untimed warm-up transactions)")


@register
class SQLiteWAL(SQLiteTx):
    name = "sqlite-wal"
    mode = "wal"
    description = "same in journal_mode=WAL (synchronous=FULL, default auto-checkpoint)"


@register
class SQLiteMixed(Workload):
    name = "sqlite-mixed"
    description = ("python sqlite3, a mixed application workload (bench/workers/sqlite_mixed.py): tables "
                   "users(id, email UNIQUE, name, score) and events(id, user_id indexed, kind, payload, ts indexed), "
                   f"seeded untimed with {sqlite_mixed.USERS} users and {sqlite_mixed.EVENTS} events; then one "
                   "statement per transaction (autocommit), a fixed-seed mix: "
                   + ", ".join(f"{op} {w}%" for op, w in sqlite_mixed.MIX)
                   + f"; {sqlite_mixed.WARMUP} untimed, then MIXED_SECONDS s timed; checks row counts and the sum "
                   "of scores against its own books, and PRAGMA integrity_check. One metric per --mixed-settings "
                   "entry (JOURNAL-SYNCHRONOUS; the page cache is dropped before each)")
    settings = ["wal-normal"]   # set from --mixed-settings

    @property
    def metrics(self):
        return [Metric(f"sqlite-mixed-{s}", "tx/s", per="transaction") for s in self.settings]

    def dbs(self, d):
        return [d / f"mixed-{s}.db" for s in self.settings]

    def prepare(self, ctx, d):
        for db in self.dbs(d):
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)

    def run(self, ctx, d):
        cfg = ctx.cfg
        out = {}
        for i, (setting, db) in enumerate(zip(self.settings, self.dbs(d))):
            if i:
                ctx.drop_caches()
            metric = f"sqlite-mixed-{setting}"
            text = ctx.run([sys.executable, str(BENCH / "workers" / "sqlite_mixed.py"), str(db), setting,
                            str(cfg.mixed_seconds), str(ctx.control or "-")],
                           cfg.mixed_seconds + 300, metric)
            r = json.loads(text)
            ctx.note_requests(metric, r["tx"], r.get("requests"))
            out[metric] = r["tx"] / r["seconds"]
        return out

    cleanup = prepare


@register
class LogAppend(Workload):
    name = "log-append"
    description = ("APPEND_COUNT appends of 128 bytes to one log file opened with O_APPEND "
                   "(the pattern of loggers and databases' logs), fsync at the end (included)")
    metrics = [Metric("log-append", "appends/s", per="append")]

    def log(self, d):
        return d / "app.log"

    def prepare(self, ctx, d):
        self.log(d).unlink(missing_ok=True)

    def run(self, ctx, d):
        out = ctx.run([sys.executable, str(BENCH / "workers" / "log_append.py"),
                       str(self.log(d)), str(ctx.cfg.append_count), str(ctx.control or "-")], 900, self.name)
        r = json.loads(out)
        ctx.note_requests(self.name, r["appends"], r.get("requests"))
        return {self.name: r["appends"] / r["seconds"]}

    cleanup = prepare


# ---------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------

TARGET_COMMANDS = {
    "native": "a plain directory on the backing file system",
    "bindfs": "`bindfs BACKING MNT` (Debian's bindfs on libfuse 2)",
    "passthrough_ll": "`passthrough_ll -o source=BACKING,cache=always MNT` (libfuse 3's example, built from libfuse3-dev)",
    "passthrough_ll-wb": "`passthrough_ll -o source=BACKING,cache=always,writeback MNT` (the same with the kernel's write-back cache)",
    "passthrough_ll-wb-dp": "`passthrough_ll -o source=BACKING,cache=always,writeback,default_permissions MNT` (not a peer: passthrough_ll-wb with the kernel checking permissions, as snapfs always has it)",
}


def snapfs_arguments(cfg, t):
    """The arguments a snapfs target adds to `snapfs mount BACKING MNT`."""
    args = list(cfg["snapfs_args"])
    if t == "snapfs-alt":
        args += cfg.get("alt_args", [])
    elif t == "snapfs-uring":
        args += ["-o", "uring"]
    return args


def label(cfg, t):
    """A target's name in the tables; snapfs-alt shows what it adds."""
    if t == "snapfs-alt":
        return f"snapfs-alt (`{shlex.join(cfg.get('alt_args', []))}`)"
    return t


def number(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def goodness(value, reference, higher_is_better):
    """value against reference as a ratio where above 1 is better, or None."""
    a, b = number(value), number(reference)
    if a is None or b is None or not a or not b:
        return None
    return a / b if higher_is_better else b / a


def best_peer(med, targets, higher_is_better):
    """(name, median) of the best FUSE passthrough peer in the run, or (None, None)."""
    found = [(t, med[t]) for t in PEERS if t in targets and number(med.get(t)) is not None]
    if not found:
        return None, None
    return (max if higher_is_better else min)(found, key=lambda x: x[1])


# Issue 20's targets for the snapfs targets, from the medians: (what, metrics, against, at least).
TARGET_RULES = [
    ("≥ 0.8 × native", ["seqwrite-4k", "log-append"], "native", 0.8),
    ("≥ 0.9 × native", ["seqread-1m", "seqread-4k", "randread-4k"], "native", 0.9),
    ("≥ 0.25 × native", ["sqlite-mixed-wal-normal"], "native", 0.25),
    ("≥ 1.0 × the best peer (passes at 0.95)", None, "best peer", 0.95),
]


def render(report):
    cfg = report["config"]
    targets = cfg["targets"]
    snapfs_targets = [t for t in targets if t in SNAPFS_TARGETS]
    lines = report_header("snapfs benchmark", report)
    lines += [f"Parameters: sequential file {human_size(cfg['seq_size'])}, random file "
              f"{human_size(cfg['rand_size'])} (cap {cfg['rand_cap']} s), {cfg['small_files']} small files "
              f"in {cfg['small_dirs']} dirs ({cfg['stat_passes']} stat passes), SQLite up to "
              f"{cfg['sqlite_tx']} tx / {cfg['sqlite_seconds']} s per mode, sqlite-mixed "
              f"{', '.join(cfg.get('mixed_settings', []))} for {cfg.get('mixed_seconds')} s each, {cfg['runs']} run(s). "
              f"Page cache dropped before every measurement: {'yes' if report['dropped_caches'] else 'NO (not root)'}.",
              ""]
    lines += ["Targets:", ""]
    for t in targets:
        if t in SNAPFS_TARGETS:
            binary = "the --baseline-bin build: " if t == "snapfs-base" else ""
            lines.append(f"- {t}: {binary}`snapfs mount BACKING MNT {shlex.join(snapfs_arguments(cfg, t))}`")
        else:
            lines.append(f"- {t}: {TARGET_COMMANDS.get(t, t)}")
    lines.append("")

    lines += [f"## Results (median of {cfg['runs']} run(s); ↑ = higher is better)", ""]
    # Ratio columns: (header, function of the medians and the metric).
    columns = []
    for t in snapfs_targets:
        if t != "snapfs-base" and "native" in targets:
            columns.append((f"{t}/native", lambda med, m, t=t: ratio(med.get(t), med.get("native"))))
    if "snapfs" in targets:
        for peer in ("bindfs", "passthrough_ll"):
            if peer in targets:
                columns.append((f"snapfs/{peer}", lambda med, m, p=peer: ratio(med.get("snapfs"), med.get(p))))
    peers = [t for t in PEERS if t in targets]
    if peers and snapfs_targets:
        columns.append(("best peer", lambda med, m: best_peer(med, targets, m["higher_is_better"])[0] or "—"))
        for t in snapfs_targets:
            if t != "snapfs-base":
                columns.append((f"{t}/best peer",
                                lambda med, m, t=t: ratio(med.get(t), best_peer(med, targets, m["higher_is_better"])[1])))
    if "snapfs" in targets and "snapfs-uring" in targets:
        columns.append(("snapfs-uring/snapfs", lambda med, m: ratio(med.get("snapfs-uring"), med.get("snapfs"))))
    if "snapfs" in targets and "snapfs-base" in targets:
        columns.append(("snapfs/snapfs-base", lambda med, m: ratio(med.get("snapfs"), med.get("snapfs-base"))))
    head = ["workload", "unit"] + [label(cfg, t) for t in targets] + [h for h, _ in columns]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    for m in report["metrics"]:
        med = report["medians"].get(m["name"], {})
        row = [m["name"], m["unit"] + (" ↑" if m["higher_is_better"] else " ↓")]
        row += [fmt(med.get(t)) for t in targets]
        row += [f(med, m) for _, f in columns]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += render_targets(report, snapfs_targets)
    lines += render_requests(report, snapfs_targets)

    fuse = [t for t in targets if t != "native"]
    if fuse:
        lines += ["## Daemon peak RSS (VmHWM just before unmount, per run)", ""]
        lines.append("| target | " + " | ".join(f"run {i + 1}" for i in range(cfg["runs"])) + " |")
        lines.append("|---|" + "---:|" * cfg["runs"])
        for t in fuse:
            cells = []
            for i in range(cfg["runs"]):
                rec = next((r for r in report["mounts"] if r["target"] == t and r["run"] == i + 1), None)
                if rec is None:
                    cells.append("—")
                elif rec.get("setup_failed"):
                    cells.append("mount failed")
                elif rec.get("peak_rss_kib") is not None:
                    cells.append(f"{rec['peak_rss_kib'] / 1024:.1f} MiB")
                else:
                    cells.append("?")
            lines.append(f"| {label(cfg, t)} | " + " | ".join(cells) + " |")
        lines.append("")

    lines += ["## Every run", "", "| workload | target | " +
              " | ".join(f"run {i + 1}" for i in range(cfg["runs"])) + " | spread |",
              "|---|---|" + "---:|" * (cfg["runs"] + 1)]
    for m in report["metrics"]:
        for t in targets:
            vals = report["values"].get(m["name"], {}).get(t, [])
            cells = [fmt(v) for v in vals] + ["—"] * (cfg["runs"] - len(vals))
            nums = [v for v in vals if isinstance(v, (int, float))]
            lines.append(f"| {m['name']} | {t} | " + " | ".join(cells) + f" | {spread(nums)} |")
    lines.append("")
    lines += ["Spread = (max − min) / median over the runs.", ""]

    lines += ["## Workloads", ""] + [f"- **{w['name']}**: {w['description']}" for w in report["workloads"]]
    lines.append("")
    if report["errors"]:
        lines += ["## Errors", ""] + [f"- {e}" for e in report["errors"]] + [""]
    lines.append(f"Total time: {report['elapsed_s'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def render_targets(report, snapfs_targets):
    """Issue 20's targets, pass or fail from the medians, for each snapfs target."""
    cfg = report["config"]
    targets = cfg["targets"]
    subjects = [t for t in snapfs_targets if t != "snapfs-base"]
    if not subjects:
        return []
    rows = []
    for what, names, against, least in TARGET_RULES:
        for m in report["metrics"]:
            if names is not None and m["name"] not in names:
                continue
            med = report["medians"].get(m["name"], {})
            if against == "native":
                if "native" not in targets:
                    continue
                reference = med.get("native")
            else:
                peer, reference = best_peer(med, targets, m["higher_is_better"])
                if peer is None:
                    continue
            cells = []
            for t in subjects:
                g = goodness(med.get(t), reference, m["higher_is_better"])
                cells.append("—" if g is None else f"{g:.2f} {'pass' if g >= least else '**fail**'}")
            rows.append((what, m["name"], cells))
    if not rows:
        return []
    lines = ["## Targets (from the medians above)", ""]
    if cfg["runs"] < 5:
        lines += [f"Only {cfg['runs']} run(s): indicative; a pass or fail wants at least 5 interleaved runs.", ""]
    lines.append("| target | workload | " + " | ".join(label(cfg, t) for t in subjects) + " |")
    lines.append("|---|---|" + "---:|" * len(subjects))
    for what, name, cells in rows:
        lines.append(f"| {what} | {name} | " + " | ".join(cells) + " |")
    met = [sum(1 for _, _, cells in rows if cells[i].endswith(" pass")) for i in range(len(subjects))]
    lines.append("")
    lines.append("Met: " + ", ".join(f"{label(cfg, t)} {met[i]} of {len(rows)}" for i, t in enumerate(subjects)) + ".")
    lines.append("")
    return lines


def requests_per_op(report, metric, target):
    """Median over the runs of {kind: requests per operation}, or None."""
    runs = []
    for sample in report["samples"]:
        if sample["target"] == target and metric in sample.get("requests", {}):
            r = sample["requests"][metric]
            runs.append({k: v / r["ops"] for k, v in r["counts"].items()})
    if not runs:
        return None
    kinds = set().union(*runs)
    return {k: statistics.median([r.get(k, 0) for r in runs]) for k in kinds}


def render_requests(report, snapfs_targets):
    """Requests per operation on the snapfs targets: the total, then the main kinds."""
    cfg = report["config"]
    table = []
    for m in report["metrics"]:
        cells = []
        for t in snapfs_targets:
            per = requests_per_op(report, m["name"], t)
            if per is None:
                cells.append("—")
                continue
            kinds = sorted(((v, k) for k, v in per.items() if k != "total" and v >= 0.005), reverse=True)[:5]
            shown = ", ".join(f"{k} {v:.2f}" for v, k in kinds)
            cells.append(f"**{per.get('total', 0):.2f}**" + (f" ({shown})" if shown else ""))
        if any(c != "—" for c in cells):
            table.append(f"| {m['name']} | {m.get('per') or 'operation'} | " + " | ".join(cells) + " |")
    if not table:
        return []
    lines = ["## Requests per operation (snapfs targets; median of the runs)", "",
             "From the daemon's request counters (the `requests:` line of `snapfs status`), read around each "
             "workload's timed part: by the harness around fio (so fio's own open, close and fsync are in), "
             "and by the workers and bench/smallfiles.c themselves around their timed loop or phase (after its "
             "sync). The cost of reading the counters is measured and taken off. The total, then the kinds of "
             "at least 0.005 per operation (at most five).", ""]
    lines.append("| workload | per | " + " | ".join(label(cfg, t) for t in snapfs_targets) + " |")
    lines.append("|---|---|" + "---|" * len(snapfs_targets))
    return lines + table + [""]


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 64 MiB files, 2000 small files, 300 SQLite tx, 1 run")
    p.add_argument("--runs", type=int, help="repetitions (default 3, --quick 1)")
    p.add_argument("--only", help="comma-separated workload names (see --list)")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help=f"default {','.join(DEFAULT_TARGETS)} (passthrough_ll: libfuse's C example, nothing "
                        "but forwarding, built from libfuse3-dev, with -o cache=always; passthrough_ll-wb: the "
                        "same with -o writeback); also snapfs-alt (snapfs with --alt-args appended), "
                        "snapfs-uring (with -o uring appended) and snapfs-base (--baseline-bin)")
    p.add_argument("--json", help="where to write the JSON results (the .md goes next to it)")
    # The passthrough workloads measure snapfs with SQLite commit detection on but no
    # snapshot per commit; bench/sqlite_commits.py measures the commit snapshots.
    p.add_argument("--snapfs-args", default="--sqlite detect",
                   help='extra arguments to `snapfs mount` (default: "--sqlite detect"), e.g. "-o writeback_cache"')
    p.add_argument("--alt-args", default="-o no_writeback_cache",
                   help='arguments the snapfs-alt target adds after --snapfs-args (default: "-o no_writeback_cache")')
    p.add_argument("--mixed-settings", default="wal-normal",
                   help="settings of sqlite-mixed, comma-separated JOURNAL-SYNCHRONOUS (journal wal, delete, "
                        "truncate or persist; synchronous off, normal, full or extra), one metric each "
                        "(sqlite-mixed-SETTING); default wal-normal, e.g. wal-normal,wal-full,delete-full")
    p.add_argument("--mixed-seconds", type=float,
                   help="timed seconds of each sqlite-mixed setting (default --sqlite-seconds, --quick 2)")
    p.add_argument("--snapfs-bin", default=DEFAULT_SNAPFS, help="default $SNAPFS_BIN or .build/release/snapfs")
    p.add_argument("--baseline-bin", help="another snapfs build for the snapfs-base target "
                   "(e.g. --targets native,snapfs,snapfs-base --baseline-bin OLD/.build/release/snapfs)")
    p.add_argument("--size", help="sequential file size (default 1G, --quick 64M)")
    p.add_argument("--rand-size", help="random I/O file size (default 256M, --quick 64M)")
    p.add_argument("--rand-cap", type=int, default=60, help="time cap of each random I/O job, s (default 60)")
    p.add_argument("--small-files", type=int, help="number of small files (default 20000, --quick 2000)")
    p.add_argument("--small-dirs", type=int, default=20, help="subdirectories for the small files (default 20)")
    p.add_argument("--stat-passes", type=int, default=5, help="stat passes over the small files (default 5)")
    p.add_argument("--sqlite-tx", type=int, help="max SQLite transactions per mode (default 20000, --quick 300)")
    p.add_argument("--sqlite-seconds", type=float, default=5.0, help="max seconds per SQLite mode (default 5)")
    p.add_argument("--work-dir", default=str(DEFAULT_WORK), help=f"scratch root (default {DEFAULT_WORK})")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--append-count", type=int, help="appends in log-append (default 200000, --quick 20000)")
    p.add_argument("--snapshots", action="store_true",
                   help="run the snapshot benchmark (bench/snapshot_time.py, with these arguments) instead of the "
                        "workloads (--only snapshot does the same)")
    cfg = p.parse_args(argv)
    q = cfg.quick
    cfg.runs = cfg.runs or (1 if q else 3)
    cfg.seq_size = parse_size(cfg.size or ("64M" if q else "1G"))
    cfg.rand_size = parse_size(cfg.rand_size or ("64M" if q else "256M"))
    cfg.small_files = cfg.small_files or (2000 if q else 20000)
    cfg.sqlite_tx = cfg.sqlite_tx or (300 if q else 20000)
    cfg.append_count = cfg.append_count or (20000 if q else 200000)
    cfg.mixed_seconds = cfg.mixed_seconds or (2.0 if q else cfg.sqlite_seconds)
    try:
        cfg.mixed_settings = [x.strip().lower() for x in cfg.mixed_settings.split(",") if x.strip()]
        for x in cfg.mixed_settings:
            sqlite_mixed.parse_setting(x)
    except ValueError as e:
        p.error(f"--mixed-settings: {e}")
    if not cfg.mixed_settings or len(set(cfg.mixed_settings)) != len(cfg.mixed_settings):
        p.error("--mixed-settings: give one or more distinct settings")
    SQLiteMixed.settings = cfg.mixed_settings
    cfg.snapfs_args = shlex.split(cfg.snapfs_args)
    cfg.alt_args = shlex.split(cfg.alt_args)
    cfg.targets = [t.strip() for t in cfg.targets.split(",") if t.strip()]
    bad = [t for t in cfg.targets if t not in ALL_TARGETS]
    if bad or not cfg.targets:
        p.error(f"unknown target(s) {bad}; choose from {ALL_TARGETS}")
    cfg.targets = [t for t in ALL_TARGETS if t in cfg.targets]
    names = [w.name for w in WORKLOADS]
    if cfg.only:
        want = [n.strip() for n in cfg.only.split(",") if n.strip()]
        bad = [n for n in want if n not in names]
        if bad:
            p.error(f"unknown workload(s) {bad}; choose from {names}")
        cfg.workloads = [w for w in WORKLOADS if w.name in want]
    else:
        cfg.workloads = list(WORKLOADS)
    if cfg.runs < 1:
        p.error("--runs must be at least 1")
    return cfg


def snapshot_only(argv):
    """Whether the command line is `--only snapshot` (the snapshot benchmark's other name)."""
    for i, a in enumerate(argv):
        value = argv[i + 1] if a == "--only" and i + 1 < len(argv) else a.removeprefix("--only=") if a.startswith("--only=") else None
        if value is not None and [n.strip() for n in value.split(",") if n.strip()] == ["snapshot"]:
            return True
    return False


def main(argv):
    if "--snapshots" in argv or snapshot_only(argv):
        import snapshot_time
        return snapshot_time.main([a for a in argv if a != "--snapshots"], lenient=True)
    cfg = parse_args(argv)
    if cfg.list:
        for w in WORKLOADS:
            print(f"{w.name:16} {', '.join(m.name + ' [' + m.unit + ']' for m in w.metrics)}\n"
                  f"{'':16} {w.description}")
        print(f"{'snapshot':16} snapshot time [ms], ratio to the reference, longest writer stall [ms] "
              "(a separate mode: --snapshots or --only snapshot)\n"
              f"{'':16} a tree of SNAPSHOT_FILES x SNAPSHOT_FILE_SIZE files in SNAPSHOT_DIRS directories, "
              "snapshotted by snapfs (control file, wall time, median of --runs, default 5) next to the same tree "
              "copied on the same file system: ext4 (hardlink strategy vs cp -al), loop XFS reflink=1 (reflink vs "
              "cp -a --reflink=always), loop btrfs subvolume (btrfs vs btrfs subvolume snapshot -r); a writer does "
              "4 KiB writes through the mount during each snapshot")
        return 0
    if any(w.needs_fio for w in cfg.workloads) and not shutil.which("fio"):
        fio_free = [w.name for w in WORKLOADS if not w.needs_fio]
        print("error: fio is not installed (apt-get install fio); it runs the sequential and random "
              f"I/O workloads. Without it, use --only {','.join(fio_free)}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        log("WARNING: not root: cannot drop the page cache (reads will not be cold) and FUSE "
            "mounts may fail")

    command, started, stamp, work_root, ctx = start_run(cfg)

    metrics = [m for w in cfg.workloads for m in w.metrics]
    report = {
        "command": command, "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(cfg, work_root),
        "config": {"targets": cfg.targets, "runs": cfg.runs, "seq_size": cfg.seq_size,
                   "rand_size": cfg.rand_size, "rand_cap": cfg.rand_cap,
                   "small_files": cfg.small_files, "small_dirs": cfg.small_dirs,
                   "stat_passes": cfg.stat_passes, "sqlite_tx": cfg.sqlite_tx,
                   "sqlite_seconds": cfg.sqlite_seconds, "append_count": cfg.append_count, "snapfs_args": cfg.snapfs_args,
                   "alt_args": cfg.alt_args, "mixed_settings": cfg.mixed_settings,
                   "mixed_seconds": cfg.mixed_seconds, "quick": cfg.quick},
        "dropped_caches": ctx.can_drop,
        "workloads": [{"name": w.name, "description": w.description,
                       "metrics": [m.name for m in w.metrics]} for w in cfg.workloads],
        "metrics": [{"name": m.name, "unit": m.unit, "higher_is_better": m.higher_is_better, "per": m.per}
                    for m in metrics],
        "values": {m.name: {t: [] for t in cfg.targets} for m in metrics},
        "samples": [], "mounts": [], "errors": [], "medians": {},
    }
    announce_run(command, report)

    t_start = time.time()
    interrupted = None
    live = []
    try:
        for run in range(1, cfg.runs + 1):
            rep_root = work_root / f"run{run}"
            rep_root.mkdir()
            live = []
            for name in cfg.targets:
                if name == "native":
                    t = NativeTarget(rep_root)
                elif name == "snapfs":
                    t = SnapfsTarget(rep_root, cfg.snapfs_bin, cfg.snapfs_args)
                elif name == "snapfs-alt":
                    t = SnapfsAltTarget(rep_root, cfg.snapfs_bin, cfg.snapfs_args + cfg.alt_args)
                elif name == "snapfs-uring":
                    t = SnapfsUringTarget(rep_root, cfg.snapfs_bin, cfg.snapfs_args + ["-o", "uring"])
                elif name == "snapfs-base":
                    if not cfg.baseline_bin:
                        raise SystemExit("the snapfs-base target needs --baseline-bin PATH")
                    t = SnapfsBaseTarget(rep_root, cfg.baseline_bin, cfg.snapfs_args)
                elif name == "passthrough_ll":
                    t = PassthroughLLTarget(rep_root)
                elif name == "passthrough_ll-wb":
                    t = PassthroughLLWritebackTarget(rep_root)
                elif name == "passthrough_ll-wb-dp":
                    t = PassthroughLLPermissionsTarget(rep_root)
                else:
                    t = BindfsTarget(rep_root)
                live.append(t)
                try:
                    t.setup()
                    log(f"run {run}: {name} ready at {t.dir or t.mnt}" + (f" (pid {t.pid})" if t.pid else ""))
                except BenchError as e:
                    t.error = str(e)
                    t.setup_failed = True
                    msg = f"run {run}: {name}: setup failed: {e}"
                    log(msg)
                    report["errors"].append(msg)
            for w in cfg.workloads:
                for t in live:
                    d = t.dir if t.name == "native" else t.mnt
                    if t.error:
                        for m in w.metrics:
                            report["values"][m.name][t.name].append("failed")
                        continue
                    t0 = time.time()
                    sample = {"run": run, "target": t.name, "workload": w.name}
                    ctx.control = t.mnt / ".snapfs-control" if t.name in SNAPFS_TARGETS else None
                    ctx.requests = {}
                    try:
                        w.prepare(ctx, d)
                        ctx.drop_caches()
                        result = w.run(ctx, d)
                        sample["metrics"] = result
                        if ctx.requests:
                            sample["requests"] = ctx.requests
                        for m in w.metrics:
                            report["values"][m.name][t.name].append(result[m.name])
                        w.cleanup(ctx, d)
                    except BenchError as e:
                        sample["error"] = str(e)
                        for m in w.metrics:
                            report["values"][m.name][t.name].append("failed")
                        msg = f"run {run}: {w.name} on {t.name}: {e}"
                        report["errors"].append(msg)
                        log("ERROR " + msg)
                        if t.is_fuse and not t.alive():
                            t.error = f"{t.name} mount died during {w.name}"
                            report["errors"].append(f"run {run}: {t.error}; daemon log: {t.log_tail()}")
                            log(f"run {run}: {t.error}")
                    sample["seconds"] = round(time.time() - t0, 3)
                    report["samples"].append(sample)
                    if "metrics" in sample:
                        shown = ", ".join(f"{k} {fmt(v)}" for k, v in sample["metrics"].items())
                        per_op = ", ".join(f"{r['counts'].get('total', 0) / r['ops']:.2f}"
                                           for r in sample.get("requests", {}).values())
                        log(f"run {run}: {w.name:14} {t.name:7} {shown}  ({sample['seconds']:.1f} s)"
                            + (f", requests/op {per_op}" if per_op else ""))
            for t in live:
                if t.name == "native":
                    continue
                facts = t.teardown()
                report["mounts"].append({"run": run, "target": t.name, "error": t.error,
                                         "setup_failed": t.setup_failed, **facts})
                if facts.get("peak_rss_kib"):
                    log(f"run {run}: {t.name} daemon peak RSS {facts['peak_rss_kib'] / 1024:.1f} MiB")
            live = []
            remove_tree(rep_root)
    except (Interrupted, KeyboardInterrupt) as e:
        interrupted = str(e) or "SIGINT"
        log(f"interrupted ({interrupted}); unmounting and cleaning up")
    finally:
        ignore_signals()
        for t in live:
            if t.is_fuse:
                t.teardown()
        remove_tree(work_root)

    report["elapsed_s"] = round(time.time() - t_start, 1)
    if interrupted:
        report["errors"].append(f"interrupted by {interrupted}; results are partial")
    for m in metrics:
        for t in cfg.targets:
            nums = [v for v in report["values"][m.name][t] if isinstance(v, (int, float))]
            report["medians"].setdefault(m.name, {})[t] = statistics.median(nums) if nums else (
                "failed" if report["values"][m.name][t] else None)

    return finish_run(cfg, report, render(report), f"results-{stamp}", interrupted)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
