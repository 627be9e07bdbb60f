"""Binary images at one bit per pixel: dSprites' 737,280 64x64 images are 3.0 GB as
uint8 and 377 MB packed. Shards whose index says `"binary": true` (every pixel 0 or 255;
prepare-data finds out) are held packed by memory mode and the disentanglement scores,
and unpacked per batch on the device.

Bits are numpy's packbits order (most significant first) over each image's C*H*W
pixels, so a row of the packed tensor is one image.
"""

from __future__ import annotations

import numpy as np
import torch

from .shards import ShardError, ShardIndex, _decode_shard, decode_all, map_shards

_FIX = "rebuild the shards with `infogan prepare-data`"


def pack(images_uint8: np.ndarray, where: str = "images") -> np.ndarray:
    """uint8 [n, C, H, W] of 0s and 255s -> uint8 [n, ceil(C*H*W / 8)]."""
    flat = images_uint8.reshape(len(images_uint8), -1)
    bits = flat > 127
    if not np.array_equal(flat, bits.astype(np.uint8) * 255):
        raise ShardError(f"{where}: pixels other than 0 and 255, but the index says the "
                         f"images are binary; {_FIX}")
    return np.packbits(bits, axis=1)


class PackedImages:
    """A stack of binary images held at one bit per pixel; reading rows gives uint8
    [n, C, H, W] of 0s and 255s, like the unpacked tensor would."""

    def __init__(self, packed: torch.Tensor, image_shape: tuple[int, int, int]):
        self.packed, self.image_shape = packed, tuple(image_shape)
        self._shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)

    @property
    def device(self) -> torch.device:
        return self.packed.device

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.packed), *self.image_shape)

    @property
    def nbytes(self) -> int:
        return self.packed.numel()

    def __len__(self) -> int:
        return len(self.packed)

    def to(self, device: torch.device | str) -> PackedImages:
        return PackedImages(self.packed.to(device), self.image_shape)

    def _unpack(self, packed: torch.Tensor) -> torch.Tensor:
        bits = (packed.unsqueeze(-1) >> self._shifts) & 1  # [n, bytes, 8]
        pixels = int(np.prod(self.image_shape))
        return (bits.reshape(len(packed), -1)[:, :pixels] * 255).reshape(
            len(packed), *self.image_shape)

    def index_select(self, dim: int, index: torch.Tensor) -> torch.Tensor:
        assert dim == 0, "images are selected by row"
        return self._unpack(self.packed.index_select(0, index))

    def __getitem__(self, rows: slice) -> torch.Tensor:
        return self._unpack(self.packed[rows])

    def head(self, n: int | None) -> PackedImages:
        """The first n images, still packed (all when None)."""
        return self if n is None else PackedImages(self.packed[:n], self.image_shape)


def _decode_shard_packed(index: ShardIndex, i: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _decode_shard(index, i)
    return pack(images, f"shard {index.paths[i]}"), labels


def decode_packed(index: ShardIndex) -> tuple[PackedImages, torch.Tensor | None]:
    """decode_all for binary shards: every image packed in the decoding process, so the
    peak memory is the packed set (plus a shard), never the uint8 one."""
    packed = torch.empty((index.total, (int(np.prod(index.image_shape)) + 7) // 8),
                         dtype=torch.uint8)
    labels = torch.empty(index.total, dtype=torch.int64)
    starts = np.cumsum([0, *index.counts]).tolist()
    for i, (p, lb) in enumerate(map_shards(index, _decode_shard_packed)):
        packed[starts[i] : starts[i + 1]] = torch.from_numpy(p)
        labels[starts[i] : starts[i + 1]] = torch.from_numpy(lb)
    return PackedImages(packed, index.image_shape), labels if index.has_labels else None


def decode_for_memory(index: ShardIndex) -> tuple[torch.Tensor | PackedImages, torch.Tensor | None]:
    """What memory mode holds: packed images when the index says they are binary."""
    if index.binary:
        return decode_packed(index)
    return decode_all(index)
