"""SAP, the separated attribute predictability score (Kumar et al. 2018, "Variational
Inference of Disentangled Latent Concepts from Unlabeled Observations"), as
disentanglement_lib computes it for discrete factors (evaluation/metrics/sap_score.py):

1. sample `num_train` and `num_test` points (codes z, factor classes y);
2. S[i, k] = test accuracy of a linear SVM predicting y_k from the single code
   dimension z_i (scikit-learn's LinearSVC, C = 0.01, class_weight="balanced",
   one-vs-rest over the classes);
3. SAP = mean over factors k of (largest S[:, k] - second largest S[:, k]).

Defaults: 10,000 training and 5,000 test points. LinearSVC runs with scikit-learn's
defaults otherwise (its solver may stop at max_iter = 1000 with a ConvergenceWarning on
these one-dimensional problems, as in disentanglement_lib; the warnings are counted in
"sap_unconverged", not printed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from .data import FactorData, RandomState, as_generator, represent_factors

NUM_TRAIN, NUM_TEST, C = 10_000, 5_000, 0.01


def score_matrix(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray,
                 factors_test: np.ndarray, seed: int = 0) -> tuple[np.ndarray, int]:
    """(S [d, F] test accuracies, number of fits that did not converge)."""
    d, num_factors = codes_train.shape[1], factors_train.shape[1]
    s = np.zeros((d, num_factors))
    unconverged = 0
    for i in range(d):
        for k in range(num_factors):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                svm = LinearSVC(C=C, class_weight="balanced", random_state=seed)
                svm.fit(codes_train[:, i : i + 1], factors_train[:, k])
            unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
            s[i, k] = np.mean(svm.predict(codes_test[:, i : i + 1]) == factors_test[:, k])
    return s, unconverged


def gap_of_top_two(s: np.ndarray) -> float:
    """Mean over columns of the largest minus the second largest entry."""
    top = np.sort(s, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def score(represent: Callable[[Any], Any], data: FactorData, random_state: RandomState,
          num_train: int = NUM_TRAIN, num_test: int = NUM_TEST) -> dict[str, Any]:
    """{"sap", "sap_matrix", "sap_unconverged"} of `represent` on `data`."""
    rng = as_generator(random_state)
    f_train = data.sample_factors(num_train, rng)
    f_test = data.sample_factors(num_test, rng)
    seed = int(rng.integers(2**31 - 1))
    z_train = represent_factors(represent, data, f_train)
    z_test = represent_factors(represent, data, f_test)
    if z_train.shape[1] < 2:
        raise ValueError("SAP needs at least 2 code dimensions")
    s, unconverged = score_matrix(z_train, f_train, z_test, f_test, seed)
    return {"sap": gap_of_top_two(s), "sap_matrix": s.tolist(), "sap_unconverged": unconverged}
