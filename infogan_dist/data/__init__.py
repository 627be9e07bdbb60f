"""The data layer: shards written by `infogan prepare-data`, read in one of two modes.

memory: decode every shard once, keep the images on the device and index them per step;
        world-size invariant and exactly resumable (MNIST-sized data).
stream: webdataset over the shards each epoch, split by rank and worker; resumable at
        shard granularity (data that does not fit in memory).
Both yield (uint8 images [b, C, H, W], int64 labels [b] or None) batches forever and have
`state_dict()` / `load_state_dict(states_of_all_ranks)`.

The shard layer (shards.py, tar.py, memory.py, stream.py, labelled.py, prepare.py) reads
bytes from the stores below it (stores/: local files, S3, HTTP(S), node cache,
read-ahead) and knows nothing of where they come from.

SOURCES maps `data.mode` to a factory `(data_cfg, index, rank=, world_size=,
global_batch=, seed=, device=) -> source`; a new mode is a module here and one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..config import DataConfig
from ..registry import Registry
from . import stores
from .memory import MemorySource
from .shards import ShardError, ShardIndex, decode_all, read_index
from .stream import StreamSource

__all__ = [
    "MemorySource",
    "ShardError",
    "ShardIndex",
    "SOURCES",
    "StreamSource",
    "decode_all",
    "open_source",
    "read_index",
    "stores",
    "to_float",
]


SOURCES: Registry[Callable[..., Any]] = Registry("data.mode")
SOURCES.add("memory", lambda cfg, index, *, device, **kw: MemorySource(index, device=device, **kw))
SOURCES.add("stream", lambda cfg, index, *, device, **kw: StreamSource(
    index, num_workers=cfg.num_workers, shuffle_buffer=cfg.shuffle_buffer,
    pin_memory=cfg.pin_memory and torch.device(device).type == "cuda", **kw))


def open_source(
    data_cfg: DataConfig,
    index: ShardIndex,
    *,
    rank: int,
    world_size: int,
    global_batch: int,
    seed: int,
    device: torch.device | str = "cpu",
) -> MemorySource | StreamSource:
    """The source `data_cfg.mode` asks for. Stream batches stay on the CPU (move them)."""
    stores.configure(data_cfg)  # remote shards: endpoint, node cache, retry window
    return SOURCES[data_cfg.mode](data_cfg, index, rank=rank, world_size=world_size,
                                  global_batch=global_batch, seed=seed, device=device)


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (x / 127.5 - 1), on the images' device."""
    return images_uint8.float() / 127.5 - 1.0
