r"""The trainer against a plain eager loop of the same networks, one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vs_eager.py --config configs/mnist_mlp.yaml \
        --steps 200 --warmup 20 --repeats 3 data.shards=data/mnist/test10k

The eager loop is benchmarks/eager_loop.py (the baseline of `make gpu-check` too): the
config's update written out by hand on the networks the config builds (build_models),
torch's default Adam (for_loop on CPU), batches indexed from a uint8 tensor in memory,
no Accelerate, no tracker, no phases. The trainer runs `Trainer.train_step` on batches of
its own data source (memory mode), with the config's optim.adam. The trainer draws its
latents on the host (keyed by step), the eager loop on the device. Same global batch,
same step count; the runs alternate and the median of --repeats is reported.
Target (issue 11): trainer >= 1.5 x eager on configs/mnist_mlp.yaml at batch 64.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.eager_loop import EagerLoop  # noqa: E402
from infogan_dist.choices import load_config  # noqa: E402
from infogan_dist.data import read_index  # noqa: E402
from infogan_dist.trainer import Trainer  # noqa: E402


def eager(cfg, steps: int, warmup: int) -> float:
    """images/s of the plain eager loop (benchmarks/eager_loop.py) on the same networks."""
    index = read_index(cfg.data.shards)
    loop = EagerLoop(cfg, cfg.train.global_batch_size, device="cpu",
                     image_shape=tuple(index.image_shape), seed=cfg.run.seed)
    for _ in range(warmup):
        loop.step()
    start = time.perf_counter()
    for _ in range(steps):
        loop.step()
    return steps * cfg.train.global_batch_size / (time.perf_counter() - start)


def trainer(cfg, steps: int, warmup: int) -> float:
    t = Trainer(cfg, read_index(cfg.data.shards))
    batches = iter(t.source)
    for _ in range(warmup):
        t.train_step(next(batches)[0])
        t.state.step += 1
    start = time.perf_counter()
    for _ in range(steps):
        stats = t.train_step(next(batches)[0])
        t.state.step += 1
    float(stats["loss/D"])  # wait for the device
    return steps * cfg.train.global_batch_size / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mnist_mlp.yaml")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    runs: dict[str, list[float]] = {"eager": [], "trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [*args.overrides, f"run.output_dir={tmp}",
                                        "log.wandb=off", "log.progress=false",
                                        "data.mode=memory"])
        for _ in range(args.repeats):
            runs["eager"].append(eager(cfg, args.steps, args.warmup))
            runs["trainer"].append(trainer(cfg, args.steps, args.warmup))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; config "
          f"{args.config} {' '.join(args.overrides)}; batch {cfg.train.global_batch_size}, "
          f"{args.steps} steps after {args.warmup}, median of {args.repeats}")
    for k, v in med.items():
        print(f"{k:8s} {v:9.1f} images/s  ({', '.join(f'{x:.0f}' for x in runs[k])})")
    print(f"trainer / eager: {med['trainer'] / med['eager']:.2f}")


if __name__ == "__main__":
    main()
