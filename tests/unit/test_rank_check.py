"""Issue 3, point 1 (unit level): the cross-rank checker and CrossRankBatchNorm on two
real gloo processes (torch.multiprocessing, a FileStore in tmp_path, world size 2).

- `ranks.check_ranks_identical` passes on identical state and raises `RanksDiverged` on
  BOTH ranks, naming the first differing tensor, when one rank 1 tensor differs by one
  bit (a parameter, a buffer, an Adam state tensor, a bf16 and an int tensor).
- `ranks.state_tensors` + the checker see every Adam state tensor and the BN running
  statistics (and skip only those under skip_bn_stats, the documented `local` drift).
- `ranks.CrossRankBatchNorm` over 2 ranks = one plain BatchNorm on the concatenated batch:
  output, input gradient, running statistics and (summed over ranks) affine gradients,
  within 1e-6.

Each child asserts; `mp.spawn` re-raises a child's failure (with its traceback) here and
terminates the other child. The gloo timeout (30 s) bounds a child stuck in a collective.
"""

from __future__ import annotations

import datetime
import os
import sys

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from infogan_dist import ranks
from infogan_dist.ranks import CrossRankBatchNorm, RanksDiverged

pytestmark = pytest.mark.integration  # two real processes over gloo (a few seconds)

WORLD = 2
TIMEOUT = datetime.timedelta(seconds=30)


def _init(rank: int, store: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                             world_size=WORLD, timeout=TIMEOUT)


def _finish() -> None:
    """After a child's checks passed. torch 2.14: a process that used a gloo group (and
    imported torch._dynamo, as Adam's first step does) aborts now and then in interpreter
    teardown ("terminate called without an active exception", SIGABRT), after all its
    work; about 1 run in 3 here. So a passing child leaves with os._exit(0) and skips that
    teardown. A failing child never gets here: mp.spawn reports its exception."""
    tdist.barrier()
    tdist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn(fn, tmp_path, *args) -> None:
    store = tmp_path / "filestore"
    mp.spawn(fn, args=(str(store), *args), nprocs=WORLD, join=True)


def _flip_last_bit(t: torch.Tensor) -> None:
    """Changes one element of `t` in place by the smallest possible amount."""
    with torch.no_grad():
        flat = t.view(-1)
        if t.is_floating_point():
            bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
            flat.view(bits)[-1] ^= 1
        else:
            flat[-1] += 1


def _model_and_adam() -> tuple[nn.Module, torch.optim.Optimizer]:
    """Same on every rank (seeded), with one Adam step so exp_avg/exp_avg_sq/step exist."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(8, 5, generator=torch.Generator().manual_seed(1))).square().sum().backward()
    opt.step()
    return model, opt


def _named(model: nn.Module, opt: torch.optim.Optimizer, skip_bn: bool = False):
    return list(ranks.state_tensors({"G": model}, {"D": opt}, skip_bn_stats=skip_bn))


def _expect_diverged(named, name: str, step: int) -> None:
    try:
        ranks.check_ranks_identical(named, torch.device("cpu"), step)
    except RanksDiverged as e:
        msg = str(e)
        assert f"in {name} (" in msg, msg
        assert f"step {step}:" in msg and "rank 1 differs from rank 0" in msg, msg
    else:
        raise AssertionError(f"rank {tdist.get_rank()}: no RanksDiverged after changing {name}")


def _rank_check_worker(rank: int, store: str) -> None:
    _init(rank, store)
    model, opt = _model_and_adam()
    named = _named(model, opt)
    names = [n for n, _ in named]
    # every state tensor is covered: parameters, BN buffers, all Adam state
    for expected in ("G.0.weight", "G.1.running_mean (buffer)",
                     "G.1.num_batches_tracked (buffer)", "optimizer_D[G.2.bias].exp_avg",
                     "optimizer_D[G.0.weight].exp_avg_sq", "optimizer_D[G.0.weight].step"):
        assert expected in names, (expected, names)

    ranks.check_ranks_identical(named, torch.device("cpu"), 1)  # identical: passes

    # one bit of one tensor on rank 1 only: both ranks raise, naming that tensor
    step = 2
    for target in ("G.0.weight", "optimizer_D[G.0.weight].exp_avg_sq",
                   "G.1.running_var (buffer)", "G.1.num_batches_tracked (buffer)"):
        model, opt = _model_and_adam()
        named = _named(model, opt)
        if rank == 1:
            _flip_last_bit(dict(named)[target])
        _expect_diverged(named, target, step)
        step += 1

    # the FIRST differing tensor is named when several differ
    model, opt = _model_and_adam()
    named = _named(model, opt)
    if rank == 1:
        _flip_last_bit(dict(named)["optimizer_D[G.2.weight].exp_avg"])
        _flip_last_bit(dict(named)["G.2.bias"])  # comes before the optimizer state
    _expect_diverged(named, "G.2.bias", step)

    # dist.batchnorm=local: running statistics are left out (documented drift) ...
    model, opt = _model_and_adam()
    if rank == 1:
        _flip_last_bit(model[1].running_mean)
    skipping = _named(model, opt, skip_bn=True)
    assert not any("running_" in n for n, _ in skipping)
    ranks.check_ranks_identical(skipping, torch.device("cpu"), 10)
    # ... but nothing else is: a parameter still counts
    if rank == 1:
        _flip_last_bit(model[0].bias)
    _expect_diverged(_named(model, opt, skip_bn=True), "G.0.bias", 11)

    # other dtypes: bf16, int64 and float64 tensors
    for dtype in (torch.bfloat16, torch.int64, torch.float64):
        a = torch.arange(6, dtype=dtype)
        b = torch.ones(3, dtype=dtype)
        if rank == 1:
            _flip_last_bit(b)
        _expect_diverged([("a", a), ("b", b)], "b", 12)
    _finish()


def test_check_ranks_identical_names_the_differing_tensor(tmp_path):
    _spawn(_rank_check_worker, tmp_path)


def _bn_worker(rank: int, store: str) -> None:
    _init(rank, store)
    torch.set_default_dtype(torch.float32)
    for shape in ((12, 5), (6, 3, 4, 4), (4, 3, 5)):  # BatchNorm1d (2-D, 3-D), 2d
        c = shape[1]
        g = torch.Generator().manual_seed(sum(shape))
        x_all = torch.randn(shape, generator=g) * 3 + 1.5
        w_out = torch.randn(shape, generator=g)  # weights the loss: non-trivial grads
        weight = torch.rand(c, generator=g) + 0.5
        bias = torch.randn(c, generator=g)
        n = shape[0] // WORLD
        part = slice(rank * n, (rank + 1) * n)

        bn_ref = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}[len(shape)](c)
        bn = CrossRankBatchNorm(c)
        with torch.no_grad():
            for m in (bn_ref, bn):
                m.weight.copy_(weight)
                m.bias.copy_(bias)

        x_ref = x_all.clone().requires_grad_(True)
        y_ref = bn_ref(x_ref)
        (y_ref * w_out).sum().backward()

        x = x_all[part].clone().requires_grad_(True)
        y = bn(x)
        (y * w_out[part]).sum().backward()  # global loss = sum of the ranks' losses

        def close(a, b, what, relative=False, shape=shape):
            err = (a - b).abs().max().item()
            tol = 1e-6 * max(1.0, b.abs().max().item()) if relative else 1e-6
            assert err <= tol, f"rank {rank} shape {shape}: {what} differs by {err:.3g}"

        close(y, y_ref[part], "output")
        close(x.grad, x_ref.grad[part], "input gradient")
        close(bn.running_mean, bn_ref.running_mean, "running_mean")
        close(bn.running_var, bn_ref.running_var, "running_var")
        assert int(bn.num_batches_tracked) == int(bn_ref.num_batches_tracked) == 1
        # affine gradients: each rank holds its share; DDP sums (averages) them. They are
        # sums over the whole batch (magnitude ~10): 1e-6 relative
        wg, bg = bn.weight.grad.clone(), bn.bias.grad.clone()
        tdist.all_reduce(wg)
        tdist.all_reduce(bg)
        close(wg, bn_ref.weight.grad, "weight gradient (sum over ranks)", relative=True)
        close(bg, bn_ref.bias.grad, "bias gradient (sum over ranks)", relative=True)

        # eval mode: plain BatchNorm with the running statistics, no collective
        bn.eval()
        bn_ref.eval()
        with torch.no_grad():
            close(bn(x_all), bn_ref(x_all), "eval output")
    _finish()


def test_cross_rank_batchnorm_equals_batchnorm_on_the_global_batch(tmp_path):
    _spawn(_bn_worker, tmp_path)


def _global_mean_worker(rank: int, store: str, name: str) -> None:
    """The global-batch terms over 2 ranks (ranks.global_mean) = over the global batch on
    one process: the term's value, and each rank's gradient of its rows once DDP has
    averaged it (divided by the world size). real_mi reads the real batch; real_iic the
    real batch followed by its moved copy, so a rank's rows are its slice of each half."""
    _init(rank, store)
    from infogan_dist.config import load_config
    from infogan_dist.latent import LatentSpace
    from infogan_dist.terms import LOSS_TERMS, View

    cfg = load_config(None, ["latent.continuous=0", f"loss.extra={{{name}: 1.0}}"])
    term = LOSS_TERMS[name](cfg, LatentSpace(cfg.latent))
    halves = 2 if term.view == "real_pair" else 1
    q = torch.randn(8 * halves, 10, generator=torch.Generator().manual_seed(3)) * 3
    rows = torch.cat([torch.arange(8 * h + 4 * rank, 8 * h + 4 * rank + 4) for h in range(halves)])
    mine = q[rows].clone().requires_grad_()
    loss, stats = term(View(term.view, torch.zeros(len(rows), 1), None, q=mine))
    loss.backward()
    key = next(iter(stats))
    mi = stats[key].clone()
    tdist.all_reduce(mi)  # the trainer reports the mean of the ranks' statistics
    whole = q.clone().requires_grad_()
    world = ranks.world
    ranks.world = lambda: (0, 1)  # the same term as one process computes it
    try:
        ref_loss, ref_stats = term(View(term.view, torch.zeros(len(q), 1), None, q=whole))
    finally:
        ranks.world = world
    ref_loss.backward()
    assert torch.allclose(mi / WORLD, ref_stats[key], atol=1e-6)
    assert torch.allclose(mine.grad / WORLD, whole.grad[rows], atol=1e-6), rank
    _finish()


@pytest.mark.parametrize("name", ["real_mi", "real_iic"])
def test_global_batch_terms_on_two_ranks_equal_one_process(tmp_path, name):
    _spawn(_global_mean_worker, tmp_path, name)
