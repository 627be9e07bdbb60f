"""MIG, the mutual information gap (Chen et al. 2018, "Isolating Sources of
Disentanglement in VAEs"), as disentanglement_lib computes it (evaluation/metrics/mig.py):

1. sample `num_train` points (factor classes y and codes z);
2. discretise each code dimension into `num_bins` equal-width bins over its own range
   (np.histogram's edges, np.digitize on all but the last edge);
3. I[i, k] = discrete mutual information of binned code i and factor k (nats);
4. MIG = mean over factors k of (largest I[:, k] - second largest I[:, k]) / H(y_k), H
   the entropy of the sampled classes.

Defaults (disentanglement_lib's unsupervised study): 10,000 points, 20 bins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .data import FactorData, RandomState, as_generator, represent_factors

NUM_TRAIN, NUM_BINS = 10_000, 20


def discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """[n, d] -> [n, d] int bin numbers 1..num_bins, per dimension over its own range."""
    codes = np.asarray(codes, dtype=np.float64)
    out = np.empty(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], num_bins)[1]
        out[:, i] = np.digitize(codes[:, i], edges[:-1])
    return out


def _mi_of_labels(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information (nats) of two non-negative int label vectors, from their
    contingency table."""
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb).astype(np.float64)
    joint /= joint.sum()
    pa, pb = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def entropy(factors: np.ndarray) -> np.ndarray:
    """[F] entropy (nats) of each factor's sampled classes ([n, F] ints)."""
    factors = np.asarray(factors, dtype=np.int64)
    return np.array([_mi_of_labels(factors[:, k], factors[:, k])
                     for k in range(factors.shape[1])])


def mutual_info_matrix(codes: np.ndarray, factors: np.ndarray,
                       num_bins: int = NUM_BINS) -> np.ndarray:
    """[d, F] mutual information (nats) between each code dimension, discretised into
    `num_bins` histogram bins, and each factor's classes. Divide column k by
    entropy(factors)[k] for the share of factor k's information a code holds."""
    codes, factors = np.asarray(codes), np.asarray(factors, dtype=np.int64)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"codes {list(codes.shape)} and factors {list(factors.shape)} must be "
                         "[n, d] and [n, F] with the same n")
    if not np.isfinite(codes).all():
        raise ValueError("the codes are not all finite (a diverged model?)")
    binned = discretize(codes, num_bins)
    return np.array([[_mi_of_labels(binned[:, i], factors[:, k])
                      for k in range(factors.shape[1])] for i in range(codes.shape[1])])


def mig_of(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> dict[str, Any]:
    """MIG of given codes [n, d] and factor classes [n, F]: {"mig", "mig_per_factor",
    "mi_matrix" ([d, F] nats), "entropy" ([F] nats)}."""
    m = mutual_info_matrix(codes, factors, num_bins)
    if m.shape[0] < 2:
        raise ValueError("MIG needs at least 2 code dimensions")
    top = np.sort(m, axis=0)[::-1]
    h = entropy(factors)
    if (h == 0).any():  # the MI gap would be 0 / 0
        k = int(np.argmax(h == 0))
        raise ValueError(f"MIG: factor {k} takes one class among the {len(factors)} points; "
                         "sample more points")
    per_factor = (top[0] - top[1]) / h
    return {"mig": float(per_factor.mean()), "mig_per_factor": per_factor.tolist(),
            "mi_matrix": m.tolist(), "entropy": h.tolist()}


def score(represent: Callable[[Any], Any], data: FactorData, random_state: RandomState,
          num_train: int = NUM_TRAIN, num_bins: int = NUM_BINS) -> dict[str, Any]:
    """MIG of `represent` on `data` (the keys of mig_of)."""
    rng = as_generator(random_state)
    factors = data.sample_factors(num_train, rng)
    return mig_of(represent_factors(represent, data, factors), factors, num_bins)
