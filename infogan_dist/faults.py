"""Fault injection for the failure tests, off unless INFOGAN_FAULT is set.

    INFOGAN_FAULT=<what>:<rank>:<step>   e.g. raise:1:5, kill:1:5, kill_in_save:0:10, hang:1:5,
                                         overflow_D:0:3, nan:1:13

raise: that rank raises RuntimeError after the step; kill: it SIGKILLs itself after the
step; kill_in_save: it SIGKILLs itself inside the checkpoint save of that step, after
Accelerate wrote its files and before COMPLETE; hang: it stops making progress (sleeps
in place of the next collective), as a stuck rank would; nan: that rank's batch of that
step is NaN (as a corrupt batch would be), so its losses and, through DDP's gradient
all-reduce, every rank's state turn non-finite.

overflow_<phase> (e.g. overflow_D, overflow_G, overflow_info): that rank fills one
gradient of that phase's optimizer with +inf after the phase's backward and before its
optimizer step, at that step (numbered like metrics.jsonl: the first step is 1). Under
fp16 the shared GradScaler then finds the inf and skips exactly that optimizer step and
halves the scale; without a scaler (fp32, bf16) the inf reaches the weights.

A fault fires only in the first attempt of a torchrun job (TORCHELASTIC_RESTART_COUNT
unset or 0), so a job restarted by `--max_restarts` recovers instead of failing again,
and at most once per process, so a rollback past its step does not meet it again.
Across machines the restart count is not enough: with c10d rendezvous a healthy node's
agent restarts its workers without counting a restart (they see 0 again), and the group
ranks may move between nodes. INFOGAN_FAULT_ONCE=<path> makes raise, kill, kill_in_save
and hang fire once per job: the rank that fires creates <path> first (O_EXCL), and no
process fires once it exists (a path all machines see).

INFOGAN_FAULT_FILE=<path> arms faults in a job that is already running (the soak,
benchmarks/soak.py, does): while <path> exists it holds `<what>:<rank>:<step>` (what:
raise, kill, kill_in_save or hang; step: a number or `*` for the next one). The first
process of that rank to reach the fault's site renames the file to `<path>.fired`
(atomic: of two claimants one wins) and fires; the file is gone, so the fault fires
once, whatever the restart count. Cost when set: one stat per step and save.
"""

from __future__ import annotations

import os
import signal
import time

import torch

_fired = False


def _spec() -> tuple[str, int, int] | None:
    raw = os.environ.get("INFOGAN_FAULT")
    if not raw or _fired or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0):
        return None
    what, rank, step = raw.split(":")
    return what, int(rank), int(step)


def _first_in_job() -> bool:
    """False when INFOGAN_FAULT_ONCE names a file that exists (this job fired already)."""
    marker = os.environ.get("INFOGAN_FAULT_ONCE")
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


# where each fault of `inject` fires: after a step or inside a checkpoint save
_SITES = {"raise": "step", "kill": "step", "hang": "step", "kill_in_save": "save"}


def _armed(where: str, rank: int, step: int) -> str | None:
    """The fault armed in INFOGAN_FAULT_FILE for this site, rank and step, claimed."""
    path = os.environ.get("INFOGAN_FAULT_FILE")
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            what, want_rank, want_step = f.read().strip().split(":")
    except (OSError, ValueError):
        return None  # being written, or claimed meanwhile: look again at the next site
    if (_SITES.get(what) != where or want_rank != str(rank)
            or want_step not in ("*", str(step))):
        return None
    try:
        os.rename(path, path + ".fired")  # the claim: one process wins
    except FileNotFoundError:
        return None
    return what


def inject(where: str, rank: int, step: int) -> None:
    what = _armed(where, rank, step)
    if what is None:
        spec = _spec()
        if spec is None or spec[1] != rank or spec[2] != step:
            return
        what = spec[0]
        if _SITES.get(what) != where or not _first_in_job():
            return
    if what == "raise":
        raise RuntimeError(f"injected fault (INFOGAN_FAULT) on rank {rank} at step {step}")
    if what == "hang":
        time.sleep(3600)
        return
    os.kill(os.getpid(), signal.SIGKILL)  # kill, kill_in_save


def poison_grads(phase: str, optimizer: torch.optim.Optimizer, rank: int, step: int) -> bool:
    """INFOGAN_FAULT=overflow_<phase>:<rank>:<step>: fills the first existing gradient of
    `optimizer`'s parameters with +inf (`step` = the step being trained, 1-based). The
    trainer calls it between the phase's backward and its optimizer step. Returns whether
    it poisoned anything. Accepts an Accelerate-wrapped optimizer too."""
    spec = _spec()
    if spec is None or spec[0] != f"overflow_{phase}" or spec[1] != rank or spec[2] != step:
        return False
    global _fired
    inner = getattr(optimizer, "optimizer", optimizer)  # AcceleratedOptimizer -> torch's
    for group in inner.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                p.grad.fill_(float("inf"))
                _fired = True  # once per process: a rollback's replay of the step is clean
                return True
    raise RuntimeError(f"INFOGAN_FAULT=overflow_{phase}: phase {phase} has no gradient "
                       f"to poison at step {step}")


def corrupt(images: torch.Tensor, rank: int, step: int) -> torch.Tensor:
    """The batch of `step` on `rank`: NaN under INFOGAN_FAULT=nan:<rank>:<step>."""
    global _fired
    if _spec() != ("nan", rank, step):
        return images
    _fired = True
    return images * float("nan")
