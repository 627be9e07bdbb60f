"""The members of a tar shard, from the bytes a store gives (data/stores/): the lowest
module of the shard layer. It knows tar, not where the bytes come from.

A store's file with a descriptor (a local file, a node-cache file) is mapped and its
members are sliced out of the map; any other stream (a remote body) is parsed while it
streams in, through a window of CHUNK-sized reads (no read call per member). Plain ustar
headers (what ShardWriter writes) are parsed here, about 10x faster than tarfile's
Python header parsing; anything else (pax or GNU headers, links) goes to tarfile through
webdataset's tar iterator. No `pipe:` URLs, no `gopen`: nothing here runs a command.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Iterator
from typing import IO, Any

from webdataset.tariterators import tar_file_expander

from ..errors import ShardError
from . import stores

FIX = "rebuild the shards with `infogan prepare-data`"
_META = re.compile(r"__[^/]*__($|/)")  # webdataset skips such members; so do we


def one_line(e: BaseException) -> str:
    text = str(e.args[0]) if e.args else type(e).__name__
    return f"{type(e).__name__}: {' '.join(text.split())}"


def _ustar_member(header: Any) -> tuple[str, int] | None:
    """(name, size) of a plain ustar file header (what ShardWriter writes); None for
    anything else (pax or GNU headers, links, a bad checksum): tarfile handles those."""
    if header[257:262] != b"ustar" or header[156:157] not in (b"0", b"\0"):
        return None
    stored = int(header[148:156].split(b"\0")[0].strip() or b"-1", 8)
    if stored != sum(header[:148]) + 256 + sum(header[156:]):
        return None  # tarfile also knows the old signed checksum, or reports the damage
    size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
    name = header[:100].split(b"\0")[0].decode()
    prefix = header[345:500].split(b"\0")[0].decode()
    return (f"{prefix}/{name}" if prefix else name), size


def _plain_tar_layout(buf: mmap.mmap | bytes, path: str) -> list[tuple[str, int, int]] | None:
    """(name, offset, size) of the members of a plain ustar archive. None for anything
    else: the caller then uses tarfile."""
    members, pos, end = [], 0, len(buf)
    while pos + 512 <= end:
        header = buf[pos : pos + 512]
        if header.count(0) == 512:
            return members  # end-of-archive marker
        member = _ustar_member(header)
        if member is None:
            return None
        name, size = member
        if pos + 512 + size > end:
            raise ShardError(f"shard {path}: truncated at member {name}; {FIX}")
        if not _META.match(name):
            members.append((name, pos + 512, size))
        pos += 512 + -(-size // 512) * 512
    raise ShardError(f"shard {path}: truncated tar (no end-of-archive marker); {FIX}")


def _fileno(f: IO[bytes]) -> int | None:
    try:
        return f.fileno()
    except (OSError, AttributeError):  # io.UnsupportedOperation is an OSError
        return None


def members(path: str, size: int | None = None, sha256: str | None = None,
            then: str | None = None) -> Iterator[dict]:
    """{fname, data, __url__} per member, as webdataset's tar_file_expander yields them.
    The store of `path` checks `size` and `sha256` (StoreError; the caller names the
    shard); `then`: the path read next (a remote one is asked for ahead)."""
    where = stores.redact(path) if stores.is_remote(path) else path
    with stores.open(path, size, sha256, then=then) as f:
        fd = _fileno(f)
        if fd is None:
            yield from _stream_members(f, where)
            return
        if os.fstat(fd).st_size == 0:
            raise ShardError(f"shard {where}: empty file; {FIX}")
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
            layout = _plain_tar_layout(buf, where)
            if layout == []:
                raise ShardError(f"shard {where}: an empty tar (no members); {FIX}")
            if layout is not None:
                for name, start, n in layout:
                    yield {"fname": name, "data": buf[start : start + n], "__url__": where}
                return
        yield from tar_file_expander([{"url": where, "stream": f}])


class _Prepend:
    """A stream with some bytes put back in front (for tarfile after a peeked header)."""

    def __init__(self, head: bytes, stream: IO[bytes]):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = (self.head, b"") if n < 0 else (self.head[:n], self.head[n:])
            return out
        return self.stream.read(n)


def _drain(f: IO[bytes]) -> None:
    """Read to the end (the end-of-archive padding), so the store checks every byte."""
    while f.read(stores.CHUNK):
        pass


def _stream_members(r: IO[bytes], where: str) -> Iterator[dict]:
    """Members of a tar read while it streams in. The bytes arrive in CHUNK-sized pieces
    into a window that is parsed like a local file (headers and members sliced out of
    it). The store checks the sha256 at the end: memory mode has then not used any
    sample yet; stream mode stops at the end of a corrupt shard."""
    buf, pos, total = b"", 0, 0  # bytes, not a bytearray: a slice of it is the member, one copy

    def have(n: int) -> bool:  # n bytes from pos in the window, fetching as needed
        nonlocal buf, pos, total
        if len(buf) - pos >= n:
            return True
        parts = [buf[pos:]]  # what was parsed already leaves the window
        got, pos = len(parts[0]), 0
        while got < n:
            chunk = r.read(stores.CHUNK)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
            total += len(chunk)
        buf = b"".join(parts)
        return got >= n

    while True:
        if not have(512):
            if total == 0:
                raise ShardError(f"shard {where}: empty file; {FIX}")
            raise ShardError(f"shard {where}: truncated tar (no end-of-archive marker); {FIX}")
        header = buf[pos : pos + 512]
        if not header[0] and header.count(0) == 512:  # a member's name is never empty
            _drain(r)
            break
        member = _ustar_member(header)
        if member is None:  # pax/GNU headers or links: tarfile reads the rest
            rest = _Prepend(buf[pos:], r)
            yield from tar_file_expander([{"url": where, "stream": rest}])
            _drain(r)
            break
        name, n = member
        span = 512 + -(-n // 512) * 512  # header, member, padding to a 512-byte block
        if not have(span):
            raise ShardError(f"shard {where}: truncated at member {name}; {FIX}")
        data = buf[pos + 512 : pos + 512 + n]
        pos += span
        if not _META.match(name):
            yield {"fname": name, "data": data, "__url__": where}

