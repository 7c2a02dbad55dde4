#!/usr/bin/env python3
"""The snapshot benchmark's writer (bench/snapshot_time.py): 4 KiB pwrite()s to PATH in a
tight loop, each timed, until SIGTERM; prints "ready" after the first; then writes the
(start_ns, duration_ns) pairs to OUT (read back by read_stall_samples).

    python3 bench/workers/stall_writer.py PATH OUT
"""
import array
import os
import signal
import sys
import time
from pathlib import Path

STALL_WRITE = 4096
STALL_REGION = 256            # the writer cycles over 256 blocks (1 MiB)


def stall_writer(path, out):
    """Runs in a child process: 4 KiB pwrites through the mount in a tight loop, each
    timed (CLOCK_MONOTONIC, as the harness's own clock), until SIGTERM; then writes the
    (start_ns, duration_ns) pairs to OUT."""
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
    """(starts, durations) as the writer left them in `path`."""
    data = Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    starts, durations = array.array("q"), array.array("q")
    starts.frombytes(data[8:8 + 8 * n])
    durations.frombytes(data[8 + 8 * n:8 + 16 * n])
    return starts, durations


if __name__ == "__main__":
    stall_writer(sys.argv[1], sys.argv[2])
