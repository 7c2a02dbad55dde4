#!/usr/bin/env python3
"""The log-append workload's worker (bench/run.py runs it in a child process, so that a hung
mount can be timed out): COUNT appends of 128 bytes to PATH opened with O_APPEND, then
fsync; prints {"appends", "seconds", "requests"} as JSON.

    python3 bench/workers/log_append.py PATH COUNT CONTROL   # CONTROL: a snapfs control file, or -
"""
import json
import os
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for lib

from lib.request_counts import counted_since, read_counters  # noqa: E402


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


if __name__ == "__main__":
    path, count, control = sys.argv[1:4]
    append_worker(path, int(count), control)
