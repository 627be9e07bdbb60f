"""Everything that knows about ranks, kept small: printing, cross-rank BatchNorm,
rank-agreement on stopping, and the bitwise cross-rank checksum.

Models never import this module; the trainer applies it from outside.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from datetime import timedelta

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


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.clone()
        tdist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        tdist.all_reduce(grad)
        return grad


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)


class CrossRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the global batch (all ranks).

    torch's SyncBatchNorm refuses CPU tensors (torch 2.14), and world-size invariant
    training needs the same statistics on gloo as on NCCL, so this one works on any
    device: two autograd-aware all-reduces per forward (sum, then centred sum of
    squares, which is accurate where E[x^2] - E[x]^2 is not). With one process, or in
    eval mode, it is plain BatchNorm and runs no collective, so sampling pictures on
    the main process alone is safe.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4, 5):
            raise ValueError(f"expected 2D-5D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, size = world()
        if not self.training or size == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = xf.numel() // xf.shape[1] * size
        mean = _all_reduce_sum(xf.sum(dims)) / count
        centred = xf - mean.view(shape)
        var = _all_reduce_sum((centred * centred).sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1), alpha=m)
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


def agree(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is True on any rank (one tiny all-reduce)."""
    rank, size = world()
    if size == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


def any_rank(flag: torch.Tensor) -> bool:
    """True on every rank if the bool tensor `flag` is True on any rank: one tiny
    all-reduce and the one host sync of the caller."""
    _, size = world()
    t = flag.to(torch.int32).reshape(1)
    if size > 1:
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


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
