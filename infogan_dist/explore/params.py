"""The explorer's requests, checked: a query string becomes a `View` (what to draw) or a
`BadRequest` whose message is one line naming the parameter and what is allowed.

Nothing here touches the file system: a checkpoint is named by an id from the server's
own list, and every value is a number checked against the latent space.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from ..latent import LatentSpace

SEED_MAX = 2**32 - 1  # seeds 0..2^32-1: exact in JavaScript numbers, any keyed generator
CONT_LIMIT = 3.0  # sliders and sweeps reach |c| <= 3; the prior (training range) is [-1, 1]
ROWS_MAX = 16  # noises (rows) of a traversal
COLS_MIN, COLS_MAX = 2, 21  # steps of a continuous sweep
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$")  # no nan, inf, hex
GENERATORS = ("ema", "raw")


class BadRequest(ValueError):
    """A request the server answers with 400 and this one-line message."""


@dataclass(frozen=True)
class View:
    """One picture the page asks for: a single image, or a traversal when `sweep` is set
    (rows = noises, columns = the swept code's values)."""

    ckpt: str  # checkpoint id from the server's list
    raw: bool  # the trained G instead of its EMA
    seed: int  # keys the noise (and the codes not given) as `infogan sample --seed`
    codes: dict[str, int | float] = field(default_factory=dict)  # every code's value
    sweep: str | None = None  # the code swept across the columns (traversal only)
    rows: int = 1  # noises, one per row (traversal)
    cols: int = 1  # columns: steps of a continuous sweep, K for a categorical one
    span: float = 2.0  # a continuous sweep goes from -span to span


def _single(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name)
    if not values:
        raise BadRequest(f"missing parameter {name}")
    if len(values) > 1:
        raise BadRequest(f"parameter {name} given {len(values)} times; give it once")
    return values[0]


def _int(query: dict[str, list[str]], name: str, lo: int, hi: int) -> int:
    text = _single(query, name)
    if not re.fullmatch(r"[+-]?\d{1,20}", text):
        raise BadRequest(f"{name}={text[:40]!r} is not an integer ({lo}..{hi})")
    value = int(text)
    if not lo <= value <= hi:
        raise BadRequest(f"{name}={value} is out of range ({lo}..{hi})")
    return value


def _number(query: dict[str, list[str]], name: str, lo: float, hi: float) -> float:
    text = _single(query, name)
    if len(text) > 40 or not NUMBER.match(text) or not math.isfinite(float(text)):
        raise BadRequest(f"{name}={text[:40]!r} is not a finite number ({lo:g}..{hi:g})")
    value = float(text)
    if not lo <= value <= hi:
        raise BadRequest(f"{name}={value:g} is out of range ({lo:g}..{hi:g})")
    return value + 0.0  # -0.0 -> 0.0: one value, one command line


def parse_query(text: str, space_of: dict[str, LatentSpace], traversal: bool) -> View:
    """The View of a query string such as 'ckpt=step-00000300&gen=ema&seed=3&c1=7&c2=0.5'.
    `space_of` maps the checkpoint ids the server lists to their latent spaces."""
    try:
        query = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text),
                         max_num_fields=64)
    except ValueError:
        raise BadRequest("malformed query string") from None
    ckpt = _single(query, "ckpt")
    if ckpt not in space_of:
        known = list(space_of)
        shown = ", ".join(known[-5:]) + (" ..." if len(known) > 5 else "")
        raise BadRequest(f"unknown checkpoint {ckpt[:60]!r}; this server lists: {shown}")
    space = space_of[ckpt]
    names = space.cat_names + space.cont_names
    allowed = {"ckpt", "gen", "seed", *names}
    if traversal:
        allowed |= {"sweep", "rows", "cols", "span"}
    for key in query:
        if key not in allowed:
            raise BadRequest(f"unknown parameter {key[:40]!r}; expected: "
                             f"{', '.join(sorted(allowed))}")
    gen = _single(query, "gen")
    if gen not in GENERATORS:
        raise BadRequest(f"gen={gen[:40]!r}: expected ema or raw")
    seed = _int(query, "seed", 0, SEED_MAX)
    sweep = None
    if traversal:
        sweep = _single(query, "sweep")
        if sweep not in names:
            raise BadRequest(f"sweep={sweep[:40]!r}: not a code of this checkpoint "
                             f"({', '.join(names)})")
    codes: dict[str, int | float] = {}  # the swept code's value is optional, checked if given
    for name, k in zip(space.cat_names, space.categorical, strict=True):
        if name != sweep or name in query:
            codes[name] = _int(query, name, 0, k - 1)
    for name in space.cont_names:
        if name != sweep or name in query:
            codes[name] = _number(query, name, -CONT_LIMIT, CONT_LIMIT)
    codes.pop(sweep or "", None)
    if not traversal:
        return View(ckpt, gen == "raw", seed, codes)
    rows = _int(query, "rows", 1, ROWS_MAX)
    if sweep in space.cat_names:
        if "cols" in query or "span" in query:
            raise BadRequest(f"sweep={sweep} is categorical: its columns are its classes "
                             "(no cols or span)")
        cols, span = space.categorical[space.cat_names.index(sweep)], 0.0
    else:
        cols = _int(query, "cols", COLS_MIN, COLS_MAX)
        span = _number(query, "span", 0.01, CONT_LIMIT)
    return View(ckpt, gen == "raw", seed, codes, sweep, rows, cols, span)
