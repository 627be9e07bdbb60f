"""Part `compile`: train.compile on vs off, losses within a tolerance."""

from __future__ import annotations

import dataclasses

from .common import Ctx, PartFailed, metrics


def part_compile(ctx: Ctx) -> dict:
    from infogan_dist.config import TrainConfig

    if "compile" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        return {"skipped": "train.compile does not exist in this version of the config"}
    n = 5 if ctx.gpu else 2
    base = ["log.every=1", f"train.max_steps={n}", f"checkpoint.every={n}",
            "log.images_every=0", "log.eval_every=0", *ctx.tiny()]
    off, _ = ctx.train("compile-off", "configs/mnist.yaml", [*base, "train.compile=false"])
    on, _ = ctx.train("compile-on", "configs/mnist.yaml", [*base, "train.compile=true"])
    tol = 1e-3
    worst = 0.0
    for ra, rb in zip(metrics(off), metrics(on), strict=True):
        for k in ra:
            if k.startswith("loss/"):
                worst = max(worst, abs(ra[k] - rb[k]) / max(1.0, abs(ra[k])))
    res = {"steps": n, "max_relative_loss_difference": worst, "tolerance": tol}
    if worst > tol:
        raise PartFailed(f"compiled losses differ by {worst:.2e} > {tol}", res)
    return res
