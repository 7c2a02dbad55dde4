"""Mounted tests of set-user-ID and set-group-ID bits after a change of a file's data: as
on ext4, a writer without CAP_FSETID (the owner included) clears set-user-ID, and
set-group-ID when the file is group-executable or the writer is outside its group; the
mount shows the cleared mode at once (the kernel's cached attributes are refreshed), the
backing file has it too, and exec no longer runs as the owner. Every case runs the same
operation, as the same user, on a plain directory of the backing filesystem and on the
mount, and compares."""

import os
import stat
import subprocess

import pytest

OPERATIONS = {
    "write": "fd = os.open(p, os.O_WRONLY); os.pwrite(fd, b'y', 0)",
    "append": "fd = os.open(p, os.O_WRONLY | os.O_APPEND); os.write(fd, b'more')",
    "truncate": "os.truncate(p, 1); fd = None",
    "ftruncate": "fd = os.open(p, os.O_WRONLY); os.ftruncate(fd, 3)",
    "open_o_trunc": "fd = os.open(p, os.O_WRONLY | os.O_TRUNC)",
    "fallocate": "fd = os.open(p, os.O_WRONLY); os.posix_fallocate(fd, 0, 65536)",
    "copy_file_range": ("src = os.open(source, os.O_RDONLY); fd = os.open(p, os.O_WRONLY); "
                        "os.copy_file_range(src, fd, 4, 0, 0)"),
}

# Runs as the writer: each operation on its files; the descriptors of the files named
# `held-*` stay open (so with write-back caching nothing needs to have been written back)
# until the parent, having looked at their modes, writes a line.
PROGRAM = """
import os, sys
ops = %r
held = []
for line in sys.argv[1:]:
    op, p, source = line.split("|")
    fd = None
    exec(ops[op])
    if fd is not None:
        (held.append(fd) if os.path.basename(p).startswith("held-") else os.close(fd))
print("done", flush=True)
sys.stdin.readline()
"""

# (mode, owner) of the file before the operation: owner "root" or "alice" (the writer).
FILES = [(0o6777, "root"), (0o2767, "root"), (0o6777, "alice"), (0o2747, "alice"), (0o4755, "alice")]


def prepare(path, mode, owner, users):
    path.write_bytes(b"#!/bin/sh\nid -u\n")
    uid = users.alice.uid if owner == "alice" else 0
    os.chown(path, uid, uid)
    os.chmod(path, mode)


def mode_of(path):
    """The mode as `stat -c %a` shows it: statx asking for the mode alone, which the
    kernel answers from its cache unless that mode was invalidated (os.stat asks for the
    size too, which a write invalidates, and so would hide a stale mode)."""
    r = subprocess.run(["stat", "-c", "%a", str(path)], capture_output=True, text=True, check=True)
    return int(r.stdout.strip(), 8)


def run_as_alice(users, jobs):
    """Runs every (operation, path, source) as alice; returns the modes of the `held-*`
    files while alice still holds them open."""
    p = users.alice.popen(["python3", "-c", PROGRAM % OPERATIONS, *("|".join(map(str, j)) for j in jobs)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "done", p.stderr.read()
        while_open = {str(path): oct(mode_of(path)) for _, path, _ in jobs if path.name.startswith("held-")}
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.wait(timeout=30) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return while_open


@pytest.mark.parametrize("options", [(), ("no_writeback_cache",)], ids=["default", "no_writeback_cache"])
def test_a_write_clears_set_id_bits_as_on_ext4(make_mount, users, workdir, options):
    """Each operation as alice on each kind of file, on ext4 and through the mount: the
    modes must be the same, seen after the writer closed the file (when the kernel last
    cached them) and while it still holds it open."""
    m = make_mount(options=options)
    plain = workdir / "plain"
    plain.mkdir()
    seen = {}
    for d in (plain, m.mnt):
        os.chmod(d, 0o777)
        (d / "source").write_bytes(b"data")
        jobs = []
        for op in OPERATIONS:
            for mode, owner in FILES:
                for held in ("", "held-"):
                    f = d / f"{held}{op}-{mode:o}-{owner}"
                    prepare(f, mode, owner, users)
                    jobs.append((op, f, d / "source"))
        while_open = run_as_alice(users, jobs)
        for _, f, _ in jobs:
            seen[(d, f.name)] = while_open.get(str(f)) or oct(mode_of(f))
    differences = []
    for (d, name), mode in seen.items():
        if d != m.mnt:
            continue
        expected = seen[(plain, name)]
        backing = oct(mode_of(m.backing / name))
        if mode != expected or (not name.startswith("held-") and backing != expected):
            differences.append(f"{name}: ext4 {expected}, mount {mode}, backing {backing}")
    assert not differences, "\n".join(sorted(differences))


def test_root_without_cap_fsetid_clears_them_too(make_mount, workdir):
    """Root keeps set-ID bits when it writes only because it holds CAP_FSETID."""
    m = make_mount()
    plain = workdir / "plain"
    plain.mkdir()
    for d in (plain, m.mnt):
        f = d / "tool"
        f.write_bytes(b"x")
        os.chmod(f, 0o6755)
        r = subprocess.run(["setpriv", "--bounding-set=-fsetid", "--inh-caps=-fsetid", "python3", "-c",
                            "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); os.write(fd, b'y')", str(f)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert mode_of(plain / "tool") == 0o755
    assert mode_of(m.mnt / "tool") == 0o755
    assert mode_of(m.backing / "tool") == 0o755
    # With CAP_FSETID, root keeps them (as on ext4).
    for d in (plain, m.mnt):
        os.chmod(d / "tool", 0o6755)
        with open(d / "tool", "r+b") as f:
            f.write(b"z")
        assert mode_of(d / "tool") == 0o6755


def test_exec_after_a_write_no_longer_runs_as_the_owner(make_mount, users):
    """With -o suid, a set-user-ID root program that bob rewrote must not run as root."""
    m = make_mount(options=("suid",))
    prog = m.mnt / "prog"
    # A copy of `id` set-user-ID root: run by alice it prints euid 0, until written to.
    prog.write_bytes(open("/usr/bin/id", "rb").read())
    os.chmod(prog, 0o4777)
    assert users.alice.run([prog, "-u"]).stdout.strip() == "0"
    r = users.bob.python("import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND); os.write(fd, b'\\0')",
                         str(prog))
    assert r.returncode == 0, r.stderr
    # exec first: anything that refreshed the kernel's attributes would hide the bug.
    assert users.alice.run([prog, "-u"]).stdout.strip() == str(users.alice.uid)
    assert mode_of(prog) == 0o777


def test_set_group_id_directory_is_left_alone(make_mount, users):
    """Writing into a set-group-ID directory (creating files in it) changes nothing of its
    mode, and files made in it inherit its group, as on ext4."""
    m = make_mount()
    d = m.mnt / "shared"
    d.mkdir()
    os.chown(d, 0, users.bob.gid)
    os.chmod(d, 0o2777)
    r = users.alice.python("import sys; open(sys.argv[1] + '/new', 'w').write('x')", str(d))
    assert r.returncode == 0, r.stderr
    assert mode_of(d) == 0o2777
    assert os.stat(d / "new").st_gid == users.bob.gid
