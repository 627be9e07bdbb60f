"""Loss terms: each one weighted loss on one view of a phase's images, through one head
of D. Update rules (updates.py) list the built-in terms of each phase in the order they
are summed; an extension term names the phase roles it joins and gets its weight from
`loss.extra.<name>` (docs/extending.md).

A term sees a View: the images D judged (`real`, `fake`, `augmented`: the fakes moved
by augment.random_affine, or `real_pair`: the real batch followed by its moved copy),
their latents (fakes only) and D's outputs for them. It
returns its weighted loss and the statistics to report (same-named statistics of one
phase are summed, e.g. loss/D = real half + fake half).

A term of view `own` makes and judges its own images instead: the phase calls its
`own(inputs, phase)` with the step's inputs (G, D, the extension parts, keyed draws;
updates.StepInputs). InfoGAN-CR's contrastive term (extensions/infogan_cr.py) is one.

An extension term's schedule: loss.extra_start.<name> (the first step it runs) and
loss.extra_ramp.<name> (steps of a linear rise to its full weight), `factor` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .config import Config
from .latent import Latent, LatentSpace
from .losses import ADVERSARIAL
from .ranks import global_mean
from .registry import Registry

Stats = dict[str, torch.Tensor]
OWN = "own"  # the view of a term that makes and judges its own images


@dataclass
class View:
    name: str  # "real", "fake", "augmented" or "real_pair"
    images: torch.Tensor
    latent: Latent | None  # the codes behind fakes; None for real images
    logit: torch.Tensor | None = None  # D's adversarial head on `images`, when asked for
    q: torch.Tensor | None = None  # D's Q head on `images`, when asked for


class LossTerm:
    view: ClassVar[str] = "fake"  # which images D judges for this term ("own": see above)
    head: ClassVar[str] = "adv"  # which head of D it reads: "adv" or "q"
    roles: ClassVar[tuple[str, ...]] = ()  # extensions: phase roles it joins ("D", "G", "info")
    name: ClassVar[str] = ""  # set by register_term

    def __init__(self, cfg: Config, space: LatentSpace):
        self.cfg, self.space = cfg, space
        self.adversarial = ADVERSARIAL[cfg.loss.adversarial]()

    @classmethod
    def weight(cls, cfg: Config) -> float:
        """0 turns the term off. Extension terms: loss.extra.<registered name>."""
        return cfg.loss.extra.get(cls.name, 0.0)

    @classmethod
    def factor(cls, cfg: Config, step: int) -> float:
        """The schedule at `step` (0-based): 0 before loss.extra_start.<name>, then a
        linear rise over loss.extra_ramp.<name> steps (1/ramp at the start step), else 1.
        0 means the term, and its extension's phases, sit the step out."""
        start = cfg.loss.extra_start.get(cls.name, 0)
        if step < start:
            return 0.0
        ramp = cfg.loss.extra_ramp.get(cls.name, 0)
        return 1.0 if ramp <= 0 else min(1.0, (step - start + 1) / ramp)

    @classmethod
    def check(cls, cfg: Config) -> None:
        """Config validation when the term is on: ConfigError (naming the key) for a
        config it cannot run with."""

    def __call__(self, v: View) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError

    def own(self, inputs: Any, phase: Any) -> tuple[torch.Tensor, Stats]:
        """View "own": the weighted loss and statistics, from forwards of its own.
        `inputs` is an updates.StepInputs, `phase` an updates.Phase (not imported here:
        updates.py builds on this module, and imports go downward only, docs/layers.md)."""
        raise NotImplementedError


LOSS_TERMS: Registry[type[LossTerm]] = Registry("loss term")


def register_term(name: str):
    """Class decorator: registers a LossTerm under `name` (also its loss.extra key)."""

    def add(cls: type[LossTerm]) -> type[LossTerm]:
        cls.name = name
        LOSS_TERMS.add(name, cls)
        return cls

    return add


def extension_terms() -> list[str]:
    """Registered terms that join phases by role (weights in loss.extra)."""
    return [n for n in LOSS_TERMS if LOSS_TERMS[n].roles]


class BuiltIn(LossTerm):
    """A term the update rules list by name; on unless it overrides weight."""

    @classmethod
    def weight(cls, cfg: Config) -> float:
        return 1.0

    @classmethod
    def factor(cls, cfg: Config, step: int) -> float:
        return 1.0


@register_term("adversarial_real")
class AdversarialReal(BuiltIn):
    """D's half-loss on real images."""

    view = "real"
    def __call__(self, v: View) -> tuple[torch.Tensor, Stats]:
        loss = self.adversarial.d_real(v.logit)
        return loss, {"loss/D": loss.detach(), "D/real": self.adversarial.score(v.logit)}


@register_term("adversarial_fake")
class AdversarialFake(BuiltIn):
    """D's half-loss on (detached) fakes."""

    def __call__(self, v: View) -> tuple[torch.Tensor, Stats]:
        loss = self.adversarial.d_fake(v.logit)
        return loss, {"loss/D": loss.detach(), "D/fake": self.adversarial.score(v.logit)}


@register_term("adversarial_g")
class AdversarialG(BuiltIn):
    """G's loss on its fakes, through a frozen D."""

    def __call__(self, v: View) -> tuple[torch.Tensor, Stats]:
        loss = self.adversarial.g(v.logit)
        return loss, {"loss/G": loss.detach()}


@register_term("info")
class Info(BuiltIn):
    """The InfoGAN term: lambda_cat * CE + lambda_cont * Gaussian NLL of Q on the fakes'
    codes (latent.py); reports the MI lower bounds. Always on (lambda 0 still reports)."""

    head = "q"
    def __call__(self, v: View) -> tuple[torch.Tensor, Stats]:
        loss, mi = self.space.info_loss(v.q, v.latent, self.cfg.loss.lambda_cat,
                                        self.cfg.loss.lambda_cont)
        return loss, {"loss/info": loss.detach(), **mi}


@register_term("q_augment")
class QAugment(BuiltIn):
    """Q must name the categories of transformed fakes too (loss.q_augment x lambda_cat)."""

    view = "augmented"
    head = "q"

    @classmethod
    def weight(cls, cfg: Config) -> float:
        return cfg.loss.q_augment

    def __call__(self, v: View) -> tuple[torch.Tensor, Stats]:
        w = self.cfg.loss.q_augment * self.cfg.loss.lambda_cat
        loss = self.space.info_loss(v.q, v.latent, w, 0.0)[0]
        return loss, {"loss/q_augment": loss.detach()}


class CodesMI(LossTerm):
    """A term that maximises, for each categorical code, an MI estimate `mi(logits)` from
    Q's logits on its view, weighted by loss.extra.<name>; reports `mi/<stat>/<code>`."""

    stat: ClassVar[str] = ""

    def mi(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, v: View) -> tuple[torch.Tensor, Stats]:
        out = self.space.split_q(v.q)
        loss = v.q.new_zeros((), dtype=torch.float32)
        stats: Stats = {}
        for name, logits in zip(self.space.cat_names, out.logits, strict=True):
            mi = self.mi(logits.float())
            loss = loss - self.weight(self.cfg) * mi
            stats[f"mi/{self.stat}/{name}"] = mi.detach()
        return loss, stats


@register_term("real_mi")
class RealMI(CodesMI):
    """Q's categorical codes on *real* images (loss.extra.real_mi): maximise
    I(x; c) = H(E_x p(c|x)) - E_x H(p(c|x)) (RIM, Krause et al. 2010; IMSAT's objective
    without its augmentation). The info loss teaches Q only on fakes; this makes Q's
    classes confident on the real images too while keeping them all in use. The marginal
    E_x p(c|x) is over the global batch (ranks.global_mean), so the term, like the rest of
    a step, does not depend on the number of ranks.
    Reports `mi/real/<code>`, the estimate of I(x; c) on the batch (at most ln K)."""

    view, head, roles, stat = "real", "q", ("D",), "real"

    def mi(self, logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=1)
        p = logp.exp()
        cond = -(p * logp).sum(dim=1).mean()
        marginal = global_mean(p)
        return -(marginal * torch.log(marginal.clamp_min(1e-12))).sum() - cond


@register_term("real_iic")
class RealIIC(CodesMI):
    """Q's categorical codes on *real* images and on moved copies of them
    (loss.extra.real_iic): maximise I(c(x); c(x')) of the two predictions, where x' is x
    rotated, scaled and shifted by augment.random_affine (IIC, Ji et al. 2019, with one
    head and no overclustering). Its joint P = E_x p(c|x) p(c|x')^T (symmetrised) wants
    each image's class confident, the same under the move, and all classes used: on real
    data, what loss.q_augment asks of Q on fakes. Like real_mi, P is a mean over the
    global batch (ranks.global_mean), so the term does not depend on the number of ranks.
    Reports `mi/iic/<code>` (at most ln K)."""

    view, head, roles, stat = "real_pair", "q", ("D",), "iic"

    def mi(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits, dim=1)
        n = p.shape[0] // 2  # rows: the real batch, then its moved copy
        joint = global_mean(p[:n, :, None] * p[n:, None, :])
        joint = (joint + joint.T) / 2
        log = torch.log(joint.clamp_min(1e-12))
        rows = torch.log(joint.sum(dim=1, keepdim=True).clamp_min(1e-12))
        cols = torch.log(joint.sum(dim=0, keepdim=True).clamp_min(1e-12))
        return (joint * (log - rows - cols)).sum()
