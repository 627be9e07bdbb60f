"""InfoGAN-CR's contrastive regulariser (Lin et al., "InfoGAN-CR and ModelCentrality",
ICML 2020), as one extension: `loss.extra={contrastive: W}`.

A pair of generated images shares the noise z and the value of one continuous code i
(i uniform per pair; every other code drawn independently for each image). The CR
discriminator `cr` (D's trunk on the pair stacked as channels, 2C x H x W, and a linear
head with one logit per continuous code) must name i. Both sides want it named:
- the phase "cr" (its own Adam over `cr`, lr optim.lr_d as in the authors' code) trains
  `cr` by cross-entropy on i, through the DDP-wrapped part, on pairs G made without a
  graph; it reports `loss/cr` and `cr/acc` (how often i was named: 1/K by chance);
- in every G phase (each of train.g_steps) the term adds W x that cross-entropy on fresh
  pairs, through the frozen, unwrapped `cr`, to G's loss; it reports `loss/contrastive`
  (the cross-entropy, before W).
Codes that each change one thing in the image are easy to name from a pair, so G is
pushed towards them.

Pairs are drawn over the global batch (train.global_batch_size pairs per step) from a
generator keyed by (seed, step, draw key) and each rank takes its rows: the same pairs on
1 rank or 8. Keys: the cr phase CR_DRAW, a G phase CR_DRAW + 1 + its position.

Schedule (the authors': weight 0 until step 288,000 of 322,560, then 2, and the CR
discriminator re-initialized at that step): loss.extra_start.contrastive. Before it
neither the term nor the cr phase runs, so `cr` starts training, from its initial
weights and an empty Adam state, at the step the term switches on: what the authors'
re-initialization gives, without the cost of training it before. loss.extra_ramp
ramps G's weight (the cr phase's loss is never scaled).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, ConfigError
from ..latent import Latent, LatentSpace
from ..models import build_models
from ..terms import LossTerm, Stats
from ..updates import OptimizerSpec, Phase, PhaseSpec, StepInputs, register_extension

CR_DRAW = 0xC2


class PairDiscriminator(nn.Module):
    """A trunk on image pairs stacked as channels, and one logit per continuous code."""

    def __init__(self, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(pairs))


def pair_discriminator(cfg: Config, space: LatentSpace,
                       image_shape: tuple[int, int, int]) -> PairDiscriminator:
    """D's trunk of model.arch (and model.width, model.spectral_norm) for 2C channels."""
    c, h, w = image_shape
    _, D = build_models(cfg.model, space.input_dim, space.q_dim, (2 * c, h, w))
    return PairDiscriminator(D.trunk, nn.Linear(D.adv.in_features, space.num_continuous))


def sample_pairs(space: LatentSpace, n: int,
                 generator: torch.Generator) -> tuple[Latent, Latent, torch.Tensor]:
    """n pairs (a, b) and the continuous code `shared` [n] each pair has in common: b's
    noise is a's, b's code shared[r] is a's; everything else is drawn independently."""
    a = space.sample(n, generator)
    b = space.sample(n, generator)
    shared = torch.randint(space.num_continuous, (n,), generator=generator)
    rows = torch.arange(n)
    b.z = a.z.clone()
    b.cont[rows, shared] = a.cont[rows, shared]
    return a, b, shared


def stack_pairs(images: torch.Tensor) -> torch.Tensor:
    """[2n, C, H, W] (all a, then all b) -> [n, 2C, H, W]."""
    a, b = images.chunk(2)
    return torch.cat([a, b], dim=1)


@register_extension(
    "contrastive",
    parts={"cr": pair_discriminator},
    optimizers=(OptimizerSpec("cr", ("cr",), "lr_d"),),
    phases=(PhaseSpec("cr", "own", ("contrastive",), None),),
)
class Contrastive(LossTerm):
    """InfoGAN-CR's contrastive regulariser (docs/infogan-cr.md): pairs of fakes share z
    and one continuous code; a CR discriminator (model part `cr`: D's trunk on the pair
    stacked as channels, with its own Adam and phase) learns to name that code, and
    every G step adds the weight times its cross-entropy to G's loss. Needs
    latent.continuous >= 2. Reports loss/cr and cr/acc (the CR discriminator's
    cross-entropy and accuracy, 1/K by chance) and loss/contrastive (G's)."""

    view, roles = "own", ("G",)

    @classmethod
    def check(cls, cfg: Config) -> None:
        if cfg.latent.continuous < 2:
            raise ConfigError(
                f"config key loss.extra: bad value 'contrastive'; it needs latent.continuous "
                f">= 2 (the CR discriminator names which continuous code a pair shares), "
                f"not {cfg.latent.continuous}")

    def _pairs(self, inputs: StepInputs, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's pairs: G's input for all a then all b, and the shared codes."""
        n = inputs.cfg.train.global_batch_size
        a, b, shared = sample_pairs(self.space, n, inputs.generator(key))
        a, b, shared = a[inputs.rows], b[inputs.rows], shared[inputs.rows]
        device = inputs.real.device
        latent = Latent(torch.cat([a.z, b.z]), torch.cat([a.cat, b.cat]),
                        torch.cat([a.cont, b.cont])).to(device)
        return self.space.generator_input(latent), shared.to(device)

    def own(self, inputs: StepInputs, phase: Phase) -> tuple[torch.Tensor, Stats]:
        if phase.role == "own":  # the cr phase: train the CR discriminator
            g_input, shared = self._pairs(inputs, CR_DRAW)
            with torch.no_grad():
                images = inputs.G_raw(g_input)
            logits = inputs.parts["cr"](stack_pairs(images)).float()
            ce = F.cross_entropy(logits, shared)
            named = (logits.detach().argmax(dim=1) == shared).float().mean()
            return ce, {"loss/cr": ce.detach(), "cr/acc": named}
        # a G phase: G learns through the frozen, unwrapped CR discriminator. G's forward
        # is unwrapped too (DDP saw this step's G forward when the fakes were made; its
        # gradient hooks all-reduce the sum of both in the phase's one backward).
        g_input, shared = self._pairs(inputs, CR_DRAW + 1 + phase.index)
        logits = inputs.parts_raw["cr"](stack_pairs(inputs.G_raw(g_input))).float()
        ce = F.cross_entropy(logits, shared)
        return self.weight(self.cfg) * ce, {"loss/contrastive": ce.detach()}
