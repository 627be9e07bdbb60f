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

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def names(self) -> list[str]:
        return [os.path.basename(p) for p in self.paths]


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if e.args else type(e).__name__
    return f"{type(e).__name__}: {' '.join(text.split())}"


def _load_index_json(directory: Path) -> dict:
    hint = f"run `infogan prepare-data --out {directory} ...` to create it"
    if not directory.is_dir():
        raise ShardError(f"shard directory {directory} does not exist; {hint}")
    path = directory / INDEX_NAME
    if not path.is_file():
        raise ShardError(f"no {INDEX_NAME} in {directory} (missing or half-written); {hint}")
    try:
        data = json.loads(path.read_text())
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
    listed: list[str] | None = None
    if "{" in spec or spec.endswith(".tar"):
        listed = list(braceexpand.braceexpand(spec))
        dirs = {os.path.dirname(p) for p in listed}
        if len(dirs) != 1:
            raise ShardError(f"shard pattern {spec}: all shards must be in one directory")
        directory = Path(dirs.pop() or ".")
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
    paths = [str(directory / n) for n in names]
    for p in paths:
        if not os.path.isfile(p):
            raise ShardError(f"shard {p} is listed in the index but missing on disk; {_FIX}")
    nc = data.get("num_classes")
    return ShardIndex(
        paths=paths,
        counts=[entries[n] for n in names],
        image_shape=tuple(int(x) for x in data["image_shape"]),
        has_labels=bool(data.get("has_labels", False)),
        num_classes=int(nc) if nc is not None else None,
        source=str(data.get("source", "")),
    )


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


def _plain_tar_layout(buf: mmap.mmap | bytes, path: str) -> list[tuple[str, int, int]] | None:
    """(name, offset, size) of the members of a plain ustar archive (what ShardWriter
    writes), parsed about 10x faster than tarfile's Python header parsing. None for
    anything else (pax or GNU headers, links, ...): the caller then uses tarfile."""
    members, pos, end = [], 0, len(buf)
    while pos + 512 <= end:
        header = buf[pos : pos + 512]
        if header.count(0) == 512:
            return members  # end-of-archive marker
        if header[257:262] != b"ustar" or header[156:157] not in (b"0", b"\0"):
            return None
        stored = int(header[148:156].split(b"\0")[0].strip() or b"-1", 8)
        if stored != sum(header[:148]) + 256 + sum(header[156:]):
            return None  # tarfile also knows the old signed checksum, or reports the damage
        size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
        name = header[:100].split(b"\0")[0].decode()
        prefix = header[345:500].split(b"\0")[0].decode()
        name = f"{prefix}/{name}" if prefix else name
        if pos + 512 + size > end:
            raise ShardError(f"shard {path}: truncated at member {name}; {_FIX}")
        if not _META.match(name):
            members.append((name, pos + 512, size))
        pos += 512 + -(-size // 512) * 512
    raise ShardError(f"shard {path}: truncated tar (no end-of-archive marker); {_FIX}")


def _tar_members(path: str) -> Iterator[dict]:
    """{fname, data, __url__} per member, as webdataset's tar_file_expander yields them."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise ShardError(f"shard {path}: empty file; {_FIX}")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            layout = _plain_tar_layout(buf, path)
            if layout == []:
                raise ShardError(f"shard {path}: an empty tar (no members); {_FIX}")
            if layout is not None:
                for name, start, size in layout:
                    yield {"fname": name, "data": buf[start : start + size], "__url__": path}
                return
        yield from tar_file_expander([{"url": path, "stream": f}])


def iter_shard(index: ShardIndex, i: int) -> Iterator[tuple[np.ndarray, int]]:
    """Decoded (image uint8 CHW, label or -1) of shard i, in file order. Checks the count."""
    path, n = index.paths[i], 0
    try:
        for sample in group_by_keys(_tar_members(path)):
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
