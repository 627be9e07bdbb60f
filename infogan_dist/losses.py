"""Adversarial losses on logits (never Sigmoid + BCELoss: weaker numerically and refused
by fp16 autocast), one class per `loss.adversarial` value in ADVERSARIAL. D's loss comes
in two halves so that each D forward is paired with its own backward (several DDP
forwards before one backward is unsupported).

A new adversarial loss: a subclass of Adversarial here and its `@ADVERSARIAL.register`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import Registry


class Adversarial:
    """D's loss on real logits and on fake logits (each half of D's loss), G's loss."""

    def d_real(self, logit: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def d_fake(self, logit: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g(self, logit: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, logit: torch.Tensor) -> torch.Tensor:
        """What D says, for logging: the raw score (probability for bce)."""
        return logit.detach().float().mean()


ADVERSARIAL: Registry[type[Adversarial]] = Registry("loss.adversarial")


@ADVERSARIAL.register("bce")
class BCE(Adversarial):
    """The original GAN loss; G's side non-saturating: -log D(G(z))."""

    def d_real(self, logit: torch.Tensor) -> torch.Tensor:
        logit = logit.float()
        return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit)) / 2

    def d_fake(self, logit: torch.Tensor) -> torch.Tensor:
        logit = logit.float()
        return F.binary_cross_entropy_with_logits(logit, torch.zeros_like(logit)) / 2

    def g(self, logit: torch.Tensor) -> torch.Tensor:
        logit = logit.float()
        return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))

    def score(self, logit: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logit.detach().float()).mean()


@ADVERSARIAL.register("lsgan")
class LSGAN(Adversarial):
    def d_real(self, logit: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((logit.float() - 1) ** 2).mean() / 2

    def d_fake(self, logit: torch.Tensor) -> torch.Tensor:
        return 0.5 * (logit.float() ** 2).mean() / 2

    def g(self, logit: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((logit.float() - 1) ** 2).mean()


@ADVERSARIAL.register("hinge")
class Hinge(Adversarial):
    def d_real(self, logit: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - logit.float()).mean() / 2

    def d_fake(self, logit: torch.Tensor) -> torch.Tensor:
        return F.relu(1 + logit.float()).mean() / 2

    def g(self, logit: torch.Tensor) -> torch.Tensor:
        return -logit.float().mean()
