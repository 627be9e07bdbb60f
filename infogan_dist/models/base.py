"""The two module shapes every architecture fills in."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Head = Literal["adv", "q", "both"]


def scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


class Generator(nn.Module):
    """body: input [n, input_dim] -> images [n, C, H, W]; tanh keeps them in [-1, 1]."""

    def __init__(self, body: nn.Module, image_shape: tuple[int, int, int]):
        super().__init__()
        self.body = body
        self.image_shape = tuple(image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(x).view(x.shape[0], *self.image_shape))


class Discriminator(nn.Module):
    """A shared trunk with two heads: the adversarial logit and Q (the code posterior)."""

    def __init__(self, trunk: nn.Module, adv: nn.Module, q: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.adv = adv
        self.q = q

    def forward(
        self, x: torch.Tensor, head: Head = "both"
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        h = self.trunk(x)
        # reshape, not squeeze: a batch of one must stay a batch.
        adv = self.adv(h).reshape(-1) if head in ("adv", "both") else None
        q = self.q(h) if head in ("q", "both") else None
        return adv, q
