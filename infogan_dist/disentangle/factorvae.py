"""The FactorVAE score (Kim & Mnih 2018, "Disentangling by Factorising"), as
disentanglement_lib computes it (evaluation/metrics/factor_vae.py):

1. global variances: the variance (ddof=1) of each code dimension over
   `num_variance_estimate` points; dimensions whose standard deviation is below
   `threshold` are pruned (disentanglement_lib's prune_dims compares sqrt(variance)
   with prune_dims.threshold = 0.05, i.e. variances below 0.0025);
2. a vote: choose a factor k uniformly, draw `batch_size` points that share factor k's
   class (the other factors independent and uniform), and vote (k, d) where d is the
   active dimension with the smallest variance over the batch divided by its global
   variance;
3. a majority-vote classifier maps each dimension to the factor it got most training
   votes for (`num_train` votes); the score is the classifier's accuracy on `num_eval`
   fresh votes (eval_accuracy; train_accuracy on the training votes is reported too).
No active dimension: every score is 0, as in disentanglement_lib.

Defaults: 64 points per vote, 10,000 training and 5,000 evaluation votes, 10,000
points for the global variances, threshold 0.05.

Draw order (the samples are seeded, so it is part of what a seed means here): the
variance points' factors, then for the training votes all their factor indices and then
all their points' factors, then the same for the evaluation votes; every factor draw is
FactorData.sample_factors. The codes are asked for in chunks of whole votes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .data import FactorData, RandomState, as_generator, represent_factors

BATCH_SIZE, NUM_TRAIN, NUM_EVAL, NUM_VARIANCE, THRESHOLD = 64, 10_000, 5_000, 10_000, 0.05
CHUNK_VOTES = 256  # votes whose codes are asked for at once (x batch_size points)


def draw_votes(data: FactorData, rng: np.random.Generator, num_votes: int,
               batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(factor index [m], factor classes [m, batch_size, F]) of m votes: every point of
    vote v has vote v's first point's class of factor index[v]."""
    index = rng.integers(data.num_factors, size=num_votes)
    factors = data.sample_factors(num_votes * batch_size, rng).reshape(
        num_votes, batch_size, data.num_factors)
    votes = np.arange(num_votes)
    factors[votes, :, index] = factors[votes, 0, index][:, None]
    return index, factors


def vote_dims(codes: np.ndarray, global_variances: np.ndarray, active: np.ndarray) -> np.ndarray:
    """[m] the dimension each vote names (an index among the active dimensions), from
    its codes [m, batch_size, d]."""
    local = codes.var(axis=1, ddof=1)  # [m, d]
    return np.argmin(local[:, active] / global_variances[active], axis=1)


def _votes(represent, data, rng, num_votes, batch_size, global_variances, active) -> np.ndarray:
    """[F, d] vote counts (dimension columns numbered among the active ones)."""
    index, factors = draw_votes(data, rng, num_votes, batch_size)
    counts = np.zeros((data.num_factors, len(global_variances)), dtype=np.int64)
    for start in range(0, num_votes, CHUNK_VOTES):
        chunk = factors[start : start + CHUNK_VOTES]
        codes = represent_factors(represent, data, chunk.reshape(-1, data.num_factors),
                                  chunk=len(chunk) * batch_size)
        dims = vote_dims(codes.reshape(len(chunk), batch_size, -1), global_variances, active)
        np.add.at(counts, (index[start : start + len(chunk)], dims), 1)
    return counts


def accuracy(votes: np.ndarray, classifier: np.ndarray) -> float:
    """Share of the votes [F, d] whose factor is the one the classifier [d] names."""
    return float(votes[classifier, np.arange(votes.shape[1])].sum() / votes.sum())


def score(represent: Callable[[Any], Any], data: FactorData, random_state: RandomState,
          batch_size: int = BATCH_SIZE, num_train: int = NUM_TRAIN, num_eval: int = NUM_EVAL,
          num_variance_estimate: int = NUM_VARIANCE, threshold: float = THRESHOLD
          ) -> dict[str, Any]:
    """{"factorvae" (= eval_accuracy), "train_accuracy", "eval_accuracy",
    "num_active_dims"} of `represent` on `data`."""
    if batch_size < 2:
        raise ValueError(f"FactorVAE needs batch_size >= 2 points per vote, got {batch_size}")
    rng = as_generator(random_state)
    codes = represent_factors(represent, data, data.sample_factors(num_variance_estimate, rng))
    global_variances = codes.var(axis=0, ddof=1)
    active = np.sqrt(global_variances) >= threshold
    if not active.any():
        return {"factorvae": 0.0, "train_accuracy": 0.0, "eval_accuracy": 0.0,
                "num_active_dims": 0}
    train = _votes(represent, data, rng, num_train, batch_size, global_variances, active)
    classifier = np.argmax(train, axis=0)
    evaluation = _votes(represent, data, rng, num_eval, batch_size, global_variances, active)
    eval_accuracy = accuracy(evaluation, classifier)
    return {"factorvae": eval_accuracy, "train_accuracy": accuracy(train, classifier),
            "eval_accuracy": eval_accuracy, "num_active_dims": int(active.sum())}
