"""Training throughput from shards (memory and stream mode) vs. from an in-memory tensor.

Same model, batch and process; only where the batches come from differs:
  memory  data.mode=memory: shards decoded once at start, indexed per step
  stream  data.mode=stream: the webdataset pipeline (data.num_workers workers)
  tensor  a uint8 tensor already in memory, random batches: no data layer at all

    .venv/bin/python benchmarks/train.py --config configs/fashion_mnist.yaml \
        --steps 40 --warmup 10 --repeats 3 data.shards=data/fashion_mnist/train

Prints images/s per source and each one's ratio to `tensor`. One process, no launcher.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infogan_dist.choices import load_config  # noqa: E402
from infogan_dist.data import read_index  # noqa: E402
from infogan_dist.trainer import Trainer  # noqa: E402


def tensor_batches(trainer: Trainer, n: int = 10000):
    """The baseline: a uint8 tensor on the device, a random batch per step."""
    c, h, w = trainer.index.image_shape
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    data = data.to(trainer.device)
    while True:
        idx = torch.randint(0, n, (trainer.local_batch,), generator=g).to(trainer.device)
        yield data[idx], None


def measure(trainer: Trainer, batches, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        trainer.train_step(next(batches)[0])
    start = time.perf_counter()
    for _ in range(steps):
        stats = trainer.train_step(next(batches)[0])
    float(stats["loss/D"])  # wait for the device
    return steps * trainer.cfg.train.global_batch_size / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="configs/fashion_mnist.yaml")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--sources", default="tensor,memory,stream")
    p.add_argument("--repeats", type=int, default=3,
                   help="cycles over the sources; the median is reported (order effects)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    runs: dict[str, list[float]] = {s: [] for s in args.sources.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for source in runs:
                mode = "stream" if source == "stream" else "memory"
                cfg = load_config(args.config, [*args.overrides, f"data.mode={mode}",
                                                f"run.output_dir={tmp}", f"run.name={source}",
                                                "log.wandb=off", "log.progress=false"])
                trainer = Trainer(cfg, read_index(cfg.data.shards))
                batches = tensor_batches(trainer) if source == "tensor" else iter(trainer.source)
                runs[source].append(measure(trainer, batches, args.steps, args.warmup))
                del trainer, batches
    results = {k: statistics.median(v) for k, v in runs.items()}
    base = results.get("tensor")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"# config {args.config} {' '.join(args.overrides)}; {args.steps} steps after "
          f"{args.warmup} warm-up; median of {args.repeats} cycles over the sources")
    print("| source | images/s (median) | runs | vs tensor |")
    print("| --- | ---: | --- | ---: |")
    for k, v in results.items():
        ratio = f"{v / base:.3f}" if base else "-"
        print(f"| {k} | {v:.1f} | {', '.join(f'{x:.0f}' for x in runs[k])} | {ratio} |")


if __name__ == "__main__":
    main()
