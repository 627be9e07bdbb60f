"""Latent traversal pictures, as in the paper's Figure 2. Always the unwrapped generator
in eval mode (BatchNorm running statistics, no collectives), so the main process can
draw them alone."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.utils import save_image

from .latent import Latent, LatentSpace, keyed_generator


@torch.no_grad()
def _render(G: nn.Module, space: LatentSpace, latent: Latent) -> torch.Tensor:
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    try:
        images = G(space.generator_input(latent.to(device))).float().cpu()
    finally:
        G.train(was_training)
    return (images + 1) / 2


def _rows(space: LatentSpace) -> int:
    return space.categorical[0] if space.categorical else 10


def category_grid(G: nn.Module, space: LatentSpace, seed: int, cols: int = 10) -> torch.Tensor:
    """Rows = categories of c1, columns = random noise (the same noise in every row);
    other categorical codes random, continuous codes 0. [rows*cols, C, H, W]."""
    rows = _rows(space)
    base = space.sample(cols, keyed_generator(seed, 0xC0DE))
    latent = base[[c for _ in range(rows) for c in range(cols)]]
    if space.categorical:
        latent.cat[:, 0] = torch.arange(rows).repeat_interleave(cols)
    latent.cont.zero_()
    return _render(G, space, latent)


def traversal_grid(
    G: nn.Module, space: LatentSpace, code: int, seed: int, cols: int = 10, span: float = 2.0
) -> torch.Tensor:
    """Rows = categories of c1, columns = continuous code `code` swept from -span to span,
    noise fixed per row, other continuous codes 0. [rows*cols, C, H, W]."""
    rows = _rows(space)
    base = space.sample(rows, keyed_generator(seed, 0x7EA5))
    latent = base[[r for r in range(rows) for _ in range(cols)]]
    if space.categorical:
        latent.cat[:, 0] = torch.arange(rows).repeat_interleave(cols)
    latent.cont.zero_()
    latent.cont[:, code] = torch.linspace(-span, span, cols).repeat(rows)
    return _render(G, space, latent)


def save_pictures(G: nn.Module, space: LatentSpace, seed: int, out: Path) -> list[Path]:
    """`out` (categories x noise) and `out-<code>.png` per continuous code."""
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out]
    save_image(category_grid(G, space, seed), out, nrow=10, padding=1)
    for j, name in enumerate(space.cont_names):
        path = out.with_name(f"{out.stem}-{name}.png")
        save_image(traversal_grid(G, space, j, seed), path, nrow=10, padding=1)
        paths.append(path)
    return paths
