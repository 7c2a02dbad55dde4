"""Files larger than 4 GiB through a snapfs mount: 64-bit offsets and sizes, sparse files
that stay sparse, holes that read as zeros, SEEK_DATA/SEEK_HOLE, truncation across the
4 GiB boundary, copy_file_range at high offsets and a streamed write above 4 GiB.

Only a few dozen MiB are really written (the files are sparse); the tests are skipped
only when the disk under the test directory lacks that space.
"""

import errno
import hashlib
import os
import random

import pytest

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
NEED_FREE = 512 * MIB

# (offset, length) of the data regions of the sparse file.
REGIONS = [
    (0, 5 * KIB),
    (2**32 - 1, 6 * KIB),          # straddles the 4 GiB boundary
    (5 * GIB, 8 * KIB),
    (6 * GIB + 12345, 3 * KIB + 7),
]
END = REGIONS[-1][0] + REGIONS[-1][1]


@pytest.fixture
def big_mount(make_mount, workdir):
    st = os.statvfs(workdir)
    free = st.f_bavail * st.f_frsize
    if free < NEED_FREE:
        pytest.skip(f"only {free // MIB} MiB free under {workdir}, these tests need {NEED_FREE // MIB} MiB")
    return make_mount()


def region_data(seed, i, n):
    return random.Random(seed * 1000 + i).randbytes(n)


def pread_all(fd, n, off):
    out = b""
    while len(out) < n:
        b = os.pread(fd, n - len(out), off + len(out))
        if not b:
            break
        out += b
    return out


def drop_cache(fd):
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def make_sparse(path, seed):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i, (off, n) in enumerate(REGIONS):
            assert os.pwrite(fd, region_data(seed, i, n), off) == n, f"pwrite at {off}"
    finally:
        os.close(fd)


def check_regions(fd, seed, label, regions=REGIONS):
    for i, (off, n) in enumerate(regions):
        got = pread_all(fd, n, off)
        assert got == region_data(seed, i, n), f"seed={seed} {label}: region {i} at {off} ({n} bytes) differs"


HOLES = [  # (offset, length) ranges that must read as zeros
    (5 * KIB, 64 * KIB),
    (1 * GIB, 1 * MIB),
    (2**32 - 1 - 64 * KIB, 64 * KIB),           # just below the straddling region
    (2**32 - 1 + 6 * KIB, 128 * KIB),           # just above it
    (4 * GIB + 512 * MIB, 64 * KIB),
    (5 * GIB - 4 * KIB, 4 * KIB),
    (5 * GIB + 8 * KIB, 256 * KIB),
    (6 * GIB, 12345),
]


def check_holes(fd, label, holes=HOLES):
    for off, n in holes:
        got = pread_all(fd, n, off)
        assert len(got) == n, f"{label}: short read in the hole at {off}: {len(got)} of {n}"
        assert got == bytes(n), f"{label}: hole at {off}+{n} is not zeros (first non-zero at " \
                                f"{off + next(i for i, b in enumerate(got) if b)})"


def seek(fd, off, whence):
    try:
        return os.lseek(fd, off, whence)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return "ENXIO"
        raise


@pytest.fixture(scope="module")
def seed():
    s = int(os.environ["SNAPFS_SEED"]) if os.environ.get("SNAPFS_SEED") else random.SystemRandom().randrange(2**32)
    print(f"seed={s}")
    return s


def test_sparse_file_beyond_4gib(big_mount, seed):
    m = big_mount
    path, backing = m.mnt / "sparse", m.backing / "sparse"
    make_sparse(path, seed)

    for label, p in (("mount", path), ("backing", backing)):
        st = os.stat(p)
        assert st.st_size == END, f"{label}: size {st.st_size}, expected {END}"
        # Sparse: only the written blocks are allocated (a few per region), not 6 GiB.
        assert st.st_blocks * 512 < 4 * MIB, f"{label}: {st.st_blocks} blocks allocated: the file is not sparse"
    assert os.stat(path).st_blocks == os.stat(backing).st_blocks

    fd = os.open(path, os.O_RDONLY)
    try:
        check_regions(fd, seed, "mount (cached)")
        check_holes(fd, "mount (cached)")
        drop_cache(fd)
        check_regions(fd, seed, "mount (after dropping the cache)")
        check_holes(fd, "mount (after dropping the cache)")
        assert os.pread(fd, 100, END) == b"", "data read at EOF"
        assert os.pread(fd, 100, END - 1) == region_data(seed, 3, REGIONS[3][1])[-1:], "last byte"
    finally:
        os.close(fd)
    bfd = os.open(backing, os.O_RDONLY)
    try:
        check_regions(bfd, seed, "backing")
        check_holes(bfd, "backing")
    finally:
        os.close(bfd)
    # Reading the holes must not have allocated anything.
    assert os.stat(backing).st_blocks * 512 < 4 * MIB


def test_seek_data_and_hole(big_mount, seed):
    m = big_mount
    path, backing = m.mnt / "sparse", m.backing / "sparse"
    make_sparse(path, seed)
    fd = os.open(path, os.O_RDONLY)
    bfd = os.open(backing, os.O_RDONLY)
    try:
        r5, n5 = REGIONS[2]
        probes = [
            (4 * GIB + 1 * MIB, os.SEEK_DATA), (r5 - 1, os.SEEK_DATA), (r5, os.SEEK_DATA),
            (r5 + 100, os.SEEK_DATA), (r5, os.SEEK_HOLE), (r5 + 100, os.SEEK_HOLE),
            (r5 - 4096, os.SEEK_HOLE), (r5 + n5 + 4096, os.SEEK_DATA), (0, os.SEEK_HOLE),
            (2**32 - 1, os.SEEK_DATA), (2**32, os.SEEK_HOLE), (END - 1, os.SEEK_HOLE),
            (END, os.SEEK_DATA), (END + GIB, os.SEEK_DATA), (END, os.SEEK_HOLE),
        ]
        for off, whence in probes:
            got, want = seek(fd, off, whence), seek(bfd, off, whence)
            name = "SEEK_DATA" if whence == os.SEEK_DATA else "SEEK_HOLE"
            assert got == want, f"lseek({off}, {name}) through the mount = {got}, on the backing file = {want}"

        # And what a filesystem must answer, whatever its block size (up to 64 KiB):
        data = seek(fd, 4 * GIB + 1 * MIB, os.SEEK_DATA)
        assert r5 - 64 * KIB < data <= r5, f"SEEK_DATA from 4 GiB + 1 MiB = {data}, expected at most {r5}"
        hole = seek(fd, r5, os.SEEK_HOLE)
        assert r5 + n5 <= hole < r5 + n5 + 64 * KIB, f"SEEK_HOLE from 5 GiB = {hole}, expected just after {r5 + n5}"
        assert seek(fd, r5 + 100, os.SEEK_DATA) == r5 + 100
        assert seek(fd, END, os.SEEK_DATA) == "ENXIO"
        assert seek(fd, END - 1, os.SEEK_HOLE) == END
        # The file position really moved.
        os.lseek(fd, 4 * GIB + 1 * MIB, os.SEEK_DATA)
        assert os.lseek(fd, 0, os.SEEK_CUR) == data
        assert os.read(fd, 16) == pread_all(bfd, 16, data)
    finally:
        os.close(fd)
        os.close(bfd)


def test_truncate_across_4gib(big_mount, seed):
    m = big_mount
    path, backing = m.mnt / "sparse", m.backing / "sparse"
    make_sparse(path, seed)
    fd = os.open(path, os.O_RDWR)
    try:
        check_regions(fd, seed, "before truncate")  # fill the page cache above 4 GiB
        new = 4 * GIB + 1
        os.ftruncate(fd, new)
        assert os.fstat(fd).st_size == new
        assert os.stat(path).st_size == new
        assert os.stat(backing).st_size == new
        assert os.pread(fd, 10, new) == b"", "data after the new EOF"
        assert os.pread(fd, 10, 5 * GIB) == b"", "data after the new EOF (old 5 GiB region)"
        straddle = region_data(seed, 1, REGIONS[1][1])
        # The straddling region starts at 2^32 - 1: its first 2 bytes are below the new size.
        assert pread_all(fd, 100, 2**32 - 1) == straddle[:2], "the bytes below 4 GiB + 1 changed"
        check_regions(fd, seed, "after truncate", REGIONS[:1])

        # Growing again must show zeros where the cut data was (no stale cached pages).
        os.ftruncate(fd, 6 * GIB)
        assert os.stat(path).st_size == 6 * GIB and os.stat(backing).st_size == 6 * GIB
        assert pread_all(fd, REGIONS[2][1], REGIONS[2][0]) == bytes(REGIONS[2][1]), \
            "old data reappeared at 5 GiB after truncate down and up"
        got = pread_all(fd, 64 * KIB, 2**32 - 1)
        assert got == straddle[:2] + bytes(64 * KIB - 2), "old data reappeared just above 4 GiB + 1"
        drop_cache(fd)
        got = pread_all(fd, 64 * KIB, 2**32 - 1)
        assert got == straddle[:2] + bytes(64 * KIB - 2), "old data above 4 GiB + 1 (from the daemon)"

        # And down to exactly 4 GiB + 1 again, through truncate(2) on the path this time.
        os.truncate(path, new)
        assert os.fstat(fd).st_size == new and os.stat(backing).st_size == new
    finally:
        os.close(fd)
    assert os.stat(backing).st_blocks * 512 < 4 * MIB, "truncation allocated the holes"


def test_copy_file_range_at_high_offsets(big_mount, seed):
    m = big_mount
    src, dst = m.mnt / "sparse", m.mnt / "copy"
    make_sparse(src, seed)
    dst.write_bytes(b"head")
    sfd = os.open(src, os.O_RDONLY)
    dfd = os.open(dst, os.O_RDWR)
    try:
        # The 5 GiB region plus some of the holes around it, to 7 GiB + 333 in another file.
        r5, n5 = REGIONS[2]
        soff, n, doff = r5 - 1000, n5 + 3000, 7 * GIB + 333
        copied = 0
        while copied < n:
            c = os.copy_file_range(sfd, dfd, n - copied, soff + copied, doff + copied)
            assert c > 0, f"copy_file_range returned {c} after {copied} of {n} bytes"
            copied += c
        expected = bytes(1000) + region_data(seed, 2, n5) + bytes(2000)
        assert os.fstat(dfd).st_size == doff + n
        assert os.stat(m.backing / "copy").st_size == doff + n
        assert pread_all(dfd, n, doff) == expected, "copied data differs (through the mount)"
        assert pread_all(dfd, 4, 0) == b"head" and pread_all(dfd, 4096, doff - 4096) == bytes(4096)
        drop_cache(dfd)
        assert pread_all(dfd, n, doff) == expected, "copied data differs (after dropping the cache)"
        with open(m.backing / "copy", "rb") as f:
            f.seek(doff)
            assert f.read() == expected, "copied data differs in the backing file"

        # The region that straddles 4 GiB, copied over part of the earlier copy.
        r4, n4 = REGIONS[1]
        c = os.copy_file_range(sfd, dfd, n4, r4, doff + 500)
        assert c == n4, f"copy_file_range returned {c}, expected {n4}"
        expected = expected[:500] + region_data(seed, 1, n4) + expected[500 + n4:]
        assert pread_all(dfd, n, doff) == expected, "second copy differs"
        # Past the source's EOF nothing is copied.
        assert os.copy_file_range(sfd, dfd, 4096, END, 8 * GIB) == 0
        assert os.fstat(dfd).st_size == doff + n
    finally:
        os.close(sfd)
        os.close(dfd)
    assert os.stat(m.backing / "copy").st_blocks * 512 < 4 * MIB, "the copy is not sparse"


def test_streaming_write_above_4gib(big_mount, seed):
    m = big_mount
    path = m.mnt / "stream"
    base = 4 * GIB + 12345   # not page aligned
    total, chunk = 64 * MIB, 1 * MIB
    rng = random.Random(seed)
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.lseek(fd, base, os.SEEK_SET)
        for _ in range(total // chunk):
            data = rng.randbytes(chunk)
            digest.update(data)
            assert os.write(fd, data) == chunk
        assert os.lseek(fd, 0, os.SEEK_CUR) == base + total
    finally:
        os.close(fd)
    assert os.stat(path).st_size == base + total
    assert os.stat(m.backing / "stream").st_size == base + total

    def hash_of(p, drop):
        h = hashlib.sha256()
        fd = os.open(p, os.O_RDONLY)
        try:
            if drop:
                drop_cache(fd)
            off = base
            while off < base + total:
                b = os.pread(fd, min(4 * MIB, base + total - off), off)
                assert b, f"{p}: EOF at {off}"
                h.update(b)
                off += len(b)
            assert os.pread(fd, 1, base + total) == b""
            assert pread_all(fd, 4096, base - 4096) == bytes(4096), f"{p}: the hole before the data is not zeros"
        finally:
            os.close(fd)
        return h.hexdigest()

    want = digest.hexdigest()
    assert hash_of(path, False) == want, f"seed={seed}: streamed data differs (through the mount)"
    assert hash_of(path, True) == want, f"seed={seed}: streamed data differs (after dropping the cache)"
    assert hash_of(m.backing / "stream", False) == want, f"seed={seed}: streamed data differs in the backing file"
    assert total <= os.stat(m.backing / "stream").st_blocks * 512 < total + 4 * MIB
