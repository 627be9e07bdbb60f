"""Which parameters each phase moves, on real modules (no DDP needed: the rule is the
same on one rank)."""

import contextlib
import math

import pytest
import torch

from infogan_dist import augment
from infogan_dist.config import load_config
from infogan_dist.latent import LatentSpace
from infogan_dist.losses import ADVERSARIAL
from infogan_dist.models import build_models
from infogan_dist.terms import LOSS_TERMS, View
from infogan_dist.updates import UPDATE_RULES, StepInputs


def setup(update, *extra):
    cfg = load_config(None, ["model.arch=mlp", "model.width=0.1", "latent.noise_dim=4",
                             f"train.update={update}", "train.global_batch_size=8", *extra])
    torch.manual_seed(0)
    space = LatentSpace(cfg.latent)
    G, D = build_models(cfg.model, space.input_dim, space.q_dim, (1, 8, 8))
    rule = UPDATE_RULES[cfg.train.update]
    opts = rule.build_optimizers(cfg, {"G": G, "D": D})
    phases = rule.build_phases(cfg, space, opts)
    ctx = StepInputs(
        cfg=cfg, space=space, step=0, real=torch.rand(8, 1, 8, 8) * 2 - 1, G=G, D=D,
        G_raw=G, D_raw=D, sample=lambda k: space.sample_step(0, 0, k, 8, 0, 1),
        uniforms=lambda k: augment.step_uniforms(0, 0, k, 8, 0, 1),
        backward=lambda loss: loss.backward(), autocast=contextlib.nullcontext,
    )
    return G, D, phases, ctx


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before, module, prefix=""):
    return {k for k, v in module.named_parameters()
            if k.startswith(prefix) and not torch.equal(v, before[k])}


def run(phase, ctx):
    """One phase as the trainer runs it; the fake batch a phase makes is handed on to the
    next one (kept on ctx between calls, as the trainer's loop keeps it)."""
    phase.optimizer.zero_grad(set_to_none=True)
    stats, ctx.fakes = phase.run(ctx, getattr(ctx, "fakes", None))
    phase.optimizer.step()
    return stats


def test_three_optimizer_phases_move_the_right_parameters():
    G, D, phases, ctx = setup("three_optimizers")
    assert [p.name for p in phases] == ["D", "G", "info"]
    g0, d0 = snapshot(G), snapshot(D)
    run(phases[0], ctx)  # D step
    assert not changed(g0, G), "D step changed G"
    assert changed(d0, D, "trunk") and changed(d0, D, "adv")
    assert not changed(d0, D, "q"), "D step changed Q"
    g0, d0 = snapshot(G), snapshot(D)
    run(phases[1], ctx)  # G step
    assert not changed(d0, D), "G step changed D"
    assert changed(g0, G) == set(g0)
    assert all(p.requires_grad for p in D.parameters()), "D left frozen"
    g0, d0 = snapshot(G), snapshot(D)
    stats = run(phases[2], ctx)  # info step
    assert changed(g0, G) and changed(d0, D, "trunk") and changed(d0, D, "q")
    assert not changed(d0, D, "adv"), "info step moved the adversarial head"
    assert {"loss/info", "mi/c1", "mi/c2", "mi/c3"} <= set(stats)


def test_paper_update_adds_info_to_d_and_g():
    G, D, phases, ctx = setup("paper")
    assert [p.name for p in phases] == ["D", "G"]
    d0 = snapshot(D)
    run(phases[0], ctx)
    assert changed(d0, D, "q"), "paper update: the D step must move Q"
    stats = run(phases[1], ctx)
    assert "loss/info" in stats and "mi/c1" in stats


def test_info_step_raises_the_mi_bound():
    G, D, phases, ctx = setup("three_optimizers")
    first = float(run(phases[2], ctx)["mi/c1"])
    for _ in range(60):
        last = float(run(phases[2], ctx)["mi/c1"])
    assert last > first + 0.2


@pytest.mark.parametrize("kind", ["bce", "lsgan", "hinge"])
def test_adversarial_losses_on_known_logits(kind):
    big = torch.full((4,), 10.0)
    # D perfectly right: D loss near its minimum, G loss high (non-saturating).
    adv = ADVERSARIAL[kind]()
    d = adv.d_real(big) + adv.d_fake(-big)
    g = adv.g(-big)
    assert float(d) < float(g)
    if kind == "bce":
        z = torch.zeros(3)
        assert torch.isclose(adv.d_real(z) + adv.d_fake(z), torch.tensor(0.6931), atol=1e-4)
        assert torch.isclose(adv.g(z), torch.tensor(0.6931), atol=1e-4)


# --- loss.q_augment: Q names the category of transformed fakes too ----------------------
def test_affine_transform_identity_background_and_gradient():
    x = (torch.rand(3, 1, 28, 28) * 2 - 1).requires_grad_()
    same = augment.random_affine(x, torch.full((3, augment.PARAMS), 0.5))  # all-zero moves
    assert torch.allclose(same, x, atol=1e-5)
    moved = augment.random_affine(x, torch.tensor([[1.0, 0.5, 0.5, 0.5]] * 3))  # +15 degrees
    assert not torch.allclose(moved, x, atol=0.1)
    blank = augment.random_affine(-torch.ones(2, 1, 28, 28), torch.rand(2, augment.PARAMS))
    assert torch.allclose(blank, -torch.ones_like(blank), atol=1e-6), "uncovered pixels not -1"
    moved.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_transform_parameters_are_keyed_and_world_size_invariant():
    one = augment.step_uniforms(7, 3, 3, 8, 0, 1)
    two = torch.cat([augment.step_uniforms(7, 3, 3, 8, r, 2) for r in range(2)])
    assert torch.equal(one, two) and one.shape == (8, augment.PARAMS)
    assert torch.equal(one, augment.step_uniforms(7, 3, 3, 8, 0, 1))
    assert not torch.equal(one, augment.step_uniforms(7, 4, 3, 8, 0, 1))


@pytest.mark.parametrize("update", ["paper", "three_optimizers"])
def test_q_augment_adds_a_loss_that_moves_g_and_q(update):
    after = {}
    for weight in (0, 1):
        G, D, phases, ctx = setup(update, f"loss.q_augment={weight}")
        stats = {}
        for phase in phases:
            stats |= run(phase, ctx)
        assert ("loss/q_augment" in stats) == bool(weight)
        after[weight] = snapshot(G), snapshot(D)
    g_diff = {k for k, v in after[0][0].items() if not torch.equal(v, after[1][0][k])}
    q_diff = {k for k, v in after[0][1].items() if k.startswith("q")
              and not torch.equal(v, after[1][1][k])}
    assert g_diff and q_diff, "the augmented category loss reached neither G nor Q"


# --- loss.extra.real_mi: Q's classes on real images --------------------------------------
def test_real_mi_is_the_mutual_information_of_q_on_real_images():
    cfg = load_config(None, ["latent.categorical=[4]", "latent.continuous=0",
                             "loss.extra={real_mi: 1.0}"])
    space = LatentSpace(cfg.latent)
    term = LOSS_TERMS["real_mi"](cfg, space)
    sure = torch.eye(4).repeat(2, 1) * 50  # each row confident, all classes equally used
    loss, stats = term(View("real", torch.zeros(8, 1), None, q=sure))
    assert torch.isclose(stats["mi/real/c1"], torch.tensor(math.log(4)), atol=1e-4)
    assert torch.isclose(loss, -stats["mi/real/c1"])
    one_class = torch.tensor([[50.0, 0, 0, 0]]).repeat(8, 1)  # confident, one class: no MI
    unsure = torch.zeros(8, 4)  # every class equally likely for every row: no MI
    for q in (one_class, unsure):
        assert abs(float(term(View("real", torch.zeros(8, 1), None, q=q))[1]["mi/real/c1"])) < 1e-4


# --- loss.extra.real_iic: Q's classes on real images and their moved copies ---------------
def test_real_iic_is_the_mutual_information_of_the_two_predictions():
    cfg = load_config(None, ["latent.categorical=[4]", "latent.continuous=0",
                             "loss.extra={real_iic: 1.0}"])
    term = LOSS_TERMS["real_iic"](cfg, LatentSpace(cfg.latent))

    def mi(real, moved):
        q = torch.cat([real, moved])
        loss, stats = term(View("real_pair", torch.zeros(len(q), 1), None, q=q))
        assert torch.isclose(loss, -stats["mi/iic/c1"])
        return float(stats["mi/iic/c1"])

    sure = torch.eye(4).repeat(2, 1) * 50  # confident, all classes equally used
    assert abs(mi(sure, sure) - math.log(4)) < 1e-4  # and the same class after the move
    # another class after the move, even a consistent relabelling, is worth less: the
    # symmetrised joint asks for the same class (here ln 4 - ln 2)
    assert abs(mi(sure, sure.roll(1, dims=1)) - math.log(2)) < 1e-4
    # the class after the move is independent of the class before: no MI
    every_pair = torch.arange(16)
    assert abs(mi(torch.eye(4)[every_pair % 4] * 50, torch.eye(4)[every_pair // 4] * 50)) < 1e-4
    one_class = torch.tensor([[50.0, 0, 0, 0]]).repeat(8, 1)
    unsure = torch.zeros(8, 4)
    for q in (one_class, unsure):
        assert abs(mi(q, q)) < 1e-4


@pytest.mark.parametrize("name,stat", [("real_mi", "mi/real/c1"), ("real_iic", "mi/iic/c1")])
def test_real_image_terms_join_the_d_phase_and_move_q(name, stat):
    G, D, phases, ctx = setup("paper", f"loss.extra={{{name}: 1.0}}", "optim.lr_d=0.01")
    q0 = snapshot(D)
    first = float(run(phases[0], ctx)[stat])
    assert stat not in run(phases[1], ctx), f"{name} joined G's phase"
    assert changed(q0, D, "q")
    for _ in range(30):
        last = float(run(phases[0], ctx)[stat])
    assert last > first + 0.2
