"""The whole GPU verification in one command (issue 15), at most 8 minutes on one GPU.

    make gpu-check OUT=runs/gpu-check [WHEELS=.whl] [MNIST=data/mnist/test10k]
    PYTHONPATH=. python3 benchmarks/gpu_check.py --out DIR [--wheels DIR] [--mnist DIR]
        [--budget-s 480] [--parts a,b] [--self-test]

Writes DIR/gpu-check.json (after every part) and DIR/gpu-check.md (rendered from the
JSON, after every part and at the end). Each part runs in try/except with its own time
budget inside the global one; a failed part is recorded with its error and the next part
runs. Exit status 0 when the check ran (read the report for failed parts), 2 for bad
arguments. On a machine without CUDA the report says "no CUDA" and the parts run as a
CPU self-test (tiny sizes, fp32/bf16 in place of fp16) that exercises their code.

Parts (GPU sizes; budget in seconds):
  environment    GPU, driver, versions, missing modules, data                     10
  precisions     configs/mnist.yaml, 40 steps each of fp32, bf16, fp16: finite     75
                 losses (and the batch-128 throughput points of the trainer)
  fp16_overflow  INFOGAN_FAULT=overflow_D:0:4: exactly D's step 4 is skipped, the    45
                 scale halves once, D's weights and Adam state unchanged at step 4,
                 G's changed; training goes on with finite losses
  fp16_resume    configs/mnist_mlp.yaml fp16: 20 steps == 10 + resume to 20, bitwise  50
                 (G, D, the three Adams, the GradScaler)
  host_syncs     torch.cuda.set_sync_debug_mode over steady-state steps: syncs per    45
                 step and where (bf16, fp16); one step under "error"
  compile        train.compile on vs off (only if the config has the key)           40
  time_to_95     configs/mnist.yaml fp32, one seed: seconds and images until          120
                 eval/acc/c1 >= 0.95 (first 2,000 digits), then STOP
  throughput     configs/mnist_mlp.yaml and configs/mnist.yaml, global batch 64, 128, rest
                 512, 2048 x fp32/bf16/fp16: the trainer (python train.py, images/s
                 from metrics.jsonl after a warm-up interval) against
                 benchmarks/eager_loop.py on the same GPU; the plan is printed with
                 estimated seconds, points that do not fit are listed as not run

The parts live in benchmarks/gpu_parts/ (one module each; common.py: the context and
helpers they share; report.py: the report); this file runs them in order under the
budgets below.

Needs: torch, accelerate, numpy, scipy, pillow, safetensors, pyyaml, tqdm; the trainer's
data layer also imports webdataset and braceexpand (from --wheels when missing; without
them only the environment and eager parts can run). W&B is always off (log.wandb=off).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.gpu_parts.common import Ctx, PartFailed  # noqa: E402
from benchmarks.gpu_parts.compile import part_compile  # noqa: E402
from benchmarks.gpu_parts.environment import (  # noqa: E402
    install_wheels,
    part_environment,
    resolve_mnist,
)
from benchmarks.gpu_parts.fp16 import part_fp16_overflow, part_fp16_resume  # noqa: E402
from benchmarks.gpu_parts.host_syncs import part_host_syncs, probe_syncs, run_probe  # noqa: E402
from benchmarks.gpu_parts.precisions import part_precisions  # noqa: E402
from benchmarks.gpu_parts.report import pack_logs, write_report  # noqa: E402
from benchmarks.gpu_parts.throughput import part_throughput, trainer_point  # noqa: E402
from benchmarks.gpu_parts.time_to_95 import part_time_to_95  # noqa: E402

GLOBAL_BUDGET_S = 480.0
RESERVE_S = 10.0  # kept back for the report
PART_BUDGETS = {  # seconds, GPU mode; the self-test uses the same parts at tiny sizes
    "environment": 10, "precisions": 75, "fp16_overflow": 45, "fp16_resume": 50,
    "host_syncs": 45, "compile": 40, "time_to_95": 120, "throughput": 10_000,
}
PARTS = list(PART_BUDGETS)
# The CPU self-test (no CUDA; `make test` runs it) has no time budget: it runs tiny sizes
# whose time says nothing, and a budget there would make its verdict depend on the
# machine's load (a compile part was once killed after 79 s on a busy 2-core machine).
# It waits for each part's outcome. Budgets are for the real GPU run, where the device
# time is what is rationed; `--budget-s` still sets one explicitly.
NO_BUDGET = math.inf

PART_FUNCS: dict[str, Callable[[Ctx], dict]] = {
    "environment": part_environment, "precisions": part_precisions,
    "fp16_overflow": part_fp16_overflow, "fp16_resume": part_fp16_resume,
    "host_syncs": part_host_syncs, "compile": part_compile,
    "time_to_95": part_time_to_95, "throughput": part_throughput,
}
# The entry point, and the names tests/gpu and tests/integration/test_gpu_check.py reach
# as gpu_check.NAME.
__all__ = ["PARTS", "PART_FUNCS", "Ctx", "PartFailed", "main", "part_compile",
           "part_fp16_overflow", "part_fp16_resume", "probe_syncs", "resolve_mnist",
           "run_parts", "run_probe", "trainer_point"]


def run_parts(ctx: Ctx, names: list[str], budget_s: float, t_start: float) -> None:
    report = ctx.report
    global_deadline = t_start + budget_s - RESERVE_S
    for name in names:
        entry: dict[str, Any] = {"name": name, "status": "running"}
        report["parts"].append(entry)
        left = global_deadline - time.monotonic()
        part_budget = min(PART_BUDGETS[name] if ctx.gpu else NO_BUDGET, left)
        entry["budget_s"] = part_budget if math.isfinite(part_budget) else None
        if part_budget < 2:
            entry |= {"status": "not run", "error": "no time left in the global budget"}
            write_report(ctx.out, report)
            continue
        needs_trainer = name not in ("environment", "throughput")
        env_part = next((p for p in report["parts"] if p["name"] == "environment"), None)
        if needs_trainer and env_part and env_part["status"] == "failed":
            entry |= {"status": "not run", "error": "the environment part failed: "
                      + env_part["error"].splitlines()[0]}
            write_report(ctx.out, report)
            continue
        print(f"== {name} (budget {part_budget:.0f} s)" if math.isfinite(part_budget)
              else f"== {name} (no budget: self-test)", flush=True)
        ctx.deadline = time.monotonic() + part_budget
        t0 = time.monotonic()
        try:
            entry["result"] = PART_FUNCS[name](ctx)
            entry["status"] = "skipped" if "skipped" in entry["result"] else "passed"
        except PartFailed as e:
            entry["status"] = "failed"
            entry["error"] = str(e.args[0])
            if len(e.args) > 1:
                entry["result"] = e.args[1]
        except Exception:  # noqa: BLE001 - any failure is reported, the next part runs
            entry["status"] = "failed"
            entry["error"] = traceback.format_exc()[-4000:]
        if name == "environment" and entry["status"] == "failed":
            ctx.trainer_ok = False
        entry["seconds"] = time.monotonic() - t0
        report["elapsed_s"] = time.monotonic() - t_start
        print(f"   {name}: {entry['status']} in {entry['seconds']:.1f} s"
              + (f": {entry['error'].splitlines()[0][:200]}" if entry.get("error") else ""),
              flush=True)
        write_report(ctx.out, report)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu-check", help="report directory")
    p.add_argument("--wheels", default="", help="directory of .whl files for missing modules")
    p.add_argument("--mnist", default="", help="shards (index.json) or IDX files")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"global budget (default {GLOBAL_BUDGET_S:.0f} s on a GPU; "
                        "none for the CPU self-test, which waits for every part)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    p.add_argument("--self-test", action="store_true",
                   help="run the CPU self-test even where CUDA exists")
    p.add_argument("--scratch", default="", help="run directories (default: a new temp dir)")
    p.add_argument("--probe-syncs", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.probe_syncs:
        return probe_syncs(json.loads(a.probe_syncs))
    names = [n for n in a.parts.split(",") if n]
    unknown = [n for n in names if n not in PART_FUNCS]
    if unknown:
        print(f"error: unknown part(s) {unknown}; known: {PARTS}", file=sys.stderr)
        return 2
    if "environment" not in names:
        names.insert(0, "environment")

    t_start = time.monotonic()
    import torch

    cuda = torch.cuda.is_available() and not a.self_test
    if a.budget_s is None:
        a.budget_s = GLOBAL_BUDGET_S if cuda else NO_BUDGET
    out = Path(a.out).resolve()
    scratch = (Path(a.scratch).resolve() if a.scratch
               else Path(tempfile.mkdtemp(prefix="gpu-check-")))
    scratch.mkdir(parents=True, exist_ok=True)
    wheels = install_wheels(Path(a.wheels) if a.wheels else None, scratch)
    env = dict(os.environ)
    pypath = [str(ROOT)] + ([wheels["site"]] if wheels.get("site") else [])
    env["PYTHONPATH"] = os.pathsep.join(pypath + [x for x in [env.get("PYTHONPATH")] if x])
    env |= {"WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # --self-test on a GPU machine: the CPU path
    shards, data_note = resolve_mnist(Path(a.mnist) if a.mnist else None, scratch, env)
    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "mode": "gpu" if cuda else "cpu-self-test (no CUDA)", "cuda": cuda,
        "budget_s": a.budget_s if math.isfinite(a.budget_s) else None,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "scratch": str(scratch), "data": data_note, "wheels": wheels, "parts": [],
    }
    if not cuda:
        print("no CUDA: running the CPU self-test of each part (tiny sizes)", flush=True)
    ctx = Ctx(out=out, scratch=scratch, shards=shards, cuda=cuda, env=env, report=report)
    write_report(out, report)
    run_parts(ctx, names, a.budget_s, t_start)
    report["logs"] = pack_logs(scratch, out)
    report["elapsed_s"] = time.monotonic() - t_start
    report["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    write_report(out, report)
    failed = [x["name"] for x in report["parts"] if x["status"] not in ("passed", "skipped")]
    bad = f" (failed or not run: {', '.join(failed)})" if failed else ""
    print(f"gpu-check: {len(report['parts']) - len(failed)} of {len(report['parts'])} parts "
          f"passed or skipped{bad}; {report['elapsed_s']:.0f} s; report "
          f"{out / 'gpu-check.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
