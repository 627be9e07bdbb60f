"""DCI disentanglement (Eastwood & Williams 2018, "A Framework for the Quantitative
Evaluation of Disentangled Representations"), as disentanglement_lib computes it
(evaluation/metrics/dci.py):

1. sample `num_train` and `num_test` points (codes z, factor classes y);
2. per factor k, a gradient-boosted tree classifier (scikit-learn's
   GradientBoostingClassifier with its defaults: 100 stages of depth-3 trees,
   learning rate 0.1) predicts y_k from z; R[i, k] = |feature importance of code i|;
3. per code i: D_i = 1 - H(R[i, :] / sum R[i, :]) with the entropy in base F (the
   number of factors), 1e-11 added to R first;
4. DCI disentanglement = sum_i rho_i D_i, rho_i = sum R[i, :] / sum R (all ones when R
   is all zero).
Completeness (the same over factors, base d) and informativeness (the classifiers'
train and test accuracy) are reported too.

Defaults: 10,000 training and 5,000 test points. disentanglement_lib leaves the trees'
random_state unset; here factor k's classifier gets a seed drawn from the score's random
state after the points (the trees' only randomness is the order features are tried in).
The F classifiers are independent and fit in a thread pool (scikit-learn's tree
building releases the GIL), the factors with the most classes first; the result does not
depend on the number of threads or the order.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier

from .data import FactorData, RandomState, as_generator, represent_factors

NUM_TRAIN, NUM_TEST = 10_000, 5_000


def _fit_one(x_train, y_train, x_test, y_test, seed: int) -> tuple[np.ndarray, float, float]:
    model = GradientBoostingClassifier(random_state=seed)
    with warnings.catch_warnings():
        # the labels are factor classes, never a regression target: scikit-learn's guess
        # (more classes than half the points, at small --disentanglement-fraction) is noise
        warnings.filterwarnings("ignore", "The number of unique classes", UserWarning)
        model.fit(x_train, y_train)
    return (np.abs(model.feature_importances_), float(np.mean(model.predict(x_train) == y_train)),
            float(np.mean(model.predict(x_test) == y_test)))


def importance_matrix(codes_train: np.ndarray, factors_train: np.ndarray,
                      codes_test: np.ndarray, factors_test: np.ndarray, seeds: np.ndarray,
                      workers: int | None = None) -> tuple[np.ndarray, float, float]:
    """(R [d, F], mean train accuracy, mean test accuracy) of one classifier per factor,
    factor k's with random_state seeds[k]."""
    num_factors = factors_train.shape[1]
    workers = workers or min(num_factors, len(os.sched_getaffinity(0))
                             if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    # a classifier fits one tree per class and stage, so the factors with the most classes
    # start first (longest job first): with dSprites' one-thread fit times (2026-12-04:
    # 3 classes 4 s, 6 8 s, 40 56 s, 32 44 s) two threads end after 88 s, not 97 s
    order = sorted(range(num_factors), key=lambda k: -len(np.unique(factors_train[:, k])))
    jobs = [(codes_train, factors_train[:, k], codes_test, factors_test[:, k], int(seeds[k]))
            for k in order]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        done = list(pool.map(lambda job: _fit_one(*job), jobs))
    fits = [done[order.index(k)] for k in range(num_factors)]
    r = np.stack([f[0] for f in fits], axis=1)
    return r, float(np.mean([f[1] for f in fits])), float(np.mean([f[2] for f in fits]))


def _weighted_one_minus_entropy(r: np.ndarray) -> float:
    """sum over rows i of (1 - H_base(row i)) * row i's share of the total; rows are
    the distributions (codes for disentanglement; pass R.T for completeness)."""
    per_row = 1.0 - scipy.stats.entropy(r.T + 1e-11, base=r.shape[1])
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return float(np.sum(per_row * r.sum(axis=1) / r.sum()))


def disentanglement(r: np.ndarray) -> float:
    """DCI disentanglement of an importance matrix R [d codes, F factors]."""
    return _weighted_one_minus_entropy(np.asarray(r, dtype=np.float64))


def completeness(r: np.ndarray) -> float:
    """DCI completeness of an importance matrix R [d codes, F factors]."""
    return _weighted_one_minus_entropy(np.asarray(r, dtype=np.float64).T)


def score(represent: Callable[[Any], Any], data: FactorData, random_state: RandomState,
          num_train: int = NUM_TRAIN, num_test: int = NUM_TEST) -> dict[str, Any]:
    """{"dci" (= disentanglement), "disentanglement", "completeness",
    "informativeness_train", "informativeness_test", "importance"} of `represent`."""
    rng = as_generator(random_state)
    f_train = data.sample_factors(num_train, rng)
    f_test = data.sample_factors(num_test, rng)
    seeds = rng.integers(2**31 - 1, size=data.num_factors)
    z_train = represent_factors(represent, data, f_train)
    z_test = represent_factors(represent, data, f_test)
    r, acc_train, acc_test = importance_matrix(z_train, f_train, z_test, f_test, seeds)
    d = disentanglement(r)
    return {"dci": d, "disentanglement": d, "completeness": completeness(r),
            "informativeness_train": acc_train, "informativeness_test": acc_test,
            "importance": r.tolist()}
