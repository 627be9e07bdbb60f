"""Everything that knows about ranks, kept small: printing, cross-rank BatchNorm,
rank-agreement on stopping, a differentiable global mean, and the bitwise cross-rank
checksum.

Models never import this module; the trainer applies it from outside.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn


def world() -> tuple[int, int]:
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


def join_after_restart(timeout: timedelta) -> None:
    """torch 2.14's launcher keeps one TCPStore across in-job restarts (`--max_restarts`;
    static rendezvous: keys prefixed by the run id only), so a restarted worker can read a
    peer's gloo address left by the previous attempt and fail to connect (seen: "Connection
    refused" in attempt 1). After a restart, join the process group through that store
    under a prefix of the restart count; Accelerate then uses this group. First attempts
    are untouched."""
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if (not restart or tdist.is_initialized()
            or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"):
        return
    store = tdist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                           is_master=False, timeout=timeout)
    tdist.init_process_group(
        "nccl" if torch.cuda.is_available() else "gloo",
        store=tdist.PrefixStore(f"infogan-restart-{restart}", store),
        rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]), timeout=timeout)


def print0(*args: object) -> None:
    if world()[0] == 0:
        print(*args, flush=True)


def print_all(*args: object) -> None:
    rank, size = world()
    print(f"[rank {rank}/{size}]", *args, file=sys.stderr, flush=True)


class _GlobalBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm of x over the global batch (all ranks), in ONE collective
    per forward and ONE per backward (what torch's SyncBatchNorm does on NCCL).

    Forward: every rank's per-channel (count, mean, M2 = sum of squared deviations from
    its own mean) in one all_gather, combined by Chan et al.'s parallel formula in rank
    order (mean = sum n_r m_r / N; M2 = sum M2_r + sum n_r (m_r - mean)^2). Each rank
    centres its own rows first, so this is as accurate as a centred second pass (not
    E[x^2] - E[x]^2), and every rank combines identical inputs in the same order, so
    all ranks get bitwise identical statistics.
    Backward: the two reductions of the BatchNorm gradient, sum(dy) and sum(dy * xhat),
    in one all_reduce of a [2, C] tensor. The weight and bias gradients returned are
    this rank's sums; DDP averages them like any other parameter gradient.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):  # type: ignore[override]
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        n = x.numel() // x.shape[1]
        mean_r = x.mean(dims)
        dev = x - mean_r.view(shape)
        local = torch.stack([torch.full_like(mean_r, n), mean_r, (dev * dev).sum(dims)])
        parts = [torch.empty_like(local) for _ in range(world()[1])]
        tdist.all_gather(parts, local)  # the forward's one collective
        counts, means, m2s = torch.stack(parts).unbind(1)  # each [ranks, C]
        total = counts.sum(0)
        mean = (counts * means).sum(0) / total
        m2 = m2s.sum(0) + (counts * (means - mean) ** 2).sum(0)
        var = m2 / total
        invstd = torch.rsqrt(var + eps)
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        y = xhat if weight is None else xhat * weight.view(shape) + bias.view(shape)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.total = total
        unbiased = var * total / (total - 1)
        ctx.mark_non_differentiable(mean, unbiased)
        return y, mean, unbiased  # the last two for the running statistics

    @staticmethod
    def backward(ctx, dy, _mean_grad, _var_grad):  # type: ignore[override]
        xhat, invstd, weight = ctx.saved_tensors
        dims = [0, *range(2, xhat.dim())]
        shape = [1, -1] + [1] * (xhat.dim() - 2)
        local = torch.stack([dy.sum(dims), (dy * xhat).sum(dims)])
        sums = local.clone()
        tdist.all_reduce(sums)  # the backward's one collective
        mean_dy, mean_dy_xhat = (sums / ctx.total).unbind(0)
        scale = invstd if weight is None else invstd * weight
        dx = scale.view(shape) * (dy - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape))
        if weight is None:
            return dx, None, None, None
        return dx, local[1], local[0], None


class CrossRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the global batch (all ranks).

    torch's SyncBatchNorm refuses CPU tensors (torch 2.14), and world-size invariant
    training needs the same statistics on gloo as on NCCL, so this one works on any
    device: one collective per forward and one per backward (_GlobalBatchNorm). With
    one process, or in eval mode, it is plain BatchNorm and runs no collective, so
    sampling pictures on the main process alone is safe.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4, 5):
            raise ValueError(f"expected 2D-5D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, size = world()
        if not self.training or size == 1:
            return super().forward(x)
        weight, bias = (self.weight, self.bias) if self.affine else (None, None)
        y, mean, unbiased_var = _GlobalBatchNorm.apply(x.float(), weight, bias, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased_var.detach(), alpha=m)
                self.num_batches_tracked.add_(1)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replaces every BatchNorm{1,2}d with CrossRankBatchNorm, keeping its state."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, CrossRankBatchNorm
        ):
            new = CrossRankBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine,
                child.track_running_stats,
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_batchnorm(child)
    return module


class StopAgreement:
    """Agrees on stop requests across ranks without a host sync in steady state.

    `poll(flag)` at the end of step s starts an asynchronous all-reduce (MAX) of this
    rank's flag and returns the result of the one started at step s - 1, which has long
    completed: every rank stops after the same step, exactly one step after the step at
    which the first rank saw a request (docs/checkpoints.md "Stopping"). The flag travels as a CPU
    tensor over a gloo group (the default group on CPU, a gloo side group otherwise), so
    neither starting nor reading it touches the accelerator's stream: reading it is no
    device sync. One process: no collective and no delay.
    """

    def __init__(self) -> None:
        self.size = world()[1]
        self.group = None  # the default group when it is gloo
        if self.size > 1 and tdist.get_backend() != "gloo":
            self.group = tdist.new_group(backend="gloo")  # collective: every rank, at start
        self.pending: tuple[tdist.Work, np.ndarray] | None = None

    def poll(self, flag: bool) -> bool:
        if self.size == 1:
            return flag
        agreed = self.drain()
        flag_buffer = np.array([int(flag)], dtype=np.int32)  # host memory, shared with t
        t = torch.from_numpy(flag_buffer)
        work = tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=self.group, async_op=True)
        self.pending = (work, flag_buffer)
        return agreed

    def drain(self) -> bool:
        """Waits for the all-reduce in flight (every rank has one: call it on all ranks
        before leaving the loop) and returns its result."""
        if self.pending is None:
            return False
        work, flag_buffer = self.pending
        self.pending = None
        work.wait()  # gloo on host memory; in steady state long done
        return bool(flag_buffer[0])  # host memory gloo wrote into: no device sync


def any_rank(flag: torch.Tensor) -> bool:
    """True on every rank if the bool tensor `flag` is True on any rank: one tiny
    all-reduce and the one host sync of the caller."""
    _, size = world()
    t = flag.to(torch.int32).reshape(1)
    if size > 1:
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of x over its rows on all ranks (each rank holds the same number), with the
    gradient: the all-reduce's backward sums the ranks' identical upstream gradients
    (world size x), and DDP's average divides it back, so a loss of this mean trains as
    on one process with the global batch. One small all-reduce; one process: x.mean(0)."""
    _, size = world()
    if size == 1:
        return x.mean(dim=0)
    from torch.distributed.nn.functional import all_reduce  # autograd-aware

    return all_reduce(x.sum(dim=0)) / (x.shape[0] * size)


def _fingerprint(t: torch.Tensor) -> torch.Tensor:
    """Two int64 sums over the raw bits: any single changed bit changes them."""
    t = t.detach().contiguous().reshape(-1)
    if t.is_floating_point():
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
        v = t.view(bits).long()
    else:
        v = t.long()
    weights = torch.arange(v.numel(), device=v.device) % 1_000_003 + 1
    return torch.stack([v.sum(), (v * weights).sum()])


def state_tensors(
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    skip_bn_stats: bool,
) -> Iterable[tuple[str, torch.Tensor]]:
    """Every parameter, buffer and optimizer-state tensor, by a readable name."""
    for mname, model in models.items():
        for name, p in model.named_parameters():
            yield f"{mname}.{name}", p
        for name, b in model.named_buffers():
            if skip_bn_stats and name.rsplit(".", 1)[-1] in ("running_mean", "running_var"):
                continue
            yield f"{mname}.{name} (buffer)", b
    for oname, opt in optimizers.items():
        names = {id(p): n for m_n, m in models.items() for n, p in
                 ((f"{m_n}.{k}", v) for k, v in m.named_parameters())}
        for group in opt.param_groups:
            for p in group["params"]:
                for key, value in opt.state.get(p, {}).items():
                    if torch.is_tensor(value):
                        yield f"optimizer_{oname}[{names.get(id(p), '?')}].{key}", value


class RanksDiverged(RuntimeError):
    pass


def check_ranks_identical(
    named: list[tuple[str, torch.Tensor]], device: torch.device, step: int
) -> None:
    """Raises RanksDiverged on every rank, naming the first tensor that differs."""
    rank, size = world()
    if size == 1 or not named:
        return
    local = torch.stack([_fingerprint(t.to(device)) for _, t in named])
    gathered = [torch.empty_like(local) for _ in range(size)]
    tdist.all_gather(gathered, local)
    for r in range(1, size):
        differs = (gathered[r] != gathered[0]).any(dim=1).nonzero()
        if len(differs):
            name = named[int(differs[0])][0]
            raise RanksDiverged(
                f"step {step}: rank {r} differs from rank 0 in {name} "
                f"({len(differs)} of {len(named)} tensors differ); the ranks no longer "
                "train the same model"
            )
