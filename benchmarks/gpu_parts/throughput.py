"""Part `throughput` (the trainer against the eager loop, per config, batch and
precision) and the trainer points it shares with `precisions`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import ROOT, Ctx, PartFailed, finite_losses, metrics

CONFIGS = ("configs/mnist_mlp.yaml", "configs/mnist.yaml")
BATCHES = (64, 128, 512, 2048)
PRECISIONS = ("no", "bf16", "fp16")  # "no" = fp32
THROUGHPUT_STEPS = (10, 30)  # warm-up interval (discarded), measured steps (GPU)


def throughput_overrides(ctx: Ctx, batch: int, precision: str) -> tuple[list[str], int, int]:
    warm, measure = THROUGHPUT_STEPS if ctx.gpu else (1, 2)
    steps = warm + measure
    o = [f"train.global_batch_size={batch}", f"train.precision={precision}",
         f"train.max_steps={steps}", f"log.every={warm}", f"checkpoint.every={steps}",
         "log.images_every=0", "log.eval_every=0"]
    if not ctx.gpu:
        o.append("model.width=0.125")
    return o, warm, measure


def trainer_images_per_s(rows: list[dict], warm: int) -> float:
    """Images/s over the rows after the first (warm-up) interval."""
    timed = [r for r in rows if r["step"] > warm and "perf/s_per_step" in r]
    if not timed:
        raise PartFailed("no timed metrics rows after the warm-up interval")
    images = seconds = 0.0
    prev = warm
    for r in timed:
        n = r["step"] - prev
        seconds += r["perf/s_per_step"] * n
        images += r["perf/images_per_s"] * r["perf/s_per_step"] * n
        prev = r["step"]
    return images / seconds


def trainer_point(ctx: Ctx, config: str, batch: int, precision: str,
                  timeout: float | None = None) -> dict:
    overrides, warm, measure = throughput_overrides(ctx, batch, precision)
    name = f"tp-{Path(config).stem}-{batch}-{precision}"
    run_dir, wall = ctx.train(name, config, overrides, timeout=timeout)
    rows = metrics(run_dir)
    ips = trainer_images_per_s(rows, warm)
    ctx.startup_s.append(max(0.0, wall - (warm + measure) * batch / ips))
    ok, bad = finite_losses(rows)
    point = {"config": config, "batch": batch, "precision": precision,
             "trainer_images_per_s": ips, "trainer_wall_s": wall, "finite": ok,
             "final": {k: v for k, v in rows[-1].items() if k.startswith(("loss/", "amp/"))}}
    if not ok:
        point["nonfinite"] = bad[:5]
    ctx.trainer_points[f"{config}|{batch}|{precision}"] = point
    return point


def part_throughput(ctx: Ctx) -> dict:
    """Trainer vs eager loop. Priority: batch 64 fp32 first (the 0.9x target), then the
    rest of fp32, bf16, fp16. A point runs only if its estimate fits the time left."""
    from benchmarks.eager_loop import eager_throughput

    if ctx.gpu:
        order = [(c, b, p) for p in PRECISIONS for b in BATCHES for c in CONFIGS]
        warm, measure = THROUGHPUT_STEPS
    else:
        order = [("configs/mnist_mlp.yaml", 16, "no"), ("configs/mnist.yaml", 16, "bf16")]
        warm, measure = 1, 2
    startup = (sorted(ctx.startup_s)[len(ctx.startup_s) // 2] if ctx.startup_s else 10.0)
    plan = []
    for c, b, p in order:
        key = f"{c}|{b}|{p}"
        est = 0.0 if key in ctx.trainer_points else startup + 3.0
        est += 2.0 + (warm + measure) * b / 20000.0  # eager, and a guess of step time
        plan.append({"config": c, "batch": b, "precision": p, "estimate_s": round(est, 1)})
    total = sum(x["estimate_s"] for x in plan)
    print(f"throughput plan: {len(plan)} points, about {total:.0f} s estimated "
          f"(trainer start-up about {startup:.1f} s each), {ctx.left():.0f} s left", flush=True)
    for x in plan:
        print(f"  {x['config']} batch {x['batch']} {x['precision']}: ~{x['estimate_s']} s",
              flush=True)
    points, not_run = [], []
    device = "cuda" if ctx.gpu else "cpu"
    for x in plan:
        if x["estimate_s"] > ctx.left():
            not_run.append(x)
            continue
        c, b, p = x["config"], x["batch"], x["precision"]
        key = f"{c}|{b}|{p}"
        pt: dict[str, Any] = {"config": c, "batch": b, "precision": p}
        try:
            if not ctx.trainer_ok:
                raise PartFailed("not run: the environment part failed")
            tp = ctx.trainer_points.get(key) or trainer_point(ctx, c, b, p)
            pt["trainer_images_per_s"] = tp["trainer_images_per_s"]
        except Exception as e:  # noqa: BLE001 - recorded, next point
            pt["trainer_error"] = str(e).splitlines()[0][:300]
        try:
            width = [] if ctx.gpu else ["model.width=0.125"]
            er = eager_throughput(ROOT / c, b, steps=measure, warmup=warm, device=device,
                                  precision=p, overrides=width)
            pt["eager_images_per_s"] = er["images_per_s"]
        except Exception as e:  # noqa: BLE001
            pt["eager_error"] = str(e).splitlines()[0][:300]
        finally:
            if ctx.gpu:
                import torch

                torch.cuda.empty_cache()
        if "trainer_images_per_s" in pt and "eager_images_per_s" in pt:
            pt["ratio"] = pt["trainer_images_per_s"] / pt["eager_images_per_s"]
        points.append(pt)
        print(f"  done {c} {b} {p}: {pt}", flush=True)
    res = {"warmup_steps": warm, "measured_steps": measure, "plan": plan, "points": points,
           "not_run_budget": not_run, "compiled": "not measured: train.compile does not exist"}
    errors = [p for p in points if "trainer_error" in p or "eager_error" in p]
    if errors:
        raise PartFailed(f"{len(errors)} of {len(points)} points failed", res)
    return res
