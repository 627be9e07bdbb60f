"""Shards at a URL: s3://bucket/prefix (S3 and S3-compatible stores) or http(s)://host/path.

Reading is in-process and safe: no `pipe:` commands, no shell, nothing unpickled. Bodies
are streamed; one client (S3) or connection pool (HTTP) per process is reused for every
shard, so a worker pays the TLS/TCP set-up once, not per shard or per sample.

Clients. S3 goes through boto3/botocore (maintained by AWS): the standard credential chain
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE, ~/.aws/config and
credentials, SSO, instance/container roles) and the endpoint variables AWS_ENDPOINT_URL_S3
and AWS_ENDPOINT_URL are botocore's own; `data.s3_endpoint_url` overrides them. HTTP(S)
goes through urllib3 (already a dependency of botocore): pooled keep-alive connections,
streamed bodies, Range requests, and a length check on every body.

Faults. Connection errors, resets, timeouts and 408/429/5xx answers are transient: they
are retried with exponential backoff and full jitter, and the read resumes at the byte
reached (Range: bytes=N-). A server that ignores Range (200 instead of 206) is read again
from the start and the first N bytes are dropped, so no byte (hence no sample) is
delivered twice. The retry window (`retry_s`) restarts whenever bytes arrive. 4xx
answers other than 408/429 (403 wrong key, 404 missing shard, ...) are permanent: a
ShardError with one line naming the URL (no query string, no credentials) and the cause.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("s3://", "http://", "https://")
CHUNK = 1 << 20  # bytes per read from a body: large enough to keep syscalls rare


@dataclass
class RemoteOptions:
    """Per process; set from the config by preflight (`configure`) before any read."""

    s3_endpoint_url: str = ""  # "" = botocore's AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS
    retry_s: float = 30.0  # seconds a read keeps retrying transient faults without progress
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    cache_dir: str = ""  # per-node shard cache; "" = off
    cache_max_bytes: int = 0  # LRU limit of the cache; 0 = unlimited


_options = RemoteOptions()


def configure(data_cfg) -> None:
    """Take the remote settings of a DataConfig (fields may be missing in older configs)."""
    global _options
    gb = float(getattr(data_cfg, "cache_max_gb", 0.0) or 0.0)
    _options = RemoteOptions(
        s3_endpoint_url=str(getattr(data_cfg, "s3_endpoint_url", "") or ""),
        retry_s=float(getattr(data_cfg, "retry_s", 30.0)),
        cache_dir=str(getattr(data_cfg, "cache_dir", "") or ""),
        cache_max_bytes=int(gb * 1e9),
    )
    _clients.clear()


def options() -> RemoteOptions:
    return _options


def is_remote(spec: str) -> bool:
    return str(spec).startswith(SCHEMES)


def redact(url: str) -> str:
    """The URL without user info, query string or fragment (signed URLs carry secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def dirname(url: str) -> str:
    return url.rsplit("/", 1)[0]


def _error(msg: str) -> Exception:
    from .shards import ShardError  # shards imports this module

    return ShardError(" ".join(msg.split()))


class Transient(Exception):
    """A fault worth retrying; `str` is a one-line cause without secrets."""


class Permanent(Exception):
    """A fault retrying cannot fix; `str` is a one-line cause without secrets."""


_HINTS = {
    401: "check the credentials",
    403: "check the AWS credentials/profile and the bucket policy (or the server's access "
         "rules)",
    404: "check the URL; upload the shards with `infogan prepare-data --out URL`",
    412: "the object was replaced while it was being read; run again once uploads are done",
}


def _status_fault(status: int, reason: str = "") -> Exception:
    cause = f"HTTP {status}{' ' + reason if reason else ''}"
    if status in (408, 429) or status >= 500:
        return Transient(cause)
    hint = _HINTS.get(status, "")
    return Permanent(f"{cause}{'; ' + hint if hint else ''}")


# --- clients, one per process (forked DataLoader workers make their own) -------------------

_clients: dict = {}
_lock = threading.Lock()


def _s3_client():
    key = ("s3", os.getpid())
    with _lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            o = _options
            cfg = Config(
                retries={"total_max_attempts": 1},  # our loop retries (and resumes bodies)
                connect_timeout=o.connect_timeout_s, read_timeout=o.read_timeout_s,
                max_pool_connections=32, tcp_keepalive=True,
            )
            session = boto3.session.Session()
            _clients[key] = session.client("s3", endpoint_url=o.s3_endpoint_url or None,
                                           config=cfg)
        return _clients[key]


def _http_pool():
    key = ("http", os.getpid())
    with _lock:
        if key not in _clients:
            import urllib3

            o = _options
            _clients[key] = urllib3.PoolManager(
                num_pools=16, maxsize=32, retries=False,
                timeout=urllib3.Timeout(connect=o.connect_timeout_s, read=o.read_timeout_s),
            )
        return _clients[key]


def _bucket_key(url: str) -> tuple[str, str]:
    rest = url[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise Permanent("no bucket in the URL; write s3://BUCKET/PREFIX")
    return bucket, key


def _s3_fault(e: BaseException) -> Exception:
    """botocore's exceptions reduced to Transient/Permanent with a one-line cause. Their
    text can name endpoints and signed request details, so only the code is kept."""
    import botocore.exceptions as be

    if isinstance(e, be.ClientError):
        meta = e.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        code = str(e.response.get("Error", {}).get("Code", "")) or "error"
        if status == 0:
            return Transient(code)
        fault = _status_fault(status, "" if code == str(status) else code)
        return type(fault)(str(fault))
    if isinstance(e, be.NoCredentialsError | be.PartialCredentialsError):
        return Permanent("no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or ~/.aws/credentials")
    if isinstance(e, be.ProfileNotFound):
        return Permanent("the AWS profile in AWS_PROFILE does not exist in ~/.aws/config")
    if isinstance(e, be.ParamValidationError):
        return Permanent("invalid S3 request parameters (bucket or key name)")
    import urllib3

    if isinstance(e, be.BotoCoreError | OSError | urllib3.exceptions.HTTPError):
        return Transient(type(e).__name__)  # connection, timeout, incomplete body
    return Permanent(type(e).__name__)


def _http_fault(e: BaseException) -> Exception:
    import urllib3

    if isinstance(e, urllib3.exceptions.HTTPError | OSError):
        return Transient(type(e).__name__)
    return Permanent(type(e).__name__)


def _retrying(url: str, what: str, fn: Callable, progress: Callable[[], int] | None = None):
    """fn() with retries of Transient faults: backoff 0.2 s doubling to 4 s, full jitter;
    gives up after options().retry_s without progress. Raises ShardError (one line)."""
    delay, start, last = 0.2, time.monotonic(), progress() if progress else 0
    while True:
        try:
            return fn()
        except (Transient, Permanent) as e:
            fault = e
        except Exception as e:  # a client library error
            fault = _s3_fault(e) if url.startswith("s3://") else _http_fault(e)
        if isinstance(fault, Permanent):
            raise _error(f"{what} {redact(url)}: {fault}") from None
        if progress is not None and progress() != last:
            last, start, delay = progress(), time.monotonic(), 0.2
        if time.monotonic() - start > _options.retry_s:
            raise _error(
                f"{what} {redact(url)}: still failing after {_options.retry_s:g} s of retries "
                f"({fault}); check the server and the network (data.retry_s sets the window)"
            ) from None
        time.sleep(random.uniform(0, delay))  # backoff with full jitter, not a sync
        delay = min(delay * 2, 4.0)


# --- opening a body at a byte offset --------------------------------------------------------

class _Body:
    """One response body from `offset`; `read(n)` returns b"" at its end."""

    def __init__(self, url: str, offset: int, etag: str | None):
        self.etag, self.skip = etag, 0
        if url.startswith("s3://"):
            bucket, key = _bucket_key(url)
            kw = {"Range": f"bytes={offset}-"} if offset else {}
            if etag and offset:
                kw["IfMatch"] = etag
            try:
                r = _s3_client().get_object(Bucket=bucket, Key=key, **kw)
            except Exception as e:
                raise _s3_fault(e) from None
            self.etag = r.get("ETag", etag)
            self.length = int(r["ContentLength"]) + offset
            self._stream = r["Body"]
            self._read = self._stream.read
        else:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            if etag and offset:
                headers["If-Range"] = etag
            try:
                r = _http_pool().request("GET", url, headers=headers, preload_content=False,
                                         redirect=True)
            except Exception as e:
                raise _http_fault(e) from None
            if r.status not in (200, 206):
                r.release_conn()
                raise _status_fault(r.status, r.reason or "")
            if r.status == 200 and offset:  # Range ignored: re-read, drop what we have
                self.skip = offset
            self.etag = r.headers.get("ETag", etag)
            n = r.headers.get("Content-Length")
            self.length = int(n) + (offset if r.status == 206 else 0) if n else -1
            self._stream = r
            self._read = lambda size: r.read(size, decode_content=False)

    def read(self, n: int) -> bytes:
        while self.skip:
            drop = self._read(min(self.skip, CHUNK))
            if not drop:
                return b""
            self.skip -= len(drop)
        return self._read(n)

    def close(self) -> None:
        try:
            if hasattr(self._stream, "release_conn"):
                self._stream.drain_conn()
                self._stream.release_conn()
            else:
                self._stream.close()
        except Exception:
            pass


class RemoteReader(io.RawIOBase):
    """A shard at a URL as a sequential file; survives transient faults mid-body by
    resuming at the byte reached. `size`: the expected length (index), or None.

    The body is fetched in CHUNK-sized reads into a buffer and small reads (tar headers,
    PNG members) are served from it: a call into the HTTP stack per 512-byte header would
    cost more than decoding the sample. `fetched` is the network position (where a resume
    starts), `pos` what the caller has read; `sha256` covers the fetched bytes in order.
    `answer`: the whole body already requested (data/ahead.py), used for the first open."""

    def __init__(self, url: str, size: int | None = None, what: str = "shard", answer=None):
        super().__init__()
        self.url, self.size, self.what, self._answer = url, size, what, answer
        self.pos = self.fetched = 0
        self._body, self._etag = None, None
        self._buf, self._off = b"", 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        body, self._answer = self._answer or _Body(self.url, self.fetched, self._etag), None
        self._etag = body.etag
        if self.size is None and body.length >= 0:
            self.size = body.length
        elif self.size is not None and body.length >= 0 and body.length != self.size:
            body.close()
            short = "shorter" if body.length < self.size else "longer"
            raise Permanent(f"the object is {body.length} bytes, {short} than the "
                            f"{self.size} the index says (truncated or replaced upload?)")
        self._body = body

    def _fetch_some(self) -> bytes:
        if self._body is None:
            self._open()
        try:
            data = self._body.read(CHUNK)
        except (Transient, Permanent):
            self._drop()
            raise
        except Exception as e:
            self._drop()
            raise (_s3_fault(e) if self.url.startswith("s3://") else _http_fault(e)) from None
        if not data and self.size is not None and self.fetched < self.size:
            self._drop()  # the connection ended early without an error
            raise Transient(f"connection closed at byte {self.fetched} of {self.size}")
        return data

    def _drop(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def _fill(self) -> bool:
        """Refill the buffer from the network; False at the end of the object."""
        if self.size is not None and self.fetched >= self.size:
            return False
        data = _retrying(self.url, self.what, self._fetch_some, lambda: self.fetched)
        if not data:
            return False
        self.fetched += len(data)
        self.sha256.update(data)
        self._buf, self._off = data, 0
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        if self._off >= len(self._buf) and not self._fill():
            return b""
        out = self._buf[self._off : self._off + n]
        self._off += len(out)
        self.pos += len(out)
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def read_exact(self, n: int) -> bytes:
        """n bytes, or fewer only at the end of the object."""
        first = self.read(n)
        if len(first) == n or not first:
            return first
        parts, got = [first], len(first)
        while got < n:
            chunk = self.read(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        self._drop()
        if self._answer is not None:  # never opened: its connection is closed
            self._answer.close()
        super().close()


def read_bytes(url: str, what: str = "file") -> bytes:
    with RemoteReader(url, what=what) as r:
        return r.readall()


# --- sizes of many objects (preflight: missing or truncated shards) --------------------------

def sizes(urls: list[str], what: str = "shard") -> dict[str, int | None]:
    """Byte size of each URL; None where the object does not exist (404). One LIST per
    1000 keys on S3 (HEAD per object if listing is not allowed); HEADs in parallel on HTTP."""
    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, int | None] = {}
    s3 = [u for u in urls if u.startswith("s3://")]
    if s3:
        listed = _s3_list_sizes(s3)
        if listed is not None:
            out.update(listed)
            s3 = []
    heads = [u for u in urls if not u.startswith("s3://")] + s3
    if heads:
        with ThreadPoolExecutor(16) as pool:
            out.update(zip(heads, pool.map(lambda u: _head(u, what), heads), strict=True))
    return out


def _s3_list_sizes(urls: list[str]) -> dict[str, int | None] | None:
    prefixes = {dirname(u) for u in urls}
    found: dict[str, int] = {}
    for prefix in prefixes:
        bucket, key = _bucket_key(prefix + "/")

        def page(token, bucket=bucket, key=key):
            kw = {"ContinuationToken": token} if token else {}
            return _s3_client().list_objects_v2(Bucket=bucket, Prefix=key, **kw)

        token = None
        while True:
            try:
                r = _retrying(prefix, "shard listing of", lambda token=token: page(token))
            except ValueError as e:  # e.g. 403 on ListBucket: fall back to HEAD per object
                if "HTTP 403" in str(e):
                    return None
                raise
            for obj in r.get("Contents", []):
                found[f"s3://{bucket}/{obj['Key']}"] = int(obj["Size"])
            if not r.get("IsTruncated"):
                break
            token = r["NextContinuationToken"]
    return {u: found.get(u) for u in urls}


def _head(url: str, what: str) -> int | None:
    def once() -> int | None:
        if url.startswith("s3://"):
            bucket, key = _bucket_key(url)
            try:
                return int(_s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
            except Exception as e:
                fault = _s3_fault(e)
                if "HTTP 404" in str(fault):
                    return None
                raise fault from None
        try:
            r = _http_pool().request("HEAD", url, redirect=True)
        except Exception as e:
            raise _http_fault(e) from None
        if r.status == 404:
            return None
        if r.status != 200:
            raise _status_fault(r.status, r.reason or "")
        n = r.headers.get("Content-Length")
        return int(n) if n is not None else -1

    return _retrying(url, what, once)


# --- writing (prepare-data --out s3://...) ---------------------------------------------------

def upload(local_path: str, url: str) -> None:
    """Put a local file at an s3:// URL (one PUT: up to 5 GB, far above any shard)."""
    if not url.startswith("s3://"):
        raise _error(f"cannot write to {redact(url)}: only s3:// (or a local directory) "
                     "can be written; upload to an HTTP server with its own tools")
    bucket, key = _bucket_key(url)

    def put() -> None:
        with open(local_path, "rb") as f:
            _s3_client().put_object(Bucket=bucket, Key=key, Body=f)

    _retrying(url, "upload to", put)


def delete(url: str) -> None:
    """Remove an s3:// object if it exists (no error when it does not)."""
    if url.startswith("s3://"):
        bucket, key = _bucket_key(url)
        _retrying(url, "delete of", lambda: _s3_client().delete_object(Bucket=bucket, Key=key))
