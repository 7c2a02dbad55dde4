"""snapfs's request counters (the `requests:` line of `snapfs status`, read straight from
MOUNT/.snapfs-control) and requests per operation: what one write(), file, append or
transaction cost in round trips to the daemon.

Reading the counters is itself a few requests (open, read, release of the control file,
sometimes a lookup). So a measurement reads them twice before the work and once after;
the two reads before give the cost of one reading, which is taken off the difference:

    work = (after - second) - (second - first)

per kind, never below zero. Used by run.py in its own process (around fio) and by the
workers (bench/workers/) in theirs (around the timed part only).
"""
import os

PREFIX = "requests: "


def read_line(control):
    """The `requests:` line's text after the key, or '' when the mount has none (an older
    build, a read-only mount): one open, one read, one close."""
    try:
        fd = os.open(control, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        text = os.read(fd, 1 << 16).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)
    for line in text.splitlines():
        if line.startswith(PREFIX):
            return line[len(PREFIX):].strip()
    return ""


def parse(text):
    """{kind: count} from `total=N write=N ...` (kinds not listed are 0)."""
    counts = {}
    for part in text.split():
        kind, _, value = part.partition("=")
        if value.isdigit():
            counts[kind] = int(value)
    return counts


def work(first, second, after):
    """The requests the work made, from three readings (dicts or lines): two back to back
    before it, one after; None when the mount does not count requests."""
    return between(first, second, second, after)


def between(first, second, before, after):
    """The requests made between readings `before` and `after`, less the cost of one
    reading (`second` - `first`, read back to back), per kind, never below zero; None when
    the mount does not count requests."""
    first, second, before, after = (parse(x) if isinstance(x, str) else x for x in (first, second, before, after))
    if not after:
        return None
    out = {}
    for k in set(first) | set(second) | set(before) | set(after):
        if k == "total":
            continue
        v = (after.get(k, 0) - before.get(k, 0)) - (second.get(k, 0) - first.get(k, 0))
        if v > 0:
            out[k] = v
    out["total"] = sum(out.values())
    return out


class Around:
    """`with Around(control) as r: ...work...` then r.counts (or None): the requests the
    work made. control None (not a snapfs target): does nothing."""

    def __init__(self, control):
        self.control = control
        self.counts = None

    def __enter__(self):
        if self.control:
            self.first = read_line(self.control)
            self.second = read_line(self.control)
        return self

    def __exit__(self, kind, value, tb):
        if self.control and kind is None:
            self.counts = work(self.first, self.second, read_line(self.control))
        return False


def read_counters(control):
    """In a worker: the control file's request counters, two readings back to back (see
    above); None when not on a snapfs target."""
    if control == "-":
        return None
    return read_line(control), read_line(control)


def counted_since(control, before):
    return None if before is None else work(*before, read_line(control))
