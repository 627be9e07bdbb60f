"""The explorer's pictures and their `infogan sample` commands. A view becomes the
command's own arguments (--n, --seed, --fix, --sweep) and goes through the command's own
code (sample.build_latents, pictures._render and save_grid), so the command writes the
same PNG, byte for byte, as the page shows."""

from __future__ import annotations

import io
import shlex
from typing import Any

import torch

from ..checkpoint import Loaded
from ..latent import Latent
from ..pictures import _render, save_grid
from ..sample import build_latents
from .catalog import Entry
from .params import View


def sample_args(view: View, space: Any) -> tuple[int, list[str], str | None]:
    """(--n, the --fix values, the --sweep value) that draw `view`."""
    fixes = [f"{name}={value!r}" for name, value in view.codes.items()]
    if view.sweep is None:
        return 1, fixes, None
    if view.sweep in space.cat_names:
        sweep = f"{view.sweep}=all"
    else:
        sweep = f"{view.sweep}={-view.span!r}:{view.span!r}:{view.cols}"
    return view.rows * view.cols, fixes, sweep


def latent_of(view: View, space: Any) -> tuple[Latent, int]:
    """(latents, images per row) of `view`, exactly as `infogan sample` builds them."""
    n, fixes, sweep = sample_args(view, space)
    return build_latents(space, n, view.seed, fixes, sweep)


def draw(loaded: Loaded, view: View) -> bytes:
    """The PNG of `view`."""
    latent, nrow = latent_of(view, loaded.space)
    images = _render(loaded.G, loaded.space, latent)
    buf = io.BytesIO()
    save_grid(images, buf, nrow=nrow, padding=1, format="PNG")
    return buf.getvalue()


def reproduce(entry: Entry, view: View, device: torch.device) -> dict[str, Any]:
    """{"command": the `infogan sample` line that writes the view's PNG, "latent": the
    view as JSON (checkpoint, generator, seed, codes; z too for a single image)}."""
    n, fixes, sweep = sample_args(view, entry.space)
    out = "explore.png" if sweep is None else f"explore-{view.sweep}.png"
    words = ["infogan", "sample", "--checkpoint", str(entry.path.resolve()), "--out", out,
             "--n", str(n), "--seed", str(view.seed)]
    if sweep is not None:
        words += ["--sweep", sweep]
    for fix in fixes:
        words += ["--fix", fix]
    if view.raw and entry.has_ema:
        words.append("--raw-generator")
    if device.type != "cpu":
        words += ["--device", str(device)]
    generator = "raw" if view.raw or not entry.has_ema else "ema"
    latent: dict[str, Any] = {
        "checkpoint": str(entry.path.resolve()), "step": entry.step, "generator": generator,
        "seed": view.seed, "codes": view.codes,
    }
    if sweep is None:
        latent["z"] = [float(v) for v in latent_of(view, entry.space)[0].z[0]]
    else:
        latent |= {"sweep": sweep, "rows": view.rows, "columns": view.cols}
    return {"command": shlex.join(words), "latent": latent}
