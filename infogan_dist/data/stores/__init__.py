"""Byte stores: where shard bytes come from (the bottom floor of the data layer). They
know nothing of tar, images or the shard index: the shard layer above (data/shards.py,
data/tar.py) asks them for bytes by URL and parses them.

    local files   a path (no URL scheme)                      local.py
    S3            s3://bucket/key                             s3.py
    HTTP(S)       http://host/path, https://host/path         http.py
    node cache    in front of a remote store (data.cache_dir)  cache.py
    read-ahead    in front of a remote store (otherwise)       ahead.py

The interface, the registry and the errors are in base.py, what network stores share
(retries, resume at byte N) in network.py; docs/data-sources.md tells how to add a store:
one file and one registry line below.
"""

from __future__ import annotations

from typing import IO

from .ahead import Ahead
from .base import (
    CHUNK,
    STORES,
    Corrupt,
    NotFound,
    Store,
    StoreError,
    Unavailable,
    check_bytes,
    check_digest,
    configure,
    dirname,
    is_url,
    join,
    options,
    redact,
    scheme,
    writable_schemes,
)
from .cache import Cached
from .http import HTTPStore
from .local import LocalStore
from .network import RemoteStore
from .s3 import S3Store

# The registry: a URL scheme -> its store. A new store: its file here and one line.
STORES.add("s3", S3Store())
STORES.add("http", HTTPStore())
STORES.add("https", STORES["http"])
LOCAL = LocalStore()  # paths, and URLs of schemes no store is registered for

__all__ = [
    "CHUNK", "LOCAL", "STORES", "Corrupt", "NotFound", "RemoteStore", "Store", "StoreError",
    "Unavailable",
    "check_bytes", "check_digest", "configure", "delete", "dirname", "is_remote", "join",
    "open", "options", "read_bytes", "redact", "sizes", "store_for", "upload", "writable",
    "writable_schemes",
]


def is_remote(spec: str) -> bool:
    """A URL of a registered store (s3://, http(s)://, ...), not a local path."""
    return is_url(str(spec))


def store_for(url: str) -> Store:
    """The store that reads `url`: the one registered for its scheme (local files for a
    path), behind the node cache when data.cache_dir is set, else behind read-ahead, if it
    is a network store."""
    store = STORES[scheme(url)] if is_url(url) else LOCAL
    if isinstance(store, RemoteStore):
        o = options()
        return Cached(store, o.cache_dir, o.cache_max_bytes) if o.cache_dir else Ahead(store)
    return store


def open(url: str, size: int | None = None, sha256: str | None = None,
         then: str | None = None) -> IO[bytes]:
    """The object at `url` as a binary file whose bytes are checked against `size` and
    `sha256` (StoreError otherwise); `then`: the URL read next (base.py)."""
    return store_for(url).open(url, size, sha256, then)


def read_bytes(url: str) -> bytes:
    """A small object whole (index.json)."""
    return store_for(url).read_bytes(url)


def sizes(urls: list[str]) -> dict[str, int | None]:
    """Bytes of each object; None where there is none. URLs of one store per call."""
    return store_for(urls[0]).sizes(urls) if urls else {}


def writable(url: str) -> bool:
    """`upload` and `delete` work for URLs like this one."""
    return store_for(url).writable


def upload(local_path: str, url: str) -> None:
    """Put a local file at `url` (a store that can be written: S3)."""
    store_for(url).upload(local_path, url)


def delete(url: str) -> None:
    """Remove the object at `url` if it exists (no error when it does not)."""
    store_for(url).delete(url)
