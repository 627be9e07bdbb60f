"""Identity-preserving transforms of generated images, for Q's categorical codes.

Why (`loss.q_augment`): on MNIST the 10-way code can settle on style. Two categories that
differ only in slant or size each draw 4s and 9s, and the continuous codes or z carry the
digit (docs/benchmarks/2026-11-27-mnist-quality.md shows the c2 sweep turning a 4 into a
9). Q tells such categories apart, so the MI bound is at its maximum and nothing pushes
them apart by digit. When Q must also name c1 from a slightly rotated, scaled and shifted
copy of each fake (as in Elastic-InfoGAN, Ojha et al. 2020), categories that differ in
slant or size alone become indistinguishable, and what is left for them to differ in is
the digit.

The transform parameters come from a generator keyed by (seed, step), drawn for the
global batch and sliced per rank, like the latents: runs stay reproducible, resumable and
independent of the world size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .latent import keyed_generator, rank_rows

MAX_DEGREES = 15.0  # rotation in [-15, 15] degrees
MAX_SCALE = 0.1  # zoom in [0.9, 1.1]
MAX_SHIFT = 2.0 / 14.0  # shift in [-2, 2] pixels of 28 (affine_grid spans [-1, 1])
PARAMS = 4  # uniforms per image: angle, scale, dx, dy


def step_uniforms(
    seed: int, step: int, key: int, global_batch: int, rank: int, world_size: int,
    rekey: int = 0,
) -> torch.Tensor:
    """This rank's rows of a [global_batch, PARAMS] U(0, 1) draw keyed by (seed, step, key);
    `rekey` (the rollback count) joins the key only when > 0."""
    gen = keyed_generator(seed, step, key, 0xA06, *([rekey] if rekey else []))
    full = torch.rand(global_batch, PARAMS, generator=gen)
    return full[rank_rows(global_batch, rank, world_size)]


def random_affine(x: torch.Tensor, u: torch.Tensor, background: float = -1.0) -> torch.Tensor:
    """Rotates, scales and shifts each image of x [n, C, H, W] by the parameters in
    u [n, PARAMS] (uniforms in [0, 1]). Differentiable in x; uncovered pixels get
    `background` (the -1 of our [-1, 1] images), not a grey border."""
    u = u.to(device=x.device, dtype=torch.float32) * 2 - 1  # [-1, 1]
    angle = u[:, 0] * math.radians(MAX_DEGREES)
    scale = 1 + u[:, 1] * MAX_SCALE
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos, -sin, u[:, 2] * MAX_SHIFT], dim=1),
        torch.stack([sin, cos, u[:, 3] * MAX_SHIFT], dim=1),
    ], dim=1)
    xf = x.float() - background
    grid = F.affine_grid(theta, list(xf.shape), align_corners=False)
    out = F.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + background).to(x.dtype)
