"""The data layer: shards written by `infogan prepare-data`, read in one of two modes.

memory: decode every shard once, keep the images on the device and index them per step;
        world-size invariant and exactly resumable (MNIST-sized data).
stream: webdataset over the shards each epoch, split by rank and worker; resumable at
        shard granularity (data that does not fit in memory).
Both yield (uint8 images [b, C, H, W], int64 labels [b] or None) batches forever and have
`state_dict()` / `load_state_dict(states_of_all_ranks)`.
"""

from __future__ import annotations

import torch

from ..config import DataConfig
from . import remote
from .memory import MemorySource
from .shards import ShardError, ShardIndex, decode_all, read_index
from .stream import StreamSource

__all__ = [
    "MemorySource",
    "ShardError",
    "ShardIndex",
    "StreamSource",
    "decode_all",
    "open_source",
    "read_index",
    "remote",
    "to_float",
]


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
    remote.configure(data_cfg)  # remote shards: endpoint, node cache, retry window
    if data_cfg.mode == "memory":
        return MemorySource(index, rank=rank, world_size=world_size, global_batch=global_batch,
                            seed=seed, device=device)
    if data_cfg.mode == "stream":
        return StreamSource(index, rank=rank, world_size=world_size, global_batch=global_batch,
                            seed=seed, num_workers=data_cfg.num_workers,
                            shuffle_buffer=data_cfg.shuffle_buffer)
    raise ValueError(f"config key data.mode: bad value {data_cfg.mode!r}; allowed: memory, stream")


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (x / 127.5 - 1), on the images' device."""
    return images_uint8.float() / 127.5 - 1.0
