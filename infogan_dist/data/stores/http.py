"""HTTP(S) servers (http://host/path, https://...) through urllib3 (already a dependency of
botocore): pooled keep-alive connections, streamed bodies, Range requests, and a length
check on every body. Read-only: upload shards to a web server with its own tools.

Credentials in the URL (https://user:password@host/path) are sent as HTTP Basic
authentication (urllib3 would drop them), never put in a message (base.redact), and such
URLs are not read ahead (read-ahead's raw GET carries no credentials)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .base import Options, Permanent, Transient, client
from .network import Body, RemoteStore, status_fault


def _make_pool(o: Options) -> Any:
    import urllib3

    return urllib3.PoolManager(
        num_pools=16, maxsize=32, retries=False,
        timeout=urllib3.Timeout(connect=o.connect_timeout_s, read=o.read_timeout_s),
    )


def _pool() -> Any:
    return client("http", _make_pool)


def _with_auth(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The URL without its user info, and the headers with its Basic authentication."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, headers
    import urllib3

    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal
    netloc = f"{host}:{parts.port}" if parts.port else host
    login = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return (urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)),
            {**headers, **urllib3.util.make_headers(basic_auth=login)})


class HTTPBody(Body):
    def __init__(self, url: str, offset: int, etag: str | None):
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        if etag and offset:
            headers["If-Range"] = etag
        url, headers = _with_auth(url, headers)
        r = _pool().request("GET", url, headers=headers, preload_content=False,
                            redirect=True)
        if r.status not in (200, 206):
            r.release_conn()
            raise status_fault(r.status, r.reason or "")
        if r.status == 200 and offset:  # Range ignored: re-read, drop what we have
            self.skip = offset
        self.etag = r.headers.get("ETag", etag)
        n = r.headers.get("Content-Length")
        self.length = int(n) + (offset if r.status == 206 else 0) if n else -1
        self._response = r

    def _read(self, n: int) -> bytes:
        return self._response.read(n, decode_content=False)

    def close(self) -> None:
        try:
            self._response.drain_conn()
            self._response.release_conn()
        except Exception:
            pass


class HTTPStore(RemoteStore):
    def body(self, url: str, offset: int, etag: str | None) -> Body:
        return HTTPBody(url, offset, etag)

    def head(self, url: str) -> int | None:
        url, headers = _with_auth(url, {})
        r = _pool().request("HEAD", url, headers=headers, redirect=True)
        if r.status == 404:
            return None
        if r.status != 200:
            raise status_fault(r.status, r.reason or "")
        n = r.headers.get("Content-Length")
        return int(n) if n is not None else -1

    def fault(self, e: BaseException) -> Exception:
        import urllib3

        if isinstance(e, Transient | Permanent):
            return e
        if isinstance(e, urllib3.exceptions.HTTPError | OSError):
            return Transient(type(e).__name__)
        return Permanent(type(e).__name__)

    def http_url(self, url: str) -> str | None:
        return None if urlsplit(url).username is not None else url
