"""Where a workload runs: a native directory, or a FUSE mount (snapfs, bindfs, libfuse's
passthrough_ll) over its own backing directory, set up and torn down by the harness. The
snapfs mounts are Integration/lib's Mount; the other daemons run in the foreground as this
process's children."""

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from Integration.lib.mount import Mount, mount_fields, peak_rss_kib, pid_alive

from . import passthrough_ll
from .harness import BenchError, log


class Target:
    name = ""
    is_fuse = False

    def __init__(self, root):
        self.root = root
        self.dir = None
        self.pid = None
        self.error = None
        self.setup_failed = False

    def setup(self):
        raise NotImplementedError

    def alive(self):
        return True

    def teardown(self):
        """Returns a dict of facts (peak RSS); never raises."""
        return {}


class NativeTarget(Target):
    name = "native"

    def setup(self):
        self.dir = self.root / "native"
        self.dir.mkdir()
        return self.dir


class FuseTarget(Target):
    is_fuse = True

    def __init__(self, root):
        super().__init__(root)
        self.backing = root / f"{self.name}-backing"
        self.mnt = root / f"{self.name}-mnt"
        self.log_file = root / f"{self.name}.log"
        self.pid = None          # the daemon's pid (a process this harness started)
        self.proc = None         # Popen, when the daemon is our direct child
        self.mounted = False

    def alive(self):
        return self.mounted and mount_fields(self.mnt) is not None and \
            (self.pid is None or pid_alive(self.pid))

    def log_tail(self):
        try:
            return self.log_file.read_text(errors="replace").strip()[-800:]
        except OSError:
            return ""

    def unmount_commands(self):
        return [["fusermount3", "-u", str(self.mnt)]]

    def teardown(self):
        facts = {}
        if self.pid is not None:
            facts["peak_rss_kib"] = peak_rss_kib(self.pid)
        if self.mounted or mount_fields(self.mnt) is not None:
            self.unmount()
        self.wait_daemon()
        return facts

    def unmount(self):
        attempts = self.unmount_commands() + [["fusermount3", "-u", str(self.mnt)]] * 3
        for i, cmd in enumerate(attempts):
            if mount_fields(self.mnt) is None:
                break
            try:
                subprocess.run(cmd, capture_output=True, timeout=120)
            except subprocess.TimeoutExpired:
                pass
            if mount_fields(self.mnt) is not None and i > 0:
                time.sleep(1)
        if mount_fields(self.mnt) is not None:
            log(f"{self.name}: {self.mnt} is busy; aborting the FUSE connection and detaching it")
            fields = mount_fields(self.mnt)
            if fields:
                minor = fields[2].split(":")[1]
                abort = Path(f"/sys/fs/fuse/connections/{minor}/abort")
                if abort.exists():
                    try:
                        abort.write_text("1\n")
                    except OSError:
                        pass
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True, timeout=60)
        self.mounted = mount_fields(self.mnt) is not None
        if self.mounted:
            log(f"{self.name}: WARNING: could not unmount {self.mnt}")

    def wait_daemon(self, timeout=30):
        """After the unmount the daemon exits by itself; if it does not, stop it (only
        ever the pid this harness started)."""
        if self.pid is None:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            if self.proc is None and not pid_alive(self.pid):
                break
            time.sleep(0.1)
        else:
            log(f"{self.name}: daemon {self.pid} still running {timeout} s after unmount; sending SIGTERM")
            self.signal_daemon(signal.SIGTERM)
            time.sleep(3)
            if pid_alive(self.pid):
                self.signal_daemon(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.pid = None

    def signal_daemon(self, sig):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


class SnapfsTarget(FuseTarget):
    name = "snapfs"

    def __init__(self, root, binary, extra_args):
        super().__init__(root)
        self.binary = binary
        self.extra_args = extra_args

    def setup(self):
        if not os.access(self.binary, os.X_OK):
            raise BenchError(f"snapfs binary not found or not executable: {self.binary} "
                             "(build it with `swift build -c release` or set SNAPFS_BIN)")
        self.backing.mkdir(exist_ok=True)  # the snapshot benchmark makes it first (a btrfs subvolume)
        self.mnt.mkdir()
        pid_file = self.root / f"{self.name}.pid"
        mount = Mount(self.backing, self.mnt, extra_args=self.extra_args, binary=self.binary,
                      pid_file=pid_file, log_file=self.log_file)
        cmd = mount.command()
        try:
            r = mount.launch(timeout=60)
        except subprocess.TimeoutExpired:
            self.mounted = mount_fields(self.mnt) is not None
            raise BenchError(f"`{shlex.join(cmd)}` did not return within 60 s")
        self.mounted = mount_fields(self.mnt) is not None
        self.pid = mount.pid
        if r.returncode != 0:
            raise BenchError(f"`{shlex.join(cmd)}` exited {r.returncode}: "
                             f"{(r.stderr.strip() or r.stdout.strip())[-600:]} {self.log_tail()}")
        if not self.mounted:
            raise BenchError(f"snapfs mount returned 0 but {self.mnt} is not mounted")
        if self.pid is None:
            raise BenchError(f"snapfs mount did not write its pid to {pid_file}")
        return self.mnt

    def unmount_commands(self):
        return [[self.binary, "unmount", str(self.mnt)]]


class SnapfsAltTarget(SnapfsTarget):
    """snapfs with --alt-args appended (default -o no_writeback_cache): a second mode beside
    the default one in the same run."""
    name = "snapfs-alt"


class SnapfsUringTarget(SnapfsTarget):
    """snapfs with -o uring (requests over io_uring), beside plain snapfs in the same run."""
    name = "snapfs-uring"


class SnapfsBaseTarget(SnapfsTarget):
    """Another snapfs build (--baseline-bin), with the same arguments: an A/B in one run."""
    name = "snapfs-base"


class BindfsTarget(FuseTarget):
    name = "bindfs"

    def before_exec(self):
        pass

    def command(self):
        exe = shutil.which("bindfs")
        if not exe:
            raise BenchError("bindfs is not installed (apt-get install bindfs)")
        return [exe, "-f", str(self.backing), str(self.mnt)]

    def setup(self):
        cmd = self.command()
        self.backing.mkdir()
        self.mnt.mkdir()
        # -f: stay in the foreground, so the daemon is our own child with a known pid;
        # its own session, so a Ctrl-C reaches only the harness, which then unmounts.
        with open(self.log_file, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         start_new_session=True, preexec_fn=self.before_exec)
        self.pid = self.proc.pid
        deadline = time.time() + 30
        while time.time() < deadline:
            if mount_fields(self.mnt) is not None:
                self.mounted = True
                return self.mnt
            if self.proc.poll() is not None:
                raise BenchError(f"`{shlex.join(cmd)}` exited {self.proc.returncode}: {self.log_tail()}")
            time.sleep(0.05)
        raise BenchError(f"`{shlex.join(cmd)}` did not mount within 30 s")


class PassthroughLLTarget(BindfsTarget):
    """libfuse's passthrough_ll example: forwards each request with the kernel's caches on
    (cache=always), no default_permissions, no snapshots, no write cache."""
    name = "passthrough_ll"
    writeback = False
    default_permissions = False
    # It keeps a descriptor open for every inode the kernel knows: the full smallfiles
    # workload needs more than 20,000. Root with CAP_SYS_RESOURCE may raise its hard limit
    # (up to fs.nr_open); otherwise it gets the hard limit, and a run past it fails there
    # (the report says so, and the best peer is then taken from the others).
    DESCRIPTORS = 1 << 18

    def before_exec(self):
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, self.DESCRIPTORS),) * 2)
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def command(self):
        try:
            exe = passthrough_ll.build(self.root / "passthrough_ll")
        except RuntimeError as e:
            raise BenchError(str(e))
        return passthrough_ll.command(exe, self.backing, self.mnt, foreground=True, writeback=self.writeback,
                                      default_permissions=self.default_permissions)


class PassthroughLLWritebackTarget(PassthroughLLTarget):
    """passthrough_ll with the kernel's write-back cache (-o writeback) as well."""
    name = "passthrough_ll-wb"
    writeback = True


class PassthroughLLPermissionsTarget(PassthroughLLWritebackTarget):
    """passthrough_ll-wb with -o default_permissions: the permission model snapfs needs (the
    kernel checks every access, for every user). Not a peer: it shows what that model costs
    a bare passthrough."""
    name = "passthrough_ll-wb-dp"
    default_permissions = True
