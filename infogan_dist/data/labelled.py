"""Labelled shards for scoring the codes: `infogan eval --data` and data.eval_shards;
with factor classes (data/factors.py) for the disentanglement scores."""

from __future__ import annotations

import dataclasses

import torch

from ..config import Config
from .factors import FactorSet, decode_with_factors
from .shards import ShardIndex, decode_all, read_index


def head_of_index(index: ShardIndex, limit: int | None) -> ShardIndex:
    """The leading shards that hold the first `limit` samples (all when None)."""
    if limit is None or limit >= index.total:
        return index
    total, k = 0, 0
    while total < limit:
        total += index.counts[k]
        k += 1
    return dataclasses.replace(
        index, paths=index.paths[:k], counts=index.counts[:k],
        sizes=index.sizes[:k] if index.sizes else index.sizes,
        sha256=index.sha256[:k] if index.sha256 else index.sha256)


def eval_shards(cfg: Config) -> str:
    return cfg.data.eval_shards or cfg.data.shards


def load_labelled(spec: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(uint8 images [n, C, H, W], int64 labels [n], number of label classes) of the
    shards `spec`. ValueError (one line) when the shards carry no labels."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    index = read_index(spec)
    if not index.has_labels:
        raise ValueError(
            f"shards {spec} have no labels (index.json has_labels=false); the accuracy needs "
            "labelled shards: pass --data with shards made by `infogan prepare-data --labels` "
            "or from a folder of class subfolders (or set data.eval_shards)"
        )
    images, labels = decode_all(head_of_index(index, limit))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    num_labels = index.num_classes or int(labels.max()) + 1
    return images, labels, num_labels


def load_eval_data(cfg: Config, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's evaluation set: data.eval_shards (or data.shards), uint8 + labels."""
    images, labels, _ = load_labelled(eval_shards(cfg), limit)
    return images, labels


def load_labelled_factors(spec: str) -> FactorSet:
    """Images (packed when binary), labels (or None) and factor classes of every sample
    of the shards `spec`. ShardError (one line) when they carry no factors."""
    return decode_with_factors(read_index(spec), spec)
