"""Shard index and safe decoding, shared by memory mode, stream mode and evaluation.

A shard directory (written by `infogan prepare-data`) holds `shard-NNNNNN.tar` files and
`index.json` with the sample count of every shard. The counts are what let every rank
plan an epoch without reading data, so the readers check them against the tars.

Safety: webdataset's default decoders unpickle `.pyd`/`.pickle` members, so a shard from
elsewhere could run code. We never use them: tars are opened here (no `pipe:` URLs through
`gopen`), split into samples by webdataset's tar iterator, and every member must be an
image (png/jpg/jpeg) or a label (cls); json is ignored, anything else is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import multiprocessing
import os
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import braceexpand
import numpy as np
import torch
from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_expander

from . import ahead, cache, remote

INDEX_NAME = "index.json"
INDEX_FORMAT = 1
IMAGE_EXTS = ("png", "jpg", "jpeg")
ALLOWED_EXTS = frozenset(IMAGE_EXTS + ("cls", "json"))
_PIL_FORMATS = ["PNG", "JPEG"]  # Image.open tries only these plugins
_FIX = "rebuild the shards with `infogan prepare-data`"


class ShardError(ValueError):
    """Bad or missing shards. One-line message naming the file (and member) and the fix."""


@dataclass
class ShardIndex:
    paths: list[str]  # shard files, in index order
    counts: list[int]  # samples per shard
    image_shape: tuple[int, int, int]  # (C, H, W)
    has_labels: bool
    num_classes: int | None
    source: str = ""  # what prepare-data made the shards from
    sizes: list[int] | None = None  # bytes per shard (index.json from prepare-data >= sha256)
    sha256: list[str | None] | None = None  # hex digest per shard; None in older indexes

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def names(self) -> list[str]:
        return [os.path.basename(p) for p in self.paths]


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if e.args else type(e).__name__
    return f"{type(e).__name__}: {' '.join(text.split())}"


def _load_index_json(directory: Path | str) -> dict:
    hint = f"run `infogan prepare-data --out {directory} ...` to create it"
    if remote.is_remote(str(directory)):
        url = remote.join(str(directory), INDEX_NAME)
        try:
            data = json.loads(remote.read_bytes(url, what="shard index"))
        except ShardError as e:
            if "HTTP 404" in str(e):
                raise ShardError(f"no {INDEX_NAME} at {remote.redact(url)}; {hint}") from None
            raise
        except ValueError as e:
            raise ShardError(f"{remote.redact(url)}: not a valid shard index "
                             f"({_one_line(e)}); {hint}") from None
        return _check_index_json(data, remote.redact(url), hint)
    directory = Path(directory)
    if not directory.is_dir():
        raise ShardError(f"shard directory {directory} does not exist; {hint}")
    path = directory / INDEX_NAME
    if not path.is_file():
        raise ShardError(f"no {INDEX_NAME} in {directory} (missing or half-written); {hint}")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ShardError(f"{path}: not a valid shard index ({_one_line(e)}); {hint}") from None
    return _check_index_json(data, path, hint)


def _check_index_json(data, path, hint: str) -> dict:
    try:
        ok = (
            data["format"] == INDEX_FORMAT
            and len(data["image_shape"]) == 3
            and len(data["shards"]) > 0
            and all(isinstance(s["name"], str) and int(s["count"]) > 0 for s in data["shards"])
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{path}: not a valid shard index ({_one_line(e)}); {hint}") from None
    if not ok:
        raise ShardError(f"{path}: unsupported index format or empty shards; {hint}")
    return data


def read_index(spec: str) -> ShardIndex:
    """`spec`: a directory with index.json (or that file), or a brace pattern of shards in
    one directory (`data/x/shard-{000000..000003}.tar`), which keeps only the listed shards."""
    spec = str(spec)
    url = remote.is_remote(spec)  # s3://bucket/prefix, http(s)://host/path (remote.py)
    listed: list[str] | None = None
    if "{" in spec or spec.endswith(".tar"):
        listed = list(braceexpand.braceexpand(spec))
        dirs = {remote.dirname(p) if url else os.path.dirname(p) for p in listed}
        if len(dirs) != 1:
            raise ShardError(f"shard pattern {spec}: all shards must be in one directory")
        directory = dirs.pop() if url else Path(dirs.pop() or ".")
    elif url:
        directory = remote.dirname(spec) if spec.endswith(INDEX_NAME) else spec.rstrip("/")
    else:  # the directory, or its index.json
        directory = Path(spec).parent if spec.endswith(INDEX_NAME) else Path(spec)
    data = _load_index_json(directory)
    entries = {s["name"]: int(s["count"]) for s in data["shards"]}
    names = [s["name"] for s in data["shards"]]
    if listed is not None:
        names = [os.path.basename(p) for p in listed]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ShardError(f"shard pattern {spec} lists {name} twice; list each shard once")
            seen.add(name)
            if name not in entries:
                raise ShardError(
                    f"shard {directory / name} (from pattern {spec}) is not listed in "
                    f"{directory / INDEX_NAME}; fix the pattern or {_FIX}"
                )
    meta = {s["name"]: s for s in data["shards"]}
    sizes = [meta[n].get("size") for n in names]
    sizes = [int(x) for x in sizes] if all(x is not None for x in sizes) else None
    sha = [meta[n].get("sha256") for n in names]
    if url:
        paths = [remote.join(directory, n) for n in names]
        _check_remote_shards(paths, sizes)
    else:
        paths = [str(directory / n) for n in names]
        for j, p in enumerate(paths):
            if not os.path.isfile(p):
                raise ShardError(f"shard {p} is listed in the index but missing on disk; {_FIX}")
            if sizes is not None and os.path.getsize(p) != sizes[j]:
                raise ShardError(f"shard {p} is {os.path.getsize(p)} bytes but the index says "
                                 f"{sizes[j]} (truncated or replaced); {_FIX}")
    nc = data.get("num_classes")
    return ShardIndex(
        paths=paths,
        counts=[entries[n] for n in names],
        image_shape=tuple(int(x) for x in data["image_shape"]),
        has_labels=bool(data.get("has_labels", False)),
        num_classes=int(nc) if nc is not None else None,
        source=str(data.get("source", "")),
        sizes=sizes,
        sha256=sha if any(sha) else None,
    )


def _check_remote_shards(urls: list[str], sizes: list[int] | None) -> None:
    """Every shard exists (and has the index's size): one LIST per 1000 shards on S3,
    parallel HEADs on HTTP. Run by preflight, so a missing or short upload costs exit 2
    before any process group starts."""
    found = remote.sizes(urls)
    for j, u in enumerate(urls):
        n = found.get(u)
        if n is None:
            raise ShardError(f"shard {remote.redact(u)} is listed in the index but missing "
                             f"(HTTP 404); upload it or {_FIX}")
        if sizes is not None and n >= 0 and n != sizes[j]:
            raise ShardError(f"shard {remote.redact(u)} is {n} bytes but the index says "
                             f"{sizes[j]} (truncated or replaced upload); {_FIX}")


def _decode_image(data: bytes, shape: tuple[int, int, int], where: str) -> np.ndarray:
    """Image bytes -> uint8 CHW of exactly `shape`; PIL may use only its PNG/JPEG plugins.

    Size and mode are checked from the header, before any pixel is decoded: an image of
    another size (a 12000x12000 "decompression bomb" too) or another mode (an RGB image
    among grayscale ones) is refused, never resized or converted."""
    c, h, w = shape
    mode = "L" if c == 1 else "RGB"
    fix = f"{_FIX} (it writes every image as {w}x{h} {mode})"
    try:
        # PIL warns above Image.MAX_IMAGE_PIXELS and raises above twice that; both are
        # refusals here, whatever the process-wide limit is set to.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ShardError(f"{where}: refused before decoding, a decompression bomb? "
                         f"({_one_line(e)}); the index says {w}x{h}; {fix}") from None
    except Image.UnidentifiedImageError:
        raise ShardError(f"{where}: cannot decode image: not a readable PNG or JPEG "
                         f"({len(data)} bytes); {fix}") from None
    except Exception as e:  # PIL raises many types for a damaged header
        raise ShardError(f"{where}: cannot decode image ({_one_line(e)}); {fix}") from None
    with img:
        if img.size != (w, h) or img.mode != mode:
            got = [len(img.getbands()), img.size[1], img.size[0]]
            raise ShardError(
                f"{where}: image shape {got} differs from the index's image_shape "
                f"{list(shape)} (a {img.size[0]}x{img.size[1]} {img.mode} image where "
                f"{w}x{h} {mode} is expected; refused before decoding); {fix}"
            )
        try:
            arr = np.asarray(img)  # decodes the pixels
        except Exception as e:  # truncated or damaged pixel data
            raise ShardError(f"{where}: cannot decode image ({_one_line(e)}); {fix}") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if arr.shape != tuple(shape):  # the header said otherwise: a damaged file
        raise ShardError(
            f"{where}: image shape {list(arr.shape)} differs from the index's "
            f"image_shape {list(shape)}; {fix}"
        )
    return arr


def _decode_sample(
    sample: dict, path: str, shape: tuple[int, int, int], labels: bool
) -> tuple[np.ndarray, int]:
    key = sample["__key__"]
    image = None
    for ext in sample:
        if ext.startswith("__"):
            continue
        if ext not in ALLOWED_EXTS:
            raise ShardError(
                f"shard {path}: member {key}.{ext} has a refused type (only "
                f"{', '.join(sorted(ALLOWED_EXTS))} are read; pickles and other objects could "
                f"run code); {_FIX}"
            )
        if ext in IMAGE_EXTS:
            if image is not None:
                raise ShardError(f"shard {path}: sample {key} has two images; {_FIX}")
            image = _decode_image(sample[ext], shape, f"shard {path}: member {key}.{ext}")
    if image is None:
        raise ShardError(f"shard {path}: sample {key} has no png/jpg image; {_FIX}")
    label = -1
    if labels:
        if "cls" not in sample:
            raise ShardError(f"shard {path}: sample {key} has no .cls label; {_FIX}")
        try:
            label = int(sample["cls"].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise ShardError(f"shard {path}: member {key}.cls is not an integer; {_FIX}") from None
    return image, label


_META = re.compile(r"__[^/]*__($|/)")  # webdataset skips such members; so do we


def _ustar_member(header) -> tuple[str, int] | None:
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
    """(name, offset, size) of the members of a plain ustar archive, parsed about 10x
    faster than tarfile's Python header parsing. None for anything else: the caller then
    uses tarfile."""
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
            raise ShardError(f"shard {path}: truncated at member {name}; {_FIX}")
        if not _META.match(name):
            members.append((name, pos + 512, size))
        pos += 512 + -(-size // 512) * 512
    raise ShardError(f"shard {path}: truncated tar (no end-of-archive marker); {_FIX}")


def _tar_members(path: str, size: int | None = None, sha256: str | None = None,
                 then: str | None = None) -> Iterator[dict]:
    """{fname, data, __url__} per member, as webdataset's tar_file_expander yields them.
    `path` may be a URL: through the node cache if data.cache_dir is set, else streamed
    (`then`: the path read next, asked for ahead)."""
    if remote.is_remote(path):
        opts = remote.options()
        if not opts.cache_dir:
            yield from _remote_members(path, size, sha256, then)
            return
        opened = cache.open_cached(path, size, sha256, opts.cache_dir, opts.cache_max_bytes)
        sha256 = None  # checked by the cache fill
    else:
        opened = open(path, "rb")
    with opened as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ShardError(f"shard {path}: empty file; {_FIX}")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if sha256 is not None:
                _check_sha256(path, hashlib.sha256(buf).hexdigest(), sha256)
            layout = _plain_tar_layout(buf, path)
            if layout == []:
                raise ShardError(f"shard {path}: an empty tar (no members); {_FIX}")
            if layout is not None:
                for name, start, size in layout:
                    yield {"fname": name, "data": buf[start : start + size], "__url__": path}
                return
        yield from tar_file_expander([{"url": path, "stream": f}])


def _check_sha256(path: str, digest: str, expected: str) -> None:
    if digest != expected:
        where = remote.redact(path) if remote.is_remote(path) else path
        raise ShardError(f"shard {where}: sha256 {digest[:12]}... differs from the index's "
                         f"{expected[:12]}... (corrupt or replaced); {_FIX}")


class _Prepend:
    """A stream with some bytes put back in front (for tarfile after a peeked header)."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = (self.head, b"") if n < 0 else (self.head[:n], self.head[n:])
            return out
        return self.stream.read(n)


def _remote_members(url: str, size: int | None, sha256: str | None, then: str | None = None
                    ) -> Iterator[dict]:
    """Members of a shard at a URL, parsed while its body streams in (one GET, resumed by
    Range after a fault). The body arrives in CHUNK-sized pieces into a window that is
    parsed like a local file (headers and members sliced out of it, no read call per
    member). The sha256 is checked at the end: memory mode has then not used any sample
    yet; stream mode stops at the end of a corrupt shard. `then`: the URL read next; its
    GET is sent once this body has all arrived (data/ahead.py)."""
    where = remote.redact(url)
    with remote.RemoteReader(url, size, answer=ahead.take(url, size)) as r:
        buf, pos = b"", 0  # bytes, not a bytearray: a slice of it is the member, one copy

        def have(n: int) -> bool:  # n bytes from pos in the window, fetching as needed
            nonlocal buf, pos, then
            if len(buf) - pos >= n:
                return True
            parts = [buf[pos:]]  # what was parsed already leaves the window
            got, pos = len(parts[0]), 0
            while got < n:
                chunk = r.read(remote.CHUNK)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
                if then and r.fetched == r.size:
                    ahead.ask(then)  # the server starts on it while this window is parsed
                    then = None
            buf = b"".join(parts)
            return got >= n

        while True:
            if not have(512):
                if r.pos == 0:
                    raise ShardError(f"shard {where}: empty file; {_FIX}")
                raise ShardError(f"shard {where}: truncated tar (no end-of-archive marker); "
                                 f"{_FIX}")
            header = buf[pos : pos + 512]
            if not header[0] and header.count(0) == 512:  # a member's name is never empty
                r.readall()  # the end-of-archive padding, so the digest covers the file
                break
            member = _ustar_member(header)
            if member is None:  # pax/GNU headers or links: tarfile reads the rest
                rest = _Prepend(buf[pos:], r)
                yield from tar_file_expander([{"url": where, "stream": rest}])
                r.readall()
                break
            name, n = member
            span = 512 + -(-n // 512) * 512  # header, member, padding to a 512-byte block
            if not have(span):
                raise ShardError(f"shard {where}: truncated at member {name}; {_FIX}")
            data = buf[pos + 512 : pos + 512 + n]
            pos += span
            if not _META.match(name):
                yield {"fname": name, "data": data, "__url__": where}
        if sha256 is not None:
            _check_sha256(url, r.sha256.hexdigest(), sha256)


def iter_shard(index: ShardIndex, i: int, then: int | None = None
               ) -> Iterator[tuple[np.ndarray, int]]:
    """Decoded (image uint8 CHW, label or -1) of shard i, in file order. Checks the count.
    `then`: the shard read next, if known (a remote one is asked for ahead)."""
    path, n = index.paths[i], 0
    size = index.sizes[i] if index.sizes is not None else None
    sha = index.sha256[i] if index.sha256 is not None else None
    following = index.paths[then] if then is not None else None
    try:
        for sample in group_by_keys(_tar_members(path, size, sha, following)):
            n += 1
            if n > index.counts[i]:
                break
            yield _decode_sample(sample, path, index.image_shape, index.has_labels)
    except ShardError:
        raise
    except Exception as e:  # tarfile/OS errors of a truncated or corrupt file
        raise ShardError(f"shard {path}: unreadable tar ({_one_line(e)}); {_FIX}") from None
    if n != index.counts[i]:
        more = f"more than {index.counts[i]}" if n > index.counts[i] else str(n)
        raise ShardError(
            f"shard {path} holds {more} samples but the index says {index.counts[i]}; {_FIX}"
        )


def _decode_shard(index: ShardIndex, i: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((index.counts[i], *index.image_shape), dtype=np.uint8)
    labels = np.empty(index.counts[i], dtype=np.int64)
    for j, (image, label) in enumerate(iter_shard(index, i)):
        images[j], labels[j] = image, label
    return images, labels


def decode_all(index: ShardIndex) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All samples in shard order: uint8 [N, C, H, W] and int64 labels [N] (or None).

    Shards are decoded in forked processes (tar parsing is pure Python and holds the GIL);
    60k MNIST-sized PNGs take about 3 s on 2 cores. Children only decode: no CUDA, no
    collectives, so forking a trainer process is safe, as it is for DataLoader workers.
    """
    n = len(index.paths)
    images = torch.empty((index.total, *index.image_shape), dtype=torch.uint8)
    labels = torch.empty(index.total, dtype=torch.int64)
    starts = np.cumsum([0, *index.counts]).tolist()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    procs = min(n, cpus or 1, 8)
    if multiprocessing.current_process().daemon:
        procs = 1  # e.g. inside a DataLoader worker: daemons may not start processes
    if procs > 1:
        pool = ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork"))
        parts = pool.map(_decode_shard, [index] * n, range(n))
    else:
        pool, parts = None, (_decode_shard(index, i) for i in range(n))
    try:
        for i, (im, lb) in enumerate(parts):  # copied in as they come: peak memory ~ 1x data
            images[starts[i] : starts[i + 1]] = torch.from_numpy(im)
            labels[starts[i] : starts[i + 1]] = torch.from_numpy(lb)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return images, labels if index.has_labels else None


def check_states(states: list[dict], mode: str) -> None:
    """The data states of a checkpoint (one per saving rank) fit a `mode` source."""
    if not states:
        raise ValueError("no data states to load")
    modes = {s.get("mode") for s in states}
    if modes != {mode}:
        raise ValueError(
            f"data state of mode {sorted(map(str, modes))} cannot resume data.mode={mode}; "
            "resume with the data.mode the checkpoint was written with"
        )
