#!/usr/bin/env python3
"""One request's round trip through a mount: the mean time of 20,000 4-byte pwrite(2)s to
a file named like a SQLite journal (which snapfs serves with direct I/O, so each is a
request), of fstat(2) (answered from the kernel's cache) and of statvfs(2) (a request).

    python3 bench/roundtrip.py MOUNTPOINT [COUNT] [--daemon-pid PID]

With --daemon-pid (the pid of the process serving the mount: every one of its threads is
pinned), it measures the same calls three times more, each with this process and the
daemon on chosen CPUs: both on one CPU, and the two on different CPUs each way. The gap
between those lines is the cost of waking a sleeping CPU for each request and its reply.
The daemon's CPU affinity is put back at the end.
"""
import os
import sys
import time


def mean_us(call, count):
    start = time.perf_counter()
    for i in range(count):
        call(i)
    return (time.perf_counter() - start) / count * 1e6


def measure(mount, count):
    path = os.path.join(mount, "roundtrip-journal")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        w = mean_us(lambda i: os.pwrite(fd, b"abcd", i * 4 % 65536), count)
        s = mean_us(lambda i: os.fstat(fd), count)
        v = mean_us(lambda i: os.statvfs(path), count)
    finally:
        os.close(fd)
        os.unlink(path)
    return f"pwrite {w:.1f} us  fstat {s:.1f} us  statfs {v:.1f} us"


def threads(pid):
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


def pin(pid, cpus):
    """Pins every thread of `pid` (threads it starts later inherit the pinning)."""
    for tid in threads(pid):
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile


def placements(mount, count, pid):
    mine = os.sched_getaffinity(0)
    cpus = sorted(mine)
    if len(cpus) < 2:
        sys.exit("error: placements need two CPUs")
    a, b = cpus[0], cpus[-1]
    theirs = os.sched_getaffinity(pid)
    try:
        print(f"unpinned             {measure(mount, count)}")
        for app, daemon in ((a, a), (b, b), (a, b), (b, a)):
            os.sched_setaffinity(0, {app})
            pin(pid, {daemon})
            print(f"app cpu {app}, daemon cpu {daemon}  {measure(mount, count)}")
    finally:
        os.sched_setaffinity(0, mine)
        pin(pid, theirs)


def main():
    args = sys.argv[1:]
    pid = None
    if "--daemon-pid" in args:
        at = args.index("--daemon-pid")
        if at + 1 >= len(args):
            sys.exit(__doc__)
        pid = int(args[at + 1])
        del args[at:at + 2]
    if not args:
        sys.exit(__doc__)
    count = int(args[1]) if len(args) > 1 else 20000
    if pid is None:
        print(measure(args[0], count))
    else:
        placements(args[0], count, pid)


if __name__ == "__main__":
    main()
