"""Asking for the next remote object before it is needed, without a thread, as a store in
front of a RemoteStore: `Ahead(inner).open(url, size, sha256, then)`.

A stream-mode reader spends the server's time to first byte (a round trip, and on S3 the
request's authentication and the object lookup: about 4-6 ms per shard from SeaweedFS on
loopback, tens of ms from a real bucket) waiting, decoding nothing. When the body of
object k has all arrived, the reader still has up to one CHUNK of it to decode; `ask`
writes the GET for object k+1 (`then`) on a connection of its own at that moment and
returns, so the server works while object k is decoded, and `take` later finds the
answer's headers (and the first bytes) already in the socket.

No thread: a thread in this process would wait for the GIL after every recv while the
main thread decodes (measured slower, docs/benchmarks/2026-11-30-remote-shards.md).

Only an optimization: `take` hands over a body only for a 200 answer of the expected
length; anything else (an error status, a reset, a timeout) is dropped silently and the
reader opens the URL as usual, with its retries and one-line errors. A fault in the
middle of a body taken from here is Transient, so the reader resumes it by Range as any
other. The GET goes to the store's `http_url` (S3: presigned by the process's botocore
client); the signed URL never leaves this module and is never logged.
"""

from __future__ import annotations

import functools
import http.client
import os
import ssl
from urllib.parse import urlsplit

from .base import Transient, Wrapper, options
from .network import Body, Reader, RemoteStore

_Host = tuple[int, str, str, int | None]  # pid, scheme, host, port
_pending: dict[tuple[int, str], tuple[http.client.HTTPConnection, _Host]] = {}
_idle: dict[_Host, http.client.HTTPConnection] = {}


@functools.cache
def _ssl_context() -> ssl.SSLContext:  # loading the CA bundle costs ms: once per process
    try:
        import certifi  # what botocore and urllib3 verify against when it is installed

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def _new_connection(host: _Host) -> http.client.HTTPConnection:
    _, scheme, name, port = host
    timeout = options().connect_timeout_s  # read_timeout_s once connected (_send)
    if scheme == "https":
        return http.client.HTTPSConnection(name, port, timeout=timeout, context=_ssl_context())
    return http.client.HTTPConnection(name, port, timeout=timeout)


def _send(conn: http.client.HTTPConnection, target: str) -> bool:
    """Write the GET (connecting first if needed); False, and the connection closed, if
    that fails."""
    try:
        conn.request("GET", target, headers={"Accept-Encoding": "identity"})
        conn.sock.settimeout(options().read_timeout_s)
        return True
    except Exception:
        conn.close()
        return False


def ask(store: RemoteStore, url: str) -> None:
    """Send a GET for the whole object at `url` and return without waiting for the answer.
    At most one request is pending per process: an earlier one nobody took is dropped."""
    for key in [k for k in _pending if k[0] == os.getpid()]:
        _pending.pop(key)[0].close()
    try:
        plain = store.http_url(url)
        if plain is None:
            return
        parts = urlsplit(plain)
    except Exception:  # the reader will open it as usual (and name the cause)
        return
    host = (os.getpid(), parts.scheme, parts.hostname or "", parts.port)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _idle.pop(host, None)
    if conn is None or not _send(conn, target):  # the server may have closed a kept one
        conn = _new_connection(host)
        if not _send(conn, target):
            return
    _pending[(os.getpid(), url)] = (conn, host)


class _Answer(Body):
    """A body taken from here."""

    def __init__(self, conn: http.client.HTTPConnection, response, host: _Host):
        self.conn, self.response, self.host = conn, response, host
        self.length = int(response.getheader("Content-Length"))
        self.etag = response.getheader("ETag")

    def _read(self, n: int) -> bytes:
        try:
            return self.response.read(n)
        except Exception as e:  # IncompleteRead, resets, timeouts: the reader resumes
            raise Transient(type(e).__name__) from None

    def close(self) -> None:
        if self.response.isclosed():  # read to the end: the connection can serve again
            old = _idle.pop(self.host, None)
            if old is not None:
                old.close()
            _idle[self.host] = self.conn
        else:
            self.conn.close()


def take(url: str, size: int | None) -> _Answer | None:
    """The answer to an earlier `ask(..., url)` if it is a 200 of `size` bytes, else None."""
    pending = _pending.pop((os.getpid(), url), None)
    if pending is None:
        return None
    conn, host = pending
    try:
        response = conn.getresponse()
        n = response.getheader("Content-Length")
        if response.status == 200 and n is not None and (size is None or int(n) == size):
            return _Answer(conn, response, host)
    except Exception:
        pass
    conn.close()
    return None


class Ahead(Wrapper):
    """`inner`'s objects, each opened on the answer asked for when the one before it had
    arrived (`then`: the URL the caller reads next)."""

    inner: RemoteStore

    def __init__(self, inner: RemoteStore):
        super().__init__(inner)

    def open(self, url: str, size: int | None = None, sha256: str | None = None,
             then: str | None = None) -> Reader:
        on_end = functools.partial(ask, self.inner, then) if then else None
        return Reader(self.inner, url, size, sha256, first=take(url, size), on_end=on_end)
