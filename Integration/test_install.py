"""snapfs installed without Swift: scripts/install.sh into a fresh root (DESTDIR), the
installed binary used for a whole mount with nothing of the build tree or the Swift
toolchain reachable, mount(8)'s helper mount.fuse.snapfs, the systemd unit, and the .deb
from scripts/build-deb.sh (its fields, its files, and dpkg installing it into a throw-away
root).

The static build (swift build -c release --static-swift-stdlib, about two minutes on two
cores) happens once per session, by the first install.sh run, and only when
.build-static/release/snapfs is missing: a binary already there is installed as it is
(remove .build-static to test a new one).

The mounts are made inside private mount namespaces (unshare -m) where the installed
tree is bound over /usr/local and /sbin and a tmpfs hides /opt/swift, so the host's
directories are never written and the binary is shown to run where Swift is absent."""

import json
import os
import pathlib
import re
import shutil
import sqlite3
import subprocess
import tempfile

import pytest

from lib.cli import run
from lib.common import REPO, cannot, wait_until
from lib.mount import snapfs_pids_naming

# Binds over /usr/local and /sbin, a tmpfs over /opt/swift, mount(8).
pytestmark = pytest.mark.root

STATIC = REPO / ".build-static" / "release" / "snapfs"
VERSION = re.search(r'static let version = "([^"]+)"', (REPO / "Sources" / "snapfs" / "SnapFS.swift").read_text()).group(1)
# Paths of an install with the default prefix, relative to the root it was staged in.
FILES = {
    "usr/local/bin/snapfs": 0o755,
    "usr/local/share/man/man1/snapfs.1": 0o644,
    "usr/local/share/man/man1/snapfs.mount.1": 0o644,
    "usr/local/share/bash-completion/completions/snapfs": 0o644,
    "usr/local/share/zsh/site-functions/_snapfs": 0o644,
    "usr/local/share/fish/vendor_completions.d/snapfs.fish": 0o644,
    "usr/local/lib/systemd/system/snapfs@.service": 0o644,
    "sbin/mount.fuse.snapfs": 0o755,
}


def install(*args, timeout=120):
    return run([REPO / "scripts" / "install.sh", *args], timeout=timeout)


def tree(root):
    """Every file under `root`: {relative path: (mode, bytes)}."""
    out = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = pathlib.Path(directory) / name
            out[str(path.relative_to(root))] = (path.stat().st_mode & 0o7777, path.read_bytes())
    return out


@pytest.fixture(scope="module")
def installed():
    """A fresh root with snapfs installed by scripts/install.sh --destdir ROOT."""
    if not shutil.which("swift") and not os.path.exists("/opt/swift/usr/bin/swift") and not STATIC.exists():
        cannot("neither swift nor a static build in .build-static is here")
    root = pathlib.Path(tempfile.mkdtemp(prefix="snapfs-install-"))
    build = not (STATIC.exists() and (REPO / ".build-static" / "extras" / "man" / "snapfs.1").exists())
    r = install("--destdir", root, *([] if build else ["--no-build"]), timeout=1800 if build else 120)
    assert r.returncode == 0, f"install.sh failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


def in_namespace(root, script, hide_swift=True, timeout=120):
    """Runs `script` (sh) in a private mount namespace where ROOT's /usr/local and /sbin are
    the system's and /opt/swift is empty, with PATH=/usr/local/bin:/usr/bin:/bin and no
    other environment."""
    setup = f"""
        set -e
        mount --bind "{root}/usr/local" /usr/local
        mount --bind "{root}/sbin" /sbin
        {'[ ! -d /opt/swift ] || mount -t tmpfs -o ro,size=1m swift-hidden /opt/swift' if hide_swift else ''}
        set +e
    """
    return run(["unshare", "-m", "--propagation", "private", "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin",
                "sh", "-c", setup + script], timeout=timeout)


def values(out):
    """The KEY=value lines a namespace script printed."""
    return dict(line.split("=", 1) for line in out.splitlines() if re.match(r"^[A-Z_]+=", line))


# ---------------------------------------------------------------- the files

def test_install_puts_every_file_in_place(installed):
    files = tree(installed)
    for path, mode in FILES.items():
        assert path in files, f"{path} not installed; installed: {sorted(files)}"
        assert files[path][0] == mode, f"{path}: mode {files[path][0]:o}, expected {mode:o}"
    man = files["usr/local/share/man/man1/snapfs.1"][1].decode()
    assert man.startswith(".\\\"") or ".TH" in man or ".Dt SNAPFS 1" in man, man[:200]
    assert "snapfs" in man and "mount" in man
    assert re.search(r"^complete .*-F _snapfs snapfs$", files["usr/local/share/bash-completion/completions/snapfs"][1].decode(), re.M)
    assert files["usr/local/share/zsh/site-functions/_snapfs"][1].decode().startswith("#compdef snapfs")
    assert "complete -c 'snapfs'" in files["usr/local/share/fish/vendor_completions.d/snapfs.fish"][1].decode()
    unit = files["usr/local/lib/systemd/system/snapfs@.service"][1].decode()
    assert re.search(r"^ExecStart=/usr/local/bin/snapfs mount --foreground ", unit, re.M), unit
    helper = files["sbin/mount.fuse.snapfs"][1].decode()
    assert re.search(r"^SNAPFS=/usr/local/bin/snapfs$", helper, re.M), helper
    # Nothing refers to the build tree.
    for path, (_, data) in files.items():
        assert str(REPO).encode() not in data or path.endswith("bin/snapfs"), f"{path} names the build tree"


def test_installed_binary_has_the_swift_runtime_linked_in(installed):
    binary = installed / "usr/local/bin/snapfs"
    r = run(["ldd", binary])
    assert r.returncode == 0, r.stderr
    libraries = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert not [lib for lib in libraries if "swift" in lib.lower() or "dispatch" in lib or "Foundation" in lib], r.stdout
    assert "libfuse3.so.3" in libraries, r.stdout
    assert "not found" not in r.stdout, r.stdout
    # No library search path into the toolchain (or anywhere): the loader takes the system's.
    r = run(["readelf", "-d", binary])
    assert r.returncode == 0 and "NEEDED" in r.stdout, r.stderr
    assert "RPATH" not in r.stdout and "RUNPATH" not in r.stdout, r.stdout
    # Where no Swift is installed (/opt/swift hidden), the binary runs.
    r = in_namespace(installed, 'echo "SWIFT=$(command -v swift || echo none)"; echo "VERSION=$(snapfs --version)"; '
                                'echo "WHICH=$(command -v snapfs)"; ls /opt/swift | wc -l | sed "s/^/OPT_SWIFT_ENTRIES=/"')
    got = values(r.stdout)
    assert got.get("SWIFT") == "none" and got.get("OPT_SWIFT_ENTRIES") == "0", (r.stdout, r.stderr)
    assert got.get("WHICH") == "/usr/local/bin/snapfs", (r.stdout, r.stderr)
    assert got.get("VERSION") == VERSION, (r.stdout, r.stderr)


def test_the_installed_unit_passes_systemd_analyze(installed):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    r = in_namespace(installed, "systemd-analyze verify /usr/local/lib/systemd/system/snapfs@.service; echo RC=$?",
                     timeout=60)
    assert values(r.stdout).get("RC") == "0" and not r.stderr.strip(), (r.stdout, r.stderr)


# ---------------------------------------------------------------- using it

def test_demo_flow_with_the_installed_binary(installed, env):
    """Mount, a file and a SQLite database written through the mount, a snapshot, the
    listing, unmount: all with the installed binary, found on PATH, with no Swift."""
    b, m = env.dirs("b", "m")
    r = in_namespace(installed, f"""
        set -e
        snapfs mount "{b}" "{m}" --sqlite-min-interval 0
        echo "hello from the installed snapfs" > "{m}/hello.txt"
        sqlite3 "{m}/app.db" "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);" >/dev/null
        echo "SNAPSHOT=$(snapfs snapshot "{m}" --label installed)"
        echo "LIST=$(snapfs list "{m}" --json | tr -d '\\n')"
        echo "READ=$(cat "{m}/.snapshots/$(snapfs snapshot "{m}" --force --label again)/hello.txt")"
        snapfs unmount "{m}"
        echo "UNMOUNTED=$(grep -c " {m} " /proc/self/mountinfo || true)"
    """)
    got = values(r.stdout)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert got.get("UNMOUNTED") == "0", r.stdout
    assert wait_until(lambda: snapfs_pids_naming(env.dir) == [], timeout=10), "daemon did not exit after unmount"
    name = got["SNAPSHOT"]
    assert name.endswith("installed"), got
    listed = json.loads(got["LIST"])
    assert name in [s["name"] for s in listed], listed
    assert any(s.get("sqlite") for s in listed), f"no commit snapshot of app.db: {listed}"
    assert got["READ"] == "hello from the installed snapfs", got
    # The snapshots stay in the backing directory, readable without snapfs.
    assert (b / ".snapshots" / name / "hello.txt").read_text() == "hello from the installed snapfs\n"
    db = sqlite3.connect(f"file:{b / '.snapshots' / name / 'app.db'}?mode=ro&immutable=1", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 3
    finally:
        db.close()


@pytest.mark.parametrize("how", ["mount_-t", "fstab"])
def test_mount8_runs_the_installed_helper(installed, env, how):
    """`mount -t fuse.snapfs` and an fstab line find /sbin/mount.fuse.snapfs, which starts
    the installed binary by its full path (not from PATH: mount(8) passes none)."""
    b, m = env.dirs("b", "m")
    (b / "hello").write_text("via mount.fuse.snapfs")
    fstab = env.path("fstab")
    fstab.write_text(f"{b}   {m}   fuse.snapfs   defaults,nofail,keep_daily=7   0 0\n")
    command = f'mount -t fuse.snapfs "{b}" "{m}" -o defaults,nofail' if how == "mount_-t" else f'mount "{m}"'
    r = in_namespace(installed, f"""
        mount --bind "{fstab}" /etc/fstab || exit 91
        {command}
        echo "MOUNT_RC=$?"
        echo "TYPE=$(awk '$5 == "{m}" {{ print $(NF-2) }}' /proc/self/mountinfo)"
        echo "CONTENT=$(cat "{m}/hello")"
        echo "DAEMON=$(readlink /proc/$(pgrep -n -f -- "^snapfs mount {b} {m} ")/exe)"
        umount "{m}"
        echo "UMOUNT_RC=$?"
    """)
    got = values(r.stdout)
    assert got.get("MOUNT_RC") == "0", (r.stdout, r.stderr)
    assert got.get("TYPE") == "fuse.snapfs", r.stdout
    assert got.get("CONTENT") == "via mount.fuse.snapfs", r.stdout
    # The daemon is the installed binary, seen through the bind over /usr/local.
    assert got.get("DAEMON") == "/usr/local/bin/snapfs", r.stdout
    assert got.get("UMOUNT_RC") == "0", (r.stdout, r.stderr)
    assert wait_until(lambda: snapfs_pids_naming(env.dir) == [], timeout=10), "daemon did not exit after umount"


def test_mount_helper_arguments():
    helper = REPO / "dist" / "mount.fuse.snapfs"
    r = run([helper, "--help"])
    assert r.returncode == 0 and "usage: mount.fuse.snapfs BACKING MOUNTPOINT" in r.stdout, r
    r = run([helper, "/x"])
    assert r.returncode == 1 and "usage:" in r.stderr, r
    r = run([helper, "/x", "/y", "-t", "fuse.other"])
    assert r.returncode == 1 and "not fuse.other" in r.stderr, r
    r = run([helper, "/x", "/y", "-q"])
    assert r.returncode == 1 and "unknown flag q" in r.stderr, r
    r = run([helper, "/x", "/y", "-o"])
    assert r.returncode == 1 and "-o needs" in r.stderr, r


# ---------------------------------------------------------------- install.sh itself

def test_install_again_changes_nothing_and_uninstall_removes_everything(installed, workdir):
    root = workdir / "root"
    r = install("--destdir", root, "--no-build")
    assert r.returncode == 0, r.stderr
    first = tree(root)
    assert set(first) == set(tree(installed)), sorted(set(first) ^ set(tree(installed)))
    # A page of a command that no longer exists goes; nothing else changes.
    (root / "usr/local/share/man/man1/snapfs.gone.1").write_text(".Dt SNAPFS.GONE 1\n")
    r = install("--destdir", root, "--no-build")
    assert r.returncode == 0, r.stderr
    assert tree(root) == first
    (root / "etc").mkdir()
    (root / "etc" / "kept").write_text("not ours")
    r = install("--destdir", root, "--uninstall")
    assert r.returncode == 0, r.stderr
    assert f"{len(first)} files removed" in r.stdout, r.stdout
    assert tree(root) == {"etc/kept": (0o644, b"not ours")}
    r = install("--destdir", root, "--uninstall")
    assert r.returncode == 0 and "0 files removed" in r.stdout, r.stdout


def test_install_prefix_and_errors(installed, workdir):
    root = workdir / "root"
    r = install("--destdir", root, "--prefix", "/opt/snapfs", "--no-build")
    assert r.returncode == 0, r.stderr
    files = tree(root)
    assert "opt/snapfs/bin/snapfs" in files and "opt/snapfs/lib/systemd/system/snapfs@.service" in files, sorted(files)
    assert b"ExecStart=/opt/snapfs/bin/snapfs " in files["opt/snapfs/lib/systemd/system/snapfs@.service"][1]
    assert b"\nSNAPFS=/opt/snapfs/bin/snapfs\n" in files["sbin/mount.fuse.snapfs"][1]
    r = install("--help")
    assert r.returncode == 0 and "Usage: scripts/install.sh" in r.stdout and "--destdir" in r.stdout, r
    for args, message in [(["--prefix", "usr/local"], "is not an absolute path"),
                          (["--prefix", "/opt/my snapfs"], "has a character other than"),
                          (["--bogus"], "unknown argument '--bogus'"),
                          (["--prefix"], "--prefix needs a directory")]:
        r = install("--destdir", workdir / "never", "--no-build", *args)
        assert r.returncode == 1 and r.stderr.startswith("install.sh: ") and message in r.stderr, (args, r.stderr)
        assert not (workdir / "never").exists()


# ---------------------------------------------------------------- the .deb

def test_deb_package(installed, workdir):
    if shutil.which("dpkg-deb") is None or shutil.which("dpkg-shlibdeps") is None:
        cannot("dpkg-deb or dpkg-shlibdeps (dpkg-dev) is missing")
    out = workdir / "deb"
    r = run([REPO / "scripts" / "build-deb.sh", "--no-build", "--out", out], timeout=300)
    assert r.returncode == 0, f"build-deb.sh failed:\n{r.stdout}\n{r.stderr}"
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    deb = out / f"snapfs_{VERSION}_{arch}.deb"
    assert r.stdout.strip() == str(deb) and deb.exists(), (r.stdout, sorted(os.listdir(out)))

    info = run(["dpkg-deb", "--field", deb]).stdout
    fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", info, re.M))
    assert fields["Package"] == "snapfs" and fields["Version"] == VERSION and fields["Architecture"] == arch, fields
    depends = [d.strip() for d in fields["Depends"].split(",")]
    names = [d.split()[0] for d in depends]
    assert "fuse3" in names and "libfuse3-3" in names and "libc6" in names, depends
    assert not [n for n in names if "swift" in n], depends
    assert "restic" in fields.get("Recommends", ""), fields
    assert run(["dpkg-deb", "--info", deb]).returncode == 0

    contents = run(["dpkg-deb", "--contents", deb]).stdout.splitlines()
    listed = {line.split()[-1]: line for line in contents}
    for path in ["./usr/bin/snapfs", "./usr/sbin/mount.fuse.snapfs", "./usr/lib/systemd/system/snapfs@.service",
                 "./usr/share/man/man1/snapfs.1.gz", "./usr/share/bash-completion/completions/snapfs",
                 "./usr/share/zsh/vendor-completions/_snapfs", "./usr/share/fish/vendor_completions.d/snapfs.fish"]:
        assert path in listed, f"{path} not in the package:\n" + "\n".join(contents)
    assert all(" root/root " in line for line in contents), "\n".join(contents)
    assert listed["./usr/bin/snapfs"].startswith("-rwxr-xr-x"), listed["./usr/bin/snapfs"]

    # dpkg installs it into a throw-away root (its own database and log; the dependencies
    # are the host's business, so --force-depends), then removes it.
    root = workdir / "dpkg-root"
    admin = root / "var/lib/dpkg"
    for d in ("info", "updates", "triggers"):
        (admin / d).mkdir(parents=True)
    (admin / "status").write_text("")
    (admin / "available").write_text("")
    (root / "var/log").mkdir()
    dpkg = ["dpkg", f"--root={root}", f"--log={root}/var/log/dpkg.log", "--force-depends"]
    r = run([*dpkg, "-i", deb], timeout=120)
    assert r.returncode == 0, r.stderr
    unit = (root / "usr/lib/systemd/system/snapfs@.service").read_text()
    assert re.search(r"^ExecStart=/usr/bin/snapfs mount --foreground ", unit, re.M), unit
    assert b"\nSNAPFS=/usr/bin/snapfs\n" in (root / "usr/sbin/mount.fuse.snapfs").read_bytes()
    assert run([root / "usr/bin/snapfs", "--version"]).stdout.strip() == VERSION
    r = run([*dpkg, "-r", "snapfs"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert not (root / "usr/bin/snapfs").exists() and not (root / "usr/sbin/mount.fuse.snapfs").exists()
    assert "remove snapfs:" in (root / "var/log/dpkg.log").read_text()
