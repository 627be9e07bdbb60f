"""Stream mode: read shards with webdataset each epoch, for data that does not fit in memory.

Splitting. Epoch e's shard order is a permutation keyed by (seed, e). Rank r reads
shards[r::world_size] of it and DataLoader worker w of that rank reads its share
[w::num_workers] (num_workers=0: one in-process worker). Every rank yields exactly
n = min over ranks of (that rank's samples // b) batches per epoch, computed from the
index counts identically on all ranks, so no rank runs out first and DDP never hangs
at an epoch's end. Each sample is seen at most once per epoch; the rest is dropped, so
make the shard count a multiple of world_size x workers and the shards equal in size.

Shuffling. Each worker shuffles in blocks: it reads `shuffle_buffer` samples, emits them
in a random order (keyed by seed, epoch, rank, worker), then reads the next block. A
"random pick" buffer as in webdataset's `shuffle` mixes a little more, but can keep one
straggler of each of many shards for a long time, so it cannot bound the repeats below.

Resume at shard granularity. Each sample carries its shard; a shard is done once all of
its samples (index count) were yielded. The state holds the epoch, the batches yielded
in it and the done shards; resuming (at any world size) re-splits the shards that are not
done (union over the saving ranks) by the same rule and runs n' = min over ranks of
(remaining samples // b) more batches in that epoch. Samples of done shards never come
again in the epoch; samples of partially consumed shards are read again.

Bound on repeats after a mid-epoch resume: a worker's output is its input permuted
within blocks of K = max(1, shuffle_buffer) consecutive samples, so what has been yielded
is some whole blocks plus part of one block, and only the shards overlapping that block
can be partially consumed: at most 1 + ceil((K - 1) / min_shard) shards per worker,
min_shard being the smallest shard count. Per rank of the run that saved, at most
max(1, num_workers) x (1 + ceil((K - 1) / min_shard)) shards are read again, so at most
that many times (largest shard - 1) samples are seen twice. Nothing is skipped except the
end-of-epoch remainder that any epoch drops (fewer than b samples per rank plus the
imbalance of the rank split).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, get_worker_info

from .. import stop
from ..errors import Outage
from ..latent import keyed_generator
from .shards import ShardError, ShardIndex, check_states, iter_shard

ORDER_KEY, SHUFFLE_KEY = 0x5A4D, 0x5B0F
Batch = tuple[torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class EpochPlan:
    ranks: list[list[int]]  # shard indices each rank reads, in order
    batches: int  # batches every rank yields in this (part of the) epoch


def plan_epoch(
    index: ShardIndex, seed: int, epoch: int, done: Iterable[int], world_size: int, batch: int
) -> EpochPlan:
    """The same on every rank: it depends only on the index, (seed, epoch) and done shards."""
    order = torch.randperm(len(index.paths), generator=keyed_generator(seed, epoch, ORDER_KEY))
    done = set(done)
    remaining = [i for i in order.tolist() if i not in done]
    ranks = [remaining[r::world_size] for r in range(world_size)]
    batches = min(sum(index.counts[i] for i in shards) // batch for shards in ranks)
    return EpochPlan(ranks, batches)


# --- inside a worker: a webdataset pipeline over this worker's shards ----------------------

def _worker_shards(shards: list[int]) -> Iterator[int]:
    info = get_worker_info()
    w, nw = (info.id, info.num_workers) if info is not None else (0, 1)
    return iter(shards[w::nw])


def _read(shards: Iterator[int], index: ShardIndex) -> Iterator[tuple[np.ndarray, int, int]]:
    order = list(shards)
    for i, then in zip(order, [*order[1:], None], strict=True):
        for image, label in iter_shard(index, i, then):  # safe decode, counts checked
            yield image, label, i


def _block_shuffle(samples: Iterator, size: int, key: tuple[int, ...]) -> Iterator:
    info = get_worker_info()
    gen = keyed_generator(*key, info.id if info is not None else 0, SHUFFLE_KEY)
    block: list = []
    for sample in samples:
        block.append(sample)
        if len(block) == size:
            yield from (block[j] for j in torch.randperm(size, generator=gen).tolist())
            block = []
    yield from (block[j] for j in torch.randperm(len(block), generator=gen).tolist())


def _batches(samples: Iterator, batch: int, labels: bool) -> Iterator[tuple | str | Outage]:
    """Full batches, then this worker's partial last one (the rank combines partials).
    A ShardError travels as its message, so it is raised again with one line; an Outage
    as itself (it pickles), so the rank ends with the outage's exit status."""
    buf: list = []

    def collate():
        images = torch.from_numpy(np.stack([s[0] for s in buf]))
        lab = torch.tensor([s[1] for s in buf], dtype=torch.int64) if labels else None
        return images, lab, torch.tensor([s[2] for s in buf], dtype=torch.int64)

    try:
        for sample in samples:
            buf.append(sample)
            if len(buf) == batch:
                yield collate()
                buf = []
        if buf:
            yield collate()
    except ShardError as e:
        yield str(e)
    except Outage as e:
        yield e


# --- the rank-level source ----------------------------------------------------------------

def check_split(index: ShardIndex, world_size: int, num_workers: int, batch: int) -> None:
    """ShardError (one line) unless the shards can feed world_size x workers readers and
    every rank's batch. Run by preflight, before any process group starts, and here."""
    where = f"shards {index.names[0]}..{index.names[-1]} in {os.path.dirname(index.paths[0])}"
    need = world_size * max(1, num_workers)
    if len(index.paths) < need:
        raise ShardError(
            f"stream mode needs at least {need} shards ({world_size} ranks x "
            f"{max(1, num_workers)} workers) but {where} has {len(index.paths)}; re-run "
            f"`infogan prepare-data` with --shard-size {max(1, index.total // need)} or "
            "less, or use fewer data.num_workers"
        )
    # Worst case over epochs: a rank gets the floor(S / W) smallest shards.
    worst = sum(sorted(index.counts)[: len(index.paths) // world_size])
    if worst < batch:
        raise ShardError(
            f"stream mode: a rank may get only {worst} samples of {where}, fewer than its "
            f"batch of {batch}; use a smaller batch, fewer ranks or more data"
        )


class StreamSource:
    def __init__(
        self,
        index: ShardIndex,
        *,
        rank: int,
        world_size: int,
        global_batch: int,
        seed: int,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        pin_memory: bool = False,
    ):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} does not split over {world_size} ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.index, self.rank, self.world_size, self.seed = index, rank, world_size, seed
        self.batch = global_batch // world_size
        self.num_workers, self.shuffle_buffer = num_workers, max(1, shuffle_buffer)
        self.pin_memory = pin_memory  # batches in page-locked memory: async device copies
        check_split(index, world_size, num_workers, self.batch)
        self._names = {n: i for i, n in enumerate(index.names)}
        self._start(epoch=0, k=0, done=set())

    # --- state ------------------------------------------------------------------------
    def _start(self, epoch: int, k: int, done: set[int]) -> None:
        """Begin a segment of an epoch: shards not done are (re)read from their start."""
        while True:
            self._epoch, self._k, self._done = epoch, k, set(done)
            self._seg_k = k
            self._plan = plan_epoch(
                self.index, self.seed, epoch, done, self.world_size, self.batch)
            self._consumed = torch.zeros(len(self.index.paths), dtype=torch.int64)
            if self._plan.batches > 0:
                return
            epoch, k, done = epoch + 1, 0, set()  # nothing left of this epoch

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def batches_per_epoch(self) -> int:
        """Batches of the current epoch, counting those yielded before a resume."""
        return self._seg_k + self._plan.batches

    @property
    def max_repeated_shards(self) -> int:
        """Shards per rank read again after a mid-epoch resume, at most (module docstring)."""
        k, smallest = self.shuffle_buffer, min(self.index.counts)
        return max(1, self.num_workers) * (1 + math.ceil((k - 1) / smallest))

    def rekey(self, rollbacks: int) -> None:
        """Stream mode keeps its data order after a divergence rollback (a shard plan
        re-keyed mid-epoch would lose track of the shards done); the latents and
        transform draws are re-keyed."""

    def state_dict(self) -> dict:
        return {
            "mode": "stream",
            "epoch": self._epoch,
            "batches_in_epoch": self._k,
            "done_shards": [self.index.names[i] for i in sorted(self._done)],
        }

    def load_state_dict(self, states: list[dict]) -> None:
        """`states`: the state_dicts of all ranks of the run that saved (any world size)."""
        check_states(states, "stream")
        where = {(int(s["epoch"]), int(s["batches_in_epoch"])) for s in states}
        if len(where) != 1:
            raise ValueError(f"ranks saved different (epoch, batch) data states {sorted(where)}")
        epoch, k = where.pop()
        done = set()
        for name in set().union(*(s["done_shards"] for s in states)):
            if name not in self._names:
                raise ShardError(
                    f"data state names shard {name}, which is not among the shards of this run; "
                    "resume with the shards the run was started on"
                )
            done.add(self._names[name])
        self._start(epoch, k, done)

    # --- iteration --------------------------------------------------------------------
    def _pipeline(self, shards: list[int]) -> wds.DataPipeline:
        key = (self.seed, self._epoch, self.rank)
        return wds.DataPipeline(
            functools.partial(_worker_shards, shards),
            functools.partial(_read, index=self.index),
            functools.partial(_block_shuffle, size=self.shuffle_buffer, key=key),
            functools.partial(_batches, batch=self.batch, labels=self.index.has_labels),
        )

    def _count(self, ids: torch.Tensor) -> None:
        self._consumed += torch.bincount(ids, minlength=len(self.index.paths))
        full = (self._consumed == torch.tensor(self.index.counts)).nonzero().flatten()
        self._done.update(full.tolist())

    def __iter__(self) -> Iterator[Batch]:
        """Batches forever. A new iterator restarts the current epoch's unfinished shards."""
        self._start(self._epoch, self._k, self._done)
        while True:
            yield from self._segment()

    def _segment(self) -> Iterator[Batch]:
        plan, b = self._plan, self.batch
        pipeline = self._pipeline(plan.ranks[self.rank])
        if self.num_workers:
            # batch_size=None: the workers batch; the default in-order fetching keeps the
            # sequence deterministic. Workers are new each epoch (their key changes). They
            # ignore stop signals: the rank must train one more step after a stop request.
            it = iter(DataLoader(pipeline, batch_size=None, num_workers=self.num_workers,
                                 worker_init_fn=stop.ignore_in_data_workers))
        else:
            it = iter(pipeline)
        pending: list[tuple] = []  # partial last batches of workers, combined in order
        try:
            for _ in range(plan.batches):
                while True:
                    have = sum(len(p[2]) for p in pending)
                    if have >= b:
                        images, labels, ids, pending = _take(pending, b)
                        break
                    item = next(it, None)
                    if item is None:
                        raise ShardError(f"rank {self.rank} ran out of samples in epoch "
                                         f"{self._epoch}; the shards changed since indexing")
                    if isinstance(item, str):
                        raise ShardError(item)
                    if isinstance(item, Outage):
                        raise Outage(str(item))
                    if len(item[2]) == b:
                        images, labels, ids = item
                        break
                    pending.append(item)
                self._count(ids)
                self._k += 1
                if self._k == self.batches_per_epoch:
                    self._start(self._epoch + 1, 0, set())  # state says "next epoch" already
                yield (images.pin_memory() if self.pin_memory else images), labels
        finally:
            # Stop this epoch's workers now, also when the consumer abandons the iterator.
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            del it


def _take(pending: list[tuple], b: int) -> tuple:
    images = torch.cat([p[0] for p in pending])
    labels = torch.cat([p[1] for p in pending]) if pending[0][1] is not None else None
    ids = torch.cat([p[2] for p in pending])
    rest = [(images[b:], labels[b:] if labels is not None else None, ids[b:])] \
        if len(ids) > b else []
    return images[:b], labels[:b] if labels is not None else None, ids[:b], rest
