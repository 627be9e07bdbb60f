"""Shard index and safe decoding, shared by memory mode, stream mode and evaluation.

A shard directory (written by `infogan prepare-data`) holds `shard-NNNNNN.tar` files and
`index.json` with the sample count of every shard. The counts are what let every rank
plan an epoch without reading data, so the readers check them against the tars.

Safety: webdataset's default decoders unpickle `.pyd`/`.pickle` members, so a shard from
elsewhere could run code. We never use them: tars are read by data/tar.py (no `pipe:`
URLs through `gopen`), split into samples by webdataset's grouping, and every member must
be an image (png/jpg/jpeg), a label (cls) or factor classes (factors: a JSON list of
ints, data/factors.py); json is ignored, anything else is refused.

Where the bytes come from (a local file, S3, HTTP, the node cache) is the stores' business
(data/stores/): this module asks them by path or URL, and names the shard in their errors.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import braceexpand
import numpy as np
import torch
from PIL import Image
from webdataset.tariterators import group_by_keys

from ..errors import Outage, ShardError
from . import stores, tar
from .stores import Corrupt, NotFound, StoreError, Unavailable
from .tar import FIX as _FIX
from .tar import one_line as _one_line

INDEX_NAME = "index.json"
MAX_SIDE = 8192  # pixels per image side an index may claim (a hostile one: terabytes)
# A sample is at least one tar member, and a member at least its 512-byte header, so a
# shard of n bytes holds at most n // 512 samples: an index that claims more is refused
# before memory mode allocates for its count (a truncated shard is named when read).
MIN_MEMBER_BYTES = 512
INDEX_FORMAT = 1
IMAGE_EXTS = ("png", "jpg", "jpeg")
ALLOWED_EXTS = frozenset(IMAGE_EXTS + ("cls", "json", "factors"))
_PIL_FORMATS = ["PNG", "JPEG"]  # Image.open tries only these plugins


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
    # {"names": [...], "sizes": [...], "values": [...]}: every sample has a .factors member
    # with its class of each factor (data/factors.py); None: no factors
    factors: dict | None = None
    binary: bool = False  # every pixel is 0 or 255 (memory mode holds 1 bit per pixel)

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def names(self) -> list[str]:
        return [os.path.basename(p) for p in self.paths]


def _named(e: StoreError, what: str = "shard") -> ShardError | Outage:
    """A store's error as the shard layer's, naming what the object was; bytes that are
    not the index's get the fix; a store that stayed unreachable is an Outage."""
    if isinstance(e, Unavailable):
        return Outage(f"{what} {e}")
    return ShardError(f"{what} {e}" + (f"; {_FIX}" if isinstance(e, Corrupt) else ""))


def _load_index_json(directory: Path | str) -> dict:
    hint = f"run `infogan prepare-data --out {directory} ...` to create it"
    if stores.is_remote(str(directory)):
        url = stores.join(str(directory), INDEX_NAME)
        try:
            raw = stores.read_bytes(url)
        except NotFound:
            raise ShardError(f"no {INDEX_NAME} at {stores.redact(url)}; {hint}") from None
        except StoreError as e:
            raise _named(e, "shard index") from None
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise ShardError(f"{stores.redact(url)}: not a valid shard index "
                             f"({_one_line(e)}); {hint}") from None
        return _check_index_json(data, stores.redact(url), hint)
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
    shape = data["image_shape"]
    if not (all(isinstance(x, int) for x in shape) and shape[0] in (1, 3)
            and all(1 <= x <= MAX_SIDE for x in shape[1:])):
        # memory mode allocates (total, C, H, W) and the models size their layers by it
        raise ShardError(f"{path}: image_shape {shape} is not [C, H, W] with C 1 (grey) or 3 "
                         f"(RGB) and sides 1..{MAX_SIDE}; {hint}")
    return data


def read_index(spec: str) -> ShardIndex:
    """`spec`: a directory with index.json (or that file), or a brace pattern of shards in
    one directory (`data/x/shard-{000000..000003}.tar`), which keeps only the listed shards."""
    spec = str(spec)
    url = stores.is_remote(spec)  # s3://bucket/prefix, http(s)://host/path, ... (stores/)
    listed: list[str] | None = None
    if "{" in spec or spec.endswith(".tar"):
        listed = list(braceexpand.braceexpand(spec))
        dirs = {stores.dirname(p) if url else os.path.dirname(p) for p in listed}
        if len(dirs) != 1:
            raise ShardError(f"shard pattern {spec}: all shards must be in one directory")
        directory = dirs.pop() if url else Path(dirs.pop() or ".")
    elif url:
        directory = stores.dirname(spec) if spec.endswith(INDEX_NAME) else spec.rstrip("/")
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
        paths = [stores.join(directory, n) for n in names]
        found = _check_remote_shards(paths, sizes)
    else:
        paths = [str(directory / n) for n in names]
        for j, p in enumerate(paths):
            if not os.path.isfile(p):
                raise ShardError(f"shard {p} is listed in the index but missing on disk; {_FIX}")
            if sizes is not None and os.path.getsize(p) != sizes[j]:
                raise ShardError(f"shard {p} is {os.path.getsize(p)} bytes but the index says "
                                 f"{sizes[j]} (truncated or replaced); {_FIX}")
        found = [os.path.getsize(p) for p in paths]
    for p, n, name in zip(paths, found, names, strict=True):
        if n is not None and n > 0 and entries[name] > n // MIN_MEMBER_BYTES:
            where = stores.redact(p) if url else p
            raise ShardError(f"shard {where}: the index says {entries[name]} samples, but its "
                             f"{n} bytes hold at most {n // MIN_MEMBER_BYTES} (a tar member "
                             f"takes at least {MIN_MEMBER_BYTES}); {_FIX}")
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
        factors=data.get("factors"),
        binary=bool(data.get("binary", False)),
    )


def _check_remote_shards(urls: list[str], sizes: list[int] | None) -> list[int | None]:
    """Every shard exists (and has the index's size), asked of their store at once (S3
    lists, HTTP asks in parallel). Run by preflight, so a missing or short upload costs
    exit 2 before any process group starts."""
    try:
        found = stores.sizes(urls)
    except StoreError as e:
        raise _named(e) from None
    for j, u in enumerate(urls):
        n = found.get(u)
        if n is None:
            raise ShardError(f"shard {stores.redact(u)} is listed in the index but missing "
                             f"(HTTP 404); upload it or {_FIX}")
        if sizes is not None and n >= 0 and n != sizes[j]:
            raise ShardError(f"shard {stores.redact(u)} is {n} bytes but the index says "
                             f"{sizes[j]} (truncated or replaced upload); {_FIX}")
    return [found.get(u) for u in urls]


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


def iter_shard(index: ShardIndex, i: int, then: int | None = None,
               decode: Callable[[dict, str, ShardIndex], Any] | None = None) -> Iterator[Any]:
    """Decoded (image uint8 CHW, label or -1) of shard i, in file order. Checks the count.
    `then`: the shard read next, if known (a remote one is asked for ahead). `decode`:
    (sample, shard path, index) -> what to yield instead (data/factors.py adds factors)."""
    path, n = index.paths[i], 0
    size = index.sizes[i] if index.sizes is not None else None
    sha = index.sha256[i] if index.sha256 is not None else None
    following = index.paths[then] if then is not None else None
    try:
        for sample in group_by_keys(tar.members(path, size, sha, following)):
            n += 1
            if n > index.counts[i]:
                break
            yield (_decode_sample(sample, path, index.image_shape, index.has_labels)
                   if decode is None else decode(sample, path, index))
    except ShardError:
        raise
    except StoreError as e:  # the bytes could not be read as the index says
        raise _named(e) from None
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


def map_shards(index: ShardIndex, fn: Callable[[ShardIndex, int], Any]) -> Iterator[Any]:
    """fn(index, i) of every shard i, in shard order, computed in forked processes (tar
    parsing is pure Python and holds the GIL); `fn` must be picklable (a module-level
    function). Children only decode: no CUDA, no collectives, so forking a trainer
    process is safe, as it is for DataLoader workers."""
    n = len(index.paths)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    procs = min(n, cpus or 1, 8)
    if multiprocessing.current_process().daemon:
        procs = 1  # e.g. inside a DataLoader worker: daemons may not start processes
    if procs <= 1:
        yield from (fn(index, i) for i in range(n))
        return
    pool = ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork"))
    try:
        yield from pool.map(fn, [index] * n, range(n))
    finally:
        pool.shutdown(cancel_futures=True)


def decode_all(index: ShardIndex) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All samples in shard order: uint8 [N, C, H, W] and int64 labels [N] (or None).
    60k MNIST-sized PNGs take about 3 s on 2 cores (map_shards)."""
    images = torch.empty((index.total, *index.image_shape), dtype=torch.uint8)
    labels = torch.empty(index.total, dtype=torch.int64)
    starts = np.cumsum([0, *index.counts]).tolist()
    for i, (im, lb) in enumerate(map_shards(index, _decode_shard)):
        # copied in as they come: peak memory ~ 1x data
        images[starts[i] : starts[i + 1]] = torch.from_numpy(im)
        labels[starts[i] : starts[i + 1]] = torch.from_numpy(lb)
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
