"""What bench/replication.py needs beside the S3 server (Integration/lib/s3.py): a watcher
of the object store that notes when each new object first shows up in a listing, the
commit-to-restorable lag computed from it, and Litestream.

The lag of a commit is measured the same way for snapfs and for Litestream: the writer
notes when each COMMIT returned; a thread lists the bucket (S3 ListObjectsV2, every
`interval` s) and notes when each new object is first listed — a restic snapshot file
(`REPO/snapshots/ID`, which restic writes last, after the data and index it needs) or a
Litestream level-0 LTX file (`PATH/0000/MIN-MAX.ltx`). Each such object is then restored
on its own (`snapfs restore --from` its snapshot, `litestream restore -txid` its TXID) and
the newest row it holds is read: that is what it made restorable. A commit is restorable
from the first object listed whose restore holds it."""

import bisect
import os
import shutil
import subprocess
import threading
import time

from Integration.lib.s3 import ACCESS_KEY, BUCKET, SECRET_KEY, file_tail, stop_process


class BucketWatch:
    """Lists `prefix` in the bucket every `interval` s in a thread of its own; `seen` maps
    each key to the time (time.time(), once the listing that held it was received) it was
    first listed. Keys already there at start() are in `before`, not in `seen`."""

    def __init__(self, endpoint, prefix, interval=0.05):
        import boto3
        self.client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                                   aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
        self.prefix = prefix
        self.interval = interval
        self.before = set()
        self.seen = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = None

    def keys(self):
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=self.prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def start(self):
        self.before = set(self.keys())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                keys = self.keys()
            except Exception:  # a listing that failed is retried at the next turn
                self.errors += 1
                keys = []
            now = time.time()
            for k in keys:
                if k not in self.before and k not in self.seen:
                    self.seen[k] = now
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def lags(commit_times, first_id, units):
    """Seconds from each commit to restorable. commit_times[i] is when row first_id + i was
    committed; units are (time first listed, newest row its restore holds). Returns
    (lags of the commits made restorable, count of commits no unit holds)."""
    units = sorted(units)
    times, reach = [], []
    best = 0
    for seen, newest in units:
        if newest > best:
            best = newest
            times.append(seen)
            reach.append(newest)
    out, missing = [], 0
    for i, committed in enumerate(commit_times):
        j = bisect.bisect_left(reach, first_id + i)
        if j == len(reach):
            missing += 1
        else:
            out.append(times[j] - committed)
    return out, missing


class Litestream:
    """`litestream replicate` of one database to PATH in the bucket, with a config file of
    its own; stopped by its pid. Credentials reach it in the environment (AWS_*, which it
    reads by itself), never in the config file."""

    def __init__(self, binary, db, workdir, endpoint, path, env):
        self.binary = binary
        self.db = db
        self.config = workdir / "litestream.yml"
        self.log = workdir / "litestream.log"
        self.path = path
        # Its S3 client refuses a custom CA bundle (AWS_CA_BUNDLE) with a plain-HTTP
        # endpoint ("unable to add custom RootCAs HTTPClient"): the endpoint here is http.
        self.env = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
        self.config.write_text(
            "dbs:\n"
            f"  - path: {db}\n"
            "    replicas:\n"
            "      - type: s3\n"
            f"        bucket: {BUCKET}\n"
            f"        path: {path}\n"
            f"        endpoint: {endpoint}\n"
            "        region: us-east-1\n"
            "        force-path-style: true\n")
        self.process = None

    def start(self):
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([self.binary, "replicate", "-config", str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, start_new_session=True)
        return self

    def restore(self, out, txid=None, timeout=600):
        args = [self.binary, "restore", "-config", str(self.config), "-o", str(out)]
        if txid is not None:
            args += ["-txid", f"{txid:016x}"]
        return subprocess.run(args + [str(self.db)], capture_output=True, text=True, timeout=timeout, env=self.env)

    def log_tail(self, n=10):
        return file_tail(self.log, n)

    def stop(self):
        stop_process(self.process, timeout=30)


def ltx_max_txid(key):
    """The highest TXID an LTX file holds, from its name (`…/MIN-MAX.ltx`, in hex)."""
    return int(key.rsplit("/", 1)[1].split(".")[0].split("-")[1], 16)


def tool_version(binary, *args):
    if binary is None or shutil.which(binary) is None and not os.path.exists(binary):
        return "not found"
    try:
        r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=20)
        return (r.stdout.strip() or r.stderr.strip()).splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"
