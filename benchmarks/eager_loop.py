"""A plain eager training loop of the trainer's networks: the yardstick for its speed.

    python benchmarks/eager_loop.py --config configs/mnist.yaml --batch 64 --steps 50 \
        --warmup 10 --device cuda --precision bf16 [section.key=value ...]
    python benchmarks/eager_loop.py --config configs/smoke.yaml --batch 16 --steps 5 --device cpu

Prints one line with images/s (and --json: one JSON object). From Python:
`eager_throughput(config, batch, steps=..., warmup=..., device=..., precision=...)`.

What is the same as the trainer: the networks (`infogan_dist.models.build_models`, from
the same config), the latent space (`LatentSpace`: generator input, info loss), the
losses (`infogan_dist.losses.ADVERSARIAL`), the update of `train.update` (`paper`: the info loss
added to the D and G losses, two Adams, plus `loss.q_augment`'s extra Q loss on
transformed fakes in both phases; `three_optimizers`: D, G and info steps), the Adam
learning rates and betas, autocast for bf16/fp16 and one GradScaler shared by the
optimizers (each optimizer: step, then update, as Accelerate does).
What is left out, on purpose: Accelerate, DDP, the data layer (real images are a random
uint8 tensor preloaded on the device, indexed on the device), the step-keyed latent draws
(latents and transform parameters are drawn on the device from torch's global RNG),
CrossRankBatchNorm (plain BatchNorm), the reporter, checkpoints and pictures. Adam is
torch's default (foreach on CUDA), as in the trainer.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infogan_dist import augment  # noqa: E402
from infogan_dist.choices import load_config  # noqa: E402
from infogan_dist.config import Config  # noqa: E402
from infogan_dist.latent import Latent, LatentSpace  # noqa: E402
from infogan_dist.losses import ADVERSARIAL  # noqa: E402
from infogan_dist.models import build_models  # noqa: E402

IMAGE_SHAPE = (1, 28, 28)
POOL = 4096  # preloaded "real" images


class EagerLoop:
    """Built once; `step()` runs one iteration of the configured update."""

    def __init__(self, cfg: Config, batch: int, device: str = "cpu", precision: str = "no",
                 image_shape: tuple[int, int, int] = IMAGE_SHAPE, seed: int = 0):
        if precision not in ("no", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision: no|fp32|bf16|fp16, not {precision!r}")
        if precision == "fp16" and not str(device).startswith("cuda"):
            raise ValueError("fp16 needs a CUDA device (a GradScaler on CPU is not what we time)")
        self.cfg, self.batch, self.device = cfg, batch, torch.device(device)
        torch.manual_seed(seed)
        self.space = LatentSpace(cfg.latent)
        G, D = build_models(cfg.model, self.space.input_dim, self.space.q_dim, image_shape)
        self.G, self.D = G.to(self.device), D.to(self.device)
        betas = tuple(cfg.optim.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.optim.lr_d, betas=betas)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.optim.lr_g, betas=betas)
        self.opt_info = None
        if cfg.train.update == "three_optimizers":
            self.opt_info = torch.optim.Adam(
                itertools.chain(self.G.parameters(), self.D.parameters()),
                lr=cfg.optim.lr_info, betas=betas)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.dtype = dtype
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.images = torch.randint(0, 256, (POOL, *image_shape), dtype=torch.uint8,
                                    device=self.device)

    # --- pieces ----------------------------------------------------------------------
    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def opt_step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:  # Accelerate: every optimizer's step updates the scale
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    def sample(self, n: int) -> Latent:
        lat = self.space.cfg
        dev = self.device
        z = (torch.rand(n, lat.noise_dim, device=dev) * 2 - 1 if lat.noise == "uniform"
             else torch.randn(n, lat.noise_dim, device=dev))
        cat = (torch.stack([torch.randint(k, (n,), device=dev) for k in self.space.categorical],
                           dim=1) if self.space.categorical
               else torch.zeros(n, 0, dtype=torch.long, device=dev))
        cont = torch.rand(n, self.space.num_continuous, device=dev) * 2 - 1
        return Latent(z, cat, cont)

    def real_batch(self) -> torch.Tensor:
        idx = torch.randint(0, POOL, (self.batch,), device=self.device)
        return self.images[idx].float().div_(127.5).sub_(1.0)

    def info(self, q: torch.Tensor, latent: Latent) -> torch.Tensor:
        c = self.cfg.loss
        return self.space.info_loss(q, latent, c.lambda_cat, c.lambda_cont)[0]

    def q_aug(self, D: torch.nn.Module, fake: torch.Tensor, latent: Latent) -> torch.Tensor:
        weight = self.cfg.loss.q_augment * self.cfg.loss.lambda_cat
        u = torch.rand(fake.shape[0], augment.PARAMS, device=self.device)
        _, q = D(augment.random_affine(fake, u), head="q")
        return self.space.info_loss(q, latent, weight, 0.0)[0]

    # --- one iteration -----------------------------------------------------------------
    def step(self) -> None:
        cfg, adv = self.cfg, ADVERSARIAL[self.cfg.loss.adversarial]()
        paper, qa = cfg.train.update == "paper", cfg.loss.q_augment > 0
        real, latent = self.real_batch(), self.sample(self.batch)
        # D (paper: + info loss and q_augment on the detached fakes)
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            fake = self.G(self.space.generator_input(latent))
            real_logit, _ = self.D(real, head="adv")
            loss = adv.d_real(real_logit)
            fake_logit, q = self.D(fake.detach(), head="both" if paper else "adv")
            loss = loss + adv.d_fake(fake_logit)
            if paper:
                loss = loss + self.info(q, latent)
                if qa:
                    loss = loss + self.q_aug(self.D, fake.detach(), latent)
        self.backward(loss)
        self.opt_step(self.opt_d)
        # G (through D, D's weights get no gradient: requires_grad off)
        self.opt_g.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)
        with self.autocast():
            logit, q = self.D(fake, head="both" if paper else "adv")
            loss = adv.g(logit)
            if paper:
                loss = loss + self.info(q, latent)
                if qa:
                    loss = loss + self.q_aug(self.D, fake, latent)
        self.backward(loss)
        self.D.requires_grad_(True)
        self.opt_step(self.opt_g)
        # info (three_optimizers)
        if self.opt_info is not None:
            self.opt_info.zero_grad(set_to_none=True)
            latent = self.sample(self.batch)
            with self.autocast():
                fake = self.G(self.space.generator_input(latent))
                n = fake.shape[0]
                if qa:
                    u = torch.rand(n, augment.PARAMS, device=self.device)
                    fake = torch.cat([fake, augment.random_affine(fake, u)])
                _, q = self.D(fake, head="q")
                loss = self.info(q[:n], latent)
                if qa:
                    weight = cfg.loss.q_augment * cfg.loss.lambda_cat
                    loss = loss + self.space.info_loss(q[n:], latent, weight, 0.0)[0]
            self.backward(loss)
            self.opt_step(self.opt_info)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eager_throughput(config: str | Path, batch: int, steps: int = 50, warmup: int = 10,
                     device: str = "cpu", precision: str = "no",
                     overrides: list[str] | None = None) -> dict:
    """Times `steps` iterations after `warmup` of the config's update at global batch
    `batch` on one device. Returns images_per_s, s_per_step and what was run."""
    cfg = load_config(config, list(overrides or []))
    loop = EagerLoop(cfg, batch, device=device, precision=precision)
    for _ in range(warmup):
        loop.step()
    _sync(loop.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loop.step()
    _sync(loop.device)
    elapsed = time.perf_counter() - t0
    return {"config": str(config), "batch": batch, "steps": steps, "warmup": warmup,
            "device": str(loop.device), "precision": precision,
            "update": cfg.train.update, "arch": cfg.model.arch, "width": cfg.model.width,
            "images_per_s": batch * steps / elapsed, "s_per_step": elapsed / steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="no", choices=["no", "fp32", "bf16", "fp16"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", help="section.key=value (e.g. model.width=0.5)")
    a = p.parse_args(argv)
    r = eager_throughput(a.config, a.batch, a.steps, a.warmup, a.device, a.precision,
                         a.overrides)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"eager {r['config']} batch {r['batch']} {r['precision']} on {r['device']}: "
              f"{r['images_per_s']:.1f} images/s ({1000 * r['s_per_step']:.2f} ms/step, "
              f"{r['steps']} steps after {r['warmup']} warm-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
