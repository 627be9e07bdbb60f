"""The store interface, its registry by URL scheme, its errors, the URL helpers and the
per-process options and clients. Nothing here knows what the bytes are (tar,
index.json): that is the shard layer above (data/shards.py, data/tar.py). What network
stores share (retries, resume at byte N) is in network.py.

A store reads objects by URL:

    open(url, size=None, sha256=None, then=None) -> binary file
        the object as a stream. `size` and `sha256` are what the caller expects (the
        shard index's); the bytes read are those, or StoreError: at open where the store
        has them all (a local file, the node cache), else when the end is reached.
        `then`: the URL the caller opens next, a hint (read-ahead asks for it early).
    size(url) -> int | None          bytes of the object; None when there is none
    sizes(urls) -> {url: int | None} many at once (a store may list instead of asking)
    read_bytes(url) -> bytes          a small object whole (index.json)
    upload(local_path, url), delete(url)   only where the store can be written (S3)

A new store is one file and one registry line in stores/__init__.py
(docs/data-sources.md).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from ...registry import Registry

CHUNK = 1 << 20  # bytes per read from a body: large enough to keep syscalls rare


# --- errors ---------------------------------------------------------------------------------

class StoreError(ValueError):
    """An object that cannot be read (or written) as asked. One line naming the URL
    (redacted) and the cause; the shard layer names what the object was (shard, shard
    index) and re-raises it as its ShardError."""

    def __init__(self, url: str, cause: str, verb: str = ""):
        # the args are what the message is made of (and what pickling keeps): no secrets
        super().__init__(redact(url) if is_url(url) else url, " ".join(cause.split()), verb)

    @property
    def url(self) -> str:
        return self.args[0]

    @property
    def cause(self) -> str:
        return self.args[1]

    def __str__(self) -> str:
        verb = self.args[2]
        return f"{verb + ' ' if verb else ''}{self.url}: {self.cause}"


class NotFound(StoreError):
    """There is no object at the URL (HTTP 404, no such key or file)."""


class Corrupt(StoreError):
    """The object's bytes are not the expected ones (sha256): rebuild or re-upload it."""


class Unavailable(StoreError):
    """The store kept failing transiently (refused or reset connections, timeouts, 5xx)
    for data.retry_s without progress: an outage, which the shard layer reports as such
    (errors.Outage), not as bad data."""


class Transient(Exception):
    """A fault worth retrying; `str` is a one-line cause without secrets."""


class Permanent(Exception):
    """A fault retrying cannot fix; `str` is a one-line cause without secrets."""

    def __init__(self, cause: str, missing: bool = False):
        super().__init__(cause)
        self.missing = missing  # no such object: NotFound


def check_digest(url: str, digest: str, expected: str | None) -> None:
    """Corrupt unless the hex sha256 `digest` is the `expected` one (None: not known)."""
    if expected is not None and digest != expected:
        raise Corrupt(url, f"sha256 {digest[:12]}... differs from the index's "
                           f"{expected[:12]}... (corrupt or replaced)")


def length_fault(got: int, size: int) -> Permanent:
    short = "shorter" if got < size else "longer"
    return Permanent(f"the object is {got} bytes, {short} than the {size} the index says "
                     "(truncated or replaced upload?)")


def check_bytes(url: str, data: bytes, size: int | None, sha256: str | None) -> bytes:
    """A whole object's bytes checked against the expected size and sha256 (for a store
    that has the object in hand); StoreError or Corrupt otherwise."""
    if size is not None and len(data) != size:
        raise StoreError(url, str(length_fault(len(data), size)))
    check_digest(url, hashlib.sha256(data).hexdigest(), sha256)
    return data


# --- URLs -----------------------------------------------------------------------------------

def scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else ""


def is_url(spec: str) -> bool:
    """A URL of a registered store (s3://, http(s)://, ...), not a local path."""
    return scheme(str(spec)) in STORES


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


# --- options and per-process clients --------------------------------------------------------

@dataclass
class Options:
    """Per process; set from the config (`configure`) before any read."""

    s3_endpoint_url: str = ""  # "" = botocore's AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / AWS
    retry_s: float = 30.0  # seconds a read keeps retrying transient faults without progress
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    cache_dir: str = ""  # per-node shard cache; "" = off
    cache_max_bytes: int = 0  # LRU limit of the cache; 0 = unlimited


_options = Options()
_clients: dict[tuple[str, int], Any] = {}
_lock = threading.Lock()


def configure(data_cfg: Any) -> None:
    """Take the store settings of a DataConfig (fields may be missing in older configs);
    clients are made afresh with them."""
    global _options
    gb = float(getattr(data_cfg, "cache_max_gb", 0.0) or 0.0)
    _options = Options(
        s3_endpoint_url=str(getattr(data_cfg, "s3_endpoint_url", "") or ""),
        retry_s=float(getattr(data_cfg, "retry_s", 30.0)),
        cache_dir=str(getattr(data_cfg, "cache_dir", "") or ""),
        cache_max_bytes=int(gb * 1e9),
    )
    with _lock:
        _clients.clear()


def options() -> Options:
    return _options


def client(name: str, make: Callable[[Options], Any]) -> Any:
    """This process's client `name`, made by `make(options())` on first use: one per
    process (forked DataLoader workers make their own), reused for every object, so a
    worker pays the TCP/TLS set-up once."""
    key = (name, os.getpid())
    with _lock:
        if key not in _clients:
            _clients[key] = make(_options)
        return _clients[key]


# --- the interface and its registry ---------------------------------------------------------

class Store:
    """Where the bytes of one URL scheme come from (module docstring)."""

    def open(self, url: str, size: int | None = None, sha256: str | None = None,
             then: str | None = None) -> IO[bytes]:
        raise NotImplementedError

    def size(self, url: str) -> int | None:
        raise NotImplementedError

    def sizes(self, urls: list[str]) -> dict[str, int | None]:
        return {u: self.size(u) for u in urls}

    def read_bytes(self, url: str) -> bytes:
        with self.open(url) as f:
            return f.read()

    def upload(self, local_path: str, url: str) -> None:
        raise StoreError(url, f"only {', '.join(writable_schemes())} (or a local directory) "
                              "can be written; upload to an HTTP server with its own tools",
                         verb="cannot write to")

    def delete(self, url: str) -> None:
        """Remove the object if it exists (no error when it does not)."""

    writable = False  # upload and delete work
    remote = False  # bytes cross a network: the node cache and read-ahead apply


STORES: Registry[Store] = Registry("URL scheme")


def writable_schemes() -> list[str]:
    return [f"{s}://" for s in STORES if STORES[s].writable]


class Wrapper(Store):
    """A store in front of another (the node cache, read-ahead): everything but `open`
    goes to the inner store."""

    def __init__(self, inner: Store):
        self.inner = inner
        self.remote, self.writable = inner.remote, inner.writable

    def size(self, url: str) -> int | None:
        return self.inner.size(url)

    def sizes(self, urls: list[str]) -> dict[str, int | None]:
        return self.inner.sizes(urls)

    def read_bytes(self, url: str) -> bytes:
        return self.inner.read_bytes(url)

    def upload(self, local_path: str, url: str) -> None:
        self.inner.upload(local_path, url)

    def delete(self, url: str) -> None:
        self.inner.delete(url)
