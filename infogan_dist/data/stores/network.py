"""What every network store shares (S3, HTTP(S), and any store behind a network): the
Reader that streams an object, retries, resumes at the byte reached and checks it. A
network store subclasses RemoteStore and writes three methods: `body(url, offset, etag)`
(one request for the object from byte `offset`), `head(url)` (its size, None when
missing) and `fault(exc)` (its client library's exceptions as Transient or Permanent).
RemoteStore gives it open/size/sizes/read_bytes.

Faults. Connection errors, resets, timeouts and 408/429/5xx answers are transient: they
are retried with exponential backoff and full jitter, and the read resumes at the byte
reached (Range: bytes=N-). A server that ignores Range (200 instead of 206) is read again
from the start and the first N bytes are dropped, so no byte (hence no sample) is
delivered twice. The retry window (`retry_s`) restarts whenever bytes arrive. Other 4xx
answers (403 wrong key, 404 missing object, ...) are permanent: a StoreError with one
line naming the URL (no query string, no credentials) and the cause.
"""

from __future__ import annotations

import hashlib
import io
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import (
    CHUNK,
    NotFound,
    Permanent,
    Store,
    StoreError,
    Transient,
    Unavailable,
    check_digest,
    length_fault,
    options,
)


class Body:
    """One answer to a request for an object from byte `offset`. `length`: the object's
    whole length (-1 when not known); `skip`: bytes to drop first (a server that sent the
    whole object when asked for a range)."""

    length: int = -1
    etag: str | None = None
    skip: int = 0

    def _read(self, n: int) -> bytes:
        raise NotImplementedError

    def read(self, n: int) -> bytes:
        """Up to n bytes; b"" at the end of the body."""
        while self.skip:
            drop = self._read(min(self.skip, CHUNK))
            if not drop:
                return b""
            self.skip -= len(drop)
        return self._read(n)

    def close(self) -> None:
        pass


class RemoteStore(Store):
    """A store behind a network: subclasses write body, head and fault."""

    remote = True

    def body(self, url: str, offset: int, etag: str | None) -> Body:
        """One request for the object at `url` from byte `offset` (If-Match/If-Range
        `etag` when resuming). Raises Transient, Permanent or its client's exceptions."""
        raise NotImplementedError

    def head(self, url: str) -> int | None:
        """The object's size in bytes (-1 when the server does not say); None when there
        is no object. One attempt: retries are the caller's."""
        raise NotImplementedError

    def fault(self, e: BaseException) -> Exception:
        """A client library's exception as Transient or Permanent (one line, no secrets)."""
        return Transient(type(e).__name__) if isinstance(e, OSError) \
            else Permanent(type(e).__name__)

    def http_url(self, url: str) -> str | None:
        """A URL a plain HTTP GET can read (S3: presigned), for read-ahead; None: none."""
        return None

    def open(self, url: str, size: int | None = None, sha256: str | None = None,
             then: str | None = None) -> Reader:
        return Reader(self, url, size, sha256)

    def size(self, url: str) -> int | None:
        return self.retrying(url, lambda: self.head(url))

    def sizes(self, urls: list[str]) -> dict[str, int | None]:
        if not urls:
            return {}
        with ThreadPoolExecutor(16) as pool:  # HEADs in parallel
            return dict(zip(urls, pool.map(self.size, urls), strict=True))

    def retrying(self, url: str, fn: Callable[[], Any],
                 progress: Callable[[], int] | None = None, verb: str = "") -> Any:
        """fn() with retries of Transient faults: backoff 0.2 s doubling to 4 s, full
        jitter; gives up after options().retry_s without progress (`progress()` changed).
        Raises StoreError (NotFound for a missing object), one line."""
        delay, start, last = 0.2, time.monotonic(), progress() if progress else 0
        while True:
            try:
                return fn()
            except StoreError:
                raise
            except (Transient, Permanent) as e:
                fault: Exception = e
            except Exception as e:  # a client library error
                fault = self.fault(e)
            if isinstance(fault, Permanent):
                error = NotFound if fault.missing else StoreError
                raise error(url, str(fault), verb) from None
            if progress is not None and progress() != last:
                last, start, delay = progress(), time.monotonic(), 0.2
            if time.monotonic() - start > options().retry_s:
                raise Unavailable(
                    url, f"still failing after {options().retry_s:g} s of retries ({fault}); "
                         "check the server and the network (data.retry_s sets the window)",
                    verb) from None
            time.sleep(random.uniform(0, delay))  # backoff with full jitter, not a sync
            delay = min(delay * 2, 4.0)


def status_fault(status: int, reason: str = "") -> Exception:
    """An HTTP status (S3's too) as Transient or Permanent, with a hint for the user."""
    cause = f"HTTP {status}{' ' + reason if reason else ''}"
    if status in (408, 429) or status >= 500:
        return Transient(cause)
    hint = _HINTS.get(status, "")
    return Permanent(f"{cause}{'; ' + hint if hint else ''}", missing=status == 404)


_HINTS = {
    401: "check the credentials",
    403: "check the AWS credentials/profile and the bucket policy (or the server's access "
         "rules)",
    404: "check the URL; upload the shards with `infogan prepare-data --out URL`",
    412: "the object was replaced while it was being read; run again once uploads are done",
}


class Reader(io.RawIOBase):
    """An object of a RemoteStore as a sequential file; survives transient faults mid-body
    by resuming at the byte reached. `size`: the expected length (index), or None;
    `sha256`: the expected digest, checked when the last byte has arrived (Corrupt).

    The body is fetched in CHUNK-sized reads into a buffer and small reads (tar headers,
    PNG members) are served from it: a call into the HTTP stack per 512-byte header would
    cost more than decoding the sample. `fetched` is the network position (where a resume
    starts), `pos` what the caller has read. `first`: a body already requested (read-ahead),
    used for the first open; `on_end`: called once when the whole object has arrived."""

    def __init__(self, store: RemoteStore, url: str, size: int | None = None,
                 sha256: str | None = None, first: Body | None = None,
                 on_end: Callable[[], None] | None = None):
        super().__init__()
        self.store, self.url, self.size, self.expected = store, url, size, sha256
        self.on_end, self._answer = on_end, first
        self.pos = self.fetched = 0
        self._body: Body | None = None
        self._etag: str | None = None
        self._buf, self._off, self._ended = b"", 0, False
        self._sha256 = hashlib.sha256() if sha256 is not None else None

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        body = self._answer or self.store.body(self.url, self.fetched, self._etag)
        self._answer = None
        self._etag = body.etag
        if self.size is None and body.length >= 0:
            self.size = body.length
        elif self.size is not None and body.length >= 0 and body.length != self.size:
            body.close()
            raise length_fault(body.length, self.size)
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
            raise self.store.fault(e) from None
        if not data and self.size is not None and self.fetched < self.size:
            self._drop()  # the connection ended early without an error
            raise Transient(f"connection closed at byte {self.fetched} of {self.size}")
        return data

    def _drop(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def _end(self) -> None:
        """The whole object has arrived: its digest, then the read-ahead hook."""
        if self._ended:
            return
        self._ended = True
        if self._sha256 is not None:
            check_digest(self.url, self._sha256.hexdigest(), self.expected)
        if self.on_end is not None:
            self.on_end()

    def _fill(self) -> bool:
        """Refill the buffer from the network; False at the end of the object."""
        if self.size is not None and self.fetched >= self.size:
            self._end()
            return False
        data = self.store.retrying(self.url, self._fetch_some, lambda: self.fetched)
        if not data:
            self._end()
            return False
        self.fetched += len(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        self._buf, self._off = data, 0
        if self.size is not None and self.fetched >= self.size:
            self._end()
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

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while chunk := self.read(CHUNK):
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        self._drop()
        if self._answer is not None:  # never opened: its connection is closed
            self._answer.close()
            self._answer = None
        super().close()
