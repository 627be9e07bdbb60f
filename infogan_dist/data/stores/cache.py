"""Per-node cache of remote objects (`data.cache_dir`, off by default), as a store in
front of another: `Cached(inner, cache_dir, max_bytes).open(url, size, sha256)` is a local
file holding the whole, checked object.

Every rank (and DataLoader worker) of a node points at the same directory. An object is
fetched by one process while the others wait on its lock file (fcntl.flock), so it
crosses the network at most once per node; the fill goes to a unique temporary name
(`.NAME.PID.RANDOM.part`), is checked (length, and sha256 when the caller knows it), and
only then renamed into place with os.replace, which is atomic: a reader sees no file or a
whole one, never a partial one. A size limit (`data.cache_max_gb`) evicts the least
recently used objects (file mtime, refreshed on every use) before a new one is added.
Put the cache on a node-local disk: flock on network filesystems is not reliable.

A hit is checked, not trusted: the file's sha256 against the caller's (the shard index),
or, for an index without sha256, against the digest recorded beside it when it was
filled (`.NAME.sha256`). Once per process and file version (device, inode, size,
modification and change times: a rewrite moves the change time, which no user can set;
so does another process's LRU touch), so each use costs at most one sequential read of
the cached file: what a local shard costs at every read. A file that does not match (a
corrupted or edited cache entry) is removed with a warning naming it and fetched again;
one that cannot be checked (no digest known) is fetched again. A cache directory that
cannot be written is a StoreError naming data.cache_dir, never "rebuild the shards".
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import sys
from pathlib import Path
from typing import IO

from .base import CHUNK, STORES, Corrupt, Store, StoreError, Wrapper, redact, scheme


def _name(url: str) -> str:
    clean = redact(url)
    return f"{hashlib.sha1(clean.encode()).hexdigest()[:16]}-{clean.rsplit('/', 1)[-1]}"


def _touch(path: Path) -> None:
    """Recently used: evicted last. The file's new version (a touch moves its change time)
    is the one this process checked."""
    try:
        os.utime(path)
        _checked[str(path)] = _version(path.stat())
    except OSError:
        pass


def _usable(path: Path, size: int | None) -> bool:
    """The cached file exists and has the expected size (any size for an index written
    before sizes were recorded)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return size is None or st.st_size == size


_checked: dict[str, tuple[int, ...]] = {}  # path -> the file version whose digest matched


def _version(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _recorded(path: Path) -> Path:
    """Where the digest of a fill is kept (a dot name: eviction and listing skip it)."""
    return path.with_name(f".{path.name}.sha256")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK * 8):
            digest.update(block)
    return digest.hexdigest()


def _hit(final: Path, url: str, size: int | None, sha256: str | None) -> bool:
    """Whether `final` is the object: the expected size and the expected sha256 (the
    caller's, else the one recorded at the fill). A mismatch removes it (a warning)."""
    try:
        st = final.stat()
    except OSError:
        return False
    if size is not None and st.st_size != size:
        return False
    if _checked.get(str(final)) == _version(st):
        return True
    want = sha256
    if want is None:
        try:
            want = _recorded(final).read_text().strip() or None
        except OSError:
            want = None
    if want is None:
        return False  # nothing to check it against (filled before digests were kept)
    got = file_digest(final)
    if got == want:
        _checked[str(final)] = _version(st)
        return True
    print(f"warning: node cache: {final} (shard {redact(url)}) does not match its sha256 "
          f"({got[:12]}... where {want[:12]}... is expected): a corrupted or edited cache "
          "entry; removed it, fetching the shard again", file=sys.stderr, flush=True)
    final.unlink(missing_ok=True)
    _recorded(final).unlink(missing_ok=True)
    return False


def _cache_fault(url: str, root: Path, e: OSError) -> StoreError:
    return StoreError(url, f"the node cache {root} (data.cache_dir) cannot be used "
                           f"({e.strerror or type(e).__name__}"
                           f"{': ' + str(e.filename) if e.filename else ''}); set "
                           "data.cache_dir to a writable node-local directory, or "
                           "data.cache_dir= to read without a cache")


def fetch(url: str, size: int | None, sha256: str | None, cache_dir: str,
          max_bytes: int = 0, store: Store | None = None) -> Path:
    """Local path of the whole, verified object at `url`, read from `store` (default: the
    one registered for the URL's scheme) if the cache does not hold it yet."""
    root = Path(cache_dir)
    try:
        return _fetch(url, size, sha256, root, max_bytes, store)
    except OSError as e:  # the cache directory, not the store (its faults are StoreErrors)
        raise _cache_fault(url, root, e) from None


def _fetch(url: str, size: int | None, sha256: str | None, root: Path, max_bytes: int,
           store: Store | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / _name(url)
    if _hit(final, url, size, sha256):
        _touch(final)
        return final
    store = store or STORES[scheme(url)]
    with open(root / f".{final.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process of this node may be filling it
        try:
            if _hit(final, url, size, sha256):
                _touch(final)
                return final
            tmp = root / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
            try:
                digest = hashlib.sha256()
                with store.open(url, size) as reader, open(tmp, "wb") as out:
                    while chunk := reader.read(CHUNK * 8):
                        out.write(chunk)
                        digest.update(chunk)
                if sha256 and digest.hexdigest() != sha256:
                    raise Corrupt(url, f"sha256 {digest.hexdigest()[:12]}... differs from the "
                                       f"index's {sha256[:12]}... (corrupt or replaced upload)")
                if max_bytes:
                    evict(root, max_bytes, incoming=tmp.stat().st_size)
                record = _recorded(final)
                record.with_name(record.name + ".part").write_text(digest.hexdigest() + "\n")
                os.replace(record.with_name(record.name + ".part"), record)
                os.replace(tmp, final)  # atomic: readers see all of it or nothing
                _checked[str(final)] = _version(final.stat())
            finally:
                tmp.unlink(missing_ok=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def open_cached(url: str, size: int | None, sha256: str | None, cache_dir: str,
                max_bytes: int = 0, store: Store | None = None) -> IO[bytes]:
    """`fetch`, then open the file: if another process evicted it in between, fetch again
    (an open file survives a later eviction)."""
    for _ in range(3):
        path = fetch(url, size, sha256, cache_dir, max_bytes, store)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            continue
        except OSError as e:
            raise _cache_fault(url, Path(cache_dir), e) from None
    raise StoreError(url, f"evicted from the cache {cache_dir} as soon as it was filled; "
                          "raise data.cache_max_gb")


def evict(root: Path, max_bytes: int, incoming: int = 0) -> list[Path]:
    """Delete least recently used objects until the cache plus `incoming` bytes fit.
    A process still reading a deleted object keeps its open file (POSIX semantics)."""
    entries = []
    for p in root.iterdir():
        if p.name.startswith("."):
            continue  # locks and fills in progress
        try:
            st = p.stat()
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, p))
    total = sum(e[1] for e in entries) + incoming
    removed = []
    for _, n, p in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        p.unlink(missing_ok=True)
        _recorded(p).unlink(missing_ok=True)
        total -= n
        removed.append(p)
    return removed


class Cached(Wrapper):
    """`inner`'s objects through the node cache: `open` returns the cached local file."""

    def __init__(self, inner: Store, cache_dir: str, max_bytes: int = 0):
        super().__init__(inner)
        self.cache_dir, self.max_bytes = cache_dir, max_bytes

    def open(self, url: str, size: int | None = None, sha256: str | None = None,
             then: str | None = None) -> IO[bytes]:
        return open_cached(url, size, sha256, self.cache_dir, self.max_bytes, self.inner)
