"""Update rules as data: one UpdateRule per `train.update` value (UPDATE_RULES), listing
its optimizers and its phases; each phase lists the loss terms (terms.py) it sums, in
order. The trainer's loop is only "for each phase: zero_grad, run, step", and the fake
batch travels from phase to phase explicitly (Phase.run takes and returns it).

A phase's role says how D is used, which is where the DDP rules live:
- "D": D learns. The fakes are detached; every view of the images (real, fake,
  augmented) is its own forward of the DDP-wrapped D paired with its own backward
  (DDP does not support several forwards of one module before a backward). All but
  the last backward run under `no_sync` and accumulate locally; the last one
  all-reduces the sum: one gradient all-reduce per optimizer step.
- "G": G learns through a frozen, unwrapped D (DDP never sees these forwards): one
  forward per view, one backward of their sum.
- "info": G and D (trunk and Q) learn from fresh fakes. All views go through the
  DDP-wrapped D in ONE forward (concatenated), so G's graph has a single backward.
Each forward asks D only for the heads its terms read, so DDP (find_unused_parameters)
sees the other head as unused rather than waiting for its gradients. find_unused_parameters
costs a graph traversal per backward, so it is on only where a phase really leaves part
of D unused (`UpdateRule.leaves_parameters_unused`). Where a D phase uses both heads
over its views but its last, synchronizing view reads one, that forward (under DDP
only) also computes the other head and adds it with weight 0 (StyleGAN2-ADA's trick):
DDP sees every parameter in the backward that all-reduces, the gradients gain exact
zeros, and one process (no DDP) runs exactly what it ran before.

three_optimizers (the seed): D on real vs detached fake; G (non-saturating) through a
frozen D; info on fresh latents over G's and D's parameters.
paper (the authors' code): the info loss joins the D loss and the G loss; two
optimizers; D's trunk and Q move with D. loss.q_augment joins both of its phases (its
statistics are reported from the D phase).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import augment
from .config import Config
from .latent import Latent, LatentSpace
from .registry import Registry
from .terms import LOSS_TERMS, LossTerm, Stats, View

# Keys of the latent draws: the D and G phases share one fake batch, info draws afresh.
# AUG_DRAW and REAL_AUG_DRAW key the transform parameters of the augmented and real_pair
# views.
FAKE_DRAW, INFO_DRAW, AUG_DRAW, REAL_AUG_DRAW = 0, 2, 3, 4
_CPU = torch.device("cpu")


@dataclass
class StepInputs:
    """What the phases of one iteration share. G and D are the prepared (DDP) modules,
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
    # module -> DDP's no_sync (gradients accumulate locally); a no-op on one process
    no_sync: Callable[[nn.Module], contextlib.AbstractContextManager[Any]] = (
        lambda module: contextlib.nullcontext())


@dataclass
class Fakes:
    """A generated batch (with G's graph) and the latents behind it."""

    images: torch.Tensor
    latent: Latent


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    modules: tuple[str, ...]  # "G", "D": parameters in this order, the same every run
    lr: str  # the optim.* key of its learning rate


@dataclass(frozen=True)
class PhaseSpec:
    name: str  # also the name of the optimizer it steps
    role: str  # "D", "G" or "info" (module docstring)
    terms: tuple[str, ...]  # built-in loss terms, in the order they are summed
    draw: int | None  # latent draw key of the fakes it makes; None: the batch handed on
    quiet: tuple[str, ...] = ()  # terms whose statistics another phase reports


@dataclass(frozen=True)
class UpdateRule:
    optimizers: tuple[OptimizerSpec, ...]
    phases: tuple[PhaseSpec, ...]

    def build_optimizers(self, cfg: Config, G: nn.Module, D: nn.Module,
                         device: torch.device = _CPU) -> dict[str, torch.optim.Optimizer]:
        """Parameter lists in module order, the same every run, so a resumed optimizer
        state lands on the same tensors. `device`: where training runs (optim.adam)."""
        modules = {"G": G, "D": D}
        return {
            o.name: torch.optim.Adam(
                itertools.chain.from_iterable(modules[m].parameters() for m in o.modules),
                lr=getattr(cfg.optim, o.lr), betas=tuple(cfg.optim.betas),
                **ADAM[cfg.optim.adam](device))
            for o in self.optimizers
        }

    def leaves_parameters_unused(self, cfg: Config) -> bool:
        """Whether some phase's backward through the DDP-wrapped D leaves one of D's
        heads without a gradient, which is when DDP needs find_unused_parameters=True.
        G has one output, so every phase that uses G uses all of it."""
        return any(_HEADS - {LOSS_TERMS[n].head for n in _term_names(spec, cfg)}
                   for spec in self.phases if _THROUGH_DDP[spec.role])

    def build_phases(self, cfg: Config, space: LatentSpace,
                     optimizers: dict[str, torch.optim.Optimizer]) -> list[Phase]:
        return [Phase(spec, optimizers[spec.name],
                      [LOSS_TERMS[n](cfg, space) for n in _term_names(spec, cfg)])
                for spec in self.phases]


_HEADS = {"adv", "q"}
# role -> whether its D forwards go through the DDP-wrapped D (G: the unwrapped, frozen D)
_THROUGH_DDP = {"D": True, "G": False, "info": True}


def _term_names(spec: PhaseSpec, cfg: Config) -> list[str]:
    """The phase's terms that are on: built-in ones in order, then extensions by role."""
    names = [*spec.terms, *(n for n in LOSS_TERMS if spec.role in LOSS_TERMS[n].roles)]
    return [n for n in names if LOSS_TERMS[n].weight(cfg) > 0]


def _fused_devices() -> list[str]:
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return _get_fused_kernels_supported_devices()


# optim.adam: device -> torch.optim.Adam keyword arguments. The implementations differ
# in summation order only (the same update rule); the state (step, exp_avg, exp_avg_sq)
# has the same keys, so a checkpoint resumes under any of them (torch moves `step` to
# the device fused Adam wants). fused: one kernel over all tensors (CPU: 7.0 -> 1.6 ms
# per step of the seed's MLP parameters, docs/benchmarks/2026-11-30-communication-lean-step.md).
ADAM: Registry[Callable[[torch.device], dict[str, bool]]] = Registry("optim.adam")
ADAM.add("auto", lambda device: {"fused": True} if device.type in _fused_devices()
         else {"foreach": True})
ADAM.add("fused", lambda device: {"fused": True})
ADAM.add("foreach", lambda device: {"foreach": True})
ADAM.add("for_loop", lambda device: {"foreach": False})
ADAM.add("torch_default", lambda device: {})  # for_loop on CPU, foreach on CUDA

UPDATE_RULES: Registry[UpdateRule] = Registry("train.update")
UPDATE_RULES.add("three_optimizers", UpdateRule(
    optimizers=(OptimizerSpec("D", ("D",), "lr_d"), OptimizerSpec("G", ("G",), "lr_g"),
                OptimizerSpec("info", ("G", "D"), "lr_info")),
    phases=(PhaseSpec("D", "D", ("adversarial_real", "adversarial_fake"), FAKE_DRAW),
            PhaseSpec("G", "G", ("adversarial_g",), None),
            PhaseSpec("info", "info", ("info", "q_augment"), INFO_DRAW)),
))
UPDATE_RULES.add("paper", UpdateRule(
    optimizers=(OptimizerSpec("D", ("D",), "lr_d"), OptimizerSpec("G", ("G",), "lr_g")),
    phases=(PhaseSpec("D", "D", ("adversarial_real", "adversarial_fake", "info", "q_augment"),
                      FAKE_DRAW),
            PhaseSpec("G", "G", ("adversarial_g", "info", "q_augment"), None,
                      quiet=("q_augment",))),
))


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


class Phase:
    """One optimizer update: its terms grouped by view, run by its role."""

    def __init__(self, spec: PhaseSpec, optimizer: torch.optim.Optimizer,
                 terms: list[LossTerm]):
        self.name, self.role, self.spec = spec.name, spec.role, spec
        self.optimizer = optimizer
        self.terms = terms
        self.heads = {t.head for t in terms}  # D's heads the phase reads, over all views
        self.groups: dict[str, list[LossTerm]] = {}  # view -> terms, in first-use order
        for t in terms:
            self.groups.setdefault(t.view, []).append(t)

    def run(self, inputs: StepInputs, handed: Fakes | None) -> tuple[Stats, Fakes | None]:
        """Forwards and backwards of this phase; returns its statistics and the fakes
        the next phase may use."""
        fakes = handed if self.spec.draw is None else self._make_fakes(inputs)
        stats: Stats = {}
        _RUNNERS[self.role](self, inputs, fakes, stats)
        return stats, fakes

    def _make_fakes(self, inputs: StepInputs) -> Fakes:
        latent = inputs.sample(self.spec.draw)
        with inputs.autocast():
            return Fakes(inputs.G(inputs.space.generator_input(latent)), latent)

    def _view(self, inputs: StepInputs, name: str, fakes: Fakes | None, detach: bool) -> View:
        if name == "real":
            return View(name, inputs.real, None)
        if name == "real_pair":  # one forward, so BatchNorm sees both halves together
            moved = augment.random_affine(inputs.real, inputs.uniforms(REAL_AUG_DRAW))
            return View(name, torch.cat([inputs.real, moved]), None)
        images = fakes.images.detach() if detach else fakes.images
        if name == "augmented":
            images = augment.random_affine(images, inputs.uniforms(AUG_DRAW))
        return View(name, images, fakes.latent)

    def _loss(self, view: View, stats: Stats) -> torch.Tensor:
        """Sum of the view's terms in order; their statistics summed by name."""
        total = None
        for term in self.groups[view.name]:
            loss, s = term(view)
            total = loss if total is None else total + loss
            if term.name not in self.spec.quiet:
                for k, v in s.items():
                    stats[k] = stats[k] + v if k in stats else v
        return total


def _head(terms: list[LossTerm]) -> str:
    heads = {t.head for t in terms}
    return "both" if len(heads) > 1 else heads.pop()


def _judge(D: nn.Module, view: View, terms: list[LossTerm]) -> View:
    view.logit, view.q = D(view.images, head=_head(terms))
    return view


def _run_d(phase: Phase, inputs: StepInputs, fakes: Fakes | None, stats: Stats) -> None:
    groups = list(phase.groups.items())
    wrapped = inputs.D is not inputs.D_raw  # DDP: more than one process
    for i, (name, terms) in enumerate(groups):
        last = i == len(groups) - 1
        # The earlier backwards accumulate locally; the last one all-reduces the sum.
        with contextlib.nullcontext() if last else inputs.no_sync(inputs.D):
            with inputs.autocast():
                view = phase._view(inputs, name, fakes, detach=True)
                missing = phase.heads - {t.head for t in terms} if last and wrapped else set()
                if not missing:
                    loss = phase._loss(_judge(inputs.D, view, terms), stats)
                else:  # the synchronizing backward reaches every head (module docstring)
                    view.logit, view.q = inputs.D(view.images, head="both")
                    outputs = {"adv": view.logit, "q": view.q}
                    loss = phase._loss(view, stats) + 0.0 * sum(
                        outputs[h].float().sum() for h in sorted(missing))
            inputs.backward(loss)


def _run_g(phase: Phase, inputs: StepInputs, fakes: Fakes | None, stats: Stats) -> None:
    total = None
    with inputs.autocast(), frozen(inputs.D_raw):
        for name, terms in phase.groups.items():
            view = _judge(inputs.D_raw, phase._view(inputs, name, fakes, detach=False), terms)
            loss = phase._loss(view, stats)
            total = loss if total is None else total + loss
    inputs.backward(total)


def _run_info(phase: Phase, inputs: StepInputs, fakes: Fakes | None, stats: Stats) -> None:
    with inputs.autocast():
        views = [phase._view(inputs, name, fakes, detach=False) for name in phase.groups]
        images = views[0].images if len(views) == 1 else torch.cat([v.images for v in views])
        logit, q = inputs.D(images, head=_head(phase.terms))
        total, start = None, 0
        for v in views:
            rows = slice(start, start + len(v.images))
            start = rows.stop
            v.logit = None if logit is None else logit if len(views) == 1 else logit[rows]
            v.q = None if q is None else q if len(views) == 1 else q[rows]
            loss = phase._loss(v, stats)
            total = loss if total is None else total + loss
    inputs.backward(total)


_RUNNERS = {"D": _run_d, "G": _run_g, "info": _run_info}
