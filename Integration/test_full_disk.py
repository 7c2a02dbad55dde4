"""A full backing filesystem: writes through snapfs fail with ENOSPC, nothing that was
acknowledged is lost, the daemon keeps serving, and writing works again once space is
freed. The backing filesystem is a small ext4 image on a loop device made by the test."""

import errno
import os
import subprocess

import pytest

from conftest import IN_CI


@pytest.fixture
def small_fs(workdir):
    image = workdir / "fs.img"
    root = workdir / "fs"
    root.mkdir()
    with open(image, "wb") as f:
        f.truncate(48 << 20)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], capture_output=True, text=True)
    if r.returncode != 0:
        (pytest.fail if IN_CI else pytest.skip)(f"mkfs.ext4 failed: {r.stderr.strip()}")
    r = subprocess.run(["mount", "-o", "loop", str(image), str(root)], capture_output=True, text=True)
    if r.returncode != 0:
        (pytest.fail if IN_CI else pytest.skip)(f"cannot loop-mount an ext4 image: {r.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


def test_enospc_is_reported_and_nothing_acknowledged_is_lost(small_fs, make_mount):
    (small_fs / "data").mkdir()
    m = make_mount(backing=small_fs / "data")
    path = m.mnt / "filler"
    chunk = bytes(range(256)) * 4096  # 1 MiB, recognisable content
    acknowledged = 0
    got = None
    with open(path, "wb", buffering=0) as f:
        for _ in range(200):  # the filesystem holds < 48 MiB
            try:
                n = f.write(chunk)
            except OSError as e:
                got = e.errno
                break
            acknowledged += n
            if n < len(chunk):
                continue
        try:
            os.fsync(f.fileno())
        except OSError as e:
            assert e.errno == errno.ENOSPC
    assert got == errno.ENOSPC, f"expected ENOSPC, got {got!r} after {acknowledged} bytes"
    assert acknowledged > 16 << 20
    # Everything acknowledged is there, through the mount and in the backing file.
    for where in (path, m.backing / "filler"):
        size = os.stat(where).st_size
        assert size >= acknowledged
        with open(where, "rb") as f:
            data = f.read(acknowledged)
        assert data == (chunk * (acknowledged // len(chunk) + 1))[:acknowledged]
    # Metadata operations fail cleanly too, and the daemon keeps serving.
    with pytest.raises(OSError) as e:
        for i in range(100000):
            (m.mnt / f"tiny{i}").write_bytes(b"x" * 4096)
    assert e.value.errno == errno.ENOSPC
    assert m.alive()
    assert sorted(os.listdir(m.mnt))[:1] == ["filler"]
    # Free space; writing works again and the new data is intact.
    os.truncate(path, 0)
    for name in os.listdir(m.mnt):
        if name.startswith("tiny"):
            os.unlink(m.mnt / name)
    (m.mnt / "after").write_bytes(chunk * 4)
    os.sync()
    assert (m.backing / "after").read_bytes() == chunk * 4
    assert m.alive()
