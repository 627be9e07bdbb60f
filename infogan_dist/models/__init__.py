"""Plain nn.Modules: nothing in this package knows about ranks, devices or Accelerate.

MODELS maps `model.arch` to a ModelSpec whose `build(input_dim, q_dim, image_shape,
width)` returns (G, D). G maps the latent-space input [n, input_dim] to images
[n, C, H, W] in [-1, 1]. D maps images to its two heads, asked for by name so that a
phase computes (and DDP expects gradients for) only the head it uses:
`D(x, head="adv")` -> (logit [n], None); `D(x, head="q")` -> (None, q [n, q_dim]);
`D(x, head="both")` -> (logit, q).

model.spectral_norm applies spectral normalization to every layer of D (spectral.py),
whatever the architecture.

A new architecture: a module in this package and one `MODELS.add` line below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from ..config import ModelConfig
from ..registry import Registry
from .base import Discriminator, Generator
from .conv import dcgan_models, infogan_mnist_models
from .infogan_cr import infogan_cr64_models
from .mlp import mlp_models
from .spectral import apply_spectral_norm


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[int, int, tuple[int, int, int], float], tuple[Generator, Discriminator]]
    image_size: int | None  # the height = width it makes and judges; None: any shape
    needs: str  # what it needs, for error messages


MODELS: Registry[ModelSpec] = Registry("model.arch")
MODELS.add("mlp", ModelSpec(mlp_models, None, "any image shape"))
MODELS.add("infogan_mnist",
           ModelSpec(infogan_mnist_models, 28, "28x28 images (any channel count)"))
MODELS.add("dcgan32", ModelSpec(partial(dcgan_models, size=32), 32, "32x32 images"))
MODELS.add("dcgan64", ModelSpec(partial(dcgan_models, size=64), 64, "64x64 images"))
MODELS.add("infogan_cr64", ModelSpec(infogan_cr64_models, 64,
                                     "64x64 images (any channel count)"))


def check_shape(arch: str, image_shape: tuple[int, int, int]) -> str | None:
    """None when `arch` can model `image_shape`, else what it needs."""
    spec = MODELS[arch]
    _, h, w = image_shape
    if spec.image_size is not None and (h, w) != (spec.image_size, spec.image_size):
        return spec.needs
    return None


def build_models(
    cfg: ModelConfig, input_dim: int, q_dim: int, image_shape: tuple[int, int, int]
) -> tuple[Generator, Discriminator]:
    G, D = MODELS[cfg.arch].build(input_dim, q_dim, tuple(image_shape), cfg.width)
    if cfg.spectral_norm:
        apply_spectral_norm(D)
    return G, D


__all__ = ["MODELS", "Discriminator", "Generator", "ModelSpec", "build_models", "check_shape"]
