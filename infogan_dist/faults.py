"""Fault injection for the failure tests, off unless INFOGAN_FAULT is set.

    INFOGAN_FAULT=<what>:<rank>:<step>   e.g. raise:1:5, kill:1:5, kill_in_save:0:10, hang:1:5

raise: that rank raises RuntimeError after the step; kill: it SIGKILLs itself after the
step; kill_in_save: it SIGKILLs itself inside the checkpoint save of that step, after
Accelerate wrote its files and before COMPLETE; hang: it stops making progress (sleeps
in place of the next collective), as a stuck rank would.
"""

from __future__ import annotations

import os
import signal
import time


def _spec() -> tuple[str, int, int] | None:
    raw = os.environ.get("INFOGAN_FAULT")
    if not raw:
        return None
    what, rank, step = raw.split(":")
    return what, int(rank), int(step)


def inject(where: str, rank: int, step: int) -> None:
    spec = _spec()
    if spec is None or spec[1] != rank or spec[2] != step:
        return
    what = spec[0]
    if where == "step" and what == "raise":
        raise RuntimeError(f"injected fault (INFOGAN_FAULT) on rank {rank} at step {step}")
    if (where == "step" and what == "kill") or (where == "save" and what == "kill_in_save"):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "step" and what == "hang":
        time.sleep(3600)
