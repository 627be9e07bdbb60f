"""InfoGAN-CR's networks for 64x64 images (Lin et al., ICML 2020; the authors' dSprites
code): G FC 128 -> FC 4x4x64 -> deconv 64, 32, 32 -> C channels, with ReLU / leaky ReLU
each followed by BatchNorm; D conv 4x4 stride 2 with 32, 32, 64, 64 channels, FC 128,
leaky ReLU 0.2 and no BatchNorm; the adversarial head FC 1, Q FC 128 -> codes.

Two choices follow the project rather than the paper, and keep the networks' function:
- G's output is tanh in [-1, 1], the project's image scale (data.to_float maps uint8 to
  [-1, 1]; every architecture's Generator ends in tanh), where the paper has a sigmoid in
  [0, 1] on [0, 1] data: sigmoid(x) = (tanh(x / 2) + 1) / 2, the same family.
- Spectral normalization (the paper's D) is `model.spectral_norm`, applied from outside
  by models.build_models, so the same D can be trained with and without it.
Weights start as in the authors' code: N(0, 0.02) for every conv and linear weight,
biases 0, BatchNorm scale 1.
"""

from __future__ import annotations

from torch import nn

from .base import Discriminator, Generator, scaled


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2)


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)


def infogan_cr64_models(
    input_dim: int, q_dim: int, image_shape: tuple[int, int, int], width: float
) -> tuple[Generator, Discriminator]:
    """64x64 images with any channel count (dSprites: 1)."""
    c = image_shape[0]
    fc, c64, c32 = scaled(128, width), scaled(64, width), scaled(32, width)
    # the authors' order: activation, then BatchNorm (so the layers keep their biases)
    g_body = nn.Sequential(
        nn.Linear(input_dim, fc), nn.ReLU(), nn.BatchNorm1d(fc),
        nn.Linear(fc, 4 * 4 * c64), nn.ReLU(), nn.BatchNorm1d(4 * 4 * c64),
        nn.Unflatten(1, (c64, 4, 4)),
        nn.ConvTranspose2d(c64, c64, 4, 2, 1), _lrelu(), nn.BatchNorm2d(c64),  # 8x8
        nn.ConvTranspose2d(c64, c32, 4, 2, 1), _lrelu(), nn.BatchNorm2d(c32),  # 16x16
        nn.ConvTranspose2d(c32, c32, 4, 2, 1), _lrelu(), nn.BatchNorm2d(c32),  # 32x32
        nn.ConvTranspose2d(c32, c, 4, 2, 1),  # 64x64
    )
    trunk = nn.Sequential(
        nn.Conv2d(c, c32, 4, 2, 1), _lrelu(),  # 32x32
        nn.Conv2d(c32, c32, 4, 2, 1), _lrelu(),  # 16x16
        nn.Conv2d(c32, c64, 4, 2, 1), _lrelu(),  # 8x8
        nn.Conv2d(c64, c64, 4, 2, 1), _lrelu(),  # 4x4
        nn.Flatten(),
        nn.Linear(4 * 4 * c64, fc), _lrelu(),
    )
    q = nn.Sequential(nn.Linear(fc, fc), _lrelu(), nn.Linear(fc, q_dim))
    G, D = Generator(g_body, image_shape), Discriminator(trunk, nn.Linear(fc, 1), q)
    _init(G)
    _init(D)
    return G, D
