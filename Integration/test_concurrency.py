"""Several processes at once through one snapfs mount.

(a) each of 4 writers writes its own file in random-sized chunks while 4 readers keep
    reading those files back and checking the prefix written so far;
(b) 6 processes pwrite disjoint stripes of one shared file, then the file is verified;
(c) 4 processes append tagged fixed-size records with O_APPEND: nothing lost, no record
    torn, each writer's records in order;
(d) 4 processes create/rename/unlink in one directory (and race for shared names with
    rename) while another lists it in a loop;
(e) a writer and a reader in two processes: once write() has returned, the reader sees
    the data (fresh open and a long-lived descriptor), also after truncations.

Every test ends by checking the daemon is still alive. SNAPFS_SEED replays the random
choices (chunk sizes, stripes) of a failure.
"""

import array
import hashlib
import multiprocessing
import os
import random
import re
import stat
import struct
import time
import traceback

import pytest

KIB = 1024
MIB = 1024 * KIB
CTX = multiprocessing.get_context("fork")
TIMEOUT = 120


@pytest.fixture(scope="module")
def seed():
    s = int(os.environ["SNAPFS_SEED"]) if os.environ.get("SNAPFS_SEED") else random.SystemRandom().randrange(2**32)
    print(f"seed={s}")
    return s


def pattern(tag, size):
    """Deterministic content for `tag`: every 8-byte word holds (tag, word index), so a
    byte at the wrong place or from another file is noticed."""
    base = hash_tag(tag) << 40
    return array.array("Q", range(base, base + size // 8 + 1)).tobytes()[:size]


def hash_tag(tag):
    return int.from_bytes(hashlib.blake2b(str(tag).encode(), digest_size=3).digest(), "little")


def diff_at(got, expected):
    n = min(len(got), len(expected))
    for i in range(0, n, 4096):
        if got[i:i + 4096] != expected[i:i + 4096]:
            for j in range(i, min(i + 4096, n)):
                if got[j] != expected[j]:
                    return f"first difference at {j}: got {got[j:j + 16].hex()} expected {expected[j:j + 16].hex()}"
    return f"lengths {len(got)} vs {len(expected)}" if len(got) != len(expected) else "equal"


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def _child(target, args, q, index):
    code = 0
    try:
        result = target(*args)
        q.put((index, "ok", result))
    except BaseException:
        q.put((index, "error", traceback.format_exc()))
        code = 1
    q.close()
    q.join_thread()  # the result must reach the pipe before os._exit
    os._exit(code)


def run_processes(jobs, timeout=TIMEOUT):
    """Runs [(function, args)] each in its own process, all at once; returns their results
    in order, or fails with every child's traceback."""
    q = CTX.Queue()
    procs = [CTX.Process(target=_child, args=(f, a, q, i)) for i, (f, a) in enumerate(jobs)]
    for p in procs:
        p.start()
    results, errors = {}, []
    deadline = time.time() + timeout
    while len(results) + len(errors) < len(procs):
        remaining = deadline - time.time()
        if remaining <= 0:
            break
        try:
            index, status, value = q.get(timeout=min(remaining, 1.0))
        except Exception:
            if all(not p.is_alive() for p in procs) and q.empty():
                break
            continue
        if status == "ok":
            results[index] = value
        else:
            errors.append(f"process {index} ({jobs[index][0].__name__}):\n{value}")
    for p in procs:
        p.join(timeout=max(0.1, deadline - time.time()))
    hung = [i for i, p in enumerate(procs) if p.is_alive()]
    for i in hung:
        procs[i].kill()
        procs[i].join()
    assert not errors, "\n".join(errors)
    assert not hung, f"processes {hung} did not finish within {timeout} s"
    missing = [i for i in range(len(procs)) if i not in results]
    assert not missing, f"processes {missing} exited without a result (exit codes {[procs[i].exitcode for i in missing]})"
    return [results[i] for i in range(len(procs))]


def assert_daemon_alive(m):
    os.kill(m.pid, 0)  # raises ProcessLookupError if the daemon is gone
    assert m.alive()


# ---- (a) own files written in chunks, read back by other processes -----------------------

WRITERS_A = 4
SIZE_A = 16 * MIB


def writer_a(path, tag, seed, done, start):
    rng = random.Random(seed)
    data = pattern(tag, SIZE_A)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start.wait()
        off = 0
        while off < SIZE_A:
            n = min(rng.choice([rng.randint(1, 512), rng.randint(1, 16 * KIB), rng.randint(1, 128 * KIB)]),
                    SIZE_A - off)
            w = os.write(fd, data[off:off + n])
            assert w == n, f"{path}: write of {n} at {off} returned {w}"
            off += n
            # Read back what this process just wrote, through another descriptor.
            if rng.random() < 0.05:
                got = read_file(path)
                assert got[:off] == data[:off] and len(got) == off, f"{path} after {off} bytes: {diff_at(got, data[:off])}"
    finally:
        os.close(fd)
        done.set()
    return off


def reader_a(paths_tags, done_events, start):
    checks = 0
    fds = {}
    full = {tag: pattern(tag, SIZE_A) for _, tag in paths_tags}
    start.wait()
    try:
        while True:
            finished = all(e.is_set() for e in done_events)
            for path, tag in (paths_tags if finished else [random.choice(paths_tags)]):
                try:
                    if path not in fds or random.random() < 0.5:
                        got = read_file(path)
                    else:
                        got = b"".join(iter(lambda: os.read(fds[path], MIB), b""))
                        os.lseek(fds[path], 0, os.SEEK_SET)
                except FileNotFoundError:
                    continue
                if path not in fds:
                    fds[path] = os.open(path, os.O_RDONLY)
                expected = full[tag][:len(got)]
                assert len(got) <= SIZE_A and got == expected, f"{path} read {len(got)} bytes: {diff_at(got, expected)}"
                checks += 1
            if finished:
                break
    finally:
        for fd in fds.values():
            os.close(fd)
    return checks


def test_a_own_files_with_concurrent_readers(snapfs_mount, seed):
    m = snapfs_mount
    files = [(str(m.mnt / f"own{i}"), f"own{i}") for i in range(WRITERS_A)]
    done = [CTX.Event() for _ in files]
    start = CTX.Barrier(2 * WRITERS_A)
    jobs = [(writer_a, (p, t, seed + i, done[i], start)) for i, (p, t) in enumerate(files)]
    # Each reader checks the files of all writers (so every file is read by other processes).
    jobs += [(reader_a, (files[i:] + files[:i], done, start)) for i in range(WRITERS_A)]
    results = run_processes(jobs)
    assert results[:WRITERS_A] == [SIZE_A] * WRITERS_A, f"seed={seed}"
    assert all(r > 0 for r in results[WRITERS_A:]), f"seed={seed}: a reader checked nothing: {results}"
    for p, t in files:
        got = read_file(p)
        assert got == pattern(t, SIZE_A), f"seed={seed} {p}: {diff_at(got, pattern(t, SIZE_A))}"
        backing = read_file(m.backing / os.path.basename(p))
        assert backing == pattern(t, SIZE_A), f"seed={seed} backing {p}: {diff_at(backing, pattern(t, SIZE_A))}"
    print(f"(a) reader checks: {results[WRITERS_A:]}")
    assert_daemon_alive(m)


# ---- (b) disjoint pwrites to one shared file ---------------------------------------------

WRITERS_B = 6
SIZE_B = 12 * MIB


def stripes_b(seed):
    """Cuts [0, SIZE_B) into stripes of random sizes, dealt to the writers."""
    rng = random.Random(seed)
    bounds, off = [], 0
    while off < SIZE_B:
        n = min(rng.choice([rng.randint(1, 4096), rng.randint(1, 64 * KIB), rng.randint(1, 512 * KIB)]), SIZE_B - off)
        bounds.append((off, n))
        off += n
    owners = [rng.randrange(WRITERS_B) for _ in bounds]
    return bounds, owners


def writer_b(path, index, seed, start):
    bounds, owners = stripes_b(seed)
    mine = [b for b, o in zip(bounds, owners) if o == index]
    random.Random(seed * 31 + index).shuffle(mine)
    data = pattern("shared", SIZE_B)
    fd = os.open(path, os.O_RDWR)
    try:
        start.wait()
        for off, n in mine:
            w = os.pwrite(fd, data[off:off + n], off)
            assert w == n, f"pwrite of {n} at {off} returned {w}"
    finally:
        os.close(fd)
    return len(mine)


def test_b_disjoint_pwrites_to_one_file(snapfs_mount, seed):
    m = snapfs_mount
    path = m.mnt / "shared"
    path.write_bytes(b"")
    start = CTX.Barrier(WRITERS_B)
    counts = run_processes([(writer_b, (str(path), i, seed, start)) for i in range(WRITERS_B)])
    bounds, _ = stripes_b(seed)
    assert sum(counts) == len(bounds), f"seed={seed}"
    expected = pattern("shared", SIZE_B)
    assert os.stat(path).st_size == SIZE_B, f"seed={seed}: size {os.stat(path).st_size}"
    got = read_file(path)
    assert got == expected, f"seed={seed}: shared file: {diff_at(got, expected)}"
    backing = read_file(m.backing / "shared")
    assert backing == expected, f"seed={seed}: backing shared file: {diff_at(backing, expected)}"
    assert_daemon_alive(m)


# ---- (c) O_APPEND records from several processes -----------------------------------------

APPENDERS = 4
RECORDS = 400
RECORD = 1531  # not a divisor of the page size: records straddle pages
RECORD_HEAD = struct.Struct("<4sHI")  # magic, writer id, sequence number


def record(writer, seq):
    head = RECORD_HEAD.pack(b"REC:", writer, seq)
    body = hashlib.shake_128(head).digest(RECORD - len(head) - 1)
    return head + body + b"\n"


def appender_c(path, writer, start):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        start.wait()
        for seq in range(RECORDS):
            rec = record(writer, seq)
            w = os.write(fd, rec)
            assert w == RECORD, f"appender {writer}: write of record {seq} returned {w}"
    finally:
        os.close(fd)
    return RECORDS


def check_records(data, label):
    assert len(data) == APPENDERS * RECORDS * RECORD, \
        f"{label}: size {len(data)}, expected {APPENDERS * RECORDS * RECORD}"
    next_seq = [0] * APPENDERS
    for k in range(0, len(data), RECORD):
        rec = data[k:k + RECORD]
        magic, writer, seq = RECORD_HEAD.unpack_from(rec)
        assert magic == b"REC:" and writer < APPENDERS, f"{label}: torn record at offset {k}: {rec[:16].hex()}"
        assert rec == record(writer, seq), f"{label}: record at offset {k} (writer {writer}, seq {seq}) is damaged"
        assert seq == next_seq[writer], \
            f"{label}: writer {writer}: record {seq} at offset {k}, expected record {next_seq[writer]}"
        next_seq[writer] += 1
    assert next_seq == [RECORDS] * APPENDERS, f"{label}: records per writer {next_seq}"


@pytest.mark.parametrize("options", [(), ("no_writeback_cache",)], ids=["default", "no_writeback_cache"])
def test_c_concurrent_o_append(make_mount, options):
    m = make_mount(options=options)
    path = m.mnt / "log"
    path.write_bytes(b"")
    start = CTX.Barrier(APPENDERS)
    run_processes([(appender_c, (str(path), i, start)) for i in range(APPENDERS)])
    assert os.stat(path).st_size == APPENDERS * RECORDS * RECORD
    check_records(read_file(path), "through the mount")
    assert_daemon_alive(m)
    m.stop()
    check_records(read_file(m.backing / "log"), "backing file after unmount")


# ---- (d) create / rename / unlink races in one directory, with a lister -----------------

CHURNERS = 4
ROUNDS_D = 250
SHARED_D = 40
NAME_RE = re.compile(r"^(w\d+_\d+(\.tmp)?|shared_\d+|w\d+_got_\d+)$")


def content_d(name):
    return f"content of {name}\n".encode() * 3


def churner_d(d, index, seed, start):
    rng = random.Random(seed * 7 + index)
    mine = set()
    got_shared = []
    shared_order = list(range(SHARED_D))
    rng.shuffle(shared_order)
    start.wait()
    for k in range(ROUNDS_D):
        name = f"w{index}_{k}"
        tmp = os.path.join(d, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(content_d(name))
        os.rename(tmp, os.path.join(d, name))
        mine.add(name)
        r = rng.random()
        if r < 0.4 and mine:
            victim = rng.choice(sorted(mine))
            os.unlink(os.path.join(d, victim))
            mine.discard(victim)
        elif r < 0.55 and len(mine) >= 2:
            # Rename one of its own files over another of its own.
            a, b = rng.sample(sorted(mine), 2)
            os.rename(os.path.join(d, a), os.path.join(d, b))
            mine.discard(a)
            # b now holds a's content: rewrite it so every name holds its own content.
            with open(os.path.join(d, b), "wb") as f:
                f.write(content_d(b))
        if k % 6 == 0 and shared_order:
            # Race the other processes for a shared name: exactly one rename may win.
            j = shared_order.pop()
            try:
                os.rename(os.path.join(d, f"shared_{j}"), os.path.join(d, f"w{index}_got_{j}"))
                got_shared.append(j)
            except FileNotFoundError:
                pass
    for j in shared_order:
        try:
            os.rename(os.path.join(d, f"shared_{j}"), os.path.join(d, f"w{index}_got_{j}"))
            got_shared.append(j)
        except FileNotFoundError:
            pass
    return sorted(mine), sorted(got_shared)


def lister_d(d, stop):
    listings = 0
    while not stop.is_set():
        names = os.listdir(d)
        for n in names:
            assert NAME_RE.match(n), f"unexpected name {n!r} in the listing"
        with os.scandir(d) as it:
            for e in it:
                assert NAME_RE.match(e.name), f"unexpected name {e.name!r} in the listing"
                try:
                    st = e.stat(follow_symlinks=False)
                    assert stat.S_ISREG(st.st_mode), f"{e.name}: mode {st.st_mode:o}"
                except FileNotFoundError:
                    pass  # renamed or unlinked since the listing: expected
        listings += 1
    return listings


def test_d_create_rename_unlink_with_lister(snapfs_mount, seed):
    m = snapfs_mount
    d = m.mnt / "dir"
    d.mkdir()
    for j in range(SHARED_D):
        (d / f"shared_{j}").write_bytes(content_d(f"shared_{j}"))
    start = CTX.Barrier(CHURNERS)
    stop = CTX.Event()

    jobs = [(churner_d, (str(d), i, seed, start)) for i in range(CHURNERS)]
    q = CTX.Queue()
    lister = CTX.Process(target=_child, args=(lister_d, (str(d), stop), q, 0))
    lister.start()
    try:
        results = run_processes(jobs)
    finally:
        stop.set()
        lister.join(TIMEOUT)
    status, value = q.get(timeout=10)[1:]
    assert status == "ok", f"seed={seed}: lister failed:\n{value}"
    assert value > 0, "the lister never completed a listing"
    print(f"(d) {value} listings during the churn")

    expected = set()
    winners = {}
    for i, (mine, got) in enumerate(results):
        expected |= set(mine)
        for j in got:
            assert j not in winners, f"seed={seed}: shared_{j} was renamed by both w{winners[j]} and w{i}"
            winners[j] = i
            expected.add(f"w{i}_got_{j}")
    assert sorted(winners) == list(range(SHARED_D)), f"seed={seed}: shared names nobody got: " \
        f"{sorted(set(range(SHARED_D)) - set(winners))}"
    listed = set(os.listdir(d))
    assert listed == expected, (f"seed={seed}: listing differs: extra {sorted(listed - expected)}, "
                                f"missing {sorted(expected - listed)}")
    assert set(os.listdir(m.backing / "dir")) == expected, f"seed={seed}: backing listing differs"
    for name in expected:
        want = content_d(re.sub(r"^w\d+_got_", "shared_", name))
        assert (d / name).read_bytes() == want, f"seed={seed}: content of {name}"
    assert_daemon_alive(m)


# ---- (e) write in one process, read in another ---------------------------------------------

ROUNDS_E = 300


def writer_e(path, seed, conn):
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    size = 0
    try:
        for k in range(ROUNDS_E):
            r = rng.random()
            if r < 0.1:
                size = rng.randint(0, size)
                os.ftruncate(fd, size)
                conn.send(("size", size, None, None))
            else:
                n = rng.randint(1, 64 * KIB)
                # Mostly overwrite what the reader has already read (stale cache shows up).
                off = rng.randint(0, size) if size and rng.random() < 0.8 else size
                data = rng.randbytes(n)
                assert os.pwrite(fd, data, off) == n
                size = max(size, off + n)
                conn.send(("data", size, off, data))
            ack = conn.recv()
            assert ack == k, f"reader acknowledged {ack}, expected {k}"
        conn.send(("end", size, None, None))
    finally:
        os.close(fd)
    return size


def reader_e(path, conn):
    held = None
    rounds = 0
    try:
        while True:
            kind, size, off, data = conn.recv()
            if kind == "end":
                return rounds
            if held is None:
                held = os.open(path, os.O_RDONLY)
            st = os.stat(path)
            assert st.st_size == size, f"round {rounds}: stat size {st.st_size}, writer's size {size}"
            assert os.fstat(held).st_size == size, f"round {rounds}: fstat size {os.fstat(held).st_size}, expected {size}"
            if kind == "data":
                fresh = os.open(path, os.O_RDONLY)
                try:
                    got = os.pread(fresh, len(data), off)
                finally:
                    os.close(fresh)
                assert got == data, f"round {rounds}: fresh open reads other data at {off}+{len(data)}: {diff_at(got, data)}"
                got = os.pread(held, len(data), off)
                assert got == data, f"round {rounds}: held descriptor reads other data at {off}+{len(data)}: {diff_at(got, data)}"
            else:
                assert os.pread(held, 1, size) == b"", f"round {rounds}: data beyond the truncated size {size}"
            conn.send(rounds)
            rounds += 1
    finally:
        if held is not None:
            os.close(held)


def test_e_write_then_read_in_another_process(snapfs_mount, seed):
    m = snapfs_mount
    path = str(m.mnt / "coherent")
    a, b = CTX.Pipe()
    size, rounds = run_processes([(writer_e, (path, seed, a)), (reader_e, (path, b))])
    assert rounds == ROUNDS_E, f"seed={seed}"
    assert os.stat(path).st_size == size
    assert os.stat(m.backing / "coherent").st_size == size
    assert read_file(path) == read_file(m.backing / "coherent"), f"seed={seed}: mount and backing differ"
    assert_daemon_alive(m)
