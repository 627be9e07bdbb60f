"""The divergence guard: what counts as a diverged run, and what `train.nonfinite` does
about it. Detection costs no extra host sync: the tracker's sums of each step's
statistics are non-finite as soon as one statistic was (NaN and inf propagate through
sums), so the one all-reduce at each log interval carries the flag; and before every
checkpoint the manager checks the models, the optimizer state and the statistics not yet
reduced (one sync), so a non-finite state never reaches a checkpoint.

train.nonfinite=rollback: back to the newest checkpoint (all of them are finite), the
random draws re-keyed by the rollback count (TrainerState.rollbacks), at most
train.max_rollbacks times over the run; stop: end at once. Either way the run ends with
exit 1 and one line when it gives up; the last good checkpoint is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .config import TrainConfig


class Diverged(RuntimeError):
    """A non-finite loss, gradient-driven state or statistic; every rank raises it at the
    same step (the values were reduced, or the flag agreed, across ranks)."""


class TrainingFailed(RuntimeError):
    """The run gives up (exit 1); the message is one line for the user."""


# How many rollbacks each train.nonfinite policy allows over a run.
ROLLBACK_BUDGET: dict[str, Callable[[TrainConfig], int]] = {
    "rollback": lambda cfg: cfg.max_rollbacks,
    "stop": lambda cfg: 0,
}


def nonfinite(tensors: Iterable[torch.Tensor], device: torch.device | str) -> torch.Tensor:
    """A bool tensor on `device`: True if any floating tensor holds a NaN or an inf. One
    fused reduction per tensor and no host sync; the caller reads it once."""
    flags = [~torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    if not flags:
        return torch.zeros((), dtype=torch.bool, device=device)
    return torch.stack([f.to(device) for f in flags]).any()
