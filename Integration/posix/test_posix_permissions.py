"""POSIX conformance through a real snapfs mount: permissions as a user other than root.

The mounts and the fixtures `m`, `plain`, `outside` and `ro_mount`: conftest.py here."""

import os
import stat

import pytest

from lib.posix import NOBODY_PRELUDE, assert_mirrors, write_file
from lib.users import NOBODY_PYTHON, run_as_nobody


# ----------------------------------------------------------- permissions as non-root



def _perm_tree(r):
    write_file(r / "secret", b"root only")
    os.chmod(r / "secret", 0o600)
    write_file(r / "readable", b"everyone reads")
    os.chmod(r / "readable", 0o644)
    write_file(r / "shared", b"everyone writes")
    os.chmod(r / "shared", 0o666)
    os.mkdir(r / "rootdir", 0o755)
    write_file(r / "rootdir" / "inside", b"x")
    os.mkdir(r / "private", 0o700)
    write_file(r / "private" / "inside", b"x")
    os.mkdir(r / "noread")
    os.chmod(r / "noread", 0o711)
    write_file(r / "noread" / "inside", b"x")
    os.mkdir(r / "sticky")
    os.chmod(r / "sticky", 0o1777)
    write_file(r / "sticky" / "rootfile", b"x")
    write_file(r / "mine", b"nobody's")
    os.chown(r / "mine", 65534, 65534)
    os.mkdir(r / "open")
    os.chmod(r / "open", 0o777)


PERM_CASES = [
    # (id, expected errno name, python statement run as nobody)
    ("read-0600-root-file", "EACCES", "os.open(P+'/secret', os.O_RDONLY)"),
    ("write-0644-root-file", "EACCES", "os.open(P+'/readable', os.O_WRONLY)"),
    ("read-0644-root-file", "OK", "os.open(P+'/readable', os.O_RDONLY)"),
    ("write-0666-root-file", "OK", "os.open(P+'/shared', os.O_WRONLY)"),
    ("create-in-0755-root-dir", "EACCES", "os.open(P+'/rootdir/new', os.O_CREAT|os.O_WRONLY, 0o644)"),
    ("mkdir-in-0755-root-dir", "EACCES", "os.mkdir(P+'/rootdir/new')"),
    ("unlink-in-0755-root-dir", "EACCES", "os.unlink(P+'/rootdir/inside')"),
    ("rename-in-0755-root-dir", "EACCES", "os.rename(P+'/rootdir/inside', P+'/rootdir/moved')"),
    ("symlink-in-0755-root-dir", "EACCES", "os.symlink('x', P+'/rootdir/sl')"),
    ("chmod-by-non-owner", "EPERM", "os.chmod(P+'/readable', 0o777)"),
    ("chown-by-non-owner", "EPERM", "os.chown(P+'/readable', 65534, 65534)"),
    ("chown-own-file-to-root", "EPERM", "os.chown(P+'/mine', 0, -1)"),
    ("chmod-own-file", "OK", "os.chmod(P+'/mine', 0o600)"),
    ("traverse-0700-dir", "EACCES", "os.stat(P+'/private/inside')"),
    ("list-0700-dir", "EACCES", "os.listdir(P+'/private')"),
    ("list-0711-dir", "EACCES", "os.listdir(P+'/noread')"),
    ("traverse-0711-dir", "OK", "os.stat(P+'/noread/inside')"),
    ("unlink-others-file-in-sticky-dir", "EPERM", "os.unlink(P+'/sticky/rootfile')"),
    ("create-in-sticky-dir", "OK", "os.close(os.open(P+'/sticky/mine', os.O_CREAT|os.O_WRONLY, 0o644))"),
    ("utime-explicit-on-others-0666-file", "EPERM", "os.utime(P+'/shared', (1, 1))"),
    ("utime-now-on-others-0666-file", "OK", "os.utime(P+'/shared')"),
    ("utime-now-on-others-0644-file", "EACCES", "os.utime(P+'/readable')"),
    ("truncate-0644-root-file", "EACCES", "os.truncate(P+'/readable', 0)"),
    ("setxattr-0644-root-file", "EACCES", "os.setxattr(P+'/readable', 'user.x', b'1')"),
    ("getxattr-0644-root-file", "ENODATA", "os.getxattr(P+'/readable', 'user.x')"),
    ("getxattr-0600-root-file", "EACCES", "os.getxattr(P+'/secret', 'user.x')"),
    ("hardlink-others-0600-file", "EPERM" if open("/proc/sys/fs/protected_hardlinks").read().strip() == "1"
     else "OK", "os.link(P+'/secret', P+'/sticky/stolen')"),
    ("chown-to-own-uid-noop", "OK", "os.chown(P+'/mine', 65534, 65534)"),
    ("utime-explicit-own-file", "OK", "os.utime(P+'/mine', (1, 1))"),
    ("mknod-char-device", "EPERM", "os.mknod(P+'/open/dev', 0o20600, os.makedev(1, 3))"),
    ("mkfifo-in-open-dir", "OK", "os.mkfifo(P+'/open/fifo')"),
    ("rename-others-file-in-sticky-dir", "EPERM", "os.rename(P+'/sticky/rootfile', P+'/sticky/moved')"),
    ("o-noatime-on-others-file", "EPERM", "os.open(P+'/readable', os.O_RDONLY | os.O_NOATIME)"),
    ("o-noatime-on-own-file", "OK", "os.open(P+'/mine', os.O_RDONLY | os.O_NOATIME)"),
    ("access-read-0600-root-file", "EACCES", "acc(P+'/secret', os.R_OK)"),
    ("access-write-0644-root-file", "EACCES", "acc(P+'/readable', os.W_OK)"),
    ("access-read-0644-root-file", "OK", "acc(P+'/readable', os.R_OK)"),
    ("access-exec-0711-dir", "OK", "acc(P+'/noread', os.X_OK)"),
    ("access-exec-0644-file", "EACCES", "acc(P+'/readable', os.X_OK)"),
    ("write-after-chmod-by-owner", "EACCES",
     "(os.chmod(P+'/mine', 0o400), os.open(P+'/mine', os.O_WRONLY))"),
]


@pytest.mark.parametrize("want,stmt", [c[1:] for c in PERM_CASES], ids=[c[0] for c in PERM_CASES])
def test_permissions_as_nobody(m, plain, want, stmt):
    got = {}
    for name, root in (("snapfs", m.mnt), ("plain", plain)):
        _perm_tree(root)
        r = run_as_nobody([NOBODY_PYTHON, "-c", NOBODY_PRELUDE + f"t(lambda: {stmt})\n", str(root)], timeout=30)
        assert r.returncode == 0, r.stderr
        got[name] = r.stdout.strip()
    assert got["plain"] == want, f"test premise wrong on plain ext4: {got}"
    assert got["snapfs"] == got["plain"], f"snapfs differs from local fs: {got}"


def test_cat_as_nobody_permission_denied(m):
    write_file(m.mnt / "secret", b"top secret\n")
    os.chmod(m.mnt / "secret", 0o600)
    r = run_as_nobody(["cat", str(m.mnt / "secret")], timeout=30)
    assert r.returncode != 0
    assert "Permission denied" in r.stderr
    assert "top secret" not in r.stdout
    os.chmod(m.mnt / "secret", 0o604)
    r = run_as_nobody(["cat", str(m.mnt / "secret")], timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "top secret\n"
    # a permission change is seen by the kernel at once: take it back
    os.chmod(m.mnt / "secret", 0o600)
    r = run_as_nobody(["cat", str(m.mnt / "secret")], timeout=30)
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_files_created_by_nobody_belong_to_nobody(m, plain):
    code = ("import os,sys,socket\nP=sys.argv[1]\n"
            "os.close(os.open(P+'/f', os.O_CREAT|os.O_WRONLY, 0o644))\n"
            "os.mkdir(P+'/d')\nos.symlink('f', P+'/l')\nos.mkfifo(P+'/p')\n"
            "os.link(P+'/f', P+'/hl')\n"
            "s=socket.socket(socket.AF_UNIX); s.bind(P+'/s'); s.close()\n"
            "os.close(os.open(P+'/sg/f', os.O_CREAT|os.O_WRONLY, 0o644))\nos.mkdir(P+'/sg/d')\n"
            # set-ID bits asked for at creation and by chmod, in and out of the sgid dir
            "os.close(os.open(P+'/sg/sgid', os.O_CREAT|os.O_WRONLY, 0o2755))\n"
            "os.close(os.open(P+'/suid', os.O_CREAT|os.O_WRONLY, 0o6755))\n"
            "os.close(os.open(P+'/sg/chm', os.O_CREAT|os.O_WRONLY, 0o644)); os.chmod(P+'/sg/chm', 0o2755)\n"
            "os.mkdir(P+'/sg/d2', 0o1777)\n")
    for root in (m.mnt, plain):
        os.mkdir(root / "work")
        os.chmod(root / "work", 0o777)
        os.mkdir(root / "work" / "sg")
        os.chown(root / "work" / "sg", 0, 1234)
        os.chmod(root / "work" / "sg", 0o2777)
        r = run_as_nobody([NOBODY_PYTHON, "-c", code, str(root / "work")], timeout=30)
        assert r.returncode == 0, r.stderr
        for n in ("f", "d", "l", "p", "s", "hl"):
            st = os.lstat(root / "work" / n)
            assert (st.st_uid, st.st_gid) == (65534, 65534), (root, n)
        # set-group-ID directory: new entries take the directory's group, subdirs keep the bit
        f, d = os.stat(root / "work" / "sg" / "f"), os.stat(root / "work" / "sg" / "d")
        assert (f.st_uid, f.st_gid) == (65534, 1234), root
        assert (d.st_uid, d.st_gid) == (65534, 1234), root
        assert d.st_mode & stat.S_ISGID, root
    for n in ("work/f", "work/d", "work/l", "work/p", "work/s", "work/sg/f", "work/sg/d",
              "work/sg/sgid", "work/suid", "work/sg/chm", "work/sg/d2"):
        assert_mirrors(m, n)
        a, b = os.lstat(m.mnt / n), os.lstat(plain / n)
        assert (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid), n
