"""Parts `fp16_overflow` (a poisoned D step is skipped by the GradScaler) and
`fp16_resume` (10 + resume to 20 steps == 20 steps, bitwise)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .common import (
    Ctx,
    PartFailed,
    ckpt_dir,
    finite_losses,
    load_params,
    metrics,
    same_obj,
    same_tensors,
    torch_load,
)


def part_fp16_overflow(ctx: Ctx) -> dict:
    """INFOGAN_FAULT=overflow_D:0:K (faults.poison_grads, called between the D phase's
    backward and its optimizer step). Under fp16 Accelerate's shared GradScaler finds the
    inf and skips D's step, and update() halves the scale before G's backward; on the CPU
    self-test (no scaler) the inf reaches D's weights instead."""
    k, steps = (4, 6) if ctx.gpu else (2, 3)
    prec = ctx.fp16()
    overrides = [f"train.precision={prec}", f"train.max_steps={steps}", "log.every=1",
                 "checkpoint.every=1", "checkpoint.keep=20", "log.images_every=0",
                 "log.eval_every=0", *(["model.width=0.5"] if ctx.gpu else ctx.tiny())]
    run_dir, wall = ctx.train("fp16-overflow", "configs/mnist.yaml", overrides,
                              fault=f"overflow_D:0:{k}")
    rows = {r["step"]: r for r in metrics(run_dir)}
    d_prev = load_params(ckpt_dir(run_dir, k - 1) / "model_1.safetensors")
    d_k = load_params(ckpt_dir(run_dir, k) / "model_1.safetensors")
    g_prev = load_params(ckpt_dir(run_dir, k - 1) / "model.safetensors")
    g_k = load_params(ckpt_dir(run_dir, k) / "model.safetensors")
    res: dict[str, Any] = {"fault": f"overflow_D:0:{k}", "precision": prec, "steps": steps,
                           "wall_s": wall}
    checks: list[tuple[str, bool]] = []
    if ctx.gpu:
        amp = {s: (r.get("amp/scale"), r.get("amp/skipped_steps")) for s, r in rows.items()}
        res["amp_by_step"] = amp
        scale_prev, skip_prev = amp[k - 1]
        scale_k, skip_k = amp[k]
        res["natural_skips_before_fault"] = skip_prev
        d_opt_prev = torch_load(ckpt_dir(run_dir, k - 1) / "optimizer.bin")
        d_opt_k = torch_load(ckpt_dir(run_dir, k) / "optimizer.bin")
        g_opt_prev = torch_load(ckpt_dir(run_dir, k - 1) / "optimizer_1.bin")
        g_opt_k = torch_load(ckpt_dir(run_dir, k) / "optimizer_1.bin")
        d_last = load_params(ckpt_dir(run_dir, steps) / "model_1.safetensors")
        ok, bad = finite_losses(list(rows.values()))
        checks += [
            (f"amp/skipped_steps +1 at step {k} ({skip_prev} -> {skip_k})",
             skip_k == skip_prev + 1),
            (f"amp/scale halves once at step {k} ({scale_prev} -> {scale_k})",
             scale_k == scale_prev / 2),
            (f"D's parameters unchanged by step {k}", not same_tensors(d_prev, d_k)),
            (f"D's Adam state unchanged by step {k}", not same_obj(d_opt_prev, d_opt_k)),
            (f"G's parameters changed at step {k}", bool(same_tensors(g_prev, g_k))),
            (f"G's Adam state changed at step {k}", bool(same_obj(g_opt_prev, g_opt_k))),
            (f"D trains again after step {k}", bool(same_tensors(d_k, d_last))),
            ("finite losses in every row", ok),
            ("no further skipped step after the fault",
             all(amp[s][1] == skip_k for s in amp if s > k)),
        ]
        if not ok:
            res["nonfinite"] = bad[:5]
    else:
        import torch

        has_amp = any(key.startswith("amp/") for r in rows.values() for key in r)
        # No scaler to skip the step: the inf reaches D's weights, the divergence guard
        # (train.nonfinite=rollback) sees it at the step's log, rolls back to step k-1 and
        # replays step k without the fault (it fires once per process); no checkpoint
        # ever holds the inf.
        events = [r for r in metrics(run_dir) if r.get("event") == "rollback"]
        d_last = load_params(ckpt_dir(run_dir, steps) / "model_1.safetensors")
        checks += [
            ("no amp/* metrics without a scaler", not has_amp),
            (f"D finite at step {k - 1}", all(torch.isfinite(v).all() for v in d_prev.values())),
            (f"the inf reached D's weights at step {k}: one rollback to step {k - 1}",
             [(e["step"], e["diverged_step"]) for e in events] == [(k - 1, k)]),
            ("every checkpoint finite, the run finished",
             all(torch.isfinite(v).all() for d in (d_k, d_last) for v in d.values())),
        ]
    res["checks"] = {name: ok for name, ok in checks}
    failed = [name for name, ok in checks if not ok]
    if failed:
        raise PartFailed("; ".join(failed), res)
    return res


def part_fp16_resume(ctx: Ctx) -> dict:
    """20 steps uninterrupted vs 10 + resume to 20 (configs/mnist_mlp.yaml: no conv and
    no grid_sample, whose CUDA backward kernels are not deterministic), bitwise: G, D,
    every Adam, the GradScaler (scaler.pt) and train_state.json. If they differ, a second
    uninterrupted run tells GPU non-determinism from a resume bug."""
    n = 10 if ctx.gpu else 2
    prec = ctx.fp16()
    base = [f"train.precision={prec}", "log.every=5", f"checkpoint.every={n}",
            "log.images_every=0", "log.eval_every=0", *ctx.tiny()]
    a, _ = ctx.train("resume-straight", "configs/mnist_mlp.yaml",
                     [*base, f"train.max_steps={2 * n}"])
    b, _ = ctx.train("resume-split", "configs/mnist_mlp.yaml", [*base, f"train.max_steps={n}"])
    b, _ = ctx.train("resume-split", "configs/mnist_mlp.yaml",
                     [*base, f"train.max_steps={2 * n}"], resume="auto")
    diffs = compare_checkpoints(ckpt_dir(a, 2 * n), ckpt_dir(b, 2 * n))
    res: dict[str, Any] = {"precision": prec, "steps": f"{2 * n} vs {n} + {n}",
                           "differences": diffs[:20]}
    has_scaler = (ckpt_dir(a, 2 * n) / "scaler.pt").exists()
    res["scaler_state_compared"] = has_scaler
    if has_scaler:
        res["scaler"] = torch_load(ckpt_dir(a, 2 * n) / "scaler.pt")
    if ctx.gpu and not has_scaler:
        raise PartFailed("fp16 checkpoint without scaler.pt", res)
    if diffs:
        try:
            c, _ = ctx.train("resume-straight-2", "configs/mnist_mlp.yaml",
                             [*base, f"train.max_steps={2 * n}"])
            control = compare_checkpoints(ckpt_dir(a, 2 * n), ckpt_dir(c, 2 * n))
            res["control_two_straight_runs_differ"] = control[:20]
            said = f"{len(control)} (non-determinism of the GPU if > 0)"
        except PartFailed as e:
            said = f"unknown (the control run failed: {str(e).splitlines()[0]})"
        raise PartFailed(f"resumed run differs from the uninterrupted one in {len(diffs)} "
                         f"entries (first: {diffs[:3]}); two uninterrupted runs differ in "
                         f"{said}", res)
    return res


def compare_checkpoints(x: Path, y: Path) -> list[str]:
    diffs: list[str] = []
    for f in sorted(p.name for p in x.iterdir()):
        if f.endswith(".safetensors"):
            diffs += [f"{f}:{k}" for k in same_tensors(load_params(x / f, buffers=True),
                                                      load_params(y / f, buffers=True))]
        elif f.startswith("optimizer") or f == "scaler.pt":
            diffs += [f"{f}{d}" for d in same_obj(torch_load(x / f), torch_load(y / f))]
        elif f == "train_state.json":
            sx, sy = json.loads((x / f).read_text()), json.loads((y / f).read_text())
            diffs += [f"{f}/{k}" for k in sorted(set(sx) | set(sy)) if sx.get(k) != sy.get(k)]
    return diffs
