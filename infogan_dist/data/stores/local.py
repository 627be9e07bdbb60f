"""Local files: a path without a URL scheme (or any scheme no store is registered for)."""

from __future__ import annotations

import hashlib
import mmap
import os
from typing import IO

from .base import Store, check_digest


class LocalStore(Store):
    def open(self, url: str, size: int | None = None, sha256: str | None = None,
             then: str | None = None) -> IO[bytes]:
        """The open file (the shard layer maps it). Its sha256 is checked here, before
        any byte is used; an empty file has nothing to map or check: the reader names it.
        (Its size was checked against the index by read_index.) OSError as open() raises
        it: the shard layer names the shard."""
        f = open(url, "rb")
        try:
            if sha256 is not None and os.fstat(f.fileno()).st_size:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                    check_digest(url, hashlib.sha256(buf).hexdigest(), sha256)
        except BaseException:
            f.close()
            raise
        return f

    def size(self, url: str) -> int | None:
        try:
            return os.path.getsize(url)
        except FileNotFoundError:
            return None

    def read_bytes(self, url: str) -> bytes:
        with open(url, "rb") as f:
            return f.read()
