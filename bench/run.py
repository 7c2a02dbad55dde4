#!/usr/bin/env python3
"""snapfs benchmark: the same workloads on native ext4, on snapfs and on the FUSE
passthrough peers (bindfs, libfuse's passthrough_ll with and without the kernel's
write-back cache).

    python3 bench/run.py                 # full run: 1 GiB files, 3 repetitions
    python3 bench/run.py --quick         # smoke run, about a minute
    python3 bench/run.py --only seqwrite-1m,smallfiles --targets native,snapfs
    python3 bench/run.py --targets native,snapfs,snapfs-alt --only sqlite-mixed   # two snapfs modes
    python3 bench/run.py --list          # the workloads and what they measure
    python3 bench/run.py --snapshots     # snapshot time vs cp -al / cp --reflink / btrfs snapshot (ext4, XFS, btrfs)

Must run as root (it drops the page cache and mounts FUSE file systems). Needs fio,
a C compiler (for bench/smallfiles.c and libfuse's passthrough_ll example, built into a
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

Results go to bench/out/results-<timestamp>.json and .md (--json PATH to choose).

Adding a workload: subclass Workload, give it a name, a description and its metrics
(Metric(name, unit, higher_is_better, per)), implement prepare() (untimed set-up, runs
before the cache drop) and run() (returns {metric name: value}; on a snapfs target,
ctx.control is its control file, and run() may call ctx.note_requests(metric, ops,
counts) with the requests the metric's ops made, see request_counts.py), optionally
cleanup(), and decorate the class with @register. Workloads run in registration
order; a workload may rely on files an earlier one left (and must create them in
prepare() if they are missing, so that --only works).
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import passthrough_ll
import request_counts
import sqlite_mixed
from trees import remove_tree as remove_sealed_tree

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_SNAPFS = os.environ.get("SNAPFS_BIN", str(REPO / ".build" / "release" / "snapfs"))
DEFAULT_WORK = Path("/var/tmp/snapfs-bench")
ALL_TARGETS = ["native", "snapfs", "snapfs-alt", "snapfs-uring", "snapfs-base", "bindfs", "passthrough_ll",
               "passthrough_ll-wb"]
DEFAULT_TARGETS = ["native", "snapfs", "bindfs", "passthrough_ll", "passthrough_ll-wb"]
SNAPFS_TARGETS = ["snapfs", "snapfs-alt", "snapfs-uring", "snapfs-base"]
# The FUSE passthroughs snapfs must be ahead of ("≥ 1.0 × the best peer" passes at 0.95 ×).
PEERS = ["bindfs", "passthrough_ll", "passthrough_ll-wb"]
MiB = 1 << 20


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_size(text):
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text and text[-1] in mult:
        return int(float(text[:-1]) * mult[text[-1]])
    return int(text)


def human_size(n):
    for unit, m in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= m and n % m == 0:
            return f"{n // m} {unit}"
    return f"{n} B"


class BenchError(Exception):
    """A workload or a target failed; the message says how."""


class Interrupted(BaseException):
    pass


# ---------------------------------------------------------------------------------------
# Context shared by the workloads
# ---------------------------------------------------------------------------------------

class Context:
    def __init__(self, cfg, scratch):
        self.cfg = cfg
        self.scratch = scratch
        self.can_drop = os.geteuid() == 0
        self.helpers = {}
        # Set by the harness for each measurement: the control file of a snapfs target
        # (None elsewhere), and the requests the workload noted.
        self.control = None
        self.requests = {}

    def note_requests(self, metric, ops, counts):
        """The requests (a {kind: count} dict, or None) that `ops` operations of `metric` made."""
        if counts is not None and ops:
            self.requests[metric] = {"ops": ops, "counts": counts}

    def counted(self, metric, what, ops_of):
        """Runs what() with the request counters read around it; ops_of(result) says how
        many operations it made. Returns what()'s result."""
        with request_counts.Around(self.control) as around:
            result = what()
        self.note_requests(metric, ops_of(result), around.counts)
        return result

    def drop_caches(self):
        os.sync()
        if self.can_drop:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")

    def run(self, cmd, timeout, what):
        """Run a command we start ourselves; a timeout kills it (subprocess.run does)."""
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what}: timed out after {timeout} s")
        if r.returncode != 0:
            tail = (r.stderr.strip() or r.stdout.strip())[-600:]
            raise BenchError(f"{what}: exit {r.returncode}: {tail}")
        return r.stdout

    def helper(self, name):
        """Compile bench/NAME.c with cc -O2 into the scratch dir (once) and return its path."""
        if name not in self.helpers:
            src = BENCH / f"{name}.c"
            out = self.scratch / name
            cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
            if not cc:
                raise BenchError("no C compiler (cc) found to build " + str(src))
            r = subprocess.run([cc, "-O2", "-Wall", "-o", str(out), str(src)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise BenchError(f"cannot compile {src}: {r.stderr.strip()}")
            self.helpers[name] = out
        return self.helpers[name]

    def fio(self, what, path, rw, bs, size, extra=(), timeout=900):
        cmd = ["fio", "--name=bench", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
               f"--size={size}", "--ioengine=psync", "--fallocate=none",
               "--output-format=json", *extra]
        out = self.run(cmd, timeout, f"fio {what}")
        try:
            job = json.loads(out[out.index("{"):])["jobs"][0]
        except (ValueError, KeyError, IndexError) as e:
            raise BenchError(f"fio {what}: unreadable output ({e}): {out[:300]}")
        if job.get("error"):
            raise BenchError(f"fio {what}: job error {job['error']}")
        return job

    def ensure_file(self, path, size):
        """Untimed: make sure PATH holds SIZE bytes of data (written by fio, then fsynced)."""
        if path.exists() and path.stat().st_size == size:
            return
        if path.exists():
            path.unlink()
        self.fio("prepare " + path.name, path, "write", "1M", size, ["--end_fsync=1"])


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
    description = ("C helper (bench/smallfiles.c): create+write 4 KiB+close SMALL_FILES files "
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
        out = ctx.run([sys.executable, str(Path(__file__).resolve()), "--_sqlite-worker",
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
    description = ("python sqlite3, a mixed application workload (bench/sqlite_mixed.py): tables "
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
            text = ctx.run([sys.executable, str(BENCH / "sqlite_mixed.py"), str(db), setting,
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
        out = ctx.run([sys.executable, str(Path(__file__).resolve()), "--_append-worker",
                       str(self.log(d)), str(ctx.cfg.append_count), str(ctx.control or "-")], 900, self.name)
        r = json.loads(out)
        ctx.note_requests(self.name, r["appends"], r.get("requests"))
        return {self.name: r["appends"] / r["seconds"]}

    cleanup = prepare


def read_counters(control):
    """In a worker: the control file's request counters, two readings back to back (see
    request_counts.py); None when not on a snapfs target."""
    if control == "-":
        return None
    return request_counts.read_line(control), request_counts.read_line(control)


def counted_since(control, before):
    return None if before is None else request_counts.work(*before, request_counts.read_line(control))


def append_worker(path, count, control):
    """Runs in a child process: small O_APPEND writes, then fsync; checks the size."""
    line = (os.urandom(64).hex()[:127] + "\n").encode()   # 128 bytes: 32 to a page, none straddles two
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    before = read_counters(control)
    start = time.perf_counter()
    for _ in range(count):
        os.write(fd, line)
    os.fsync(fd)
    elapsed = time.perf_counter() - start
    requests = counted_since(control, before)
    size = os.fstat(fd).st_size
    os.close(fd)
    if size != count * len(line):
        raise SystemExit(f"log size {size}, expected {count * len(line)}")
    print(json.dumps({"appends": count, "seconds": elapsed, "requests": requests}))


def sqlite_worker(db, mode, count, seconds, control):
    """Runs in a child process (so that a hung mount can be timed out)."""
    import sqlite3
    con = sqlite3.connect(db, isolation_level=None)
    got = con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]
    if got.lower() != mode:
        raise SystemExit(f"journal_mode={mode} not accepted (got {got})")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    rows = [os.urandom(100).hex() for _ in range(64)]  # 200 bytes each

    def tx(i):
        con.execute("BEGIN")
        con.execute("INSERT INTO t (v) VALUES (?)", (rows[i % 64],))
        con.execute("COMMIT")

    for i in range(10):
        tx(i)
    before = read_counters(control)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while n < count:
        tx(n)
        n += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    requests = counted_since(control, before)
    total = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()
    if total != n + 10:
        raise SystemExit(f"expected {n + 10} rows, found {total}")
    print(json.dumps({"tx": n, "seconds": elapsed, "requests": requests}))


# ---------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------

def mount_entry(path):
    """The /proc/self/mountinfo line fields for a mount exactly at PATH, or None."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].replace("\\040", " ") == path:
                return fields
    return None


def peak_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


class Target:
    name = ""
    is_fuse = False

    def __init__(self, root):
        self.root = root
        self.dir = None
        self.pid = None
        self.error = None
        self.setup_failed = False

    def setup(self):
        raise NotImplementedError

    def alive(self):
        return True

    def teardown(self):
        """Returns a dict of facts (peak RSS); never raises."""
        return {}


class NativeTarget(Target):
    name = "native"

    def setup(self):
        self.dir = self.root / "native"
        self.dir.mkdir()
        return self.dir


class FuseTarget(Target):
    is_fuse = True

    def __init__(self, root):
        super().__init__(root)
        self.backing = root / f"{self.name}-backing"
        self.mnt = root / f"{self.name}-mnt"
        self.log_file = root / f"{self.name}.log"
        self.pid = None          # the daemon's pid (a process this harness started)
        self.proc = None         # Popen, when the daemon is our direct child
        self.mounted = False

    def alive(self):
        return self.mounted and mount_entry(self.mnt) is not None and \
            (self.pid is None or pid_alive(self.pid))

    def log_tail(self):
        try:
            return self.log_file.read_text(errors="replace").strip()[-800:]
        except OSError:
            return ""

    def unmount_commands(self):
        return [["fusermount3", "-u", str(self.mnt)]]

    def teardown(self):
        facts = {}
        if self.pid is not None:
            facts["peak_rss_kib"] = peak_rss_kib(self.pid)
        if self.mounted or mount_entry(self.mnt) is not None:
            self.unmount()
        self.wait_daemon()
        return facts

    def unmount(self):
        attempts = self.unmount_commands() + [["fusermount3", "-u", str(self.mnt)]] * 3
        for i, cmd in enumerate(attempts):
            if mount_entry(self.mnt) is None:
                break
            try:
                subprocess.run(cmd, capture_output=True, timeout=120)
            except subprocess.TimeoutExpired:
                pass
            if mount_entry(self.mnt) is not None and i > 0:
                time.sleep(1)
        if mount_entry(self.mnt) is not None:
            log(f"{self.name}: {self.mnt} is busy; aborting the FUSE connection and detaching it")
            fields = mount_entry(self.mnt)
            if fields:
                minor = fields[2].split(":")[1]
                abort = Path(f"/sys/fs/fuse/connections/{minor}/abort")
                if abort.exists():
                    try:
                        abort.write_text("1\n")
                    except OSError:
                        pass
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True, timeout=60)
        self.mounted = mount_entry(self.mnt) is not None
        if self.mounted:
            log(f"{self.name}: WARNING: could not unmount {self.mnt}")

    def wait_daemon(self, timeout=30):
        """After the unmount the daemon exits by itself; if it does not, stop it (only
        ever the pid this harness started)."""
        if self.pid is None:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            if self.proc is None and not pid_alive(self.pid):
                break
            time.sleep(0.1)
        else:
            log(f"{self.name}: daemon {self.pid} still running {timeout} s after unmount; sending SIGTERM")
            self.signal_daemon(signal.SIGTERM)
            time.sleep(3)
            if pid_alive(self.pid):
                self.signal_daemon(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.pid = None

    def signal_daemon(self, sig):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


class SnapfsTarget(FuseTarget):
    name = "snapfs"

    def __init__(self, root, binary, extra_args):
        super().__init__(root)
        self.binary = binary
        self.extra_args = extra_args

    def setup(self):
        if not os.access(self.binary, os.X_OK):
            raise BenchError(f"snapfs binary not found or not executable: {self.binary} "
                             "(build it with `swift build -c release` or set SNAPFS_BIN)")
        self.backing.mkdir(exist_ok=True)  # the snapshot benchmark makes it first (a btrfs subvolume)
        self.mnt.mkdir()
        pid_file = self.root / f"{self.name}.pid"
        cmd = [self.binary, "mount", str(self.backing), str(self.mnt), "--pid-file", str(pid_file),
               "--log-file", str(self.log_file), *self.extra_args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            self.mounted = mount_entry(self.mnt) is not None
            raise BenchError(f"`{shlex.join(cmd)}` did not return within 60 s")
        self.mounted = mount_entry(self.mnt) is not None
        if pid_file.exists():
            try:
                self.pid = int(pid_file.read_text().strip())
            except ValueError:
                pass
        if r.returncode != 0:
            raise BenchError(f"`{shlex.join(cmd)}` exited {r.returncode}: "
                             f"{(r.stderr.strip() or r.stdout.strip())[-600:]} {self.log_tail()}")
        if not self.mounted:
            raise BenchError(f"snapfs mount returned 0 but {self.mnt} is not mounted")
        if self.pid is None:
            raise BenchError(f"snapfs mount did not write its pid to {pid_file}")
        return self.mnt

    def unmount_commands(self):
        return [[self.binary, "unmount", str(self.mnt)]]


class SnapfsAltTarget(SnapfsTarget):
    """snapfs with --alt-args appended (default -o no_writeback_cache): a second mode beside
    the default one in the same run."""
    name = "snapfs-alt"


class SnapfsUringTarget(SnapfsTarget):
    """snapfs with -o uring (requests over io_uring), beside plain snapfs in the same run."""
    name = "snapfs-uring"


class SnapfsBaseTarget(SnapfsTarget):
    """Another snapfs build (--baseline-bin), with the same arguments: an A/B in one run."""
    name = "snapfs-base"


class BindfsTarget(FuseTarget):
    name = "bindfs"

    def before_exec(self):
        pass

    def command(self):
        exe = shutil.which("bindfs")
        if not exe:
            raise BenchError("bindfs is not installed (apt-get install bindfs)")
        return [exe, "-f", str(self.backing), str(self.mnt)]

    def setup(self):
        cmd = self.command()
        self.backing.mkdir()
        self.mnt.mkdir()
        # -f: stay in the foreground, so the daemon is our own child with a known pid;
        # its own session, so a Ctrl-C reaches only the harness, which then unmounts.
        with open(self.log_file, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         start_new_session=True, preexec_fn=self.before_exec)
        self.pid = self.proc.pid
        deadline = time.time() + 30
        while time.time() < deadline:
            if mount_entry(self.mnt) is not None:
                self.mounted = True
                return self.mnt
            if self.proc.poll() is not None:
                raise BenchError(f"`{shlex.join(cmd)}` exited {self.proc.returncode}: {self.log_tail()}")
            time.sleep(0.05)
        raise BenchError(f"`{shlex.join(cmd)}` did not mount within 30 s")


class PassthroughLLTarget(BindfsTarget):
    """libfuse's passthrough_ll example: forwards each request with the kernel's caches on
    (cache=always), no default_permissions, no snapshots, no write cache."""
    name = "passthrough_ll"
    writeback = False
    # It keeps a descriptor open for every inode the kernel knows: the full smallfiles
    # workload needs more than 20,000. Root with CAP_SYS_RESOURCE may raise its hard limit
    # (up to fs.nr_open); otherwise it gets the hard limit, and a run past it fails there
    # (the report says so, and the best peer is then taken from the others).
    DESCRIPTORS = 1 << 18

    def before_exec(self):
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, self.DESCRIPTORS),) * 2)
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def command(self):
        try:
            exe = passthrough_ll.build(self.root / "passthrough_ll")
        except RuntimeError as e:
            raise BenchError(str(e))
        return passthrough_ll.command(exe, self.backing, self.mnt, foreground=True, writeback=self.writeback)


class PassthroughLLWritebackTarget(PassthroughLLTarget):
    """passthrough_ll with the kernel's write-back cache (-o writeback) as well."""
    name = "passthrough_ll-wb"
    writeback = True


# ---------------------------------------------------------------------------------------
# Machine info and reporting
# ---------------------------------------------------------------------------------------

def capture(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (r.stdout.strip() or r.stderr.strip()).splitlines()[0] if (r.stdout or r.stderr) else ""
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return ""


def machine_info(cfg, work_root):
    info = {"kernel": " ".join(platform.uname()), "python": platform.python_version()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name")]
        info["cpu"] = f"{os.cpu_count()} x {models[0] if models else '?'}"
        for l in Path("/proc/meminfo").read_text().splitlines():
            if l.startswith("MemTotal:"):
                info["memory"] = f"{int(l.split()[1]) / (1 << 20):.1f} GiB"
    except OSError:
        pass
    # the file system and block device the targets live on
    st = os.stat(work_root)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    with open("/proc/self/mountinfo") as f:
        best = None
        for line in f:
            fields = line.split()
            if fields[2] == dev:
                sep = fields.index("-")
                cand = (fields[4], fields[sep + 1], fields[sep + 2], fields[5], fields[sep + 3])
                if best is None or len(cand[0]) > len(best[0]):
                    best = cand
    if best:
        info["filesystem"] = f"{best[2]} ({best[1]}) mounted at {best[0]}, options {best[3]},{best[4]}"
        blk = Path("/sys/dev/block") / dev
        try:
            q = blk.resolve()
            if (q / "partition").exists():
                q = q.parent
            sched = (q / "queue" / "scheduler").read_text().strip()
            rot = (q / "queue" / "rotational").read_text().strip()
            info["block device"] = f"{q.name}, scheduler {sched}, rotational={rot}"
        except OSError:
            pass
    info["fio"] = capture(["fio", "--version"])
    info["bindfs"] = capture(["bindfs", "--version"]) + " / " + \
        " ".join(capture(["bindfs", "--fuse-version"]).split()[-2:]) + " (linked libfuse)"
    info["fusermount3"] = capture(["fusermount3", "--version"])
    import sqlite3
    info["sqlite"] = sqlite3.sqlite_version
    info["snapfs binary"] = cfg.snapfs_bin
    if os.path.exists(cfg.snapfs_bin):
        mtime = datetime.datetime.fromtimestamp(os.path.getmtime(cfg.snapfs_bin))
        info["snapfs binary"] += f" (built {mtime:%Y-%m-%d %H:%M:%S})"
    head = capture(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"])
    dirty = capture(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    info["git"] = head + (" (+ uncommitted changes)" if dirty else "")
    return info


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return f"{a / b:.2f}"
    return "—"


def spread(values):
    """(max - min) / median, as a percentage."""
    if len(values) < 2:
        return "—"
    med = statistics.median(values)
    return f"{(max(values) - min(values)) / med * 100:.0f}%" if med else "—"


TARGET_COMMANDS = {
    "native": "a plain directory on the backing file system",
    "bindfs": "`bindfs BACKING MNT` (Debian's bindfs on libfuse 2)",
    "passthrough_ll": "`passthrough_ll -o source=BACKING,cache=always MNT` (libfuse 3's example, built from libfuse3-dev)",
    "passthrough_ll-wb": "`passthrough_ll -o source=BACKING,cache=always,writeback MNT` (the same with the kernel's write-back cache)",
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
    lines = [f"# snapfs benchmark, {report['started']}", ""]
    lines += ["Command:", "", "```", report["command"], "```", ""]
    lines += ["Machine:", ""] + [f"- {k}: {v}" for k, v in report["machine"].items()] + [""]
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
# Snapshot benchmark (--snapshots)
# ---------------------------------------------------------------------------------------
#
# Not a workload: it needs its own file systems (the root ext4, a loop XFS with reflinks,
# a loop btrfs) and its own references (cp -al, cp -a --reflink=always, btrfs subvolume
# snapshot -r) instead of the native/snapfs/bindfs targets.

SNAPSHOT_CASES = {
    # file system: (snapfs strategy, reference name, target ratio or absolute limit)
    "ext4": ("hardlink", "cp -al", "ratio ≤ 1.0 × cp -al"),
    "xfs": ("reflink", "cp -a --reflink=always", "ratio ≤ 1.0 × cp --reflink"),
    "btrfs": ("btrfs", "btrfs subvolume snapshot -r", "< 100 ms"),
}
STALL_WRITE = 4096
STALL_REGION = 256            # the writer cycles over 256 blocks (1 MiB)
STALL_AFTER_S = 0.5           # writes starting this long after the snapshot returned still count


def stall_writer(path, out):
    """Runs in a child process: 4 KiB pwrites through the mount in a tight loop, each
    timed (CLOCK_MONOTONIC, as the harness's own clock), until SIGTERM; then writes the
    (start_ns, duration_ns) pairs to OUT."""
    import array
    stop = []
    signal.signal(signal.SIGTERM, lambda s, f: stop.append(1))
    block = os.urandom(STALL_WRITE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    starts, durations = array.array("q"), array.array("q")
    clock = time.monotonic_ns
    i = 0
    while not stop:
        t0 = clock()
        os.pwrite(fd, block, (i % STALL_REGION) * STALL_WRITE)
        t1 = clock()
        starts.append(t0)
        durations.append(t1 - t0)
        if i == 0:
            print("ready", flush=True)
        i += 1
    os.close(fd)
    with open(out, "wb") as f:
        f.write(len(starts).to_bytes(8, "little"))
        starts.tofile(f)
        durations.tofile(f)


def read_stall_samples(path):
    import array
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    starts, durations = array.array("q"), array.array("q")
    starts.frombytes(data[8:8 + 8 * n])
    durations.frombytes(data[8 + 8 * n:8 + 16 * n])
    return starts, durations


def make_tree(root, files, dirs, size):
    """Untimed: FILES files of SIZE bytes spread evenly over DIRS directories under ROOT."""
    root.mkdir(parents=True)
    data = os.urandom(size)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    per, extra = divmod(files, dirs)
    for i in range(dirs):
        d = root / f"d{i:04d}"
        d.mkdir()
        for j in range(per + (1 if i < extra else 0)):
            fd = os.open(d / f"f{j:05d}", flags, 0o644)
            os.write(fd, data)
            os.close(fd)


class ScratchFS:
    """Where one file system's tree lives: a directory on the work dir's file system
    (ext4), or a loop device with a fresh XFS (reflink=1) or btrfs on a sparse image."""

    def __init__(self, kind, base, image_size):
        self.kind, self.base, self.image_size = kind, base, image_size
        self.image = base / f"{kind}.img"
        self.mnt = base / f"{kind}-fs"
        self.device = None
        self.mounted = False

    def setup(self):
        self.base.mkdir(parents=True, exist_ok=True)
        if self.kind == "ext4":
            self.mnt.mkdir()
            return
        with open(self.image, "wb") as f:
            f.truncate(self.image_size)
        r = subprocess.run(["losetup", "-f", "--show", str(self.image)], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"losetup: {r.stderr.strip()}")
        self.device = r.stdout.strip()
        mkfs = ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"] if self.kind == "xfs" else ["mkfs.btrfs", "-q", "-f"]
        r = subprocess.run(mkfs + [self.device], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"{mkfs[0]}: {(r.stderr or r.stdout).strip()}")
        self.mnt.mkdir()
        r = subprocess.run(["mount", self.device, str(self.mnt)], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"mount {self.kind}: {r.stderr.strip()}")
        self.mounted = True

    def make_backing(self, path):
        if self.kind == "btrfs":
            r = subprocess.run(["btrfs", "subvolume", "create", str(path)], capture_output=True, text=True)
            if r.returncode != 0:
                raise BenchError(f"btrfs subvolume create: {r.stderr.strip()}")
        else:
            path.mkdir()

    def settle(self):
        """After a removal: btrfs cleans deleted subvolumes in the background; wait for it."""
        if self.kind == "btrfs":
            subprocess.run(["btrfs", "subvolume", "sync", str(self.mnt)], capture_output=True, timeout=600)

    def teardown(self):
        if self.mounted:
            for cmd in (["umount", str(self.mnt)], ["umount", "-l", str(self.mnt)]):
                if subprocess.run(cmd, capture_output=True).returncode == 0:
                    break
            self.mounted = mount_entry(self.mnt) is not None
            if self.mounted:
                log(f"WARNING: could not unmount {self.mnt}")
        if self.device and not self.mounted:
            subprocess.run(["losetup", "-d", self.device], capture_output=True)
            self.device = None
        if not self.mounted:
            self.image.unlink(missing_ok=True)


class SnapshotBench:
    def __init__(self, cfg, ctx, work_root, report):
        self.cfg, self.ctx, self.work_root, self.report = cfg, ctx, work_root, report
        self.live_fs = []
        self.live_mounts = []
        self.writer = None

    # -- references -----------------------------------------------------------------

    def reference(self, kind, fs, backing, tree, n):
        """One timed reference copy of the same tree on the same file system; returns
        seconds. Removal afterwards is untimed."""
        dest = fs.mnt / f"ref-{n}"
        if kind == "ext4":
            cmd = ["cp", "-al", str(tree), str(dest)]
        elif kind == "xfs":
            cmd = ["cp", "-a", "--reflink=always", str(tree), str(dest)]
        else:
            cmd = ["btrfs", "subvolume", "snapshot", "-r", str(backing), str(dest)]
        self.ctx.drop_caches()
        t0 = time.monotonic()
        self.ctx.run(cmd, 900, shlex.join(cmd))
        elapsed = time.monotonic() - t0
        if kind == "btrfs":
            self.ctx.run(["btrfs", "subvolume", "delete", str(dest)], 600, "btrfs subvolume delete")
        else:
            shutil.rmtree(dest)
        os.sync()
        fs.settle()
        return elapsed

    # -- snapfs ---------------------------------------------------------------------

    def start_writer(self, path, out):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_stall-writer", str(path), str(out)]
        self.writer = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.writer.stdout.readline()
        if line.strip() != "ready":
            self.stop_writer()
            raise BenchError(f"the stall writer did not start (exit {self.writer.returncode})")

    def stop_writer(self):
        w, self.writer = self.writer, None
        if w is None:
            return
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
        try:
            w.wait(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()

    @staticmethod
    def control(mnt, command):
        """Writes one command to the control file (returns when done) and reads the result line."""
        fd = os.open(mnt / ".snapfs-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            try:
                os.write(fd, (command + "\n").encode())
            except OSError as e:
                raise BenchError(f"control `{command}`: {e}")
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 65536).decode(errors="replace")
        finally:
            os.close(fd)
        first = text.splitlines()[0] if text else ""
        return first.removeprefix("result: ").strip()

    def snapfs_snapshot(self, mount, n):
        """One timed snapshot with the stall writer running; returns a dict of facts."""
        out = self.work_root / f"stall-{os.getpid()}-{n}.bin"
        self.start_writer(mount.mnt / "stall-writer.dat", out)
        try:
            time.sleep(1.0)
            self.ctx.drop_caches()
            time.sleep(0.5)
            t0 = time.monotonic_ns()
            result = self.control(mount.mnt, "snapshot --force")
            t1 = time.monotonic_ns()
            time.sleep(1.0)
        finally:
            self.stop_writer()
        words = result.split()
        if words[:2] != ["ok", "snapshot"] or len(words) < 3:
            raise BenchError(f"snapshot answered `{result}`")
        name = words[2]
        meta = json.loads((mount.backing / ".snapshots" / ".meta" / f"{name}.json").read_text())
        starts, durations = read_stall_samples(out)
        out.unlink()
        during, outside = [], []
        for s, d in zip(starts, durations):
            if s + d >= t0 and s <= t1 + STALL_AFTER_S * 1e9:
                during.append(d)
            else:
                outside.append(d)
        facts = {"wall_s": (t1 - t0) / 1e9, "duration_ms": meta.get("durationMs"),
                 "files": meta.get("files"), "directories": meta.get("directories"),
                 "stall_s": max(during) / 1e9 if during else None,
                 "writes_during": len(during),
                 "writer_median_s": statistics.median(outside) / 1e9 if outside else None,
                 "writes_outside": len(outside), "name": name}
        # untimed: remove it again
        answer = self.control(mount.mnt, f"delete {name}")
        if not answer.startswith("ok deleted"):
            raise BenchError(f"delete {name} answered `{answer}`")
        os.sync()
        return facts

    # -- driver ---------------------------------------------------------------------

    def run_fs(self, kind):
        cfg = self.cfg
        strategy, ref_name, target = SNAPSHOT_CASES[kind]
        rec = {"filesystem": kind, "strategy": strategy, "reference": ref_name, "target": target,
               "runs": [], "errors": []}
        self.report["snapshot_results"].append(rec)
        tree_bytes = cfg.snapshot_files * cfg.snapshot_file_size
        # data once for the tree and once for a copy, plus room for metadata (btrfs keeps two copies)
        image = max(2 << 30, 3 * tree_bytes + cfg.snapshot_files * 16384 + (1 << 30))
        fs = ScratchFS(kind, self.work_root / kind, image)
        self.live_fs.append(fs)
        try:
            fs.setup()
            rec["fs_info"] = " ".join(capture(["findmnt", "-no", "FSTYPE,OPTIONS", "--target", str(fs.mnt)]).split())
            root = fs.mnt / "snap"
            root.mkdir()
            mount = SnapfsTarget(root, cfg.snapfs_bin, ["--strategy", strategy, *cfg.snapfs_args])
            fs.make_backing(mount.backing)
            tree = mount.backing / "tree"
            t0 = time.monotonic()
            make_tree(tree, cfg.snapshot_files, cfg.snapshot_dirs, cfg.snapshot_file_size)
            os.sync()
            log(f"snapshot {kind}: tree of {cfg.snapshot_files} × {human_size(cfg.snapshot_file_size)} in "
                f"{cfg.snapshot_dirs} dirs made in {time.monotonic() - t0:.1f} s on {rec['fs_info']}")
            self.live_mounts.append(mount)
            mount.setup()
            log(f"snapshot {kind}: snapfs --strategy {strategy} mounted (pid {mount.pid})")
            for n in range(1, cfg.runs + 1):
                entry = {"run": n}
                try:
                    # alternate which goes first, so drift hits both alike
                    order = ("ref", "snapfs") if n % 2 else ("snapfs", "ref")
                    for which in order:
                        if which == "ref":
                            entry["reference_s"] = self.reference(kind, fs, mount.backing, tree, n)
                        else:
                            entry.update(self.snapfs_snapshot(mount, n))
                    log(f"snapshot {kind} run {n}: snapfs {entry['wall_s'] * 1000:.0f} ms "
                        f"(metadata {entry['duration_ms']} ms), {ref_name} {entry['reference_s'] * 1000:.0f} ms, "
                        f"longest write {entry['stall_s'] * 1000:.1f} ms over {entry['writes_during']} writes, "
                        f"writer median {entry['writer_median_s'] * 1e6:.0f} µs")
                except (BenchError, OSError) as e:
                    entry["error"] = str(e)
                    rec["errors"].append(f"run {n}: {e}")
                    self.report["errors"].append(f"snapshot {kind} run {n}: {e}")
                    log(f"ERROR snapshot {kind} run {n}: {e}")
                    if not mount.alive():
                        rec["errors"].append(f"the snapfs mount died; log: {mount.log_tail()}")
                        rec["runs"].append(entry)
                        break
                rec["runs"].append(entry)
            rec["peak_rss_kib"] = mount.teardown().get("peak_rss_kib")
            self.live_mounts.remove(mount)
        except BenchError as e:
            rec["errors"].append(str(e))
            self.report["errors"].append(f"snapshot {kind}: {e}")
            log(f"ERROR snapshot {kind}: {e}")
        finally:
            self.cleanup()

    def cleanup(self):
        self.stop_writer()
        for m in self.live_mounts:
            m.teardown()
        self.live_mounts = [m for m in self.live_mounts if m.mounted]
        for fs in self.live_fs:
            fs.teardown()
        self.live_fs = [fs for fs in self.live_fs if fs.mounted or fs.device]


def summarize_snapshots(report):
    for rec in report["snapshot_results"]:
        ok = [r for r in rec["runs"] if "wall_s" in r and "reference_s" in r]
        med = lambda key: statistics.median([r[key] for r in ok if r.get(key) is not None]) if ok else None
        s = {"n": len(ok), "snapfs_s": med("wall_s"), "duration_ms": med("duration_ms"),
             "reference_s": med("reference_s"), "stall_s": med("stall_s"),
             "stall_max_s": max((r["stall_s"] for r in ok if r.get("stall_s")), default=None),
             "writer_median_s": med("writer_median_s")}
        if s["snapfs_s"] is not None and s["reference_s"]:
            s["ratio"] = s["snapfs_s"] / s["reference_s"]
        if s["snapfs_s"] is None:
            s["met"] = None
        elif rec["filesystem"] == "btrfs":
            s["met"] = s["snapfs_s"] < 0.100
        else:
            s["met"] = s["ratio"] <= 1.0
        rec["summary"] = s


def ms(v):
    return "—" if v is None else (f"{v * 1000:,.0f} ms" if v >= 1 else f"{v * 1000:.1f} ms" if v >= 0.01 else f"{v * 1000:.2f} ms")


def snapshot_table(report):
    lines = ["| filesystem | strategy | snapfs snapshot (wall) | snapfs durationMs | reference | reference time | "
             "snapfs/reference | target | met | longest writer stall (median / max) | writer median write |",
             "|---|---|---:|---:|---|---:|---:|---|---|---:|---:|"]
    for rec in report["snapshot_results"]:
        s = rec.get("summary", {})
        dur = s.get("duration_ms")
        lines.append("| " + " | ".join([
            rec["filesystem"], rec["strategy"], ms(s.get("snapfs_s")),
            "—" if dur is None else f"{dur:,.0f} ms", f"`{rec['reference']}`", ms(s.get("reference_s")),
            f"{s['ratio']:.2f}" if s.get("ratio") is not None else "—", rec["target"],
            {True: "yes", False: "**no**", None: "—"}[s.get("met")],
            f"{ms(s.get('stall_s'))} / {ms(s.get('stall_max_s'))}",
            "—" if s.get("writer_median_s") is None else f"{s['writer_median_s'] * 1e6:.0f} µs"]) + " |")
    return lines


def render_snapshots(report):
    cfg = report["config"]
    lines = [f"# snapfs snapshot benchmark, {report['started']}", ""]
    lines += ["Command:", "", "```", report["command"], "```", ""]
    lines += ["Machine:", ""] + [f"- {k}: {v}" for k, v in report["machine"].items()] + [""]
    lines += [f"Tree: {cfg['snapshot_files']:,} files × {human_size(cfg['snapshot_file_size'])} in "
              f"{cfg['snapshot_dirs']:,} directories, made natively in the backing directory before mounting. "
              f"{cfg['runs']} repetition(s) per file system; the snapshot and its reference alternate in order. "
              "Before each timed snapshot or copy: sync and drop_caches=3. The snapfs time is the wall time of "
              "`write(\"snapshot --force\")` to `.snapfs-control` (flush, freeze, build, metadata, rename); "
              "durationMs is the daemon's own figure (the build). The reference copies the same tree on the same "
              "file system with no writer. Each snapshot and copy is removed (untimed) before the next.",
              "",
              "Writer: a process doing 4 KiB pwrite()s through the mount in a tight loop (over a 1 MiB file) "
              "during every snapfs snapshot; the stall is the longest single write that overlapped the snapshot "
              f"request or began within {STALL_AFTER_S} s after it (so that copy-up counts), the median write is "
              "over the writes outside that window.", ""]
    lines += [f"## Results (median of the repetitions)", ""] + snapshot_table(report) + [""]
    lines += ["## Every run", "", "| filesystem | run | snapfs wall | durationMs | reference | stall | writes during | writer median |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rec in report["snapshot_results"]:
        for r in rec["runs"]:
            if "error" in r:
                lines.append(f"| {rec['filesystem']} | {r['run']} | error: {r['error']} | | | | | |")
                continue
            wm = r.get("writer_median_s")
            wm = "—" if wm is None else f"{wm * 1e6:.0f} µs"
            lines.append(f"| {rec['filesystem']} | {r['run']} | {ms(r.get('wall_s'))} | {r.get('duration_ms')} | "
                         f"{ms(r.get('reference_s'))} | {ms(r.get('stall_s'))} | {r.get('writes_during')} | {wm} |")
        if rec.get("fs_info"):
            lines.append(f"| {rec['filesystem']} | mount | {rec['fs_info']} | | | | | |")
    lines.append("")
    if report["errors"]:
        lines += ["## Errors", ""] + [f"- {e}" for e in report["errors"]] + [""]
    lines.append(f"Total time: {report['elapsed_s'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"


def main_snapshots(cfg):
    if os.geteuid() != 0:
        print("error: the snapshot benchmark must run as root (loop devices, mounts, drop_caches)", file=sys.stderr)
        return 2
    command, started, stamp, work_root, ctx = start_run(cfg)
    report = {"command": command, "started": started.isoformat(timespec="seconds"),
              "machine": machine_info(cfg, work_root),
              "config": {"runs": cfg.runs, "snapshot_files": cfg.snapshot_files, "snapshot_dirs": cfg.snapshot_dirs,
                         "snapshot_file_size": cfg.snapshot_file_size, "filesystems": cfg.snapshot_fs,
                         "snapfs_args": cfg.snapfs_args, "quick": cfg.quick},
              "snapshot_results": [], "errors": []}
    announce_run(command, report)
    t_start = time.time()
    bench = SnapshotBench(cfg, ctx, work_root, report)
    interrupted = None
    try:
        for kind in cfg.snapshot_fs:
            bench.run_fs(kind)
    except (Interrupted, KeyboardInterrupt) as e:
        interrupted = str(e) or "SIGINT"
        log(f"interrupted ({interrupted}); unmounting and cleaning up")
    finally:
        ignore_signals()
        bench.cleanup()
        remove_tree(work_root)
    report["elapsed_s"] = round(time.time() - t_start, 1)
    if interrupted:
        report["errors"].append(f"interrupted by {interrupted}; results are partial")
    summarize_snapshots(report)
    return finish_run(cfg, report, render_snapshots(report), f"snapshots-{stamp}", interrupted)


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
    p.add_argument("--_sqlite-worker", nargs=5, help=argparse.SUPPRESS, dest="sqlite_worker")
    p.add_argument("--_append-worker", nargs=3, help=argparse.SUPPRESS, dest="append_worker")
    p.add_argument("--append-count", type=int, help="appends in log-append (default 200000, --quick 20000)")
    p.add_argument("--snapshots", action="store_true",
                   help="run the snapshot benchmark instead of the workloads: snapshot time of a tree on ext4 "
                        "(hardlink vs cp -al), loop XFS (reflink vs cp --reflink) and loop btrfs (btrfs vs "
                        "btrfs subvolume snapshot), with a writer's longest stall (--only snapshot does the same)")
    p.add_argument("--snapshot-fs", default="ext4,xfs,btrfs", help="file systems of --snapshots (default ext4,xfs,btrfs)")
    p.add_argument("--snapshot-files", type=int, help="files in the --snapshots tree (default 100000, --quick 10000)")
    p.add_argument("--snapshot-dirs", type=int, help="directories they are spread over (default 1000, --quick 100)")
    p.add_argument("--snapshot-file-size", default="10K", help="size of each file (default 10K)")
    p.add_argument("--_stall-writer", nargs=2, help=argparse.SUPPRESS, dest="stall_writer")
    cfg = p.parse_args(argv)
    if cfg.sqlite_worker or cfg.append_worker or cfg.stall_writer:
        return cfg
    q = cfg.quick
    if cfg.only and [n.strip() for n in cfg.only.split(",") if n.strip()] == ["snapshot"]:
        cfg.snapshots = True
    if cfg.snapshots:
        cfg.runs = cfg.runs or (3 if q else 5)
        cfg.snapshot_files = cfg.snapshot_files or (10000 if q else 100000)
        cfg.snapshot_dirs = cfg.snapshot_dirs or (100 if q else 1000)
        cfg.snapshot_file_size = parse_size(cfg.snapshot_file_size)
        cfg.snapshot_fs = [k.strip() for k in cfg.snapshot_fs.split(",") if k.strip()]
        bad = [k for k in cfg.snapshot_fs if k not in SNAPSHOT_CASES]
        if bad or not cfg.snapshot_fs:
            p.error(f"unknown --snapshot-fs {bad}; choose from {list(SNAPSHOT_CASES)}")
        if cfg.snapshot_dirs < 1 or cfg.snapshot_files < 1 or cfg.runs < 1:
            p.error("--snapshot-files, --snapshot-dirs and --runs must be at least 1")
        cfg.snapfs_args = shlex.split(cfg.snapfs_args)
        return cfg
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


def main(argv):
    cfg = parse_args(argv)
    if cfg.sqlite_worker:
        db, mode, count, seconds, control = cfg.sqlite_worker
        sqlite_worker(db, mode, int(count), float(seconds), control)
        return 0
    if cfg.append_worker:
        path, count, control = cfg.append_worker
        append_worker(path, int(count), control)
        return 0
    if cfg.stall_writer:
        stall_writer(*cfg.stall_writer)
        return 0
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
    if cfg.snapshots:
        return main_snapshots(cfg)

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


def start_run(cfg):
    """The command line, the start time and its stamp, a new work directory and the Context."""
    command = shlex.join([sys.executable, *sys.argv])
    started = datetime.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    work_base = Path(cfg.work_dir)
    work_base.mkdir(parents=True, exist_ok=True)
    work_root = work_base / f"{stamp}-{os.getpid()}"
    work_root.mkdir()
    scratch = work_root / "bin"
    scratch.mkdir()
    return command, started, stamp, work_root, Context(cfg, scratch)


def announce_run(command, report):
    """Prints the command and the machine, and turns SIGTERM/SIGHUP/SIGINT into Interrupted."""
    print(f"$ {command}", flush=True)
    for k, v in report["machine"].items():
        print(f"  {k}: {v}", flush=True)

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, on_signal)


def ignore_signals():
    """While cleaning up: a second Ctrl-C must not leave mounts behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def finish_run(cfg, report, md, name, interrupted):
    """Writes the JSON report and its Markdown beside it, prints the Markdown; the exit code."""
    json_path = Path(cfg.json) if cfg.json else BENCH / "out" / f"{name}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(md)
    print()
    print(md, flush=True)
    print(f"Results: {json_path} and {md_path}")
    return 130 if interrupted else (1 if report["errors"] else 0)


def remove_tree(path):
    """Remove a scratch tree, but never through a mount that is still live."""
    if not path.exists():
        return
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        busy = [l.split()[4] for l in f if l.split()[4] == real or l.split()[4].startswith(real + "/")]
    if busy:
        log(f"WARNING: not removing {path}: still mounted: {', '.join(busy)}")
        return
    remove_sealed_tree(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
