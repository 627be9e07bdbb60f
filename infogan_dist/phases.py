"""The updates of one iteration, as data: a list of (name, optimizer, run).

The trainer's loop is only "for each phase: zero_grad, run (forward + backward), step".
Each `run` pairs every DDP forward with its own backward (DDP does not support several
forwards of one module before a backward) and asks D only for the head it uses, so DDP
(with find_unused_parameters) sees the other head as unused rather than waiting for it.

three_optimizers (the seed): D step on real vs detached fake; G step (non-saturating)
through a frozen D; info step on fresh latents over G's and D's parameters.
paper (the authors' code): the info loss is added to the D loss and to the G loss, two
optimizers; D's trunk and Q move with D.
loss.q_augment > 0 adds Q's categorical loss on transformed fakes (augment.py): in the
paper update one more D forward in each phase; in the info step the transformed copies
join the fakes in one D forward of twice the batch.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import augment, losses
from .config import Config
from .latent import Latent, LatentSpace

Stats = dict[str, torch.Tensor]

# Keys of the latent draws: the D and G phases share one fake batch, info draws afresh.
# AUG_DRAW keys the transform parameters of loss.q_augment.
FAKE_DRAW, INFO_DRAW, AUG_DRAW = 0, 2, 3


@dataclass
class StepContext:
    """What a phase needs for one iteration. G and D are the prepared (DDP) modules,
    G_raw and D_raw the same modules unwrapped."""

    cfg: Config
    space: LatentSpace
    step: int
    real: torch.Tensor
    G: nn.Module
    D: nn.Module
    G_raw: nn.Module
    D_raw: nn.Module
    sample: Callable[[int], Latent]  # draw key -> this rank's latents on the device
    uniforms: Callable[[int], torch.Tensor]  # draw key -> this rank's transform parameters
    backward: Callable[[torch.Tensor], None]
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass
class Phase:
    name: str
    optimizer: torch.optim.Optimizer
    run: Callable[[StepContext], Stats]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No weight gradients for `module` during the forward (backward still flows through
    it to the generator). Used with the unwrapped D, so DDP never sees this forward."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(f)


def _info(ctx: StepContext, q: torch.Tensor, latent: Latent) -> tuple[torch.Tensor, Stats]:
    return ctx.space.info_loss(q, latent, ctx.cfg.loss.lambda_cat, ctx.cfg.loss.lambda_cont)


def _q_augment_loss(ctx: StepContext, q: torch.Tensor, latent: Latent) -> torch.Tensor:
    """q_augment * lambda_cat * CE of Q's categories, q from transformed fakes."""
    weight = ctx.cfg.loss.q_augment * ctx.cfg.loss.lambda_cat
    return ctx.space.info_loss(q, latent, weight, 0.0)[0]


def _q_augmented(ctx: StepContext, D: nn.Module, fake: torch.Tensor, latent: Latent
                 ) -> torch.Tensor:
    """_q_augment_loss on transformed copies of `fake`, through D."""
    with ctx.autocast():
        _, q = D(augment.random_affine(fake, ctx.uniforms(AUG_DRAW)), head="q")
        return _q_augment_loss(ctx, q, latent)


def d_phase(ctx: StepContext) -> Stats:
    kind, paper = ctx.cfg.loss.adversarial, ctx.cfg.train.update == "paper"
    latent = ctx.sample(FAKE_DRAW)
    with ctx.autocast():
        # Kept with its graph: the G phase backpropagates through this same batch.
        fake = ctx.G(ctx.space.generator_input(latent))
    ctx.cache["fake"], ctx.cache["latent"] = fake, latent
    with ctx.autocast():
        real_logit, _ = ctx.D(ctx.real, head="adv")
        loss_real = losses.d_loss_real(kind, real_logit)
    ctx.backward(loss_real)
    stats: Stats = {}
    with ctx.autocast():
        fake_logit, q = ctx.D(fake.detach(), head="both" if paper else "adv")
        loss_fake = losses.d_loss_fake(kind, fake_logit)
        total = loss_fake
        if paper:
            info, _ = _info(ctx, q, latent)
            total = loss_fake + info
    ctx.backward(total)
    if paper and ctx.cfg.loss.q_augment > 0:  # its own forward, so its own backward
        aug = _q_augmented(ctx, ctx.D, fake.detach(), latent)
        ctx.backward(aug)
        stats["loss/q_augment"] = aug.detach()
    stats["loss/D"] = (loss_real + loss_fake).detach()
    stats["D/real"] = losses.d_score(kind, real_logit)
    stats["D/fake"] = losses.d_score(kind, fake_logit)
    return stats


def g_phase(ctx: StepContext) -> Stats:
    kind, paper = ctx.cfg.loss.adversarial, ctx.cfg.train.update == "paper"
    fake, latent = ctx.cache.pop("fake"), ctx.cache.pop("latent")
    with ctx.autocast(), frozen(ctx.D_raw):
        logit, q = ctx.D_raw(fake, head="both" if paper else "adv")
        loss = losses.g_loss(kind, logit)
        stats: Stats = {"loss/G": loss.detach()}
        if paper:
            info, mi = _info(ctx, q, latent)
            loss = loss + info
            stats |= {"loss/info": info.detach(), **mi}
            if ctx.cfg.loss.q_augment > 0:
                loss = loss + _q_augmented(ctx, ctx.D_raw, fake, latent)
    ctx.backward(loss)
    return stats


def info_phase(ctx: StepContext) -> Stats:
    latent = ctx.sample(INFO_DRAW)
    augmented = ctx.cfg.loss.q_augment > 0
    with ctx.autocast():
        fake = ctx.G(ctx.space.generator_input(latent))
        n = fake.shape[0]
        if augmented:  # one D forward over both halves: G's graph has a single backward
            fake = torch.cat([fake, augment.random_affine(fake, ctx.uniforms(AUG_DRAW))])
        _, q = ctx.D(fake, head="q")
        loss, mi = _info(ctx, q[:n], latent)
        stats: Stats = {"loss/info": loss.detach(), **mi}
        if augmented:
            aug = _q_augment_loss(ctx, q[n:], latent)
            loss = loss + aug
            stats["loss/q_augment"] = aug.detach()
    ctx.backward(loss)
    return stats


def build_optimizers(cfg: Config, G: nn.Module, D: nn.Module) -> dict[str, torch.optim.Optimizer]:
    """Parameter lists are built in module order, the same every run, so a resumed
    optimizer state lands on the same tensors."""
    betas = tuple(cfg.optim.betas)
    opts = {
        "D": torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=betas),
        "G": torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=betas),
    }
    if cfg.train.update == "three_optimizers":
        opts["info"] = torch.optim.Adam(
            itertools.chain(G.parameters(), D.parameters()), lr=cfg.optim.lr_info, betas=betas
        )
    return opts


def build_phases(cfg: Config, optimizers: dict[str, torch.optim.Optimizer]) -> list[Phase]:
    phases = [Phase("D", optimizers["D"], d_phase), Phase("G", optimizers["G"], g_phase)]
    if cfg.train.update == "three_optimizers":
        phases.append(Phase("info", optimizers["info"], info_phase))
    return phases
