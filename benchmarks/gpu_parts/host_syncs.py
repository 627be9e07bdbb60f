"""Part `host_syncs`: host syncs per steady-state step and where they are, counted
with torch.cuda.set_sync_debug_mode in a fresh process (`gpu_check.py --probe-syncs`)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from .common import ROOT, Ctx, PartFailed, _tail

ENTRY = ROOT / "benchmarks" / "gpu_check.py"  # runs probe_syncs with --probe-syncs


def part_host_syncs(ctx: Ctx) -> dict:
    """Counts host syncs per steady-state iteration in a subprocess that drives the
    Trainer in-process (`--probe-syncs`, below)."""
    precs = ("bf16", "fp16") if ctx.gpu else ("no",)
    out: dict[str, Any] = {}
    failures = []
    for p in precs:
        probe_out = ctx.scratch / f"syncs-{p}.json"
        args = {"config": "configs/mnist.yaml", "precision": p, "out": str(probe_out),
                "steps": 12 if ctx.gpu else 5, "first": 3 if ctx.gpu else 2,
                "overrides": ctx.tiny()}
        try:
            out[p] = run_probe(ctx, args)
        except PartFailed as e:
            out[p] = {"error": str(e)[:2000]}
            failures.append(f"{p}: {str(e).splitlines()[0]}")
    if failures:
        raise PartFailed("; ".join(failures), out)
    return out


def run_probe(ctx: Ctx, args: dict) -> dict:
    if ctx.shards is None:
        raise PartFailed("no MNIST shards")
    args = dict(args, shards=str(ctx.shards), scratch=str(ctx.scratch))
    log = ctx.scratch / f"probe-{args['precision']}.log"
    cmd = [sys.executable, str(ENTRY), "--probe-syncs", json.dumps(args)]
    limit = ctx.left()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=ctx.env, stdout=f, stderr=subprocess.STDOUT,
                                timeout=max(limit, 1) if math.isfinite(limit) else None
                                ).returncode
        except subprocess.TimeoutExpired:
            raise PartFailed(f"probe killed after {limit:.0f} s; log {log}:\n{_tail(log)}"
                             ) from None
    if rc != 0 or not Path(args["out"]).exists():
        raise PartFailed(f"probe exited {rc}; log {log}:\n{_tail(log)}")
    return json.loads(Path(args["out"]).read_text())


def probe_syncs(args: dict) -> int:
    """In a fresh process: builds the Trainer, wraps its train_step, and records every
    call torch's sync-debug mode flags. "warn" mode (every flagged call is a warning,
    recorded with the Python line that made it) is on from the first iteration measured
    to the end of the loop; the iterations counted are those that do no logging,
    checkpoint, picture or evaluation work. The last train_step runs under "error"."""
    import torch

    from infogan_dist.config import load_config
    from infogan_dist.preflight import preflight
    from infogan_dist.trainer import Trainer

    steps, first = args["steps"], args["first"]
    overrides = [f"data.shards={args['shards']}", "data.eval_shards=",
                 f"run.output_dir={Path(args['scratch']) / 'runs'}",
                 f"run.name=syncs-{args['precision']}-{os.getpid()}", "train.resume=none",
                 "log.wandb=off",
                 "log.progress=false", f"train.precision={args['precision']}",
                 f"train.max_steps={steps}", f"log.every={steps}", f"checkpoint.every={steps}",
                 "log.images_every=0", "log.eval_every=0", *args["overrides"]]
    cfg = load_config(args["config"], overrides)
    trainer = Trainer(cfg, preflight(cfg))
    # "sync_debug": False skips the CUDA calls (CPU self-test); True forces them (a CPU
    # test of this bookkeeping fakes torch.cuda.set_sync_debug_mode).
    cuda = bool(args.get("sync_debug", torch.cuda.is_available()))
    inner = trainer.train_step
    records: list[warnings.WarningMessage] = []
    marks: dict[int, int] = {}  # step -> index into records at its train_step's entry
    error_step = steps - 1  # not the last step (that one logs and saves)
    result: dict[str, Any] = {"precision": args["precision"], "cuda": cuda,
                              "steady_steps": list(range(first, error_step))}

    def wrapped(images):
        step = trainer.state.step + 1
        marks[step] = len(records)
        if not cuda:
            return inner(images)
        if step == first:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
        if step == error_step:
            torch.cuda.set_sync_debug_mode("error")
            try:
                out = inner(images)
                result["error_mode_step"] = {"step": step, "raised": None}
            except RuntimeError as e:
                tb = traceback.extract_tb(e.__traceback__)
                ours = [f"{Path(fr.filename).name}:{fr.lineno} {fr.line}" for fr in tb
                        if "infogan_dist" in fr.filename or "accelerate" in fr.filename]
                result["error_mode_step"] = {"step": step, "raised": str(e)[:300],
                                             "at": ours[-3:]}
                raise
            finally:
                torch.cuda.set_sync_debug_mode("warn")
            return out
        return inner(images)

    trainer.train_step = wrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = caught  # the list catch_warnings appends to
        try:
            trainer.fit()
        except RuntimeError:
            pass  # the "error" step raised: recorded above
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    per_iter: dict[int, list[str]] = {}
    for s in result["steady_steps"]:
        lo, hi = marks.get(s), marks.get(s + 1)
        if lo is None or hi is None:
            continue
        per_iter[s] = [f"{Path(w.filename).name}:{w.lineno}" for w in records[lo:hi]
                       if "synchroniz" in str(w.message)]
    result["syncs_per_iteration"] = {s: len(v) for s, v in per_iter.items()}
    sites: dict[str, int] = {}
    for v in per_iter.values():
        for site in v:
            sites[site] = sites.get(site, 0) + 1
    result["sites"] = dict(sorted(sites.items(), key=lambda kv: -kv[1]))
    Path(args["out"]).write_text(json.dumps(result, indent=1))
    return 0
