"""The daemon's request counters through a real mount: `snapfs status` has one
`requests: total=N kind=N ...` line, and N direct-I/O writes and N fsyncs move the `write`
and `fsync` counts by at least N, over /dev/fuse and over io_uring alike. O_TMPFILE, which
snapfs answers itself before libfuse sees it, is counted too."""

import mmap
import os
import re

import pytest

from lib.common import wait_until
from lib.control import snapfs_status as status
from lib.mount import log_text

BLOCK = 4096


def requests(m):
    """The counters of `snapfs status`, as a dict (`total` and each kind shown)."""
    line = status(m)["requests"]
    assert re.fullmatch(r"total=\d+( [a-z_]+=\d+)*", line), line
    counts = {k: int(v) for k, v in (part.split("=") for part in line.split())}
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total"), line
    return counts


def delta(before, after, kind):
    return after.get(kind, 0) - before.get(kind, 0)


def writes_and_fsyncs(path, n):
    """N aligned 4 KiB writes with O_DIRECT (each one request, whatever the kernel's cache
    mode), each followed by an fsync."""
    buf = mmap.mmap(-1, BLOCK)    # page-aligned, as O_DIRECT wants
    buf.write(b"r" * BLOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    try:
        for i in range(n):
            assert os.pwrite(fd, buf, i * BLOCK) == BLOCK
            os.fsync(fd)
    finally:
        os.close(fd)


def check_counts(m):
    n = 200
    before = requests(m)
    writes_and_fsyncs(m.mnt / "direct.dat", n)
    fd = os.open(m.mnt, os.O_TMPFILE | os.O_RDWR, 0o600)
    os.close(fd)
    after = requests(m)
    assert delta(before, after, "write") >= n
    assert delta(before, after, "fsync") >= n
    assert delta(before, after, "tmpfile") == 1
    assert delta(before, after, "total") >= 2 * n + 1
    assert (m.backing / "direct.dat").stat().st_size == n * BLOCK
    # Nothing done, nothing counted but the status reads themselves (open, read, release…).
    again = requests(m)
    assert delta(after, again, "write") == 0 and delta(after, again, "fsync") == 0


def test_status_counts_requests(make_mount):
    m = make_mount()
    counts = requests(m)
    assert counts.get("init") == 1     # the first request of every connection
    check_counts(m)


def test_requests_over_io_uring_are_counted(make_mount, uring_parameter):  # noqa: F811
    m = make_mount(options=["uring"])
    assert wait_until(lambda: re.search(r"io_uring: \d+ queues, \d+ entries each", log_text(m)), timeout=5)
    check_counts(m)


def test_fsyncs_of_a_cached_file_rarely_carry_a_time_setattr(make_mount):
    """With the kernel's write-back cache, the kernel keeps a file's modification time and
    hands it over with a setattr before an fsync when a write moved it. It moves only when
    the coarse clock ticks, unless something on the machine took a fine-grained timestamp
    since: reading a file's times (Linux >= 6.13) makes its next change take one. snapfs's
    write and setattr paths read the backing file's status without its times; when they
    read them, every fsync here carried one (999 of 1000), a third of the requests."""
    m = make_mount()
    n = 1000
    path = m.mnt / "cached.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        before = requests(m)
        for i in range(n):
            os.pwrite(fd, b"f" * 4120, 32 + i * 4120)     # a WAL frame's shape: two pages
            os.fdatasync(fd)
        after = requests(m)
    finally:
        os.close(fd)
    assert delta(before, after, "fsync") >= n
    setattrs = delta(before, after, "setattr")
    assert setattrs < n // 2, f"{setattrs} setattr requests for {n} fsyncs"
    assert path.stat().st_size == (m.backing / "cached.log").stat().st_size == 32 + n * 4120
