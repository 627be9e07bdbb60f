r"""Weak scaling on this machine: training images/s on 1 and 2 ranks at the same per-rank
batch, from real `accelerate launch` runs of train.py (launch/cpu.yaml, launch/cpu_ddp.yaml:
DDP over gloo).

    infogan prepare-data --out /tmp/mnist10k --shard-size 2500 \
        --images ../shared/data/mnist/t10k-images-idx3-ubyte.gz \
        --labels ../shared/data/mnist/t10k-labels-idx1-ubyte.gz
    .venv/bin/python benchmarks/scaling.py --config configs/mnist.yaml --batch-per-rank 64 \
        --steps 60 --log-every 10 --repeats 3 data.shards=/tmp/mnist10k
    .venv/bin/python benchmarks/scaling.py --config configs/smoke.yaml --batch-per-rank 16 \
        --steps 200 --log-every 25 --repeats 3 data.shards=/tmp/mnist10k

Each run trains --steps steps with train.global_batch_size = ranks x --batch-per-rank and
logs every --log-every steps; the trainer writes `perf/images_per_s` and
`perf/s_per_step` per log interval to metrics.jsonl. The first interval (start-up, first
steps, allocator warm-up) is skipped; images/s = images / seconds over the other
intervals. Checkpoints and pictures are written only after the last logged interval, so
they are not timed. Every process runs with --threads intra-op threads (default 1:
OMP_NUM_THREADS=1, one core per rank), so on a 2-core machine 2 ranks use 2 cores.

    weak-scaling efficiency = (2-rank images/s) / (2 x 1-rank images/s)

1.0 is perfect; what is lost is the gradient all-reduce (three per step: D, G, info
phases), the CrossRankBatchNorm all-reduces, the loss all-reduce at each log, and
whatever the two processes take from each other (memory bandwidth, a busy host). With
--repeats N the runs alternate 1, 2, 1, 2, ... and the median of each is reported.
Extra arguments are config overrides (section.key=value) passed to train.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAUNCH = {1: "launch/cpu.yaml", 2: "launch/cpu_ddp.yaml"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def _launch(ranks: int, args: argparse.Namespace, out_dir: Path, name: str) -> tuple:
    cmd = [
        str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / LAUNCH[ranks]),
        "--main_process_port", str(free_port()), str(ROOT / "train.py"),
        "--config", str(ROOT / args.config), *args.overrides,
        f"run.output_dir={out_dir}", f"run.name={name}", "train.resume=none",
        f"train.global_batch_size={ranks * args.batch_per_rank}",
        f"train.max_steps={args.steps}", f"log.every={args.log_every}",
        f"checkpoint.every={args.steps}", "log.images_every=0", "log.eval_every=0",
        "log.wandb=off", "log.progress=false", "dist.check_every=0",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, cmd


def _throughput(proc: subprocess.Popen, cmd: list[str], ranks: int, args: argparse.Namespace,
                out_dir: Path, name: str) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}): {shlex.join(cmd)}\n{out[-3000:]}\n"
                 f"{err[-3000:]}")
    metrics = (out_dir / name / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in metrics]
    timed, prev = [], 0
    for row in rows:
        steps, prev = row["step"] - prev, row["step"]
        timed.append((steps, steps * row["perf/s_per_step"]))
    timed = timed[1:]  # the first interval is warm-up
    if not timed:
        sys.exit("no interval left after warm-up: use more --steps or a smaller --log-every")
    steps = sum(s for s, _ in timed)
    seconds = sum(t for _, t in timed)
    images = steps * ranks * args.batch_per_rank
    return {"ranks": ranks, "images_per_s": images / seconds, "s_per_step": seconds / steps,
            "timed_steps": steps}


def run_once(ranks: int, args: argparse.Namespace, out_dir: Path, tag: str) -> dict:
    """One `accelerate launch` run; returns its throughput over the timed intervals."""
    name = f"scaling-{ranks}r-{tag}"
    return _throughput(*_launch(ranks, args, out_dir, name), ranks, args, out_dir, name)


def run_pair(args: argparse.Namespace, out_dir: Path, tag: str) -> dict:
    """Two independent 1-rank runs at once (no collective between them): what two
    processes get from this machine when they only share its cores, caches and memory.
    Their summed images/s is the ceiling of the 2-rank run on the same machine."""
    names = [f"scaling-pair{i}-{tag}" for i in (0, 1)]
    launched = [_launch(1, args, out_dir, n) for n in names]
    runs = [_throughput(*lc, 1, args, out_dir, n) for lc, n in zip(launched, names, strict=True)]
    return {"ranks": "2 x 1", "images_per_s": sum(r["images_per_s"] for r in runs),
            "s_per_step": statistics.mean(r["s_per_step"] for r in runs),
            "timed_steps": runs[0]["timed_steps"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/smoke.yaml")
    p.add_argument("--batch-per-rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("--pair", action="store_true",
                   help="also run two independent 1-rank trainings at once each cycle: the "
                        "machine's ceiling for 2 ranks")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.shards=DIR")
    args = p.parse_args(argv)

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; {platform.platform()}")
    import torch  # only for the version line

    print(f"torch {torch.__version__}; date {time.strftime('%Y-%m-%d %H:%M')}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"config {args.config} {' '.join(args.overrides)}; {args.batch_per_rank} images "
          f"per rank per step, {args.steps} steps, log every {args.log_every} (first interval "
          f"skipped), {args.threads} thread(s) per process")
    variants: list = [1, 2, *(["pair"] if args.pair else [])]
    results: dict = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        for rep in range(args.repeats):
            for ranks in variants:
                res = (run_pair(args, Path(tmp), str(rep)) if ranks == "pair"
                       else run_once(ranks, args, Path(tmp), str(rep)))
                results[ranks].append(res)
                print(f"  run {rep + 1}/{args.repeats}, {res['ranks']} rank(s): "
                      f"{res['images_per_s']:8.1f} images/s ({1000 * res['s_per_step']:.1f} "
                      f"ms/step over {res['timed_steps']} steps)", flush=True)
    med = {r: statistics.median(x["images_per_s"] for x in v) for r, v in results.items()}
    eff = med[2] / (2 * med[1])
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    print(f"1 rank : {med[1]:8.1f} images/s (median of {args.repeats})")
    print(f"2 ranks: {med[2]:8.1f} images/s (median of {args.repeats}), "
          f"{med[2] / 2:.1f} per rank")
    print(f"weak-scaling efficiency (2-rank / (2 x 1-rank)): {eff:.2f}")
    if args.pair:
        print(f"2 independent 1-rank runs at once: {med['pair']:8.1f} images/s (median of "
              f"{args.repeats}); ceiling (pair / (2 x 1-rank)): {med['pair'] / (2 * med[1]):.2f}; "
              f"2-rank / pair: {med[2] / med['pair']:.2f}")


if __name__ == "__main__":
    main()
