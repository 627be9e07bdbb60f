"""The scores of the learned codes (the metric), shared by `infogan eval` and the
trainer's in-training evaluation (log.eval_every).

Per categorical code: the unsupervised accuracy of Q's argmax on labelled images (best
one-to-one map of categories to labels, Hungarian algorithm), its mapping and confusion,
and the MI lower bound ln K - CE on fresh latents; per continuous code its MI bound and
MSE. Everything runs the plain modules in eval mode under no_grad with a keyed
generator: no collective, global RNG streams untouched, reproducible numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import to_float
from .latent import LatentSpace, keyed_generator
from .registry import Registry

EVAL_KEY = 0xE7A1  # the keyed generator of evaluation latents
EVAL_SAMPLES = 10_000  # fresh latents per MI / MSE estimate


def unsupervised_accuracy(
    pred: Any, labels: Any, num_categories: int | None = None, num_labels: int | None = None
) -> tuple[float, list[int | None], np.ndarray]:
    """(accuracy, mapping, confusion) of categories `pred` [n] against `labels` [n].

    confusion[k, l] counts samples of category k with label l (K x L; K and L default to
    the largest value seen + 1). The mapping is the one-to-one assignment of categories
    to labels that maximises the matched count (Hungarian algorithm); with K != L the
    surplus categories (or labels) stay unmatched and count as errors.
    mapping[k] is the label of category k, or None when it is unmatched.
    """
    # imported here: scipy.optimize costs seconds, and the trainer imports this module
    from scipy.optimize import linear_sum_assignment

    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if pred.shape != labels.shape:
        raise ValueError(f"pred and labels differ in length: {pred.size} vs {labels.size}")
    if pred.size == 0:
        raise ValueError("no samples to score")
    if pred.min() < 0 or labels.min() < 0:
        raise ValueError("categories and labels must be >= 0 (unlabelled samples have -1)")
    k = max(int(pred.max()) + 1, num_categories or 0)
    n_labels = max(int(labels.max()) + 1, num_labels or 0)
    confusion = np.zeros((k, n_labels), dtype=np.int64)
    np.add.at(confusion, (pred, labels), 1)
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    mapping: list[int | None] = [None] * k
    for r, c in zip(rows, cols, strict=True):
        mapping[int(r)] = int(c)
    accuracy = float(confusion[rows, cols].sum()) / pred.size
    return accuracy, mapping, confusion


# --- scoring modules ------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode inside, each module's own training flag restored afterwards."""
    flags = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, f in zip(modules, flags, strict=True):
            m.train(f)


@torch.no_grad()
def predict_real(
    D: nn.Module, space: LatentSpace, images_uint8: torch.Tensor, device: torch.device | str,
    batch: int = 512,
) -> np.ndarray:
    """Q's argmax class per categorical code on real images: int64 [n, num_categorical]."""
    out = []
    with eval_mode(D):
        for i in range(0, len(images_uint8), batch):
            x = to_float(images_uint8[i : i + batch].to(device))
            _, q = D(x, head="q")
            out.append(space.predict_categories(q).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def latent_scores(
    G: nn.Module, D: nn.Module, space: LatentSpace, device: torch.device | str,
    samples: int = EVAL_SAMPLES, batch: int = 512, seed: int = 0,
) -> tuple[dict[str, float], dict[str, float]]:
    """({code: MI lower bound}, {continuous code: MSE of Q's mean}) on `samples` fresh
    latents from keyed_generator(EVAL_KEY, seed), through G then Q in eval mode."""
    # drawn at once (a few MB): the same latents whatever the batch size
    latents = space.sample(samples, keyed_generator(EVAL_KEY, seed))
    mi_sum: dict[str, float] = {}
    se_sum = torch.zeros(space.num_continuous, dtype=torch.float64)
    with eval_mode(G, D):
        for done in range(0, samples, batch):
            latent = latents[done : done + batch].to(device)
            n = len(latent)
            _, q = D(G(space.generator_input(latent)), head="q")
            _, stats = space.info_loss(q, latent, 1.0, 1.0)  # the bounds the trainer logs
            for key, v in stats.items():
                name = key.split("/", 1)[1]
                mi_sum[name] = mi_sum.get(name, 0.0) + float(v) * n  # batch means, weighted
            mean = space.split_q(q).mean
            se_sum += ((mean - latent.cont.float()) ** 2).sum(dim=0).double().cpu()
    mi = {name: v / samples for name, v in mi_sum.items()}
    mse = {name: float(se_sum[j]) / samples for j, name in enumerate(space.cont_names)}
    return mi, mse


def score_codes(
    G: nn.Module, D: nn.Module, space: LatentSpace, images_uint8: torch.Tensor | None,
    labels: torch.Tensor | np.ndarray | None, device: torch.device | str, batch: int = 512,
    samples: int = EVAL_SAMPLES, num_labels: int | None = None,
) -> dict[str, dict[str, Any]]:
    """The per-code report (see the module docstring). Accuracy needs images and labels;
    without them the categorical codes get only `mi`."""
    codes: dict[str, dict[str, Any]] = {}
    if space.categorical and images_uint8 is not None and labels is not None:
        labels_np = labels.cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
        preds = predict_real(D, space, images_uint8, device, batch)
        for i, (name, k) in enumerate(zip(space.cat_names, space.categorical, strict=True)):
            acc, mapping, conf = unsupervised_accuracy(preds[:, i], labels_np, k, num_labels)
            codes[name] = {"accuracy": acc, "mapping": mapping, "confusion": conf.tolist()}
    mi, mse = latent_scores(G, D, space, device, samples, batch)
    for name in space.cat_names:
        codes.setdefault(name, {})["mi"] = mi[name]
    for name in space.cont_names:
        codes[name] = {"mi": mi[name], "mse": mse[name]}
    return codes


def evaluate_codes(
    G: nn.Module, D: nn.Module, space: LatentSpace, images_uint8: torch.Tensor | None,
    labels: torch.Tensor | None, device: torch.device | str, batch: int = 512,
    samples: int = EVAL_SAMPLES,
) -> dict[str, float]:
    """In-training evaluation for the main process: flat scalars
    {"eval/acc/c1", "eval/mi/c1", ..., "eval/mi/c2", "eval/mse/c2", ...}.

    G and D are the unwrapped modules; they run in eval mode and get their own training
    flags back. No collectives, no gradients, no global RNG draws. `images_uint8` and
    `labels` (from `load_eval_data`, on any device) may be None: no eval/acc keys then.
    Cost: one D forward per image and one G + D forward per sample (`samples`).
    """
    codes = score_codes(G, D, space, images_uint8, labels, device, batch, samples)
    out: dict[str, float] = {}
    for name, c in codes.items():
        if "accuracy" in c:
            out[f"eval/acc/{name}"] = float(c["accuracy"])
        out[f"eval/mi/{name}"] = float(c["mi"])
        if "mse" in c:
            out[f"eval/mse/{name}"] = float(c["mse"])
    return out




# --- in-training metrics (log.eval_metrics) ---------------------------------------------
@dataclass
class EvalInputs:
    """What an in-training metric gets: the unwrapped modules, the latent space, the
    labelled evaluation images (main process only; None elsewhere), the generator that
    pictures and FID use (the EMA when on, else G) and the FID evaluator (or None)."""

    G: nn.Module
    D: nn.Module
    space: LatentSpace
    images: torch.Tensor | None
    labels: torch.Tensor | None
    device: torch.device | str
    samples: int
    sampler: nn.Module | None = None
    fid: Callable[[nn.Module, LatentSpace], dict[str, float]] | None = None
    # the disentanglement scores of D's Q (disentangle_eval.py), or None
    disentanglement: Callable[[nn.Module, LatentSpace], dict[str, float]] | None = None


@dataclass(frozen=True)
class Metric:
    """An in-training metric. `collective=False`: the main process alone calls it (it
    must issue no collective; the others wait in the next one). `collective=True`: every
    rank calls it at the same steps (it may split its work and gather); only the main
    process's values are written."""

    fn: Callable[[EvalInputs], dict[str, float]]
    collective: bool = False
    # the names it reports for a run's config (LatentConfig in, e.g. eval/acc/c1 out), so
    # checkpoint.keep_best on a name it never reports is refused at start; None: unknown
    names: Callable[[Any], list[str]] | None = None


def _codes_names(latent: Any) -> list[str]:
    """What evaluate_codes reports for a run with this LatentConfig (the trainer's eval
    set is labelled: preflight checks it)."""
    space = LatentSpace(latent)
    return ([f"eval/acc/{n}" for n in space.cat_names]
            + [f"eval/mi/{n}" for n in space.cat_names + space.cont_names]
            + [f"eval/mse/{n}" for n in space.cont_names])


def _disentanglement_metric(e: EvalInputs) -> dict[str, float]:
    assert e.disentanglement is not None, "the trainer builds it when the metric is listed"
    return e.disentanglement(e.D, e.space)


def _fid_metric(e: EvalInputs) -> dict[str, float]:
    assert e.fid is not None, "config validation requires eval.features with the fid metric"
    return e.fid(e.sampler if e.sampler is not None else e.G, e.space)


# name -> Metric; log.eval_metrics (and log.fid_every for "fid") pick them by name.
METRICS: Registry[Metric] = Registry("log.eval_metrics")
METRICS.add("codes", Metric(lambda e: evaluate_codes(e.G, e.D, e.space, e.images, e.labels,
                                                     e.device, samples=e.samples),
                            names=_codes_names))
# eval/fid, eval/kid of the sampling generator (fid.py); split over all ranks
METRICS.add("fid", Metric(_fid_metric, collective=True,
                          names=lambda latent: ["eval/fid", "eval/kid"]))
# eval/factorvae, eval/mig, eval/dci, eval/sap of Q on shards with factor classes
# (disentangle_eval.py); codes split over all ranks
METRICS.add("disentanglement", Metric(_disentanglement_metric, collective=True,
                                      names=lambda latent: _disentanglement_names()))


def _disentanglement_names() -> list[str]:
    from .disentangle import SCORES  # the scores' modules only when a run names them

    return [f"eval/{name}" for name in SCORES.names()]
