"""The seed's MLP networks (PyTorch-GAN style), with the listed bugs fixed:
BatchNorm1d(n) with its default eps (the seed passed 0.8 as eps), logits instead of
Sigmoid + BCELoss, no Softmax before cross-entropy."""

from __future__ import annotations

import math

from torch import nn

from .base import Discriminator, Generator, scaled


def _block(n_in: int, n_out: int, bn: bool) -> list[nn.Module]:
    # A layer followed by BatchNorm needs no bias: BN removes it anyway.
    layers: list[nn.Module] = [nn.Linear(n_in, n_out, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(nn.LeakyReLU(0.2))
    return layers


def mlp_models(
    input_dim: int, q_dim: int, image_shape: tuple[int, int, int], width: float
) -> tuple[Generator, Discriminator]:
    pixels = math.prod(image_shape)
    h = [scaled(n, width) for n in (128, 256, 512, 1024)]
    g_body = nn.Sequential(
        *_block(input_dim, h[0], bn=False),
        *_block(h[0], h[1], bn=True),
        *_block(h[1], h[2], bn=True),
        *_block(h[2], h[3], bn=True),
        nn.Linear(h[3], pixels),
    )
    d1, d2 = scaled(512, width), scaled(256, width)
    trunk = nn.Sequential(nn.Flatten(), *_block(pixels, d1, bn=False), *_block(d1, d2, bn=False))
    return Generator(g_body, image_shape), Discriminator(
        trunk, nn.Linear(d2, 1), nn.Linear(d2, q_dim)
    )
