#!/usr/bin/env python3
"""snapfs snapshot benchmark: the time of one snapshot of a tree of many small files, next
to the same tree copied on the same file system (ext4: the hardlink strategy against cp -al;
a loop XFS with reflink=1: reflink against cp -a --reflink=always; a loop btrfs: btrfs
against btrfs subvolume snapshot -r), with a writer's longest stall during each snapshot.

    python3 bench/snapshot_time.py                    # 100,000 files of 10 KiB in 1,000 dirs, 5 runs
    python3 bench/snapshot_time.py --quick            # 10,000 files in 100 dirs, 3 runs
    python3 bench/snapshot_time.py --snapshot-fs ext4 --snapshot-files 200 --snapshot-dirs 4 --runs 1

`python3 bench/run.py --snapshots` (or `--only snapshot`) runs this with the same arguments.
Must run as root (loop devices, mounts, drop_caches). Results go to
bench/out/snapshots-<timestamp>.json and .md (--json PATH to choose).
"""

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

from lib.harness import (BENCH, DEFAULT_SNAPFS, DEFAULT_WORK, BenchError, Interrupted, announce_run, capture,
                         finish_run, human_size, ignore_signals, log, machine_info, parse_size, remove_tree,
                         report_header, start_run)
from lib.stats import ms
from lib.targets import SnapfsTarget
from workers.stall_writer import read_stall_samples

from Integration.lib.loopfs import LoopFS, LoopFSError
from Integration.lib.mount import is_mounted

# Not a workload of run.py: it needs its own file systems (the work dir's ext4, a loop XFS
# with reflinks, a loop btrfs) and its own references (cp -al, cp -a --reflink=always, btrfs
# subvolume snapshot -r) instead of the native/snapfs/bindfs targets.
SNAPSHOT_CASES = {
    # file system: (snapfs strategy, reference name, target ratio or absolute limit)
    "ext4": ("hardlink", "cp -al", "ratio ≤ 1.0 × cp -al"),
    "xfs": ("reflink", "cp -a --reflink=always", "ratio ≤ 1.0 × cp --reflink"),
    "btrfs": ("btrfs", "btrfs subvolume snapshot -r", "< 100 ms"),
}
STALL_OPERATIONS = ["pwrite", "fdatasync", "rename", "unlink", "sqlite", "none"]
STALL_AFTER_S = 0.5           # writes starting this long after the snapshot returned still count


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
    (ext4), or a fresh XFS (reflink=1) or btrfs on a loop device (Integration/lib's LoopFS)."""

    def __init__(self, kind, base, image_size):
        self.kind, self.base = kind, base
        self.mnt = base / f"{kind}-fs"
        self.loop = None if kind == "ext4" else LoopFS(base, kind, image_size, name=f"{kind}-fs")

    @property
    def mounted(self):
        return self.loop is not None and is_mounted(self.mnt)

    @property
    def device(self):
        return self.loop.device if self.loop else None

    def setup(self):
        self.base.mkdir(parents=True, exist_ok=True)
        if self.loop is None:
            self.mnt.mkdir()
            return
        try:
            self.loop.open()
        except LoopFSError as e:
            raise BenchError(str(e))

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
        if self.loop is not None and not self.loop.close():
            log(f"WARNING: could not unmount {self.mnt}")


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

    def start_writer(self, path, out, operation="pwrite"):
        cmd = [sys.executable, str(BENCH / "workers" / "stall_writer.py"), str(path), str(out), operation]
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

    def snapfs_snapshot(self, mount, n, operation="pwrite"):
        """One timed snapshot with the stall writer running `operation`; returns a dict of facts."""
        out = self.work_root / f"stall-{os.getpid()}-{n}-{operation}.bin"
        target = mount.mnt / ("stall.db" if operation == "sqlite" else f"stall-{operation}.dat")
        if operation != "none":
            self.start_writer(target, out, operation)
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
        starts, durations = read_stall_samples(out) if operation != "none" else ([], [])
        out.unlink(missing_ok=True)
        during, outside = [], []
        longest, longest_at = -1, None
        for s, d in zip(starts, durations):
            if s + d >= t0 and s <= t1 + STALL_AFTER_S * 1e9:
                if d > longest:
                    longest, longest_at = d, (s - t0) / 1e6
                during.append(d)
            else:
                outside.append(d)
        facts = {"wall_s": (t1 - t0) / 1e9, "duration_ms": meta.get("durationMs"),
                 "gate_ms": meta.get("gateMs"), "stall_at_ms": longest_at,
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
            if "sqlite" in cfg.stall_ops:
                make_stall_database(mount.backing / "stall.db", cfg.stall_db_size)
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
                            # The snapshot's own time is the one taken with no writer when
                            # there is one (the reference copies with no writer either).
                            primary = "none" if "none" in cfg.stall_ops else cfg.stall_ops[0]
                            for op in cfg.stall_ops:
                                facts = self.snapfs_snapshot(mount, n, op)
                                if op == primary:
                                    entry.update(facts)
                                entry.setdefault("stalls", {})[op] = {"stall_s": facts["stall_s"],
                                                                      "wall_s": facts["wall_s"],
                                                                      "writes_during": facts["writes_during"],
                                                                      "gate_ms": facts["gate_ms"],
                                                                      "stall_at_ms": facts["stall_at_ms"]}
                                log(f"snapshot {kind} run {n} {op}: longest {fmt_ms(facts['stall_s'])} ms "
                                    f"at {fmt_ms(facts['stall_at_ms'], 1e-3)} ms after the trigger, gate held "
                                    f"{fmt_ms(facts['gate_ms'], 1e-3)} ms, snapshot {facts['wall_s'] * 1000:.0f} ms")
                    log(f"snapshot {kind} run {n}: snapfs {entry['wall_s'] * 1000:.0f} ms "
                        f"(metadata {entry['duration_ms']} ms), {ref_name} {entry['reference_s'] * 1000:.0f} ms, "
                        f"longest write {fmt_ms(entry['stall_s'])} ms over {entry['writes_during']} writes, "
                        f"writer median {fmt_ms(entry['writer_median_s'], 1e3)} µs")
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


def fmt_ms(value, scale=1.0):
    """`value` (seconds, or milliseconds with scale 1e-3) as milliseconds, or `-`."""
    return "-" if value is None else f"{value * scale * 1000:.1f}"


def make_stall_database(path, size):
    """A SQLite database of about `size` bytes (rows of 4 KiB), made natively."""
    import sqlite3
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("CREATE TABLE fill (v BLOB)")
    db.execute("BEGIN")
    blob = os.urandom(4000)
    for _ in range(max(1, size // 4096)):
        db.execute("INSERT INTO fill VALUES (?)", (blob,))
    db.execute("COMMIT")
    db.close()


def summarize_snapshots(report):
    for rec in report["snapshot_results"]:
        ok = [r for r in rec["runs"] if "wall_s" in r and "reference_s" in r]
        def med(key):
            values = [r[key] for r in ok if r.get(key) is not None]
            return statistics.median(values) if values else None
        s = {"n": len(ok), "snapfs_s": med("wall_s"), "duration_ms": med("duration_ms"),
             "reference_s": med("reference_s"), "stall_s": med("stall_s"),
             "stall_max_s": max((r["stall_s"] for r in ok if r.get("stall_s")), default=None),
             "writer_median_s": med("writer_median_s")}
        stalls = {}
        for r in ok:
            for op, facts in r.get("stalls", {}).items():
                if facts.get("stall_s") is not None:
                    stalls.setdefault(op, []).append(facts["stall_s"])
        s["stalls"] = {op: {"median_s": statistics.median(v), "max_s": max(v), "n": len(v)} for op, v in stalls.items()}
        if s["snapfs_s"] is not None and s["reference_s"]:
            s["ratio"] = s["snapfs_s"] / s["reference_s"]
        if s["snapfs_s"] is None:
            s["met"] = None
        elif rec["filesystem"] == "btrfs":
            s["met"] = s["snapfs_s"] < 0.100
        else:
            s["met"] = s["ratio"] <= 1.0
        rec["summary"] = s


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
    lines = report_header("snapfs snapshot benchmark", report)
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
              "over the writes outside that window. With the operation `none` among them, the snapfs time and "
              "its ratio are those of a snapshot taken with no writer, as the reference's copy is.", ""]
    lines += [f"## Results (median of the repetitions)", ""] + snapshot_table(report) + [""]
    ops = cfg.get("stall_ops", ["pwrite"])
    if len(ops) > 1:
        lines += ["## Longest stall by operation (median / max of the repetitions)", "",
                  "Each operation timed on its own, one snapfs snapshot each, as above.", "",
                  "| filesystem | strategy | " + " | ".join(ops) + " |", "|---|---|" + "---:|" * len(ops)]
        for rec in report["snapshot_results"]:
            st = rec.get("summary", {}).get("stalls", {})
            cells = [f"{ms(st[op]['median_s'])} / {ms(st[op]['max_s'])}" if op in st else "—" for op in ops]
            lines.append(f"| {rec['filesystem']} | {rec['strategy']} | " + " | ".join(cells) + " |")
        lines.append("")
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
                         "snapfs_args": cfg.snapfs_args, "quick": cfg.quick, "stall_ops": cfg.stall_ops,
                         "stall_db_size": cfg.stall_db_size},
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


def parse_args(argv, lenient=False):
    """`lenient`: ignore arguments this benchmark does not know (bench/run.py passes its own on)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10,000 files in 100 directories, 3 runs")
    p.add_argument("--runs", type=int, help="repetitions (default 5, --quick 3)")
    p.add_argument("--json", help="where to write the JSON results (the .md goes next to it)")
    p.add_argument("--snapfs-args", default="--sqlite detect",
                   help='extra arguments to `snapfs mount` (default: "--sqlite detect")')
    p.add_argument("--snapfs-bin", default=DEFAULT_SNAPFS, help="default $SNAPFS_BIN or .build/release/snapfs")
    p.add_argument("--work-dir", default=str(DEFAULT_WORK), help=f"scratch root (default {DEFAULT_WORK})")
    p.add_argument("--snapshot-fs", default="ext4,xfs,btrfs", help="file systems of --snapshots (default ext4,xfs,btrfs)")
    p.add_argument("--snapshot-files", type=int, help="files in the --snapshots tree (default 100000, --quick 10000)")
    p.add_argument("--snapshot-dirs", type=int, help="directories they are spread over (default 1000, --quick 100)")
    p.add_argument("--snapshot-file-size", default="10K", help="size of each file (default 10K)")
    p.add_argument("--stall-ops", default="pwrite",
                   help="the changes timed during snapfs snapshots, one snapshot each: pwrite, fdatasync (pwrite "
                        "then fdatasync), rename, unlink, sqlite (a commit on a database in the tree), none (no writer: "
                        "then the snapshot's time against the reference is this one's); default pwrite")
    p.add_argument("--stall-db-size", default="100M", help="size of the sqlite operation's database (default 100M)")
    cfg, unknown = p.parse_known_args(argv)
    if unknown and not lenient:
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    q = cfg.quick
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
    cfg.stall_ops = [o.strip() for o in cfg.stall_ops.split(",") if o.strip()]
    bad = [o for o in cfg.stall_ops if o not in STALL_OPERATIONS]
    if bad or not cfg.stall_ops:
        p.error(f"unknown --stall-ops {bad}; choose from {STALL_OPERATIONS}")
    cfg.stall_db_size = parse_size(cfg.stall_db_size)
    return cfg


def main(argv, lenient=False):
    return main_snapshots(parse_args(argv, lenient))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
