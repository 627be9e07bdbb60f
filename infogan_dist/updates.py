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

- "own": the phase's terms make and judge their own images (view "own": the term's
  `own(inputs, phase)`), through the prepared modules they name; one backward of their
  sum. The phases extensions add have this role.
A term of view "own" may also join "G" and "info" phases; there it judges with the
unwrapped modules, which a G phase freezes (D and every extension part).

Extensions (docs/extending-infogan-cr.md): `register_extension` registers a loss term
together with the model parts it needs (built like G and D, prepared by Accelerate,
checkpointed, rank-checked), their optimizers and the phases that train them; all of it
exists only when loss.extra.<name> > 0, and its phases run from loss.extra_start.<name>.
train.g_steps > 1 repeats the rule's G phase, each repeat with fresh latents of its own
draw key. Extension phases run after the rule's phases.

three_optimizers (the seed): D on real vs detached fake; G (non-saturating) through a
frozen D; info on fresh latents over G's and D's parameters.
paper (the authors' code): the info loss joins the D loss and the G loss; two
optimizers; D's trunk and Q move with D. loss.q_augment joins both of its phases (its
statistics are reported from the D phase).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import augment
from .config import Config, ConfigError
from .latent import Latent, LatentSpace, keyed_generator
from .registry import Registry
from .terms import LOSS_TERMS, OWN, LossTerm, Stats, View, register_term

# Keys of the latent draws: the D and G phases share one fake batch, info draws afresh.
# AUG_DRAW and REAL_AUG_DRAW key the transform parameters of the augmented and real_pair
# views. The k-th repeat of a G phase (train.g_steps) draws G_REPEAT_DRAW + k.
FAKE_DRAW, INFO_DRAW, AUG_DRAW, REAL_AUG_DRAW, G_REPEAT_DRAW = 0, 2, 3, 4, 16
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
    # extension parts by name (UpdateRule.build_parts): prepared (DDP), and unwrapped
    parts: dict[str, nn.Module] = field(default_factory=dict)
    parts_raw: dict[str, nn.Module] = field(default_factory=dict)
    # draw key -> a CPU generator for a draw over the *global* batch, keyed by (seed,
    # step, key[, rollbacks]); a rank uses `rows` of it, so a draw is world-size invariant
    generator: Callable[[int], torch.Generator] = lambda key: keyed_generator(key)
    rows: slice = field(default_factory=lambda: slice(None))  # this rank's rows of a global draw


@dataclass
class Fakes:
    """A generated batch (with G's graph) and the latents behind it."""

    images: torch.Tensor
    latent: Latent


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    # "G", "D" or extension part names: parameters in this order, the same every run
    modules: tuple[str, ...]
    lr: str  # the optim.* key of its learning rate


@dataclass(frozen=True)
class PhaseSpec:
    name: str  # also the name of the optimizer it steps
    role: str  # "D", "G", "info" or "own" (module docstring)
    terms: tuple[str, ...]  # built-in loss terms, in the order they are summed
    draw: int | None  # latent draw key of the fakes it makes; None: the batch handed on
    quiet: tuple[str, ...] = ()  # terms whose statistics another phase reports


# An extension part: (config, latent space, image shape [C, H, W]) -> a plain module
PartBuilder = Callable[[Config, LatentSpace, tuple[int, int, int]], nn.Module]


@dataclass(frozen=True)
class Extension:
    """What an extension term brings besides itself (register_extension)."""

    parts: dict[str, PartBuilder] = field(default_factory=dict)  # name -> builder
    optimizers: tuple[OptimizerSpec, ...] = ()  # over its parts (or G and D)
    phases: tuple[PhaseSpec, ...] = ()  # run after the rule's phases, in this order


EXTENSIONS: Registry[Extension] = Registry("loss.extra")


def register_extension(name: str, *, parts: dict[str, PartBuilder] | None = None,
                       optimizers: tuple[OptimizerSpec, ...] = (),
                       phases: tuple[PhaseSpec, ...] = ()):
    """Class decorator: registers a LossTerm under `name` (its loss.extra key), like
    register_term, together with the model parts, optimizers and phases it needs. They
    exist only when loss.extra.<name> > 0."""

    def add(cls: type[LossTerm]) -> type[LossTerm]:
        register_term(name)(cls)
        EXTENSIONS.add(name, Extension(dict(parts or {}), tuple(optimizers), tuple(phases)))
        return cls

    return add


def enabled_extensions(cfg: Config) -> list[tuple[str, Extension]]:
    """(name, extension) of every extension whose loss.extra weight is > 0, in
    registration order (the order of parts, optimizers and phases)."""
    return [(n, EXTENSIONS[n]) for n in EXTENSIONS if LOSS_TERMS[n].weight(cfg) > 0]


def part_names(cfg: Config) -> list[str]:
    """The extension parts a run of `cfg` builds (and its checkpoints hold), in order."""
    return [p for _, ext in enabled_extensions(cfg) for p in ext.parts]


def check_extensions(cfg: Config) -> None:
    """Config validation: what the enabled extension terms need (LossTerm.check) and
    names that do not collide. ConfigError naming the key."""
    rule = UPDATE_RULES[cfg.train.update]
    modules, optimizers = {"G", "D"}, {o.name for o in rule.optimizers}
    for name in LOSS_TERMS:
        term = LOSS_TERMS[name]
        if term.roles and term.weight(cfg) > 0:
            term.check(cfg)
    for name, ext in enabled_extensions(cfg):
        for part in ext.parts:
            if part in modules:
                raise ConfigError(f"config key loss.extra: bad value {name!r}; its model part "
                                  f"{part!r} is already built (by G, D or another extension)")
            modules.add(part)
        for o in ext.optimizers:
            if o.name in optimizers:
                raise ConfigError(f"config key loss.extra: bad value {name!r}; its optimizer "
                                  f"{o.name!r} exists already under train.update="
                                  f"{cfg.train.update} or another extension")
            optimizers.add(o.name)


@dataclass(frozen=True)
class UpdateRule:
    optimizers: tuple[OptimizerSpec, ...]
    phases: tuple[PhaseSpec, ...]

    def optimizer_specs(self, cfg: Config) -> tuple[OptimizerSpec, ...]:
        """The rule's optimizers, then those of the enabled extensions."""
        return self.optimizers + tuple(o for _, ext in enabled_extensions(cfg)
                                       for o in ext.optimizers)

    def phase_specs(self, cfg: Config) -> list[PhaseSpec]:
        """The rule's phases with each G phase repeated train.g_steps times (the repeats
        draw their own fakes), then the phases of the enabled extensions."""
        specs: list[PhaseSpec] = []
        for spec in self.phases:
            specs.append(spec)
            if spec.role == "G":
                specs += [dataclasses.replace(spec, draw=G_REPEAT_DRAW + k)
                          for k in range(1, cfg.train.g_steps)]
        return specs + [p for _, ext in enabled_extensions(cfg) for p in ext.phases]

    def build_parts(self, cfg: Config, space: LatentSpace,
                    image_shape: tuple[int, int, int]) -> dict[str, nn.Module]:
        """The enabled extensions' model parts, by name, in registration order (built
        after G and D, so their initial weights do not depend on the extensions)."""
        return {part: build(cfg, space, tuple(image_shape))
                for _, ext in enabled_extensions(cfg) for part, build in ext.parts.items()}

    def build_optimizers(self, cfg: Config, modules: dict[str, nn.Module],
                         device: torch.device = _CPU) -> dict[str, torch.optim.Optimizer]:
        """Parameter lists in module order, the same every run, so a resumed optimizer
        state lands on the same tensors. `modules`: "G", "D" and the extension parts.
        `device`: where training runs (optim.adam)."""
        return {
            o.name: torch.optim.Adam(
                itertools.chain.from_iterable(modules[m].parameters() for m in o.modules),
                lr=getattr(cfg.optim, o.lr), betas=tuple(cfg.optim.betas),
                **ADAM[cfg.optim.adam](device))
            for o in self.optimizer_specs(cfg)
        }

    def leaves_parameters_unused(self, cfg: Config) -> bool:
        """Whether some phase's backward through the DDP-wrapped D leaves one of D's
        heads without a gradient, which is when DDP needs find_unused_parameters=True.
        G has one output, so every phase that uses G uses all of it; an extension part
        is used whole by the phase that trains it."""
        return any(_HEADS - {LOSS_TERMS[n].head for n in _term_names(spec, cfg)
                             if LOSS_TERMS[n].view != OWN}
                   for spec in self.phase_specs(cfg) if _THROUGH_DDP[spec.role])

    def build_phases(self, cfg: Config, space: LatentSpace,
                     optimizers: dict[str, torch.optim.Optimizer]) -> list[Phase]:
        phases = []
        for index, spec in enumerate(self.phase_specs(cfg)):
            names = _term_names(spec, cfg)
            for n in names:
                if LOSS_TERMS[n].view == OWN and spec.role not in _OWN_ROLES:
                    raise ValueError(f"loss term {n!r} makes its own images (view {OWN!r}) "
                                     f"and can join only {', '.join(_OWN_ROLES)} phases, "
                                     f"not {spec.name!r} (role {spec.role})")
                if spec.role == OWN and LOSS_TERMS[n].view != OWN:
                    raise ValueError(f"phase {spec.name!r} (role {OWN}) takes only terms of "
                                     f"view {OWN!r}, not {n!r}")
            phases.append(Phase(
                spec, optimizers[spec.name], [LOSS_TERMS[n](cfg, space) for n in names],
                index=index, scheduled=tuple(n for n in names if n not in spec.terms)))
        return phases


_HEADS = {"adv", "q"}
# role -> whether its D forwards go through the DDP-wrapped D (G: the unwrapped, frozen D;
# own: no D, the extension's parts)
_THROUGH_DDP = {"D": True, "G": False, "info": True, OWN: False}
_OWN_ROLES = ("G", "info", OWN)  # where a term of view "own" may run


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
def frozen(*modules: nn.Module) -> Iterator[None]:
    """No weight gradients for `modules` during the forward (backward still flows through
    them to the generator). Used with the unwrapped modules, so DDP never sees these
    forwards."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)


Groups = dict[str, list[LossTerm]]  # view -> terms, in first-use order


class Phase:
    """One optimizer update: its terms grouped by view, run by its role. Terms whose
    schedule (loss.extra_start) has not begun sit out; a phase with none left is not
    run (`active`)."""

    def __init__(self, spec: PhaseSpec, optimizer: torch.optim.Optimizer,
                 terms: list[LossTerm], index: int = 0, scheduled: tuple[str, ...] = ()):
        self.name, self.role, self.spec = spec.name, spec.role, spec
        self.optimizer = optimizer
        self.terms = terms
        self.index = index  # position in the step's phases (keys draws of its own)
        self.scheduled = scheduled  # terms joined by role: their loss is ramped
        self.heads = {t.head for t in terms if t.view != OWN}  # D's heads, over all views
        self.groups = _group(terms)

    def active_terms(self, step: int) -> list[LossTerm]:
        return [t for t in self.terms if t.factor(t.cfg, step) > 0]

    def active(self, step: int) -> bool:
        """Whether the phase runs at `step` (some term's schedule has begun)."""
        return bool(self.active_terms(step))

    def run(self, inputs: StepInputs, handed: Fakes | None) -> tuple[Stats, Fakes | None]:
        """Forwards and backwards of this phase; returns its statistics and the fakes
        the next phase may use."""
        terms = self.active_terms(inputs.step)
        groups = self.groups if len(terms) == len(self.terms) else _group(terms)
        fakes = handed if self.spec.draw is None else self._make_fakes(inputs)
        stats: Stats = {}
        _RUNNERS[self.role](self, inputs, fakes, stats, groups)
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

    def _scaled(self, term: LossTerm, loss: torch.Tensor, step: int) -> torch.Tensor:
        """A term joined by role carries its ramp (loss.extra_ramp); statistics do not."""
        if term.name in self.scheduled:
            factor = term.factor(term.cfg, step)
            if factor != 1.0:
                loss = loss * factor
        return loss

    def _record(self, term: LossTerm, s: Stats, stats: Stats) -> None:
        """Statistics summed by name, except a quiet term's."""
        if term.name not in self.spec.quiet:
            for k, v in s.items():
                stats[k] = stats[k] + v if k in stats else v

    def _loss(self, view: View, terms: list[LossTerm], stats: Stats,
              step: int) -> torch.Tensor:
        """Sum of the view's terms in order; their statistics summed by name."""
        total = None
        for term in terms:
            loss, s = term(view)
            loss = self._scaled(term, loss, step)
            total = loss if total is None else total + loss
            self._record(term, s, stats)
        return total

    def _own(self, inputs: StepInputs, terms: list[LossTerm], stats: Stats,
             total: torch.Tensor | None) -> torch.Tensor | None:
        """Adds the losses of terms that make their own images (view "own")."""
        for term in terms:
            loss, s = term.own(inputs, self)
            loss = self._scaled(term, loss, inputs.step)
            total = loss if total is None else total + loss
            self._record(term, s, stats)
        return total


def _group(terms: list[LossTerm]) -> Groups:
    groups: Groups = {}
    for t in terms:
        groups.setdefault(t.view, []).append(t)
    return groups


def _head(terms: list[LossTerm]) -> str:
    heads = {t.head for t in terms}
    return "both" if len(heads) > 1 else heads.pop()


def _judge(D: nn.Module, view: View, terms: list[LossTerm]) -> View:
    view.logit, view.q = D(view.images, head=_head(terms))
    return view


def _run_d(phase: Phase, inputs: StepInputs, fakes: Fakes | None, stats: Stats,
           groups: Groups) -> None:
    items = list(groups.items())
    wrapped = inputs.D is not inputs.D_raw  # DDP: more than one process
    step = inputs.step
    for i, (name, terms) in enumerate(items):
        last = i == len(items) - 1
        # The earlier backwards accumulate locally; the last one all-reduces the sum.
        with contextlib.nullcontext() if last else inputs.no_sync(inputs.D):
            with inputs.autocast():
                view = phase._view(inputs, name, fakes, detach=True)
                missing = phase.heads - {t.head for t in terms} if last and wrapped else set()
                if not missing:
                    loss = phase._loss(_judge(inputs.D, view, terms), terms, stats, step)
                else:  # the synchronizing backward reaches every head (module docstring)
                    view.logit, view.q = inputs.D(view.images, head="both")
                    outputs = {"adv": view.logit, "q": view.q}
                    loss = phase._loss(view, terms, stats, step) + 0.0 * sum(
                        outputs[h].float().sum() for h in sorted(missing))
            inputs.backward(loss)


def _run_g(phase: Phase, inputs: StepInputs, fakes: Fakes | None, stats: Stats,
           groups: Groups) -> None:
    total = None
    with inputs.autocast(), frozen(inputs.D_raw, *inputs.parts_raw.values()):
        for name, terms in groups.items():
            if name == OWN:
                total = phase._own(inputs, terms, stats, total)
                continue
            view = _judge(inputs.D_raw, phase._view(inputs, name, fakes, detach=False), terms)
            loss = phase._loss(view, terms, stats, inputs.step)
            total = loss if total is None else total + loss
    inputs.backward(total)


def _run_info(phase: Phase, inputs: StepInputs, fakes: Fakes | None, stats: Stats,
              groups: Groups) -> None:
    with inputs.autocast():
        names = [n for n in groups if n != OWN]
        views = [phase._view(inputs, name, fakes, detach=False) for name in names]
        total = None
        if views:
            images = views[0].images if len(views) == 1 else torch.cat([v.images for v in views])
            logit, q = inputs.D(images, head=_head([t for n in names for t in groups[n]]))
            start = 0
            for v in views:
                rows = slice(start, start + len(v.images))
                start = rows.stop
                v.logit = None if logit is None else logit if len(views) == 1 else logit[rows]
                v.q = None if q is None else q if len(views) == 1 else q[rows]
                loss = phase._loss(v, groups[v.name], stats, inputs.step)
                total = loss if total is None else total + loss
        total = phase._own(inputs, groups.get(OWN, []), stats, total)
    inputs.backward(total)


def _run_own(phase: Phase, inputs: StepInputs, fakes: Fakes | None, stats: Stats,
             groups: Groups) -> None:
    with inputs.autocast():
        total = phase._own(inputs, groups[OWN], stats, None)
    inputs.backward(total)


_RUNNERS = {"D": _run_d, "G": _run_g, "info": _run_info, OWN: _run_own}
