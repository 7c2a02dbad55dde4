"""Helpers shared by the mounted tests (Integration/) and the benchmarks (bench/): one home
for each.

    common   the snapfs binary, CI mode (`cannot`: fail in CI, skip elsewhere), wait_until
    mount    /proc/self/mountinfo, process state, `Mount` (one `snapfs mount` daemon)
    loopfs   `LoopFS`: an ext4, XFS (reflink=1) or btrfs on a loop device
    users    unprivileged users the tests act as (`User`, `ensure_user`, `run_as_nobody`)
    libc     libc calls Python's os module lacks, through ctypes
    posix    file helpers of the POSIX conformance tests
    control  the control file (`snapshot`, `status`, the snapshots' metadata) and `snapfs status`
    sqlite   SQLite connections and commit snapshots
    cli      `run` and `Env` of the command-line tests

The tests import it as `lib` (pytest puts Integration/ on sys.path, conftest.py being
there). The benchmarks (bench/) import it as `Integration.lib`: bench/lib/__init__.py puts the
repository's root on sys.path. So modules here import each other relatively, and only
`common.cannot` needs pytest (imported when it is called)."""
