"""Factor classes in shards: data whose generating factors are known (dSprites).

On disk: every sample has a `{key}.factors` member, the ASCII JSON list of its class of
each factor (`[2,5,39,31,0]`: JSON only, never pickle), and index.json records

    "factors": {"names": ["shape", "scale", "orientation", "pos_x", "pos_y"],
                "sizes": [3, 6, 40, 32, 32],
                "values": [[...], ...]}    # optional: the value of each class

`decode_with_factors` reads images, labels and factors in one pass over the shards; the
disentanglement scores take the result (data/labelled.py: load_labelled_factors).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from .packed import PackedImages, pack
from .shards import ShardError, ShardIndex, _decode_sample, iter_shard, map_shards

EXT = "factors"
_FIX = "rebuild the shards with `infogan prepare-data`"


@dataclass(frozen=True)
class FactorSpec:
    names: list[str]  # factor names, in the order of every .factors list
    sizes: list[int]  # classes per factor; a class is 0 .. size - 1
    values: list[list[float]] | None = None  # value of each class (e.g. radians), if known

    def to_json(self) -> dict:
        out: dict = {"names": list(self.names), "sizes": [int(s) for s in self.sizes]}
        if self.values is not None:
            out["values"] = [[float(v) for v in vs] for vs in self.values]
        return out

    @classmethod
    def from_json(cls, data: object, where: str) -> FactorSpec:
        """From index.json's "factors"; ShardError (one line, naming `where`) if malformed."""
        try:
            assert isinstance(data, dict)
            names, sizes = [str(n) for n in data["names"]], [int(s) for s in data["sizes"]]
            values = data.get("values")
            assert len(names) == len(sizes) > 0 and all(s >= 1 for s in sizes)
            if values is not None:
                values = [[float(v) for v in vs] for vs in values]
                assert [len(vs) for vs in values] == sizes
        except (AssertionError, KeyError, TypeError, ValueError):
            raise ShardError(f"{where}: \"factors\" must be {{\"names\": [...], \"sizes\": "
                             f"[...]}} of equal length with sizes >= 1 (and \"values\" with "
                             f"sizes[k] numbers per factor); {_FIX}") from None
        return cls(names, sizes, values)


def factor_spec(index: ShardIndex, spec: str) -> FactorSpec:
    """The index's factors; ShardError naming `spec` when it has none."""
    if index.factors is None:
        raise ShardError(
            f"shards {spec} have no factor classes (index.json has no \"factors\"); the "
            "disentanglement scores need shards made by `infogan prepare-data --dsprites "
            "FILE.npz` or `--sprites`")
    return FactorSpec.from_json(index.factors, f"{spec}/index.json")


def encode(classes: np.ndarray) -> bytes:
    """The .factors member of one sample."""
    return json.dumps([int(c) for c in classes], separators=(",", ":")).encode("ascii")


def parse(data: bytes | None, where: str, sizes: list[int]) -> np.ndarray:
    """A .factors member -> int16 [F]; ShardError naming `where` when missing or bad."""
    if data is None:
        raise ShardError(f"{where}: no .{EXT} member, but the index says the samples have "
                         f"factors; {_FIX}")
    try:
        classes = json.loads(bytes(data).decode("ascii"))
        ok = (isinstance(classes, list) and len(classes) == len(sizes)
              and all(type(c) is int and 0 <= c < s for c, s in zip(classes, sizes, strict=True)))
    except (UnicodeDecodeError, ValueError):
        ok = False
    if not ok:
        raise ShardError(f"{where}.{EXT}: not a JSON list of {len(sizes)} factor classes "
                         f"within the sizes {sizes}; {_FIX}")
    return np.array(classes, dtype=np.int16)


def _decode_sample_with_factors(sample: dict, path: str, index: ShardIndex):
    image, label = _decode_sample(sample, path, index.image_shape, index.has_labels)
    sizes = [int(s) for s in index.factors["sizes"]]
    return image, label, parse(sample.get(EXT), f"shard {path}: member {sample['__key__']}",
                               sizes)


def _decode_shard(index: ShardIndex, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = index.counts[i]
    images = np.empty((n, *index.image_shape), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    factors = np.empty((n, len(index.factors["sizes"])), dtype=np.int16)
    for j, (image, label, f) in enumerate(iter_shard(index, i, decode=_decode_sample_with_factors)):
        images[j], labels[j], factors[j] = image, label, f
    if index.binary:
        return pack(images, f"shard {index.paths[i]}"), labels, factors
    return images, labels, factors


@dataclass
class FactorSet:
    """Images, labels and factor classes of every sample of some shards."""

    images: torch.Tensor | PackedImages  # uint8 [N, C, H, W] (packed when binary)
    labels: torch.Tensor | None  # int64 [N], or None for unlabelled shards
    factors: np.ndarray  # int16 [N, F]
    spec: FactorSpec


def decode_with_factors(index: ShardIndex, spec: str) -> FactorSet:
    """Every sample of `index` with its factor classes, in one pass over the shards
    (binary images packed in the decoding processes)."""
    fs = factor_spec(index, spec)
    n, num_factors = index.total, len(fs.sizes)
    pixels = int(np.prod(index.image_shape))
    images = torch.empty((n, (pixels + 7) // 8) if index.binary else (n, *index.image_shape),
                         dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    factors = np.empty((n, num_factors), dtype=np.int16)
    starts = np.cumsum([0, *index.counts]).tolist()
    for i, (im, lb, f) in enumerate(map_shards(index, _decode_shard)):
        images[starts[i] : starts[i + 1]] = torch.from_numpy(im)
        labels[starts[i] : starts[i + 1]] = torch.from_numpy(lb)
        factors[starts[i] : starts[i + 1]] = f
    held = PackedImages(images, index.image_shape) if index.binary else images
    return FactorSet(held, labels if index.has_labels else None, factors, fs)
