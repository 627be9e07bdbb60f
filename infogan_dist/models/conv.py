"""Convolutional networks: the paper's MNIST pair and DCGAN pairs for 32x32 / 64x64 RGB."""

from __future__ import annotations

from torch import nn

from .base import Discriminator, Generator, scaled


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.1)


def _q_head(features: int, q_dim: int, width: float) -> nn.Module:
    # Paper: FC 128 BN lReLU -> FC (code logits and means) on D's last features.
    hidden = scaled(128, width)
    return nn.Sequential(
        nn.Linear(features, hidden, bias=False), nn.BatchNorm1d(hidden), _lrelu(),
        nn.Linear(hidden, q_dim),
    )


def infogan_mnist_models(
    input_dim: int, q_dim: int, image_shape: tuple[int, int, int], width: float
) -> tuple[Generator, Discriminator]:
    """Paper appendix, Table 1 (MNIST). 28x28 images with any channel count."""
    c = image_shape[0]
    fc, c2, c1 = scaled(1024, width), scaled(128, width), scaled(64, width)
    g_body = nn.Sequential(
        nn.Linear(input_dim, fc, bias=False), nn.BatchNorm1d(fc), nn.ReLU(),
        nn.Linear(fc, 7 * 7 * c2, bias=False), nn.BatchNorm1d(7 * 7 * c2), nn.ReLU(),
        nn.Unflatten(1, (c2, 7, 7)),
        nn.ConvTranspose2d(c2, c1, 4, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.ConvTranspose2d(c1, c, 4, 2, 1),
    )
    trunk = nn.Sequential(
        nn.Conv2d(c, c1, 4, 2, 1), _lrelu(),
        nn.Conv2d(c1, c2, 4, 2, 1, bias=False), nn.BatchNorm2d(c2), _lrelu(),
        nn.Flatten(),
        nn.Linear(7 * 7 * c2, fc, bias=False), nn.BatchNorm1d(fc), _lrelu(),
    )
    return Generator(g_body, image_shape), Discriminator(
        trunk, nn.Linear(fc, 1), _q_head(fc, q_dim, width)
    )


def dcgan_models(
    input_dim: int, q_dim: int, image_shape: tuple[int, int, int], width: float, size: int
) -> tuple[Generator, Discriminator]:
    """DCGAN (Radford et al.): 4x4 -> size by stride-2 transposed convs, and the mirror."""
    c = image_shape[0]
    ups = {32: 3, 64: 4}[size]
    chans = [scaled(64 * 2 ** i, width) for i in reversed(range(ups))]  # e.g. 256,128,64
    g_layers: list[nn.Module] = [
        nn.Linear(input_dim, 4 * 4 * chans[0], bias=False), nn.BatchNorm1d(4 * 4 * chans[0]),
        nn.ReLU(), nn.Unflatten(1, (chans[0], 4, 4)),
    ]
    for a, b in zip(chans, chans[1:], strict=False):
        g_layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
    g_layers.append(nn.ConvTranspose2d(chans[-1], c, 4, 2, 1))

    d_chans = list(reversed(chans))  # e.g. 64,128,256
    d_layers: list[nn.Module] = [nn.Conv2d(c, d_chans[0], 4, 2, 1), _lrelu()]
    for a, b in zip(d_chans, d_chans[1:], strict=False):
        d_layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), _lrelu()]
    d_layers.append(nn.Flatten())
    features = d_chans[-1] * 4 * 4
    return Generator(nn.Sequential(*g_layers), image_shape), Discriminator(
        nn.Sequential(*d_layers), nn.Linear(features, 1), _q_head(features, q_dim, width)
    )
