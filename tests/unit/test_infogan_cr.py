"""InfoGAN-CR as an extension (infogan_dist/extensions/infogan_cr.py), on real modules
and the real phases of the update rules (no DDP needed: the rules are the same on one
rank): the pairs, the CR discriminator's known answer, which phases the term joins and
what each moves, its schedule, and train.g_steps."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from infogan_dist import augment
from infogan_dist.choices import load_config
from infogan_dist.config import ConfigError
from infogan_dist.extensions.infogan_cr import PairDiscriminator, sample_pairs
from infogan_dist.latent import LatentSpace, keyed_generator, rank_rows
from infogan_dist.models import build_models
from infogan_dist.updates import UPDATE_RULES, StepInputs, part_names

BATCH = 16


def setup(*extra, shape=(1, 8, 8), G=None, step=0):
    """Models, phases and the step's inputs of a tiny run; `G` replaces the generator."""
    cfg = load_config(None, ["model.arch=mlp", "model.width=0.25", "latent.noise_dim=4",
                             "latent.categorical=[]", "latent.continuous=3",
                             f"train.global_batch_size={BATCH}", *extra])
    torch.manual_seed(0)
    space = LatentSpace(cfg.latent)
    G_built, D = build_models(cfg.model, space.input_dim, space.q_dim, shape)
    G = G or G_built
    rule = UPDATE_RULES[cfg.train.update]
    parts = rule.build_parts(cfg, space, shape)
    phases = rule.build_phases(cfg, space, rule.build_optimizers(cfg, {"G": G, "D": D, **parts}))
    ctx = inputs(cfg, space, G, D, parts, step, torch.rand(BATCH, *shape) * 2 - 1)
    return cfg, G, D, parts, phases, ctx


def inputs(cfg, space, G, D, parts, step, real):
    return StepInputs(
        cfg=cfg, space=space, step=step, real=real, G=G, D=D, G_raw=G, D_raw=D,
        sample=lambda k: space.sample_step(0, step, k, BATCH, 0, 1),
        uniforms=lambda k: augment.step_uniforms(0, step, k, BATCH, 0, 1),
        backward=lambda loss: loss.backward(), autocast=contextlib.nullcontext,
        parts=parts, parts_raw=parts, generator=lambda key: keyed_generator(step, key))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before, module):
    return {k for k, v in module.named_parameters() if not torch.equal(v, before[k])}


def run(phase, ctx):
    phase.optimizer.zero_grad(set_to_none=True)
    stats, ctx.fakes = phase.run(ctx, getattr(ctx, "fakes", None))
    phase.optimizer.step()
    return stats


# --- the pairs ---------------------------------------------------------------------------
def test_pairs_share_the_noise_and_one_code_and_nothing_else():
    space = LatentSpace(load_config(None, ["latent.categorical=[4]", "latent.continuous=5",
                                           "latent.noise_dim=5"]).latent)
    a, b, shared = sample_pairs(space, 4000, keyed_generator(1))
    assert torch.equal(a.z, b.z)
    rows = torch.arange(4000)
    assert torch.equal(a.cont[rows, shared], b.cont[rows, shared])
    others = torch.ones_like(a.cont, dtype=torch.bool)
    others[rows, shared] = False
    assert (a.cont[others] != b.cont[others]).all()  # drawn independently
    assert (a.cat != b.cat).float().mean() > 0.5  # categorical codes too (3/4 differ)
    counts = torch.bincount(shared, minlength=5).float() / 4000
    assert (counts - 0.2).abs().max() < 0.03  # i uniform over the continuous codes


def test_pairs_are_the_rows_of_one_global_draw_whatever_the_world_size():
    cfg, G, D, parts, phases, ctx = setup("loss.extra={contrastive: 1.0}")
    term = phases[-1].terms[0]
    full_input, full_shared = term._pairs(ctx, 7)
    halves = []
    for r in range(2):
        ctx.rows = rank_rows(BATCH, r, 2)
        halves.append(term._pairs(ctx, 7))
    # each rank's G input is [its a rows; its b rows]: compare the a and b halves
    a = torch.cat([h[0][: BATCH // 2] for h in halves])
    b = torch.cat([h[0][BATCH // 2:] for h in halves])
    assert torch.equal(torch.cat([a, b]), full_input)
    assert torch.equal(torch.cat([h[1] for h in halves]), full_shared)


# --- the CR discriminator's known answer ---------------------------------------------------
class BlockG(nn.Module):
    """A fixed generator of 1x8x8 images: row j of the image is continuous code j (or,
    with `codes=False`, a fixed function of the noise only), the other rows the noise."""

    def __init__(self, space: LatentSpace, codes: bool):
        super().__init__()
        self.space, self.codes = space, codes
        self.mix = nn.Linear(space.cfg.noise_dim, 8 * 8, bias=False).requires_grad_(False)

    def forward(self, x):
        z, cont = x[:, : self.space.cfg.noise_dim], x[:, -self.space.num_continuous:]
        image = torch.tanh(self.mix(z)).view(-1, 1, 8, 8).clone()
        k = cont.shape[1]
        rows = cont if self.codes else torch.tanh(self.mix(z))[:, :k]
        image[:, 0, :k, :] = rows[:, :, None].expand(-1, k, 8)
        return image


@pytest.mark.parametrize("codes", [True, False], ids=["codes-in-rows", "codes-ignored"])
def test_cr_discriminator_learns_to_name_the_shared_code_from_a_fixed_g(codes):
    """Known answer: when code j draws row j, a pair sharing code i has row i equal in
    both images, and the CR discriminator (trained alone, by its own phase) learns to
    name i: accuracy well above chance (1/3; the ceiling is below 1, as an unshared code
    can be drawn close to its partner). When G ignores the codes, nothing in a pair tells
    i apart and it stays near chance."""
    space = LatentSpace(load_config(None, ["latent.noise_dim=4", "latent.categorical=[]",
                                           "latent.continuous=3"]).latent)
    G = BlockG(space, codes)
    g0 = snapshot(G)
    accuracy = []
    for step in range(200):
        if step == 0:
            cfg, G, D, parts, phases, ctx = setup(
                "loss.extra={contrastive: 1.0}", "optim.lr_d=2e-3", G=G)
            cr = phases[-1]
            assert cr.name == "cr" and cr.role == "own"
        ctx = inputs(cfg, ctx.space, G, D, parts, step, ctx.real)
        accuracy.append(float(run(cr, ctx)["cr/acc"]))
    assert not changed(g0, G)
    late = sum(accuracy[-50:]) / 50  # fresh pairs every step: accuracy on unseen pairs
    if codes:
        assert late > 0.75, late
    else:
        assert late < 0.5, late


# --- which phases it joins and what each moves --------------------------------------------
@pytest.mark.parametrize("update", ["paper", "three_optimizers"])
def test_contrastive_joins_the_g_phases_and_its_own_phase_and_moves_what_it_should(update):
    after = {}
    for weight in (0, 1):
        extra = [f"train.update={update}", "train.g_steps=2"]
        if weight:
            extra.append("loss.extra={contrastive: 1.0}")
        cfg, G, D, parts, phases, ctx = setup(*extra)
        names = [p.name for p in phases]
        rule = ["D", "G", "G"] + (["info"] if update == "three_optimizers" else [])
        assert names == rule + (["cr"] if weight else [])
        assert set(parts) == ({"cr"} if weight else set())
        assert part_names(cfg) == list(parts)
        for phase in phases:
            modules = {"G": G, "D": D, **parts}
            before = {k: snapshot(m) for k, m in modules.items()}
            stats = run(phase, ctx)
            moved = {k for k, m in modules.items() if changed(before[k], m)}
            has_term = "loss/contrastive" in stats
            assert has_term == (bool(weight) and phase.role == "G"), (phase.name, stats)
            if phase.name == "cr":
                assert moved == {"cr"}, moved
                assert {"loss/cr", "cr/acc"} <= set(stats)
            else:
                assert "cr" not in moved, f"phase {phase.name} moved the CR discriminator"
                assert "loss/cr" not in stats
                # frozen where G learns from it: no gradient reaches it (under DDP one
                # would be all-reduced outside its own forward)
                assert all(p.grad is None for m in parts.values() for p in m.parameters())
        after[weight] = snapshot(G)
    assert any(not torch.equal(after[0][k], after[1][k]) for k in after[0]), \
        "the contrastive term did not reach G"


def test_cr_discriminator_uses_the_trunk_of_d_on_pairs():
    cfg, G, D, parts, phases, ctx = setup("loss.extra={contrastive: 1.0}",
                                          "model.arch=infogan_cr64", shape=(1, 64, 64))
    cr = parts["cr"]
    assert isinstance(cr, PairDiscriminator)
    convs = [m for m in cr.trunk if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 2 and [c.out_channels for c in convs] == [8, 8, 16, 16]
    assert cr(torch.zeros(3, 2, 64, 64)).shape == (3, 3)  # one logit per continuous code


# --- the schedule ---------------------------------------------------------------------------
def test_schedule_starts_the_term_and_its_phase_and_ramps_gs_weight():
    extra = ["loss.extra={contrastive: 1.0}", "loss.extra_start={contrastive: 3}",
             "loss.extra_ramp={contrastive: 2}", "train.update=paper"]
    cfg, G, D, parts, phases, ctx = setup(*extra)
    term = phases[-1].terms[0]
    assert [term.factor(cfg, s) for s in range(7)] == [0, 0, 0, 0.5, 1, 1, 1]
    assert [p.active(2) for p in phases] == [True, True, False]
    assert [p.active(3) for p in phases] == [True, True, True]
    _, fakes = phases[0].run(ctx, None)
    assert "loss/contrastive" not in phases[1].run(ctx, fakes)[0]  # step 0: before start

    def g_grads(step, *more):
        """G's gradient from the G phase alone, at `step`, from identical models."""
        cfg, G, D, parts, phases, ctx = setup(*more, step=0)
        ctx.step = step
        _, fakes = phases[0].run(ctx, None)
        phases[1].optimizer.zero_grad(set_to_none=True)
        stats, _ = phases[1].run(ctx, fakes)
        return torch.cat([p.grad.flatten() for p in G.parameters()]), stats

    plain, _ = g_grads(3, "train.update=paper")
    half, stats = g_grads(3, *extra)  # ramp: 1/2 of the weight at the start step
    full, _ = g_grads(4, *extra[:1], "train.update=paper")
    assert "loss/contrastive" in stats
    # same pairs at steps 3 and 4 (the test keys pairs by phase, not by step)
    assert torch.allclose(half - plain, 0.5 * (full - plain), atol=1e-6)
    assert not torch.allclose(half, plain)


def test_schedule_and_contrastive_config_errors_name_the_key():
    cases = {
        "latent.continuous": (["loss.extra={contrastive: 1}", "latent.continuous=1"],
                              r"loss.extra: bad value 'contrastive'.*latent.continuous >= 2"),
        "extra_start": (["loss.extra_start={contrastive: 5}"],
                        r"config key loss.extra_start: bad value 'contrastive'"),
        "extra_ramp": (["loss.extra={contrastive: 1}", "loss.extra_ramp={contrastive: -1}"],
                       r"config key loss.extra_ramp.contrastive: bad value -1"),
        "g_steps": (["train.g_steps=0"], r"config key train.g_steps: bad value 0"),
    }
    for overrides, message in cases.values():
        with pytest.raises(ConfigError, match=message):
            load_config(None, overrides)


# --- train.g_steps -----------------------------------------------------------------------
@pytest.mark.parametrize("update", ["paper", "three_optimizers"])
def test_g_steps_two_makes_two_g_updates_with_fresh_latents(update):
    counts, latents = {}, {}
    for g_steps in (1, 2):
        cfg, G, D, parts, phases, ctx = setup(f"train.update={update}",
                                              f"train.g_steps={g_steps}")
        made = []
        for phase in phases:
            run(phase, ctx)
            if phase.role == "G":
                made.append(ctx.fakes.latent.z)
        opt = phases[1].optimizer
        counts[g_steps] = {int(opt.state[p]["step"]) for p in G.parameters()}
        latents[g_steps] = made
    assert counts == {1: {1}, 2: {2}}, counts  # G's Adam stepped once / twice per iteration
    first, second = latents[2]
    assert torch.equal(first, latents[1][0]), "the first G step uses the D step's fakes"
    assert not torch.equal(first, second), "the second G step reused the first's latents"


# --- a statistic that starts mid-interval ------------------------------------------------
def test_a_statistic_that_starts_mid_interval_is_the_mean_of_its_own_steps(tmp_path):
    """loss/cr starts at loss.extra_start, likely inside a log interval: its logged
    value is the mean over the steps it ran in, not diluted by the steps before."""
    from accelerate import Accelerator

    from infogan_dist.tracking import Tracker

    cfg = load_config(None, ["log.wandb=off", f"run.output_dir={tmp_path}"])
    tracker = Tracker(cfg, tmp_path)
    tracker.start(Accelerator(cpu=True), 0, resumed=False)
    for stats in ({"loss/D": 1.0}, {"loss/D": 2.0, "loss/cr": 4.0},
                  {"loss/D": 3.0, "loss/cr": 2.0}):
        tracker.add({k: torch.tensor(v) for k, v in stats.items()})
    values = tracker.flush(3)
    assert values["loss/D"] == 2.0 and values["loss/cr"] == 3.0


# --- configs/dsprites.yaml and its plain InfoGAN twin -------------------------------------
def test_dsprites_configs_are_the_recipe_and_differ_only_in_the_regulariser():
    from infogan_dist.config.load import _flatten

    cr = load_config("configs/dsprites.yaml")
    plain = load_config("configs/dsprites_infogan.yaml")
    a, b = _flatten(cr.to_dict(), "cr"), _flatten(plain.to_dict(), "plain")
    assert {k for k in a if a[k] != b[k]} == {"run.name", "loss.extra", "loss.extra_start"}
    assert plain.loss.extra == {} and plain.loss.extra_start == {}
    # the recipe (InfoGAN-CR's dSprites code)
    assert (cr.model.arch, cr.model.spectral_norm) == ("infogan_cr64", True)
    assert (cr.latent.noise_dim, cr.latent.continuous, cr.latent.categorical) == (5, 5, [])
    assert (cr.latent.noise, cr.latent.continuous_std) == ("uniform", "fixed")
    assert cr.loss.lambda_cont == 0.05 and cr.train.update == "paper"
    assert (cr.optim.lr_g, cr.optim.lr_d, cr.optim.betas[0]) == (1e-3, 2e-3, 0.5)
    assert (cr.train.global_batch_size, cr.train.g_steps) == (64, 2)
    assert cr.train.max_steps == 28 * 737_280 // 64 == 322_560
    assert cr.loss.extra == {"contrastive": 2.0}
    assert cr.loss.extra_start == {"contrastive": 288_000}
    assert part_names(cr) == ["cr"] and part_names(plain) == []
