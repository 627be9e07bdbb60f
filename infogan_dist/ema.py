"""An exponential moving average of the generator's weights (model.ema_half_life_images).

The models know nothing of it: the trainer makes the copy once (from G after the
CrossRankBatchNorm conversion, so the EMA module has the same class and state names as
G) and calls `update` once per step, after every phase has stepped its optimizer.

Rule (StyleGAN2-ADA's, with its ramp-up): after a step that brought the images seen to
`images_seen` (all ranks together), with batch B = train.global_batch_size,

    half_life = min(model.ema_half_life_images, model.ema_rampup * images_seen)
    beta      = 0.5 ** (B / half_life)
    ema_p     = p + beta * (ema_p - p)          (every parameter, i.e. torch.lerp)
    ema_b     = b                               (every buffer: BatchNorm statistics)

So early on, when G changes fastest, the average spans few images (at step 1 with the
default ramp-up 0.05: beta = 0.5 ** 20, i.e. a copy of G), and later it spans the
configured half-life. Buffers are copied, not averaged: BatchNorm's running statistics
belong to the weights that produced them, and averaging them would describe no network.
The EMA never touches G or D, so training is the same with it on or off.

Every rank holds G bitwise identical and runs the same float ops on it, so the EMA stays
identical across ranks too (the rank fingerprint covers it). It is saved in every
checkpoint as generator_ema.safetensors (one checkpoint Part) and loaded on resume,
which keeps exact continuation bitwise.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from .checkpoint import EMA_GENERATOR_FILE as EMA_FILE
from .checkpoint import CheckpointError, Part, save_tensors


def ema_beta(half_life_images: float, rampup: float, images_seen: int, batch: int) -> float:
    """The decay of one step (see the module docstring); 0 = copy G."""
    half_life = half_life_images
    if rampup > 0:
        half_life = min(half_life, rampup * images_seen)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (batch / half_life)


class EMA:
    """The averaged copy of G, or nothing when half_life_images is 0 (off)."""

    def __init__(self, G: nn.Module, half_life_images: float, rampup: float, batch: int):
        self.half_life, self.rampup, self.batch = half_life_images, rampup, batch
        self.module: nn.Module | None = None
        if half_life_images > 0:
            self.module = copy.deepcopy(G).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, G: nn.Module, images_seen: int) -> None:
        if self.module is None:
            return
        beta = ema_beta(self.half_life, self.rampup, images_seen, self.batch)
        for p_ema, p in zip(self.module.parameters(), G.parameters(), strict=True):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.module.buffers(), G.buffers(), strict=True):
            b_ema.copy_(b)

    def sampler(self, G: nn.Module) -> nn.Module:
        """The generator pictures and FID use: the EMA when on, else G itself."""
        return G if self.module is None else self.module

    def models(self) -> dict[str, nn.Module]:
        """For the rank fingerprint and state dumps: {"G_ema": module} when on."""
        return {} if self.module is None else {"G_ema": self.module}

    def parts(self) -> list[Part]:
        """The checkpoint file (none when off)."""
        if self.module is None:
            return []
        return [Part(EMA_FILE, lambda p: save_tensors(self.module, p), load=self._load)]

    def _load(self, path: Path) -> None:
        checkpoint = path.parent
        if not path.is_file():
            raise CheckpointError(
                f"{checkpoint} has no {EMA_FILE} but model.ema_half_life_images="
                f"{self.half_life}: resume it with the EMA setting it was written with")
        assert self.module is not None
        self.module.load_state_dict(load_file(str(path)))
