r"""Counts, per training step, the collectives each call site issues and the bytes they
move, and the host syncs (.item(), .tolist(), float(t), ...) called from the project's
code. It counts; it does not time, so a busy CPU does not change what it reports.

    .venv/bin/python benchmarks/collectives.py --config configs/mnist.yaml \
        --steps 6 --log-every 3 data.shards=data/mnist/test10k
    .venv/bin/python benchmarks/collectives.py --config configs/smoke.yaml --json out.json \
        data.shards=data/mnist/test10k

It launches the trainer on 2 gloo ranks (`accelerate launch`, launch/cpu_ddp.yaml) with
train.global_batch_size = 2 x --batch-per-rank (default: the config's global batch),
--steps steps and a log every --log-every steps. Inside the benchmark process only, it
wraps the torch.distributed functions and registers a DDP comm hook on G and D that
counts each gradient bucket before all-reducing it the default way. A collective is
charged to the step whose loop iteration issued it (start-up: step 0), and to the call
site found on the Python stack:

  ddp_grads   DDP gradient buckets (the comm hook)
  batchnorm   CrossRankBatchNorm statistics (forward) and their gradients (backward)
  global_mean the global-batch means of loss.extra terms (ranks.global_mean, forward; its
              backward all-reduce runs inside autograd, with no project frame: other)
  stop        the agreement on stop requests
  metrics     the tracker's reduction at log steps
  rank_check  the bitwise cross-rank fingerprints
  other       anything else (checkpoint barriers, gather_object of data positions)

Host syncs are counted where the project's code (infogan_dist/) calls them, which is an
audit of the code's own sync points: on CPU every tensor is on the host, so nothing can
measure device syncs here. Bytes: tensor payload per rank (an all_gather counts what
each rank sends); pickled-object collectives count 0 bytes.

The columns printed are the medians over the steps that are neither the first, nor a
log step, nor the last (steady state), then over the log steps, then every step.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SITES = ("ddp_grads", "batchnorm", "global_mean", "stop", "metrics", "rank_check", "other")
WRAPPED = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter",
           "reduce_scatter_tensor", "broadcast", "reduce", "gather", "scatter", "barrier",
           "all_gather_object", "broadcast_object_list", "gather_object", "all_to_all",
           "all_reduce_coalesced", "all_gather_coalesced")
SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu")


# --- the worker (one rank) ------------------------------------------------------------
class Counter:
    def __init__(self) -> None:
        self.step = 0
        self.rows: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
        self.in_hook = False

    def add(self, site: str, nbytes: int, op: str) -> None:
        row = self.rows[self.step]
        for key in (site, f"{site}.{op}"):  # by site, and by site and operation
            row[f"{key}/calls"] += 1
            row[f"{key}/bytes"] += nbytes


def _site(stack: list[traceback.FrameSummary], counter: Counter) -> str:
    if counter.in_hook:
        return "ddp_grads"
    for frame in reversed(stack):
        path = frame.filename.replace(os.sep, "/")
        if "/infogan_dist/" not in path:
            continue
        name = path.rsplit("/", 1)[-1]
        if name == "tracking.py":
            return "metrics"
        if name == "ranks.py":
            if "stop" in frame.name.lower() or frame.name in ("agree", "poll", "drain"):
                return "stop"
            if "check" in frame.name or "fingerprint" in frame.name:
                return "rank_check"
            if frame.name == "global_mean":
                return "global_mean"
            return "batchnorm"
        return "other"
    return "other"


def _nbytes(args: tuple, kwargs: dict) -> int:
    import torch

    first = args[0] if args else next(iter(kwargs.values()), None)
    if isinstance(first, torch.Tensor):
        return first.numel() * first.element_size()
    if isinstance(first, list) and first and isinstance(first[0], torch.Tensor):
        # all_gather(out_list, tensor): what one rank sends is the tensor
        t = args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else first[0]
        return t.numel() * t.element_size()
    return 0


def _install(counter: Counter) -> None:
    import torch
    import torch.distributed as tdist

    for fname in WRAPPED:
        orig = getattr(tdist, fname, None)
        if orig is None:
            continue

        def wrapper(*args, _orig=orig, _op=fname, **kwargs):
            counter.add(_site(traceback.extract_stack()[:-1], counter), _nbytes(args, kwargs), _op)
            return _orig(*args, **kwargs)

        setattr(tdist, fname, functools.wraps(orig)(wrapper))

    for meth in SYNCS:
        orig = getattr(torch.Tensor, meth)

        def sync(self, *args, _orig=orig, **kwargs):
            caller = sys._getframe(1).f_code.co_filename.replace(os.sep, "/")
            if "/infogan_dist/" in caller:
                counter.rows[counter.step]["host_syncs"] += 1
                counter.rows[counter.step][f"host_syncs/{caller.rsplit('/', 1)[-1]}"] += 1
            return _orig(self, *args, **kwargs)

        setattr(torch.Tensor, meth, functools.wraps(orig)(sync))


def _comm_hook(counter: Counter):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    def hook(state, bucket):
        counter.in_hook = True
        try:
            return default_hooks.allreduce_hook(state, bucket)
        finally:
            counter.in_hook = False

    return hook


def worker(args: argparse.Namespace) -> None:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from infogan_dist.choices import load_config
    from infogan_dist.data import read_index
    from infogan_dist.trainer import Trainer

    counter = Counter()
    _install(counter)
    cfg = load_config(args.config, args.overrides)
    trainer = Trainer(cfg, read_index(cfg.data.shards))
    for model in (trainer.G, trainer.D):
        if isinstance(model, DistributedDataParallel):
            model.register_comm_hook(None, _comm_hook(counter))
    step_fn = trainer.train_step

    @functools.wraps(step_fn)
    def counted_step(images: torch.Tensor):
        counter.step += 1  # what the loop does until the next step is charged to this one
        return step_fn(images)

    trainer.train_step = counted_step
    trainer.fit()
    out = Path(args.worker_out) / f"rank{trainer.rank}.json"
    out.write_text(json.dumps({str(k): dict(v) for k, v in sorted(counter.rows.items())}))
    if trainer.rank == 0:  # what the run logged, for the perf/* keys
        (Path(args.worker_out) / "metrics.jsonl").write_text(
            (trainer.run_dir / "metrics.jsonl").read_text())


# --- the launcher ---------------------------------------------------------------------
def launch(args: argparse.Namespace, tmp: Path) -> dict[int, dict]:
    from infogan_dist.choices import load_config

    cfg = load_config(args.config, args.overrides)
    global_batch = 2 * args.batch_per_rank if args.batch_per_rank else cfg.train.global_batch_size
    overrides = [*args.overrides, f"run.output_dir={tmp}", "run.name=collectives",
                 "train.resume=none", f"train.global_batch_size={global_batch}",
                 f"train.max_steps={args.steps}", f"log.every={args.log_every}",
                 f"checkpoint.every={args.steps}", "log.images_every=0", "log.eval_every=0",
                 "log.wandb=off", "log.progress=false", "dist.check_every=0"]
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / "launch/cpu_ddp.yaml"), "--main_process_port", str(_free_port()),
           str(Path(__file__).resolve()), "--worker-out", str(tmp), "--config",
           str(ROOT / args.config) if not Path(args.config).is_absolute() else args.config,
           *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"run failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    rows = {rank: {int(k): v for k, v in json.loads((tmp / f"rank{rank}.json").read_text())
                   .items()} for rank in (0, 1)}
    metrics = [json.loads(line) for line in (tmp / "metrics.jsonl").read_text().splitlines()]
    return rows, metrics


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summarize(rows: dict[int, dict], steps: int, log_every: int) -> dict[str, dict]:
    """Medians per kind of step: steady (not first, log or last), log steps, all."""
    keys = sorted({k for s, row in rows.items() if s for k in row})
    kinds = {
        "steady": [s for s in range(2, steps) if s % log_every],
        "log": [s for s in range(2, steps) if s % log_every == 0],
        "first": [1],
        "last": [steps],
    }
    return {kind: {k: statistics.median(rows.get(s, {}).get(k, 0) for s in ss) for k in keys}
            for kind, ss in kinds.items() if ss}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/smoke.yaml")
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--log-every", type=int, default=3)
    p.add_argument("--batch-per-rank", type=int, default=0, help="0: the config's batch / 2")
    p.add_argument("--json", help="also write the summary here")
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.shards=DIR")
    args = p.parse_args(argv)
    if args.worker_out:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="collectives-") as tmp:
        per_rank, metrics = launch(args, Path(tmp))
    if per_rank[0] != per_rank[1]:
        print("note: the ranks differ (rank 1 has no main-process work)")
    summary = summarize(per_rank[0], args.steps, args.log_every)
    print(f"config {args.config} {' '.join(args.overrides)}: 2 gloo ranks, {args.steps} steps, "
          f"log every {args.log_every}; per step on rank 0 (median):")
    print("| site | " + " | ".join(f"{k} calls | {k} bytes" for k in summary) + " |")
    print("| --- |" + " ---: | ---: |" * len(summary))
    for site in SITES:
        cells = [f"{v.get(f'{site}/calls', 0):g} | {v.get(f'{site}/bytes', 0):g}"
                 for v in summary.values()]
        print(f"| {site} | " + " | ".join(cells) + " |")
    total = [f"{sum(v.get(f'{s}/calls', 0) for s in SITES):g} | "
             f"{sum(v.get(f'{s}/bytes', 0) for s in SITES):g}" for v in summary.values()]
    print("| **total** | " + " | ".join(total) + " |")
    print("| host syncs (infogan_dist) | " + " | ".join(
        f"{v.get('host_syncs', 0):g} | " for v in summary.values()) + " |")
    for kind, v in summary.items():
        where = {k.split("/", 1)[1]: n for k, n in v.items() if k.startswith("host_syncs/") and n}
        if where:
            print(f"  host syncs at {kind} steps by file: {where}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"summary": summary, "rows": per_rank, "metrics": metrics}, indent=1))


if __name__ == "__main__":
    main()
