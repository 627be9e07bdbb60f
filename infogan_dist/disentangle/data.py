"""Data with known factors, as the four scores sample it (disentanglement_lib's
GroundTruthData): every factor is a class index, factor k taking `sizes[k]` values, and
the data holds an observation for every combination of the factor classes.

`FactorData` samples factor classes independently and uniformly (as disentanglement_lib
does for dSprites) and turns them into observations. What an observation is belongs to
the caller: `observe(rows)` maps dataset rows to whatever `represent` takes (images, or
the rows themselves when the codes are looked up in a table; disentangle_eval.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RandomState = np.random.Generator | np.random.RandomState | int | None


def as_generator(random_state: RandomState) -> np.random.Generator:
    """A numpy Generator from a Generator (returned as is), a seed or a RandomState."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31))
    return np.random.default_rng(random_state)


def _rows(rows: np.ndarray) -> np.ndarray:
    return rows


@dataclass
class FactorData:
    """Observations indexed by factor classes.

    names, sizes: the factors (e.g. shape 3, scale 6, orientation 40, pos_x 32, pos_y 32);
    table: [prod(sizes)] int64, the dataset row of each combination in mixed-radix order
        (the last factor varies fastest), -1 where the data has none;
    observe: rows [n] -> observations (default: the rows themselves).
    Build it with `from_factors`, which also checks that every combination is present.
    """

    names: list[str]
    sizes: list[int]
    table: np.ndarray
    observe: Callable[[np.ndarray], Any] = field(default=_rows)

    @classmethod
    def from_factors(cls, factors: np.ndarray, sizes: list[int], names: list[str] | None = None,
                     observe: Callable[[np.ndarray], Any] | None = None,
                     what: str = "the data") -> FactorData:
        """From the factor classes of every row ([N, F] ints). A combination held by
        several rows uses the first one. ValueError (one line, naming `what`) when a
        combination is missing or a class is outside its size."""
        factors = np.asarray(factors)
        sizes = [int(s) for s in sizes]
        names = list(names) if names is not None else [f"factor{k}" for k in range(len(sizes))]
        if any(s < 2 for s in sizes):
            raise ValueError(f"{what}: factor sizes {sizes} must be >= 2 (a factor with one "
                             "value carries no information; drop it)")
        if factors.ndim != 2 or factors.shape[1] != len(sizes) or len(names) != len(sizes):
            raise ValueError(f"{what}: factors of shape {list(factors.shape)} do not match "
                             f"{len(sizes)} factor sizes {sizes} named {names}")
        bad = (factors < 0) | (factors >= np.array(sizes))
        if bad.any():
            k = int(np.argmax(bad.any(axis=0)))
            raise ValueError(f"{what}: factor {names[k]} has classes outside 0..{sizes[k] - 1}")
        flat = np.ravel_multi_index(factors.T.astype(np.int64), sizes) if len(factors) else \
            np.zeros(0, np.int64)
        table = np.full(int(np.prod(sizes)), -1, dtype=np.int64)
        # reversed so that the first row of a combination is the one written last
        table[flat[::-1]] = np.arange(len(factors) - 1, -1, -1, dtype=np.int64)
        missing = int((table < 0).sum())
        if missing:
            first = np.unravel_index(int(np.argmax(table < 0)), sizes)
            raise ValueError(
                f"{what} holds {len(table) - missing} of the {len(table)} factor combinations "
                f"({' x '.join(map(str, sizes))}); the scores sample every combination: "
                f"e.g. {dict(zip(names, map(int, first), strict=True))} is missing")
        return cls(names, sizes, table, observe or _rows)

    @property
    def num_factors(self) -> int:
        return len(self.sizes)

    def sample_factors(self, num: int, random_state: RandomState) -> np.ndarray:
        """[num, F] int64 classes, each factor uniform and independent of the others
        (drawn factor by factor, `num` at a time)."""
        rng = as_generator(random_state)
        out = np.empty((num, self.num_factors), dtype=np.int64)
        for k, size in enumerate(self.sizes):
            out[:, k] = rng.integers(size, size=num)
        return out

    def rows_of(self, factors: np.ndarray) -> np.ndarray:
        """The dataset row of each factor combination ([n, F] -> [n])."""
        f = np.asarray(factors, dtype=np.int64).reshape(-1, self.num_factors)
        return self.table[np.ravel_multi_index(f.T, self.sizes)]

    def sample_observations_from_factors(self, factors: np.ndarray,
                                         random_state: RandomState = None) -> Any:
        """The observations of these factor classes (`random_state` is unused: one
        observation per combination, as in dSprites)."""
        return self.observe(self.rows_of(factors))

    def sample(self, num: int, random_state: RandomState) -> tuple[np.ndarray, Any]:
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors)

    def sample_observations(self, num: int, random_state: RandomState) -> Any:
        return self.sample(num, random_state)[1]


def represent_factors(represent: Callable[[Any], Any], data: FactorData, factors: np.ndarray,
                      chunk: int = 16_384) -> np.ndarray:
    """represent(observations of `factors`) as float64 [n, dims], asked for `chunk` rows
    at a time (so images are never all in memory at once)."""
    factors = np.asarray(factors).reshape(-1, data.num_factors)
    parts = [np.asarray(represent(data.sample_observations_from_factors(factors[i : i + chunk])),
                        dtype=np.float64) for i in range(0, len(factors), chunk)]
    if not parts:
        raise ValueError("no points to represent")
    codes = np.concatenate(parts)
    if codes.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"represent must map n observations to [n, dims] codes, got "
                         f"{list(codes.shape)} for {len(factors)}")
    if not np.isfinite(codes).all():
        raise ValueError("the codes are not all finite (a diverged model?)")
    return codes
