"""The four disentanglement scores of the field, as pure functions in the style of
disentanglement_lib's evaluation/metrics (Locatello et al. 2019): each module's

    score(represent, data: FactorData, random_state, **sizes) -> dict

samples points with known factor classes from `data`, asks `represent` for their codes
([n, d]) and returns its scores, the headline under the module's name. Nothing here
knows about models, devices or ranks (disentangle_eval.py does: it computes the codes
of a checkpoint across ranks and looks them up).

    factorvae  Kim & Mnih 2018           mig  Chen et al. 2018
    dci        Eastwood & Williams 2018  sap  Kumar et al. 2018

`mutual_info_matrix(codes, factors)` ([d, F] nats, 20-bin histograms as MIG's) tells
which factor each code captures best.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..registry import Registry
from . import dci, factorvae, mig, sap
from .data import FactorData, RandomState, as_generator, represent_factors
from .mig import entropy, mutual_info_matrix


@dataclass(frozen=True)
class Score:
    """A registered score: its function, the sizes it takes (disentanglement_lib's
    defaults) and the key of the stream of random numbers it draws from."""

    fn: Callable[..., dict[str, Any]]
    sizes: dict[str, int]
    key: int

    def scaled_sizes(self, fraction: float) -> dict[str, int]:
        """The point and vote counts times `fraction` (at least MIN_POINTS each); points
        per FactorVAE vote stay as they are (they define the vote, not its precision)."""
        return {k: v if k == "batch_size" else max(MIN_POINTS, round(v * fraction))
                for k, v in self.sizes.items()}


# The fewest points (or votes) a scaled count gets. With 2 (the floor until 2026-12-06) a
# factor often took one class among the points: SAP's SVM refused to fit and MIG divided
# by a zero entropy. Among 50 uniform draws of a factor of >= 2 classes that has
# probability <= 2^-49. disentanglement_lib's counts (fraction 1) are all far above it.
MIN_POINTS = 50


# name -> Score; `infogan eval --disentanglement` and the metric "disentanglement" run all
SCORES: Registry[Score] = Registry("disentanglement score")
SCORES.add("factorvae", Score(factorvae.score, {
    "batch_size": factorvae.BATCH_SIZE, "num_train": factorvae.NUM_TRAIN,
    "num_eval": factorvae.NUM_EVAL, "num_variance_estimate": factorvae.NUM_VARIANCE}, 0xFAE))
SCORES.add("mig", Score(mig.score, {"num_train": mig.NUM_TRAIN}, 0x316))
SCORES.add("dci", Score(dci.score, {"num_train": dci.NUM_TRAIN, "num_test": dci.NUM_TEST}, 0xDC1))
SCORES.add("sap", Score(sap.score, {"num_train": sap.NUM_TRAIN, "num_test": sap.NUM_TEST}, 0x5A9))


def score_all(represent: Callable[[Any], Any], data: FactorData, seed: int = 0,
              fraction: float = 1.0, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """{name: that score's dict} for every registered score (or `names`), each from its
    own random stream np.random.default_rng([seed, key]): one score's value does not
    depend on which others run, or in what order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    out = {}
    for name in names or SCORES.names():
        s = SCORES[name]
        out[name] = s.fn(represent, data, np.random.default_rng([seed, s.key]),
                         **s.scaled_sizes(fraction))
    return out


__all__ = ["SCORES", "FactorData", "RandomState", "Score", "as_generator", "dci", "entropy",
           "factorvae", "mig", "mutual_info_matrix", "represent_factors", "sap", "score_all"]
