"""Part `time_to_95`: seconds and images until eval/acc/c1 >= 0.95, then STOP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import Ctx, PartFailed, metrics


def part_time_to_95(ctx: Ctx) -> dict:
    """configs/mnist.yaml fp32 seed 0; eval/acc/c1 every 100 steps on the first 2,000
    digits; the run is stopped (STOP file) once it is >= 0.95."""
    every = 100 if ctx.gpu else 2
    overrides = ["train.precision=no", f"log.eval_every={every}", f"log.every={every}",
                 "log.images_every=0", "checkpoint.every=100000", "run.seed=0"]
    if not ctx.gpu:
        overrides += [*ctx.tiny(), "train.max_steps=4"]
    reached: dict[str, Any] = {}

    def watch(run_dir: Path) -> bool:
        for r in metrics(run_dir):
            if r.get("eval/acc/c1", 0.0) >= 0.95:
                reached.setdefault("row", r)
                return True
        return False

    run_dir, wall = ctx.train("time-to-95", "configs/mnist.yaml", overrides, watch=watch)
    rows = metrics(run_dir)
    seconds, first = 0.0, None
    prev, batch = 0, 128 if ctx.gpu else 16
    best = 0.0
    for r in rows:
        seconds += r.get("perf/s_per_step", 0.0) * (r["step"] - prev)
        prev = r["step"]
        acc = r.get("eval/acc/c1")
        if acc is not None:
            best = max(best, acc)
            if acc >= 0.95 and first is None:
                first = {"step": r["step"], "train_s": seconds,
                         "images": int(r.get("progress/images_seen", r["step"] * batch)),
                         "acc": acc}
    res = {"reached": first is not None, "first": first, "best_acc": best,
           "wall_s_process": wall, "eval_every": every,
           "note": "train_s: sum of perf/s_per_step up to that row (training, evaluation "
                   "every eval_every steps and the flushes; not process start-up)"}
    if ctx.gpu and first is None:
        raise PartFailed(f"95% not reached (best {best:.4f}) within the budget", res)
    return res
