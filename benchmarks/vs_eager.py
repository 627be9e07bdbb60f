r"""The trainer against a plain eager loop of the same networks, one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vs_eager.py --config configs/mnist_mlp.yaml \
        --steps 200 --warmup 20 --repeats 3 data.shards=data/mnist/test10k

The eager loop is this file's own (benchmarks/eager_loop.py from issue 15 was not on this
branch when it was written): the seed's three-optimizer update written out by hand on
the networks the config builds (build_models), torch's default Adam (for_loop on CPU),
batches indexed from a uint8 tensor in memory, no Accelerate, no tracker, no phases. The
trainer runs `Trainer.train_step` on batches of its own data source (memory mode), with
the config's optim.adam. Both draw their latents on the host each step. Same global
batch, same step count; the runs alternate and the median of --repeats is reported.
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infogan_dist.config import load_config  # noqa: E402
from infogan_dist.data import read_index  # noqa: E402
from infogan_dist.latent import LatentSpace  # noqa: E402
from infogan_dist.models import build_models  # noqa: E402
from infogan_dist.trainer import Trainer  # noqa: E402


def eager(cfg, steps: int, warmup: int) -> float:
    """images/s of the hand-written loop."""
    torch.manual_seed(cfg.run.seed)
    index = read_index(cfg.data.shards)
    space = LatentSpace(cfg.latent)
    G, D = build_models(cfg.model, space.input_dim, space.q_dim, index.image_shape)
    b1, b2 = cfg.optim.betas
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=(b1, b2))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=(b1, b2))
    opt_i = torch.optim.Adam([*G.parameters(), *D.parameters()], lr=cfg.optim.lr_info,
                             betas=(b1, b2))
    batch = cfg.train.global_batch_size
    data = torch.randint(0, 256, (10000, *index.image_shape), dtype=torch.uint8)
    ones, zeros = torch.ones(batch), torch.zeros(batch)

    def step(s: int) -> torch.Tensor:
        real = data[torch.randint(0, len(data), (batch,))].float() / 127.5 - 1
        latent = space.sample_step(cfg.run.seed, s, 0, batch, 0, 1)
        fake = G(space.generator_input(latent))
        opt_d.zero_grad(set_to_none=True)
        logit_real, _ = D(real, head="adv")
        logit_fake, _ = D(fake.detach(), head="adv")
        loss_d = (F.binary_cross_entropy_with_logits(logit_real, ones)
                  + F.binary_cross_entropy_with_logits(logit_fake, zeros))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        D.requires_grad_(False)
        logit, _ = D(fake, head="adv")
        F.binary_cross_entropy_with_logits(logit, ones).backward()
        D.requires_grad_(True)
        opt_g.step()
        opt_i.zero_grad(set_to_none=True)
        latent = space.sample_step(cfg.run.seed, s, 2, batch, 0, 1)
        _, q = D(G(space.generator_input(latent)), head="q")
        loss_i, _ = space.info_loss(q, latent, cfg.loss.lambda_cat, cfg.loss.lambda_cont)
        loss_i.backward()
        opt_i.step()
        return loss_d

    for s in range(warmup):
        step(s)
    start = time.perf_counter()
    for s in range(warmup, warmup + steps):
        loss = step(s)
    float(loss)
    return steps * batch / (time.perf_counter() - start)


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
