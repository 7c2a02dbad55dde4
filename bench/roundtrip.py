#!/usr/bin/env python3
"""One request's round trip through a mount: the mean time of 20,000 4-byte pwrite(2)s to
a file named like a SQLite journal (which snapfs serves with direct I/O, so each is a
request), of fstat(2) (answered from the kernel's cache) and of statvfs(2) (a request).

    python3 bench/roundtrip.py MOUNTPOINT [COUNT]
"""
import os
import sys
import time


def mean_us(call, count):
    start = time.perf_counter()
    for i in range(count):
        call(i)
    return (time.perf_counter() - start) / count * 1e6


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = os.path.join(sys.argv[1], "roundtrip-journal")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        w = mean_us(lambda i: os.pwrite(fd, b"abcd", i * 4 % 65536), count)
        s = mean_us(lambda i: os.fstat(fd), count)
        v = mean_us(lambda i: os.statvfs(path), count)
    finally:
        os.close(fd)
        os.unlink(path)
    print(f"pwrite {w:.1f} us  fstat {s:.1f} us  statfs {v:.1f} us")


if __name__ == "__main__":
    main()
