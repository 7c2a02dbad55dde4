"""POSIX conformance through a real snapfs mount: POSIX ACLs.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import os
import stat
import struct

import pytest

from lib.posix import NOBODY_PRELUDE, write_file
from lib.users import NOBODY_PYTHON, run_as_nobody


# ------------------------------------------------------------------------ POSIX ACLs

ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20


def acl_xattr(*entries):
    """system.posix_acl_* value: version 2, then (tag, perm, id) entries sorted by tag."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i & 0xFFFFFFFF)
                                           for t, p, i in sorted(entries))


ACL_CASES = [
    # (id, file mode, ACL entries, what nobody gets on a local fs)
    ("named-user-granted-read", 0o600,
     [(ACL_USER_OBJ, 6, -1), (ACL_USER, 4, 65534), (ACL_GROUP_OBJ, 0, -1), (ACL_MASK, 4, -1), (ACL_OTHER, 0, -1)],
     "OK"),
    ("named-user-denied-despite-other-read", 0o644,
     [(ACL_USER_OBJ, 6, -1), (ACL_USER, 0, 65534), (ACL_GROUP_OBJ, 4, -1), (ACL_MASK, 4, -1), (ACL_OTHER, 4, -1)],
     "EACCES"),
]


@pytest.mark.parametrize("mode,entries,want", [c[1:] for c in ACL_CASES], ids=[c[0] for c in ACL_CASES])
def test_posix_acl_access_enforced(m, plain, mode, entries, want):
    got = {}
    for name, root in (("snapfs", m.mnt), ("plain", plain)):
        write_file(root / "f", b"guarded")
        os.chmod(root / "f", mode)
        os.setxattr(root / "f", "system.posix_acl_access", acl_xattr(*entries))
        r = run_as_nobody([NOBODY_PYTHON, "-c", NOBODY_PRELUDE + "t(lambda: open(P, 'rb').read())\n",
                           str(root / "f")], timeout=30)
        assert r.returncode == 0, r.stderr
        got[name] = r.stdout.strip()
    assert got["plain"] == want, f"test premise wrong on plain ext4: {got}"
    assert got["snapfs"] == got["plain"], f"ACL not enforced like the local fs: {got}"
    assert os.getxattr(m.backing / "f", "system.posix_acl_access") == \
        os.getxattr(plain / "f", "system.posix_acl_access")


def test_default_acl_replaces_umask(m, plain):
    rwx = [(ACL_USER_OBJ, 7, -1), (ACL_GROUP_OBJ, 7, -1), (ACL_OTHER, 7, -1)]
    got = {}
    old = os.umask(0o022)
    try:
        for name, root in (("snapfs", m.mnt), ("plain", plain)):
            os.mkdir(root / "d")
            os.setxattr(root / "d", "system.posix_acl_default", acl_xattr(*rwx))
            os.close(os.open(root / "d" / "f", os.O_CREAT | os.O_WRONLY, 0o666))
            os.mkdir(root / "d" / "sub", 0o777)
            got[name] = (oct(stat.S_IMODE(os.stat(root / "d" / "f").st_mode)),
                         oct(stat.S_IMODE(os.stat(root / "d" / "sub").st_mode)))
    finally:
        os.umask(old)
    assert got["plain"] == ("0o666", "0o777"), f"test premise wrong on plain ext4: {got}"
    assert got["snapfs"] == got["plain"], f"default ACL not applied like the local fs: {got}"
