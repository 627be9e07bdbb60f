"""`infogan sample`: a grid of generated images from a checkpoint, with codes fixed or swept.

    infogan sample --checkpoint runs/mnist/checkpoints/step-00005000 --out digits.png
    infogan sample --checkpoint DIR --out threes.png --fix c1=3 --n 100
    infogan sample --checkpoint DIR --out rotation.png --fix c1=7 --sweep c2=-2:2:10 --n 80
    infogan sample --checkpoint DIR --out classes.png --sweep c1=all --n 80 --seed 3

Needs DIR/config.yaml, DIR/train_state.json (what the checkpoint holds: image shape,
latent spec, architecture) and DIR/generator.safetensors, or DIR/generator_ema.safetensors
(the EMA of G, used when present unless --raw-generator; no pickle is ever read). G runs
in eval mode (BatchNorm running statistics), on the CPU unless --device says otherwise.
Codes not fixed are drawn from their priors with a generator keyed by --seed, so the
same command draws the same picture.
--fix CODE=VALUE   a categorical code takes a class index (0..K-1), a continuous code any
                   number (the prior is U(-1, 1); the paper sweeps to +-2); repeatable.
--sweep CODE=A:B:S a continuous code goes from A to B in S columns; each of the
                   --n // S rows keeps its own noise and codes fixed along the row.
--sweep CODE=all   a categorical code takes each of its K classes in K columns.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from .checkpoint import load_for_inference, pick_device
from .latent import Latent, LatentSpace, keyed_generator
from .pictures import _render, save_grid

SAMPLE_KEY = 0x5A31
SUFFIXES = (".png", ".jpg", ".jpeg")
# The grid is made in one piece (latents, images and the picture in memory): beyond this
# it is no longer a picture one can look at, and memory grows with it (--n 100000000
# would take tens of GB); more images are more runs (--seed).
MAX_IMAGES = 10_000
FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # codes are float32 tensors


def _codes_text(space: LatentSpace) -> str:
    parts = [f"{n} (categorical, classes 0..{k - 1})"
             for n, k in zip(space.cat_names, space.categorical, strict=True)]
    parts += [f"{n} (continuous)" for n in space.cont_names]
    return ", ".join(parts) or "none"


def _split(text: str, flag: str, example: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"{flag} {text!r}: expected CODE=VALUE, e.g. {flag} {example}")
    name, value = (s.strip() for s in text.split("=", 1))
    return name, value


def parse_fix(text: str, space: LatentSpace) -> tuple[str, int, float]:
    """'c1=3' -> ('cat', 0, 3); 'c2=0.5' -> ('cont', 0, 0.5). ValueError for bad input."""
    name, value = _split(text, "--fix", "c1=3")
    if name in space.cat_names:
        i = space.cat_names.index(name)
        k = space.categorical[i]
        try:
            cls = int(value)
        except ValueError:
            raise ValueError(f"--fix {text}: {name} is categorical; give a class index "
                             f"0..{k - 1}") from None
        if not 0 <= cls < k:
            raise ValueError(f"--fix {text}: class {cls} out of range; {name} has {k} "
                             f"classes (0..{k - 1})")
        return "cat", i, cls
    if name in space.cont_names:
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"--fix {text}: {name} is continuous; give a number") from None
        if not abs(v) <= FLOAT32_MAX:  # also NaN and inf
            raise ValueError(f"--fix {text}: the value must be finite, within float32 "
                             f"(|v| <= {FLOAT32_MAX:.3g})")
        return "cont", space.cont_names.index(name), v
    raise ValueError(f"--fix {text}: unknown code {name!r}; codes: {_codes_text(space)}")


def parse_sweep(text: str, space: LatentSpace) -> tuple[str, int, torch.Tensor]:
    """'c2=-2:2:10' -> ('cont', continuous index, the 10 values from -2 to 2);
    'c1=all' -> ('cat', categorical index, every class 0..K-1)."""
    name, value = _split(text, "--sweep", "c2=-2:2:10")
    if name in space.cat_names:
        i = space.cat_names.index(name)
        if value != "all":
            raise ValueError(f"--sweep {text}: {name} is categorical; sweep all its "
                             f"{space.categorical[i]} classes with --sweep {name}=all, or "
                             f"fix one with --fix {name}=K")
        return "cat", i, torch.arange(space.categorical[i])
    if name not in space.cont_names:
        raise ValueError(f"--sweep {text}: unknown code {name!r}; codes: {_codes_text(space)}")
    parts = value.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        a, b, steps = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"--sweep {text}: expected {name}=START:STOP:STEPS, e.g. "
                         f"{name}=-2:2:10") from None
    if not (2 <= steps <= MAX_IMAGES and abs(a) <= FLOAT32_MAX and abs(b) <= FLOAT32_MAX):
        raise ValueError(f"--sweep {text}: STEPS must be >= 2 (at most {MAX_IMAGES}) and the "
                         f"ends finite, within float32 (|v| <= {FLOAT32_MAX:.3g})")
    return "cont", space.cont_names.index(name), torch.linspace(a, b, steps)


def build_latents(
    space: LatentSpace, n: int, seed: int, fixes: list[str], sweep: str | None
) -> tuple[Latent, int]:
    """(latents, images per grid row)."""
    parsed = [parse_fix(f, space) for f in fixes]
    seen: dict[tuple[str, int], str] = {}
    for text, (kind, i, _) in zip(fixes, parsed, strict=True):
        if (kind, i) in seen:
            raise ValueError(f"--fix {text}: {_split(text, '--fix', 'c1=3')[0]} is already "
                             f"fixed by --fix {seen[kind, i]}; give each code once")
        seen[kind, i] = text
    gen = keyed_generator(seed, SAMPLE_KEY)
    if sweep is None:
        latent = space.sample(n, gen)
        nrow = max(1, math.ceil(math.sqrt(n)))
    else:
        kind, j, values = parse_sweep(sweep, space)
        if (kind, j) in seen:
            raise ValueError(f"--sweep {sweep}: {_split(sweep, '--sweep', '')[0]} is also "
                             "given to --fix")
        steps = len(values)
        rows = n // steps
        if rows < 1:
            raise ValueError(f"--n {n} is less than the {steps} steps of --sweep {sweep}: "
                             f"use --n {steps} or more (rows = n // steps)")
        base = space.sample(rows, gen)
        latent = base[[r for r in range(rows) for _ in range(steps)]]
        (latent.cat if kind == "cat" else latent.cont)[:, j] = values.repeat(rows)
        nrow = steps
    for kind, i, v in parsed:
        if kind == "cat":
            latent.cat[:, i] = int(v)
        else:
            latent.cont[:, i] = v
    return latent, nrow


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="save a grid of generated images; fix codes (--fix c1=3) or sweep one (--sweep)",
        description=__doc__.split("\n\n")[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("\n\n")[1],
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoints/step-N directory")
    p.add_argument("--out", required=True, help="output image (.png, .jpg)")
    p.add_argument("--fix", action="append", default=[], metavar="CODE=VALUE",
                   help="fix a code for every image: c1=3 (class) or c2=0.5 (value); repeatable")
    p.add_argument("--sweep", action="append", default=[], metavar="CODE=A:B:STEPS",
                   help="sweep a code over the columns, e.g. c2=-2:2:10 or c1=all (once)")
    p.add_argument("--n", type=int, default=64,
                   help=f"number of images (default 64, at most {MAX_IMAGES})")
    p.add_argument("--nrow", type=int, default=None,
                   help="images per row (default: ceil(sqrt(n)); STEPS with --sweep)")
    p.add_argument("--seed", type=int, default=None, help="latent seed (default: run.seed)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--raw-generator", action="store_true",
                   help="use the trained G (generator.safetensors), not its EMA "
                        "(generator_ema.safetensors, the default when the checkpoint has one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in SUFFIXES:
        raise ValueError(f"--out {out}: use a .png or .jpg file name")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not 1 <= args.n <= MAX_IMAGES:
        raise ValueError(f"--n must be 1..{MAX_IMAGES} images (one grid picture), got "
                         f"{args.n}; for more images run it again with another --seed")
    if args.nrow is not None and args.nrow < 1:
        raise ValueError(f"--nrow must be >= 1, got {args.nrow}")
    if len(args.sweep) > 1:
        raise ValueError(f"--sweep given {len(args.sweep)} times ({', '.join(args.sweep)}); "
                         "a grid sweeps one code: give --sweep once")
    sweep = args.sweep[0] if args.sweep else None
    loaded = load_for_inference(args.checkpoint, with_d=False, device=pick_device(args.device),
                                raw_generator=args.raw_generator)
    seed = loaded.cfg.run.seed if args.seed is None else args.seed
    latent, nrow = build_latents(loaded.space, args.n, seed, args.fix, sweep)
    images = _render(loaded.G, loaded.space, latent)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(images, out, nrow=args.nrow or nrow, padding=1)
    rows = math.ceil(len(images) / (args.nrow or nrow))
    print(f"wrote {out}: {len(images)} images, {rows} x {args.nrow or nrow} "
          f"({loaded.generator_file})")
    return 0
