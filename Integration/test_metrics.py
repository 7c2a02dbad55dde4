"""`--metrics`: the daemon serves Prometheus metrics over HTTP, read here with urllib and
checked with the real `promtool check metrics` (Debian `prometheus`). The values follow
what is done through the mount; bad addresses and a busy port refuse the mount; hostile
clients hold up neither the daemon nor another client."""

import errno
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from lib.cli import assert_one_snapfs_line, run
from lib.common import SNAPFS, cannot, snapfs_available, wait_until
from lib.control import control, snapshot, status
from lib.mount import Mount, is_mounted, log_text

# A scrape that takes longer than this has waited for something it should not: the
# server gives a connection 5 s, so a client held up by another would run past it.
PROMPT = 3


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def fetch(port, path="/metrics", host="127.0.0.1", method="GET"):
    request = urllib.request.Request(f"http://{host}:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=PROMPT) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def samples(text):
    """{'name{labels}': float} of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def promtool_check(text):
    promtool = shutil.which("promtool")
    if promtool is None:
        cannot("promtool is not installed (Debian package prometheus)")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (r.stdout, r.stderr, text)


@pytest.fixture
def metrics_mount(make_mount):
    port = free_port()
    m = make_mount(extra_args=["--metrics", str(port), "--sqlite-min-interval", "0"])
    return m, port


def test_metrics_follow_the_mount(metrics_mount):
    m, port = metrics_mount
    started = time.time()
    before = samples(fetch(port))
    assert before["snapfs_start_time_seconds"] <= started + 1
    assert before["snapfs_start_time_seconds"] > started - 120
    assert before['snapfs_snapshots_made_total{trigger="control"}'] == 0

    # Three snapshots through the control file, each after a change.
    for i in range(3):
        (m.mnt / f"f{i}").write_bytes(b"x" * 10000)
        snapshot(m.mnt)
    # Commits through the mount, each with its snapshot (--sqlite-min-interval 0).
    db = sqlite3.connect(m.mnt / "app.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (n)")
    db.commit()
    for n in range(5):
        db.execute("INSERT INTO t VALUES (?)", (n,))
        db.commit()
    db.close()
    assert wait_until(lambda: int(status(m.mnt)["sqlite-snapshots"]) >= 6, timeout=30)

    text = fetch(port)
    promtool_check(text)
    after = samples(text)
    lines = status(m.mnt)
    assert after['snapfs_snapshots_made_total{trigger="control"}'] == 3
    assert after['snapfs_snapshots_failed_total{trigger="control"}'] == 0
    assert after["snapfs_sqlite_commits_total"] >= 6
    assert after["snapfs_sqlite_commits_total"] - before.get("snapfs_sqlite_commits_total", 0) >= 6
    assert after["snapfs_sqlite_commit_snapshots_total"] >= 6
    assert after['snapfs_snapshots_made_total{trigger="sqlite"}'] == after["snapfs_sqlite_commit_snapshots_total"]
    # The same numbers as `status` (nothing changes the mount between the two reads).
    assert after["snapfs_snapshots_kept"] == int(lines["snapshots"])
    assert after["snapfs_sqlite_commit_snapshots_total"] == int(lines["sqlite-snapshots"])
    assert after["snapfs_min_free_bytes"] == int(lines["min-free-bytes"]) > 0
    assert after["snapfs_backing_free_bytes"] > 0
    assert 0 <= after["snapfs_newest_snapshot_age_seconds"] < 60
    assert abs(after["snapfs_newest_snapshot_timestamp_seconds"] - time.time()) < 60
    assert after["snapfs_snapshot_building"] in (0, 1)
    assert after["snapfs_snapshots_skipped_for_space_total"] == 0
    assert after["snapfs_cache_write_back_errors_total"] == 0
    assert "snapfs_cache_dirty_bytes" in after and "snapfs_cache_cached_bytes" in after
    info = [k for k in after if k.startswith("snapfs_info{")]
    assert len(info) == 1 and f'backing="{m.backing}"' in info[0]
    # Requests by kind: what was done above went through the daemon.
    for op in ("lookup", "create", "getattr"):
        assert after[f'snapfs_fuse_requests_total{{op="{op}"}}'] > 0, op
    assert after['snapfs_fuse_requests_total{op="lookup"}'] > before.get('snapfs_fuse_requests_total{op="lookup"}', 0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=PROMPT) as response:
        assert response.headers["Connection"] == "close"
    # The daemon said where.
    assert wait_until(lambda: f"metrics at http://127.0.0.1:{port}/metrics" in log_text(m), timeout=10)


def test_other_paths_and_methods(metrics_mount):
    m, port = metrics_mount
    with pytest.raises(urllib.error.HTTPError) as e:
        fetch(port, "/")
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        fetch(port, "/metrics", method="POST")
    assert e.value.code == 405
    assert "snapfs_fuse_requests_total" in fetch(port)


def test_read_only_mount_has_metrics(make_mount):
    port = free_port()
    m = make_mount(options=["ro", f"metrics=127.0.0.1:{port}"])    # as fstab gives it
    os.listdir(m.mnt)
    text = fetch(port)
    promtool_check(text)
    got = samples(text)
    assert got['snapfs_fuse_requests_total{op="opendir"}'] > 0
    assert got["snapfs_open_handles"] >= 0
    assert "snapfs_snapshots_kept" not in got   # no snapshots on a read-only mount


def test_ipv6_loopback(make_mount):
    try:
        port = free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    make_mount(extra_args=["--metrics", f"[::1]:{port}"])
    assert "snapfs_start_time_seconds" in fetch(port, host="[::1]")


@pytest.mark.parametrize("value", ["0", "65536", "abc", "host.example:9419", "1.2.3.4.5:80", "::1:9419",
                                   "[::1]", "9419x", ":", "-5"])
def test_bad_addresses_are_refused(workdir, value):
    snapfs_available()
    backing, mnt = workdir / "backing", workdir / "mnt"
    backing.mkdir()
    mnt.mkdir()
    for args in (["--metrics", value], ["-o", f"metrics={value}"]):
        r = run([SNAPFS, "mount", backing, mnt, *args])
        assert r.returncode == 64, (args, r.stderr)
        assert "metrics" in assert_one_snapfs_line(r.stderr)
        assert not is_mounted(mnt)


def test_busy_port_refuses_the_mount(workdir):
    snapfs_available()
    backing, mnt = workdir / "backing", workdir / "mnt"
    backing.mkdir()
    mnt.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        m = Mount(backing, mnt, extra_args=["--metrics", str(port)])
        r = m.launch()
        assert r.returncode == 16, r.stderr
        line = assert_one_snapfs_line(r.stderr)
        assert f"cannot serve metrics on 127.0.0.1:{port}" in line and "in use" in line
        assert not is_mounted(mnt)
        assert not (backing / ".snapshots").exists()


def test_hostile_clients_do_not_hold_up_others(metrics_mount):
    m, port = metrics_mount
    # More silent connections than the server keeps, opened before the honest client.
    silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    # One sends a megabyte of garbage, another a request head that never ends.
    garbage_done = threading.Event()

    def garbage():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(os.urandom(1 << 20))
        except OSError:
            pass    # the server answers 431 and closes after its limit
        garbage_done.set()

    thread = threading.Thread(target=garbage)
    thread.start()
    endless = socket.create_connection(("127.0.0.1", port), timeout=10)
    endless.sendall(b"GET /metrics HTTP/1.1\r\nX-A: " + b"a" * 4000)
    try:
        for _ in range(5):
            assert "snapfs_snapshots_kept" in fetch(port)
        assert garbage_done.wait(15)
        # An idle connection is closed after its time (5 s), not kept for ever.
        last = silent[-1]
        last.settimeout(15)
        assert last.recv(1) == b""
        endless.settimeout(15)
        assert endless.recv(4096) == b""    # a head that never ends gets no answer, and is closed
    finally:
        thread.join(20)
        for s in silent + [endless]:
            s.close()
    # The daemon is up and serves both the mount and the metrics.
    assert m.alive()
    (m.mnt / "after").write_text("still here")
    assert (m.mnt / "after").read_text() == "still here"
    assert "snapfs_snapshots_kept" in fetch(port)


def test_skipped_for_space_is_counted_apart_from_failures(make_mount):
    port = free_port()
    # A floor above what the backing filesystem has free: every snapshot is skipped.
    m = make_mount(extra_args=["--metrics", str(port), "--min-free", "99%"])
    (m.mnt / "f").write_text("x")
    err, result, _ = control(m.mnt, "snapshot")
    assert err == errno.ENOSPC, result
    got = samples(fetch(port))
    assert got["snapfs_snapshots_skipped_for_space_total"] == 1
    assert got['snapfs_snapshots_failed_total{trigger="control"}'] == 0
    assert got['snapfs_snapshots_made_total{trigger="control"}'] == 0
    assert got["snapfs_backing_free_bytes"] < got["snapfs_min_free_bytes"]
    assert "snapfs_newest_snapshot_age_seconds" not in got    # none yet


def test_replication_lag_and_failure(make_mount, workdir):
    """With replicate_to= a repository that cannot be reached: the snapshots wait, the lag
    is the oldest one's age, and the failure shows, in the metrics as in status."""
    port = free_port()
    password = workdir / "pw"
    password.write_text("not used\n")
    m = make_mount(extra_args=["--metrics", str(port)],
                   options=["replicate_to=s3:http://127.0.0.1:9/none/x", f"replicate_password_file={password}"])
    (m.mnt / "a").write_text("a")
    first = snapshot(m.mnt, force=True)
    time.sleep(1.1)
    snapshot(m.mnt, force=True)
    assert wait_until(lambda: status(m.mnt).get("replication-last-error", "-") != "-", timeout=60), status(m.mnt)
    text = fetch(port)
    promtool_check(text)
    got = samples(text)
    assert got["snapfs_replication_waiting_snapshots"] == 2
    assert got["snapfs_replication_failing"] == 1
    # The oldest waiting is the first snapshot: at least the second's second older.
    assert status(m.mnt)["replication-oldest-waiting"] == first
    assert 1 <= got["snapfs_replication_lag_seconds"] < 600


def test_no_replication_metrics_without_replication(metrics_mount):
    m, port = metrics_mount
    assert not [k for k in samples(fetch(port)) if k.startswith("snapfs_replication_")]
