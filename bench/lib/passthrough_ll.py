"""libfuse's low-level passthrough example (C, nothing but forwarding: no
default_permissions, the kernel's caches on), built from libfuse3-dev's copy: the floor of
what a FUSE passthrough over /dev/fuse costs on a machine. Used by run.py and
sqlite_commits.py."""
import subprocess
from pathlib import Path

SOURCE = Path("/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c")


def build(out):
    """Compiles the example to `out` (a Path) unless it is there; returns its path as a
    string. Raises RuntimeError with the reason when it cannot."""
    if not SOURCE.exists():
        raise RuntimeError(f"{SOURCE} is missing (apt-get install libfuse3-dev)")
    if not out.exists():
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True).stdout.split()
        r = subprocess.run(["cc", "-O2", "-o", str(out), str(SOURCE), *flags], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"cannot build {SOURCE}: {r.stderr.strip()[-600:]}")
    return str(out)


def command(exe, backing, mountpoint, foreground=False, writeback=False, default_permissions=False):
    """The mount command: kernel caches on (cache=always); with `writeback`, also the
    kernel's write-back cache (the example's `-o writeback`: small writes are gathered in
    the kernel's page cache and sent in large requests); with `default_permissions`, the
    kernel checks permissions itself, as on a mount many users share (snapfs always does):
    it then refreshes a directory's attributes, one more request, after each change in it."""
    options = (f"source={backing},cache=always" + (",writeback" if writeback else "")
               + (",default_permissions" if default_permissions else ""))
    return [exe, *(["-f"] if foreground else []), "-o", options, str(mountpoint)]
