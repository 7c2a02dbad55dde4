#!/usr/bin/env python3
"""The snapshot benchmark's writer (bench/snapshot_time.py): one kind of change through the
mount in a tight loop, each timed, until SIGTERM; prints "ready" after the first; then
writes the (start_ns, duration_ns) pairs to OUT (read back by read_stall_samples).

    python3 bench/workers/stall_writer.py PATH OUT [OPERATION]

OPERATION (default pwrite), each in the directory of PATH:
    pwrite     a 4 KiB pwrite() to PATH (over a 1 MiB region)
    fdatasync  the same followed by fdatasync(), so that no cache hides a wait
    rename     PATH renamed to PATH.b and back, one rename timed at a time
    unlink     a file PATH.N created (untimed), then unlinked (timed)
    sqlite     one transaction (an INSERT) committed on the SQLite database PATH (which
               must exist), journal_mode=DELETE, synchronous=FULL
"""
import array
import os
import signal
import sys
import time
from pathlib import Path

STALL_WRITE = 4096
STALL_REGION = 256            # the writer cycles over 256 blocks (1 MiB)


def stall_writer(path, out, operation="pwrite"):
    """Runs in a child process: `operation` through the mount in a tight loop, each timed
    (CLOCK_MONOTONIC, as the harness's own clock), until SIGTERM; then writes the
    (start_ns, duration_ns) pairs to OUT."""
    stop = []
    signal.signal(signal.SIGTERM, lambda s, f: stop.append(1))
    step, done = OPERATIONS[operation](path)
    starts, durations = array.array("q"), array.array("q")
    clock = time.monotonic_ns
    i = 0
    while not stop:
        t0, t1 = step(i, clock)
        starts.append(t0)
        durations.append(t1 - t0)
        if i == 0:
            print("ready", flush=True)
        i += 1
    done()
    with open(out, "wb") as f:
        f.write(len(starts).to_bytes(8, "little"))
        starts.tofile(f)
        durations.tofile(f)


def _pwrite(path, sync=False):
    block = os.urandom(STALL_WRITE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def step(i, clock):
        t0 = clock()
        os.pwrite(fd, block, (i % STALL_REGION) * STALL_WRITE)
        if sync:
            os.fdatasync(fd)
        return t0, clock()
    return step, lambda: os.close(fd)


def _rename(path):
    names = [str(path), str(path) + ".b"]
    open(names[0], "wb").close()

    def step(i, clock):
        t0 = clock()
        os.rename(names[i % 2], names[(i + 1) % 2])
        return t0, clock()
    return step, lambda: None


def _unlink(path):
    def step(i, clock):
        name = f"{path}.{i}"
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        t0 = clock()
        os.unlink(name)
        return t0, clock()
    return step, lambda: None


def _sqlite(path):
    import sqlite3
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS stall (i INTEGER, v BLOB)")
    value = os.urandom(100)

    def step(i, clock):
        t0 = clock()
        db.execute("BEGIN")
        db.execute("INSERT INTO stall VALUES (?, ?)", (i, value))
        db.execute("COMMIT")
        return t0, clock()
    return step, db.close


OPERATIONS = {
    "pwrite": _pwrite,
    "fdatasync": lambda path: _pwrite(path, sync=True),
    "rename": _rename,
    "unlink": _unlink,
    "sqlite": _sqlite,
}


def read_stall_samples(path):
    """(starts, durations) as the writer left them in `path`."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    starts, durations = array.array("q"), array.array("q")
    starts.frombytes(data[8:8 + 8 * n])
    durations.frombytes(data[8 + 8 * n:8 + 16 * n])
    return starts, durations


if __name__ == "__main__":
    stall_writer(sys.argv[1], sys.argv[2], *sys.argv[3:4])
