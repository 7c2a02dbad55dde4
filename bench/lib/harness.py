"""The benchmarks' harness: logging, sizes, the context a run's workloads share (the cache
drop, commands with a timeout, C helpers built at run time), the machine's facts, the
report files (JSON and Markdown), signals and clean-up."""

import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from Integration.lib.mount import mounts_under

from . import request_counts
from .trees import remove_tree as remove_sealed_tree

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
DEFAULT_SNAPFS = os.environ.get("SNAPFS_BIN", str(REPO / ".build" / "release" / "snapfs"))
DEFAULT_WORK = Path("/var/tmp/snapfs-bench")
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
        """Compile bench/workers/NAME.c with cc -O2 into the scratch dir (once) and return its path."""
        if name not in self.helpers:
            src = BENCH / "workers" / f"{name}.c"
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
    busy = [r[0] for r in mounts_under(path)]
    if busy:
        log(f"WARNING: not removing {path}: still mounted: {', '.join(busy)}")
        return
    remove_sealed_tree(path)


def report_header(title, report):
    """The first lines of a report in Markdown: its title and start time, the command, the machine."""
    lines = [f"# {title}, {report['started']}", ""]
    lines += ["Command:", "", "```", report["command"], "```", ""]
    lines += ["Machine:", ""] + [f"- {k}: {v}" for k, v in report["machine"].items()] + [""]
    return lines
