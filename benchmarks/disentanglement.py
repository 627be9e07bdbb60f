"""Times the disentanglement scores of one model, phase by phase (for an idle machine:
timings on a shared one mean nothing).

    .venv/bin/infogan prepare-data --out data/dsprites --sprites      # once: 737,280 images
    .venv/bin/python benchmarks/disentanglement.py --shards data/dsprites
    .venv/bin/python benchmarks/disentanglement.py --shards data/dsprites \\
        --checkpoint runs/dsprites/checkpoints/step-00010000 --json out.json
    time .venv/bin/infogan eval --checkpoint runs/dsprites/checkpoints/step-00010000 \\
        --disentanglement --no-pictures          # the whole command, as users run it

Phases: decoding the shards (images packed, factors), then each score in registry order
(FactorVAE, MIG, DCI, SAP) with the codes it asks for computed as it goes (each image
once: the images FactorVAE made Q read are not read again for MIG), so a score's time
includes its share of Q forwards. Prints one line per phase (seconds, images through Q
so far) and the scores; --json writes them.

Without --checkpoint, Q is a randomly initialised network of InfoGAN-CR's discriminator
(Lin et al. 2020: conv 4x4 stride 2 with 32, 32, 64, 64 channels, FC 128, Q head FC 128
-> 5 means; about 8 M multiply-adds per 64x64 image), so the cost can be measured
before a trained checkpoint exists; its scores mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from torch import nn

from infogan_dist.config import LatentConfig
from infogan_dist.disentangle import SCORES
from infogan_dist.disentangle_eval import DEFAULT_BATCH, CodeTable, FactorImages, QCodes
from infogan_dist.latent import LatentSpace
from infogan_dist.models.base import Discriminator
from infogan_dist.scores import eval_mode


def infogan_cr_d(codes: int = 5) -> Discriminator:
    """InfoGAN-CR's D trunk and Q head for 64x64 images (random weights)."""
    lrelu = nn.LeakyReLU(0.2)
    trunk = nn.Sequential(
        nn.Conv2d(1, 32, 4, 2, 1), lrelu, nn.Conv2d(32, 32, 4, 2, 1), lrelu,
        nn.Conv2d(32, 64, 4, 2, 1), lrelu, nn.Conv2d(64, 64, 4, 2, 1), lrelu,
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), lrelu)
    q = nn.Sequential(nn.Linear(128, 128), lrelu, nn.Linear(128, codes))
    with torch.no_grad():  # random weights give codes that hardly vary: FactorVAE would
        q[-1].weight *= 100  # prune every dimension and stop before its votes
    return Discriminator(trunk, nn.Linear(128, 1), q)


def main(argv: list[str] | None = None) -> int:
    """Bad input (a flag, a missing shard directory or checkpoint): one line, exit 2."""
    try:
        run(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run(argv: list[str] | None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", required=True, help="shards with factor classes")
    p.add_argument("--checkpoint", default=None, help="a checkpoints/step-N directory")
    p.add_argument("--fraction", type=float, default=1.0,
                   help="share of disentanglement_lib's sample counts (default 1)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="images per Q forward")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write the phases and scores here")
    args = p.parse_args(argv)
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if not 0 < args.fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {args.fraction}")

    if args.checkpoint:
        from infogan_dist.checkpoint import load_for_inference

        loaded = load_for_inference(args.checkpoint, with_d=True, device=args.device)
        D, space = loaded.D, loaded.space
    else:
        torch.manual_seed(0)
        D = infogan_cr_d().to(args.device)
        space = LatentSpace(LatentConfig(noise_dim=5, categorical=[], continuous=5))
    phases, scores = {}, {}
    start = time.perf_counter()
    images = FactorImages.load(args.shards)
    phases["decode"] = time.perf_counter() - start
    print(f"decode   {phases['decode']:8.1f} s  {len(images.set.images)} images "
          f"({images.set.images.nbytes / 1e6:.1f} MB held)", flush=True)
    table = CodeTable(QCodes(D, space), images.set.images, args.batch, args.device)
    with eval_mode(D):
        for name in SCORES.names():
            score = SCORES[name]
            t = time.perf_counter()
            out = score.fn(table, images.data, np.random.default_rng([0, score.key]),
                           **score.scaled_sizes(args.fraction))
            phases[name] = time.perf_counter() - t
            scores[name] = out[name]
            active = f" ({out['num_active_dims']} active dims)" if name == "factorvae" else ""
            print(f"{name:<9}{phases[name]:8.1f} s  {table.computed} images through Q so far; "
                  f"{name} {out[name]:.4f}{active}", flush=True)
    phases["total"] = time.perf_counter() - start
    print(f"total    {phases['total']:8.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"phases_s": phases, "scores": scores, "images_through_q": table.computed,
                       "threads": torch.get_num_threads(), "fraction": args.fraction,
                       "checkpoint": args.checkpoint, "shards": args.shards}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
