"""Latent traversal pictures, as in the paper's Figure 2. Always the unwrapped generator
in eval mode (BatchNorm running statistics, no collectives), so the main process can
draw them alone.

`<name>-codes.png` has one row per continuous code, that code swept over its prior's
range with the noise and the other codes fixed, each row labelled at its left: the
code's name and, where the data's factors are known, the factor it holds the most
information about and that information as a share of the factor's entropy
(`factor_labels`: e.g. `c2 scale 0.71`)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from .errors import naming
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


def grid_pixels(images: torch.Tensor, nrow: int, padding: int = 1) -> torch.Tensor:
    """uint8 [H, W, 3] of images in [0, 1] laid out `nrow` per row with `padding` black
    pixels around each: exactly what torchvision's make_grid + save_image computed (grey
    images become RGB; one image alone has no padding), without importing torchvision,
    whose import pulls in torchvision.ops and torch._dynamo (seconds of start-up)."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.size(1) == 1:
        images = torch.cat((images, images, images), 1)
    if images.size(0) == 1:
        grid = images[0]
    else:
        n, c, h, w = images.shape
        cols = min(nrow, n)
        rows = math.ceil(n / cols)
        grid = images.new_zeros((c, (h + padding) * rows + padding, (w + padding) * cols + padding))
        for k in range(n):
            y, x = divmod(k, cols)
            top, left = y * (h + padding) + padding, x * (w + padding) + padding
            grid[:, top:top + h, left:left + w] = images[k]
    # + 0.5 then truncation rounds to the nearest level, as save_image does
    return grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8)


def save_grid(images: torch.Tensor, fp: str | Path | BinaryIO, nrow: int, padding: int = 1,
              format: str | None = None) -> None:
    """The grid of `grid_pixels` as an image file (format from the name unless given):
    the same bytes torchvision's save_image wrote for the same call."""
    from PIL import Image

    Image.fromarray(grid_pixels(images, nrow, padding).numpy()).save(fp, format=format)


TMP_MARK = ".tmp-"  # the temporary files of _replace: .<name>.tmp-<pid>


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    """Written to a temporary file beside `path` and renamed over it, so an interrupted
    run (a signal, a kill) never leaves a partial picture under the real name. A kill
    between the two leaves the temporary file: `clean_stale_tmp` at the next start."""
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with naming(path):  # a full disk's one line names the picture
            write(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def clean_stale_tmp(samples: Path) -> list[Path]:
    """Main process, at start: the temporary files of pictures whose writer was killed
    (one training per run directory, so no live writer owns them)."""
    stale = sorted(samples.glob(f".*.png{TMP_MARK}*")) if samples.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_png(images: torch.Tensor, path: Path, nrow: int = 10) -> None:
    """A grid PNG (replaced atomically: `_replace`)."""
    _replace(path, lambda tmp: save_grid(images, tmp, nrow=nrow, padding=1, format="PNG"))


def code_grid(G: nn.Module, space: LatentSpace, seed: int, cols: int = 10,
              span: float = 1.0) -> torch.Tensor:
    """Rows = continuous codes, columns = that code swept from -span to span (the prior's
    range by default); one noise draw and the other codes (continuous 0, categorical
    drawn once) the same in every row. [num_continuous*cols, C, H, W]."""
    k = space.num_continuous
    base = space.sample(1, keyed_generator(seed, 0xC0D5))
    latent = base[[0] * (k * cols)]
    latent.cont.zero_()
    for j in range(k):
        latent.cont[j * cols:(j + 1) * cols, j] = torch.linspace(-span, span, cols)
    return _render(G, space, latent)


def factor_labels(report: dict[str, Any]) -> dict[str, str]:
    """Code name -> "<factor> <share>" from a disentanglement report (disentangle_eval:
    its "codes", "factors" and "mi_normalised", the MI of each code and factor over the
    factor's entropy): the factor each code holds the most information about."""
    labels = {}
    for code, row in zip(report["codes"], report["mi_normalised"], strict=True):
        best = max(range(len(row)), key=lambda k: row[k])
        labels[code] = f"{report['factors'][best]} {row[best]:.2f}"
    return labels


def save_labelled_rows(images: torch.Tensor, path: Path, labels: list[str],
                       nrow: int = 10) -> None:
    """A grid PNG of len(labels) rows of `nrow` images (as save_png lays them out), each
    row's label written in black in a white margin at its left; the labels also as the
    PNG's text field "rows", one per line (for tools and tests)."""
    from PIL import Image, ImageDraw, ImageFont
    from PIL.PngImagePlugin import PngInfo

    try:
        font = ImageFont.load_default(size=max(9, min(16, images.shape[-2] // 3)))
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or without FreeType
        font = ImageFont.load_default()
    grid = Image.fromarray(grid_pixels(images, nrow).numpy())
    margin = max(int(ImageDraw.Draw(grid).textlength(t, font=font)) for t in labels) + 8
    out = Image.new("RGB", (grid.width + margin, grid.height), "white")
    out.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(out)
    row = images.shape[-2] + 1  # an image and its padding
    for r, text in enumerate(labels):
        draw.text((4, 1 + r * row + row // 2), text, fill="black", font=font, anchor="lm")
    info = PngInfo()
    info.add_text("rows", "\n".join(labels))
    _replace(path, lambda tmp: out.save(tmp, format="PNG", pnginfo=info))


def save_pictures(G: nn.Module, space: LatentSpace, seed: int, out: Path,
                  code_labels: dict[str, str] | None = None) -> list[Path]:
    """`out` (categories x noise), `out-<code>.png` per continuous code, and
    `out-codes.png` (one row per continuous code, labelled with its name and
    `code_labels[name]` where given: factor_labels)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out]
    save_png(category_grid(G, space, seed), out)
    for j, name in enumerate(space.cont_names):
        path = out.with_name(f"{out.stem}-{name}.png")
        save_png(traversal_grid(G, space, j, seed), path)
        paths.append(path)
    if space.cont_names:
        path = out.with_name(f"{out.stem}-codes.png")
        labels = [f"{n} {(code_labels or {}).get(n, '')}".strip() for n in space.cont_names]
        save_labelled_rows(code_grid(G, space, seed), path, labels)
        paths.append(path)
    return paths
