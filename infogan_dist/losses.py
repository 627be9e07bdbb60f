"""Adversarial losses on logits (never Sigmoid + BCELoss: weaker numerically and refused
by fp16 autocast). D's loss comes in two halves so that each D forward is paired with
its own backward (several DDP forwards before one backward is unsupported)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_real(kind: str, logit: torch.Tensor) -> torch.Tensor:
    logit = logit.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit)) / 2
    if kind == "lsgan":
        return 0.5 * ((logit - 1) ** 2).mean() / 2
    return F.relu(1 - logit).mean() / 2  # hinge


def d_loss_fake(kind: str, logit: torch.Tensor) -> torch.Tensor:
    logit = logit.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logit, torch.zeros_like(logit)) / 2
    if kind == "lsgan":
        return 0.5 * (logit**2).mean() / 2
    return F.relu(1 + logit).mean() / 2


def g_loss(kind: str, logit: torch.Tensor) -> torch.Tensor:
    """Non-saturating for bce: -log D(G(z)) rather than log(1 - D(G(z)))."""
    logit = logit.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
    if kind == "lsgan":
        return 0.5 * ((logit - 1) ** 2).mean()
    return -logit.mean()


def d_score(kind: str, logit: torch.Tensor) -> torch.Tensor:
    """What D says, for logging: a probability for bce, the raw score otherwise."""
    logit = logit.detach().float()
    return torch.sigmoid(logit).mean() if kind == "bce" else logit.mean()
