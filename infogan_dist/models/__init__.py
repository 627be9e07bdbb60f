"""Plain nn.Modules: nothing in this package knows about ranks, devices or Accelerate.

`build_models` returns (G, D). G maps the latent-space input [n, input_dim] to images
[n, C, H, W] in [-1, 1]. D maps images to its two heads, asked for by name so that a
phase computes (and DDP expects gradients for) only the head it uses:
`D(x, head="adv")` -> (logit [n], None); `D(x, head="q")` -> (None, q [n, q_dim]);
`D(x, head="both")` -> (logit, q).
"""

from __future__ import annotations

from ..config import ModelConfig
from .base import Discriminator, Generator
from .conv import dcgan_models, infogan_mnist_models
from .mlp import mlp_models

SUPPORTED_SHAPES = {
    "mlp": "any image shape",
    "infogan_mnist": "28x28 images (any channel count)",
    "dcgan32": "32x32 images",
    "dcgan64": "64x64 images",
}


def check_shape(arch: str, image_shape: tuple[int, int, int]) -> str | None:
    """None when `arch` can model `image_shape`, else what it needs."""
    _, h, w = image_shape
    needs = {"infogan_mnist": 28, "dcgan32": 32, "dcgan64": 64}.get(arch)
    if needs is not None and (h, w) != (needs, needs):
        return SUPPORTED_SHAPES[arch]
    return None


def build_models(
    cfg: ModelConfig, input_dim: int, q_dim: int, image_shape: tuple[int, int, int]
) -> tuple[Generator, Discriminator]:
    if cfg.arch == "mlp":
        return mlp_models(input_dim, q_dim, image_shape, cfg.width)
    if cfg.arch == "infogan_mnist":
        return infogan_mnist_models(input_dim, q_dim, image_shape, cfg.width)
    size = {"dcgan32": 32, "dcgan64": 64}[cfg.arch]
    return dcgan_models(input_dim, q_dim, image_shape, cfg.width, size)


__all__ = ["Discriminator", "Generator", "build_models", "check_shape", "SUPPORTED_SHAPES"]
