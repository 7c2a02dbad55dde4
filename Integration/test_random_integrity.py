"""Randomized data-integrity test through a snapfs mount.

A few files are changed by thousands of random operations (pwrite with holes,
ftruncate, every fallocate mode, copy_file_range, rename over, reopen with O_TRUNC or
O_APPEND, reads) while an in-memory model says what every file must contain. After each
step the touched files are compared with the model (size by fstat and stat, and the whole
content), every CHECK_EVERY steps all files and the backing directory too; at the end the
backing directory, and a fresh mount of it, must hold exactly the model's files. It runs
without the page cache (write-through: the backing directory is compared during the run
too), with the default cache, a tiny one (eviction and back-pressure all the time) and a
large one, and with the kernel's write-back cache (backing compared after unmount).

In CI (CI set) each run uses a fixed seed of FIXED_SEEDS, and the plain-directory check
also one new random seed; elsewhere every run draws a new seed. Replay a failure with
SNAPFS_SEED=<seed printed at the start>; SNAPFS_RANDOM_STEPS sets the number of operations
(default 3000). The same logic runs against any directory:

    python3 Integration/test_random_integrity.py DIR [SEED] [STEPS]

which is how to tell a snapfs bug from a test bug (run it on a plain directory).
"""

import collections
import itertools
import os
import pathlib
import random
import sys

import pytest

from lib.libc import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, fallocate

KIB = 1024
MIB = 1024 * KIB
MAX_SIZE = 4 * MIB
MAX_WRITE = 256 * KIB
NAMES = ("f0", "f1", "f2", "f3")
MAX_HANDLES = 8
CHECK_EVERY = 200


def read_all(fd):
    """The whole content of `fd` from offset 0 to EOF, by pread."""
    chunks, off = [], 0
    while True:
        b = os.pread(fd, 1 * MIB, off)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
        off += len(b)


def read_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_all(fd)
    finally:
        os.close(fd)


def first_difference(a, b):
    n = min(len(a), len(b))
    # Binary search on chunk equality would be faster, but files are small.
    step = 64 * KIB
    for base in range(0, n, step):
        if a[base:base + step] != b[base:base + step]:
            for i in range(base, min(base + step, n)):
                if a[i] != b[i]:
                    return i
    return n if len(a) != len(b) else None


def describe_difference(got, expected):
    i = first_difference(got, expected)
    if i is None:
        return "equal"
    # Extent of the differing run starting at i.
    j = i
    n = min(len(got), len(expected))
    while j < n and got[j] != expected[j]:
        j += 1
    return (f"got {len(got)} bytes, expected {len(expected)}; first difference at offset {i} "
            f"(differing run {i}..{j}); got[{i}:{i + 16}]={bytes(got[i:i + 16]).hex()} "
            f"expected[{i}:{i + 16}]={bytes(expected[i:i + 16]).hex()}")


class Node:
    """One file (inode) of the model."""
    _ids = itertools.count()

    def __init__(self):
        self.id = next(self._ids)
        self.data = bytearray()


class Handle:
    """An open descriptor on a Node: kind is 'rw', 'r' or 'append'."""

    def __init__(self, fd, node, kind, name):
        self.fd, self.node, self.kind, self.name = fd, node, kind, name

    @property
    def readable(self):
        return self.kind in ("rw", "r")

    def __repr__(self):
        return f"<fd {self.fd} {self.kind} node{self.node.id} opened as {self.name}>"


class RandomRun:
    """Random operations in `root`, checked against a model. `backing`, when given, is a
    directory that must hold the same files (the mount's backing directory)."""

    def __init__(self, root, seed, steps, backing=None, out=print):
        self.root = pathlib.Path(root)
        self.backing = pathlib.Path(backing) if backing else None
        self.seed = seed
        self.steps = steps
        self.rng = random.Random(seed)
        self.names = {}          # name -> Node
        self.handles = []        # open Handles
        self.step = 0
        self.op = "setup"
        self.history = collections.deque(maxlen=25)
        self.out = out
        self.counts = collections.Counter()

    # ---- reporting -------------------------------------------------------------------

    def where(self):
        recent = "\n    ".join(self.history)
        return (f"[seed={self.seed} step={self.step} op={self.op}; replay with SNAPFS_SEED={self.seed}]"
                f"\n  recent operations:\n    {recent}")

    def check(self, cond, what):
        if not cond:
            raise AssertionError(f"{what} {self.where()}")

    # ---- model helpers ---------------------------------------------------------------

    def path(self, name):
        return self.root / name

    def name_of(self, node):
        for name, n in self.names.items():
            if n is node:
                return name
        return None

    def handles_of(self, node):
        return [h for h in self.handles if h.node is node]

    def nodes(self):
        seen = {}
        for n in self.names.values():
            seen[n.id] = n
        for h in self.handles:
            seen[h.node.id] = h.node
        return list(seen.values())

    def rand_len(self):
        r = self.rng.random()
        if r < 0.4:
            return self.rng.randint(1, 4 * KIB)
        if r < 0.75:
            return self.rng.randint(1, 64 * KIB)
        return self.rng.randint(1, MAX_WRITE)

    def rand_offset(self, size, length):
        """An offset with room for `length` bytes under MAX_SIZE: inside the file, at EOF
        or beyond it (a hole), sometimes page aligned."""
        top = MAX_SIZE - length
        r = self.rng.random()
        if r < 0.55 and size > 0:
            off = self.rng.randint(0, min(size, top))
        elif r < 0.65:
            off = min(size, top)
        else:
            off = self.rng.randint(0, top)
        if self.rng.random() < 0.2:
            off -= off % 4096
        return off

    def open_handle(self, name, kind, trunc=False):
        flags = {"rw": os.O_RDWR | os.O_CREAT, "r": os.O_RDONLY,
                 "append": (os.O_WRONLY if self.rng.random() < 0.5 else os.O_RDWR) | os.O_APPEND | os.O_CREAT}[kind]
        if trunc:
            flags |= os.O_TRUNC
        if kind == "r" and name not in self.names:
            kind, flags = "rw", os.O_RDWR | os.O_CREAT
        fd = os.open(self.path(name), flags, 0o644)
        # A descriptor number the model still holds means the test closed a handle it uses.
        self.check(all(h.fd != fd for h in self.handles), f"test bug: fd {fd} is already in the model")
        node = self.names.get(name)
        if node is None:
            node = self.names[name] = Node()
        if trunc:
            del node.data[:]
        h = Handle(fd, node, kind, name)
        self.handles.append(h)
        return h

    def close_handle(self, h):
        os.close(h.fd)
        self.handles.remove(h)

    def make_room(self, keep=()):
        """Closes random handles until another fits, never one of `keep` (a handle the
        operation still uses: closed, its descriptor number would come back for the new
        handle, and the model would take one descriptor for two)."""
        while len(self.handles) >= MAX_HANDLES:
            self.close_handle(self.rng.choice([h for h in self.handles if h not in keep]))

    def writable(self, keep=()):
        hs = [h for h in self.handles if h.kind == "rw"]
        if hs:
            return self.rng.choice(hs)
        self.make_room(keep)
        return self.open_handle(self.rng.choice(NAMES), "rw")

    def readable(self):
        hs = [h for h in self.handles if h.readable]
        if hs:
            return self.rng.choice(hs)
        self.make_room()
        return self.open_handle(self.rng.choice(NAMES), "rw")

    @staticmethod
    def model_write(node, off, data):
        d = node.data
        if off > len(d):
            d.extend(bytes(off - len(d)))
        d[off:off + len(data)] = data

    @staticmethod
    def model_zero(node, off, end):
        end = min(end, len(node.data))
        if end > off:
            node.data[off:end] = bytes(end - off)

    @staticmethod
    def model_grow(node, size):
        if size > len(node.data):
            node.data.extend(bytes(size - len(node.data)))

    # ---- operations: each returns (description, touched nodes) ------------------------

    def op_pwrite(self):
        h = self.writable()
        n = self.rand_len()
        off = self.rand_offset(len(h.node.data), n)
        data = self.rng.randbytes(n)
        self.op = f"pwrite({h}, off={off}, len={n})"
        got = os.pwrite(h.fd, data, off)
        self.check(got == n, f"pwrite returned {got}, expected {n}")
        self.model_write(h.node, off, data)
        return [h.node]

    def op_append(self):
        hs = [h for h in self.handles if h.kind == "append"]
        if hs and self.rng.random() < 0.7:
            h = self.rng.choice(hs)
        else:
            self.make_room()
            h = self.open_handle(self.rng.choice(NAMES), "append")
        n = min(self.rand_len(), MAX_SIZE - len(h.node.data))
        if n <= 0:
            self.op = f"ftruncate({h}, 0) (before append: file full)"
            os.ftruncate(h.fd, 0)
            del h.node.data[:]
            n = self.rand_len()
        data = self.rng.randbytes(n)
        self.op = f"append write({h}, len={n}) at EOF {len(h.node.data)}"
        got = os.write(h.fd, data)
        self.check(got == n, f"write returned {got}, expected {n}")
        h.node.data.extend(data)
        return [h.node]

    def op_truncate(self):
        h = self.writable()
        size = len(h.node.data)
        if self.rng.random() < 0.5 and size > 0:
            new = self.rng.randint(0, size - 1) if self.rng.random() < 0.8 else 0
        else:
            new = self.rng.randint(size, MAX_SIZE)
        if self.rng.random() < 0.2:
            new -= new % 4096
        self.op = f"ftruncate({h}, {new}) from {size}"
        os.ftruncate(h.fd, new)
        if new < size:
            del h.node.data[new:]
        else:
            self.model_grow(h.node, new)
        return [h.node]

    def falloc_range(self, node):
        n = self.rand_len()
        off = self.rand_offset(len(node.data), n)
        return off, n

    def op_fallocate(self):
        h = self.writable()
        off, n = self.falloc_range(h.node)
        self.op = f"fallocate({h}, mode=0, off={off}, len={n}) size {len(h.node.data)}"
        fallocate(h.fd, 0, off, n)
        self.model_grow(h.node, off + n)
        return [h.node]

    def op_fallocate_keep_size(self):
        h = self.writable()
        off, n = self.falloc_range(h.node)
        self.op = f"fallocate({h}, KEEP_SIZE, off={off}, len={n}) size {len(h.node.data)}"
        fallocate(h.fd, FALLOC_FL_KEEP_SIZE, off, n)
        return [h.node]

    def op_punch_hole(self):
        h = self.writable()
        off, n = self.falloc_range(h.node)
        self.op = f"fallocate({h}, PUNCH_HOLE|KEEP_SIZE, off={off}, len={n}) size {len(h.node.data)}"
        fallocate(h.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, n)
        self.model_zero(h.node, off, off + n)
        return [h.node]

    def op_zero_range(self):
        h = self.writable()
        off, n = self.falloc_range(h.node)
        keep = self.rng.random() < 0.4
        mode = FALLOC_FL_ZERO_RANGE | (FALLOC_FL_KEEP_SIZE if keep else 0)
        self.op = (f"fallocate({h}, ZERO_RANGE{'|KEEP_SIZE' if keep else ''}, off={off}, len={n}) "
                   f"size {len(h.node.data)}")
        fallocate(h.fd, mode, off, n)
        if not keep:
            self.model_grow(h.node, off + n)
        self.model_zero(h.node, off, off + n)
        return [h.node]

    def op_copy_file_range(self):
        src = self.readable()
        dst = self.writable(keep=(src,))
        ssize = len(src.node.data)
        n = self.rand_len()
        if ssize > 0 and self.rng.random() < 0.9:
            soff = self.rng.randint(0, ssize - 1)
        else:
            soff = self.rng.randint(0, MAX_SIZE - 1)
        doff = self.rand_offset(len(dst.node.data), n)
        if src.node is dst.node and soff < doff + n and doff < soff + n:
            # Same file: move the target after the source range, or give up the overlap.
            doff = soff + n
            if doff + n > MAX_SIZE:
                doff = self.rng.randint(0, max(0, soff - n)) if soff >= n else None
            if doff is None:
                return self.op_pwrite()
        expected = max(0, min(n, ssize - soff))
        self.op = (f"copy_file_range({src} off={soff} -> {dst} off={doff}, len={n}) "
                   f"src size {ssize}, dst size {len(dst.node.data)}")
        got = os.copy_file_range(src.fd, dst.fd, n, soff, doff)
        self.check(got == expected, f"copy_file_range returned {got}, expected {expected}")
        data = bytes(src.node.data[soff:soff + got])
        if got:
            self.model_write(dst.node, doff, data)
        return [dst.node]

    def op_rename(self):
        existing = [n for n in NAMES if n in self.names]
        if not existing:
            self.make_room()
            self.open_handle(self.rng.choice(NAMES), "rw")
            existing = [n for n in NAMES if n in self.names]
        a = self.rng.choice(existing)
        b = self.rng.choice([n for n in NAMES if n != a])
        self.op = f"rename({a} -> {b}) over {'node%d' % self.names[b].id if b in self.names else 'nothing'}"
        os.rename(self.path(a), self.path(b))
        self.names[b] = self.names.pop(a)
        return [self.names[b]]

    def op_reopen(self):
        if self.handles and self.rng.random() < 0.7:
            h = self.rng.choice(self.handles)
            self.close_handle(h)
            closed = f"close({h}); "
        else:
            closed = ""
        self.make_room()
        name = self.rng.choice(NAMES)
        r = self.rng.random()
        if r < 0.25:
            kind, trunc = "rw", True
        elif r < 0.55:
            kind, trunc = "rw", False
        elif r < 0.85:
            kind, trunc = "r", False
        else:
            kind, trunc = "append", self.rng.random() < 0.3
        self.op = f"{closed}open({name}, {kind}{', O_TRUNC' if trunc else ''})"
        h = self.open_handle(name, kind, trunc)
        touched = [h.node]
        if kind == "rw" and self.rng.random() < 0.5:
            # A second descriptor on the same file for reading.
            self.make_room()
            if h in self.handles:
                r2 = self.open_handle(name, "r")
                self.op += f"; open({name}, r) = fd {r2.fd}"
        if kind == "append":
            n = min(self.rand_len(), MAX_SIZE - len(h.node.data))
            if n > 0:
                data = self.rng.randbytes(n)
                self.op += f"; append write(fd {h.fd}, len={n}) at EOF {len(h.node.data)}"
                got = os.write(h.fd, data)
                self.check(got == n, f"write returned {got}, expected {n}")
                h.node.data.extend(data)
        return touched

    def op_read(self):
        h = self.readable()
        size = len(h.node.data)
        n = self.rand_len()
        off = self.rng.randint(0, size + 8192) if self.rng.random() < 0.9 else self.rng.randint(0, MAX_SIZE)
        self.op = f"pread({h}, off={off}, len={n}) size {size}"
        got = os.pread(h.fd, n, off)
        expected = bytes(h.node.data[off:off + n])
        self.check(got == expected, f"pread mismatch: {describe_difference(got, expected)}")
        return []

    def op_drop_cache(self):
        h = self.readable()
        self.op = f"posix_fadvise({h}, DONTNEED)"
        os.posix_fadvise(h.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return [h.node]

    OPS = (
        ("pwrite", 26), ("append", 5), ("truncate", 8), ("fallocate", 5),
        ("fallocate_keep_size", 4), ("punch_hole", 7), ("zero_range", 7),
        ("copy_file_range", 9), ("rename", 4), ("reopen", 9), ("read", 12), ("drop_cache", 2),
    )

    # ---- checks ----------------------------------------------------------------------

    def verify_node(self, node, fresh_open=False):
        expected = bytes(node.data)
        size = len(expected)
        hs = self.handles_of(node)
        for h in hs:
            st = os.fstat(h.fd)
            self.check(st.st_size == size, f"fstat({h}).st_size = {st.st_size}, expected {size}")
        name = self.name_of(node)
        if name is not None:
            st = os.stat(self.path(name))
            self.check(st.st_size == size, f"stat({name}).st_size = {st.st_size}, expected {size} (node{node.id})")
        readers = [h for h in hs if h.readable]
        if readers and not fresh_open:
            h = self.rng.choice(readers)
            got = read_all(h.fd)
            self.check(got == expected, f"content via {h}: {describe_difference(got, expected)}")
        elif name is not None:
            got = read_path(self.path(name))
            self.check(got == expected, f"content of {name} (fresh open, node{node.id}): "
                                        f"{describe_difference(got, expected)}")

    def verify_dir(self, root, label):
        # The backing directory also holds snapfs's .snapshots (hidden in the mount).
        listed = sorted(n for n in os.listdir(root) if n != ".snapshots")
        self.check(listed == sorted(self.names), f"{label} lists {listed}, expected {sorted(self.names)}")
        for name, node in self.names.items():
            p = pathlib.Path(root) / name
            st = os.stat(p)
            self.check(st.st_size == len(node.data),
                       f"{label}: stat({name}).st_size = {st.st_size}, expected {len(node.data)}")
            got = read_path(p)
            self.check(got == node.data, f"{label}: content of {name}: {describe_difference(got, node.data)}")

    def verify_all(self):
        for node in self.nodes():
            self.verify_node(node)
        self.verify_dir(self.root, "directory")
        if self.backing is not None:
            self.verify_dir(self.backing, "backing directory")

    # ---- driver ----------------------------------------------------------------------

    def run(self):
        ops = [getattr(self, "op_" + name) for name, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        names = [name for name, _ in self.OPS]
        for self.step in range(1, self.steps + 1):
            i = self.rng.choices(range(len(ops)), weights)[0]
            self.counts[names[i]] += 1
            self.op = names[i]
            try:
                touched = ops[i]()
            except OSError as e:
                raise AssertionError(f"{self.op} failed: {e!r} {self.where()}") from e
            self.history.append(f"{self.step}: {self.op}")
            for node in touched:
                self.verify_node(node)
            if self.step % CHECK_EVERY == 0:
                self.op = "check all files"
                self.verify_all()
        self.step = "end"
        self.op = "final check with the descriptors open"
        self.verify_all()
        self.close_all()
        self.op = "final check after closing every descriptor"
        self.verify_all()
        return self

    def close_all(self):
        for h in list(self.handles):
            self.close_handle(h)


# CI runs fixed seeds, so that a failure there is a failure every time and can be replayed;
# 657982340 once found a bug of this test (a handle closed while still in use).
FIXED_SEEDS = (657982340, 1, 20240518)


def seed_and_steps(fixed=None):
    """SNAPFS_SEED if set; else `fixed` (a seed of FIXED_SEEDS, or None for a new random
    seed); outside CI, a new random seed each run. The seed is printed either way."""
    if os.environ.get("SNAPFS_SEED"):
        seed = int(os.environ["SNAPFS_SEED"])
    elif fixed is not None and os.environ.get("CI"):
        seed = fixed
    else:
        seed = random.SystemRandom().randrange(2**32)
    steps = int(os.environ.get("SNAPFS_RANDOM_STEPS", "3000"))
    return seed, steps


MOUNTS = {
    # The default: the kernel's write-back cache in front of snapfs's.
    "default": ((), ()),
    "kernel_cache_tiny_cache": ((), ("--cache-size", "64K")),
    # Without the kernel's cache every write reaches snapfs when it is made.
    # No page cache either: every acknowledged change is in the backing directory at once.
    "write_through": (("no_writeback_cache",), ("--cache-size", "0")),
    "no_kernel_cache": (("no_writeback_cache",), ()),
    # 16 pages, 4 of them dirty at most: eviction and back-pressure at almost every step.
    "tiny_cache": (("no_writeback_cache",), ("--cache-size", "64K", "--dirty-limit", "16K")),
    "large_cache": (("no_writeback_cache",), ("--cache-size", "1G", "--dirty-age", "1h")),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MOUNTS))
def test_random_integrity(make_mount, kind):
    seed, steps = seed_and_steps(fixed=FIXED_SEEDS[list(MOUNTS).index(kind) % len(FIXED_SEEDS)])
    options, extra_args = MOUNTS[kind]
    print(f"seed={seed} mount={kind} options={list(options)} args={list(extra_args)}")
    m = make_mount(options=options, extra_args=extra_args)
    # Write-through, the backing directory is compared during the run too; with a
    # cache (snapfs's or the kernel's), after unmount.
    write_through = kind == "write_through"
    run = RandomRun(m.mnt, seed, steps, backing=m.backing if write_through else None)
    try:
        run.run()
    finally:
        run.close_all()
    print(f"seed={seed}: {steps} operations: {dict(run.counts)}")
    assert steps >= 1 and sum(run.counts.values()) == steps, f"seed={seed}"
    assert m.alive(), f"seed={seed}: the snapfs daemon died"

    # After unmounting, the backing directory alone must hold the model's files ...
    m.stop()
    run.step, run.op = "end", "check backing directory after unmount"
    run.verify_dir(m.backing, "backing directory after unmount")

    # ... and a new mount of it must serve them again (with a cold cache).
    m2 = make_mount(backing=m.backing, name="mnt2", options=options, extra_args=extra_args)
    run.root = m2.mnt
    run.op = "check a new mount of the backing directory"
    run.verify_dir(m2.mnt, "remounted directory")
    for node in run.nodes():
        run.verify_node(node, fresh_open=True)


@pytest.mark.parametrize("fixed", list(FIXED_SEEDS) + [None], ids=[str(s) for s in FIXED_SEEDS] + ["random"])
def test_random_integrity_model_on_plain_directory(workdir, fixed):
    """The same operations on a plain directory: the model and the test are right if this
    passes (a failure here is a test bug, not a snapfs bug). Every fixed seed, and one new
    random seed (printed, to replay with SNAPFS_SEED)."""
    seed, steps = seed_and_steps(fixed=fixed)
    steps = min(steps, int(os.environ.get("SNAPFS_RANDOM_PLAIN_STEPS", "600")))
    print(f"seed={seed} (plain directory, {steps} steps)")
    d = workdir / "plain"
    d.mkdir()
    run = RandomRun(d, seed, steps)
    try:
        run.run()
    finally:
        run.close_all()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: test_random_integrity.py DIR [SEED] [STEPS]")
    target = sys.argv[1]
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else random.SystemRandom().randrange(2**32)
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    print(f"seed={seed}")
    r = RandomRun(target, seed, steps)
    r.run()
    print(f"ok: {dict(r.counts)}")
