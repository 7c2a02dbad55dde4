"""What every test and benchmark needs: the snapfs binary, CI mode, polling."""

import os
import pathlib
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
SNAPFS = os.environ.get("SNAPFS_BIN", str(REPO / ".build" / "release" / "snapfs"))
# Mount arguments for a snapshot at every commit: the default policy (`auto`) may cover
# several commits with one snapshot, and tests of what each commit's snapshot holds need one each.
EVERY_COMMIT = ["--sqlite-min-interval", "0"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def cannot(reason):
    """A test cannot run here: in CI (CI=true) that fails it, elsewhere it is skipped."""
    import pytest
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def snapfs_available():
    if not os.path.exists(SNAPFS):
        cannot(f"snapfs binary not built at {SNAPFS}")
    if not os.path.exists("/dev/fuse"):
        cannot("/dev/fuse is missing")


def wait_until(predicate, timeout=10.0, interval=0.02):
    """Polls `predicate` until it holds or `timeout` seconds pass; returns its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
