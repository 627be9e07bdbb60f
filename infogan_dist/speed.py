"""Speed options for GPU nodes, each off by default until measured there (docs/benchmarks/
2026-11-30-communication-lean-step.md): `train.compile`, `train.channels_last`, `train.tf32`, and
`data.pin_memory` (data/stream.py). The trainer applies them from outside the models.

CUDA graphs are not offered: a step is several optimizer updates with Python control
flow between them (phases, the fake batch handed on, no_sync), its collectives go
through DDP's reducer and CrossRankBatchNorm's autograd function (graph capture needs
NCCL with static buffers and no host-side work), and the data of memory mode is indexed
by a per-step permutation. A captured step would need static input buffers, capturable
Adam and the whole step (forward, backward, all-reduce, optimizer) in one graph, which is
future work; `train.compile` (mode default) is the first measurement to make.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Config


def apply(cfg: Config, G: nn.Module, D: nn.Module) -> None:
    """Before `accelerator.prepare`: layouts, matmul precision, compilation, in place
    (Module.compile keeps the state-dict keys, so checkpoints do not change)."""
    if cfg.train.tf32:
        # fp32 matmuls and convolutions in TF32 on GPUs that have it (Ampere and later);
        # no effect on CPUs. About 10 mantissa bits: a numeric change, measured first.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.train.channels_last:
        for m in (G, D):
            m.to(memory_format=torch.channels_last)  # 4-D weights only; others untouched
    if cfg.train.compile:
        for m in (G, D):
            m.compile()


def layout(cfg: Config, images: torch.Tensor) -> torch.Tensor:
    """A batch of real images in the memory layout the models were given."""
    if cfg.train.channels_last and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
