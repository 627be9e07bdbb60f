"""Memory mode: decode the shards once, keep them on the device, index them per step.

The global sample order is an infinite concatenation of epoch permutations, epoch e being
`randperm(N, keyed_generator(seed, e, 0xDA7A))`. Step s's global batch is positions
[s*B, (s+1)*B) of that sequence (it may straddle epochs; B need not divide N) and rank r
takes entries [r*b, (r+1)*b), b = B // world_size. So a step's batch depends only on
(seed, step): the world size only changes which slice a rank gets, and the whole data
state is one integer (the position), which is what makes resume exact at any world size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..latent import keyed_generator
from .packed import decode_for_memory
from .shards import ShardIndex, check_states

EPOCH_KEY = 0xDA7A
Batch = tuple[torch.Tensor, torch.Tensor | None]


class MemorySource:
    def __init__(
        self,
        index: ShardIndex,
        *,
        rank: int,
        world_size: int,
        global_batch: int,
        seed: int,
        device: torch.device | str = "cpu",
    ):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} does not split over {world_size} ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.global_batch, self.batch = global_batch, global_batch // world_size
        images, labels = decode_for_memory(index)  # binary images: 1 bit per pixel
        self.images = images.to(device)
        self.labels = labels.to(device) if labels is not None else None
        self.device = self.images.device
        self.n = images.shape[0]
        self.position = 0  # global sample position of the next batch
        self._perms: dict[int, torch.Tensor] = {}
        self._rekey = 0

    @property
    def epoch(self) -> int:
        """Epoch of the next batch (of its first sample)."""
        return self.position // self.n

    @property
    def batches_per_epoch(self) -> int:
        """Steps per epoch, rounded down (batches straddle epochs when B does not divide N)."""
        return max(1, self.n // self.global_batch)

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            # Keep only epochs at or after the current one: a batch never goes backwards.
            self._perms = {e: p for e, p in self._perms.items() if e >= self.epoch}
            rekey = [self._rekey] if self._rekey else []  # runs without rollbacks: as ever
            gen = keyed_generator(self.seed, epoch, EPOCH_KEY, *rekey)
            # Kept on the device: a step then indexes there, with no host-to-device copy.
            self._perms[epoch] = torch.randperm(self.n, generator=gen).to(self.device)
        return self._perms[epoch]

    def indices(self, position: int) -> torch.Tensor:
        """Sample indices (int64, on the device) of this rank's slice of the batch at `position`."""
        start = position + self.rank * self.batch
        parts, pos, end = [], start, start + self.batch
        while pos < end:  # usually one piece; two (or more if B > N) at an epoch boundary
            epoch, offset = divmod(pos, self.n)
            take = min(end - pos, self.n - offset)
            parts.append(self._perm(epoch)[offset : offset + take])
            pos += take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            idx = self.indices(self.position)
            self.position += self.global_batch  # state now points past the yielded batch
            # index_select: several times faster than images[idx] for a gather along dim 0
            labels = self.labels.index_select(0, idx) if self.labels is not None else None
            yield self.images.index_select(0, idx), labels

    def rekey(self, rollbacks: int) -> None:
        """After a divergence rollback: the order from here on (the current epoch's
        permutation too, so a poisoned batch is not met again) is keyed by the rollback
        count as well; 0 is the original order."""
        self._rekey, self._perms = rollbacks, {}

    def state_dict(self) -> dict:
        return {"mode": "memory", "position": self.position, "epoch": self.epoch}

    def load_state_dict(self, states: list[dict]) -> None:
        """`states`: the state_dicts of all ranks of the run that saved (any world size)."""
        check_states(states, "memory")
        positions = {int(s["position"]) for s in states}
        if len(positions) != 1:
            raise ValueError(f"ranks saved different data positions {sorted(positions)}")
        position = positions.pop()
        if position // self.n != int(states[0]["epoch"]):
            raise ValueError(
                f"data state at position {position} says epoch {states[0]['epoch']} but this "
                f"dataset has {self.n} samples; resume with the shards the run was started on"
            )
        self.position = position
