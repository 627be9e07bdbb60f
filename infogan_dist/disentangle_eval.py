"""The four disentanglement scores of a model (disentangle/) on shards with factor
classes: `infogan eval --disentanglement` and the in-training metric "disentanglement".

The representation of an image is what Q says about it, one dimension per code in code
order (c1, c2, ...): a continuous code contributes Q's mean, a categorical code its
argmax class (0 .. K-1) as one discrete dimension (MIG bins it, the trees split it;
FactorVAE and SAP treat it as a number). G plays no part: the scores measure how well
Q's reading of real images separates the factors.

Codes across ranks: the scores ask for the codes of dataset rows; a CodeTable computes
each row once. The rows it has not computed yet, sorted, are cut into chunks of `batch`
and rank r takes chunks r, r + W, ... (fid.distributed_features), so an image goes
through Q in the same chunk whatever the world size; every rank gets every code and
runs the same scores on them (same draws, same numbers). With a process group every
rank must call at the same time (the in-training metric is collective). The scores'
sampling is a fixed function of `seed`, so the row requests agree on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .config.schema import EvalConfig
from .data import to_float
from .data.factors import FactorSet
from .data.labelled import load_labelled_factors
from .data.shards import ShardError
from .disentangle import SCORES, FactorData, score_all
from .fid import distributed_features
from .latent import LatentSpace
from .scores import eval_mode

DEFAULT_BATCH = EvalConfig.disentanglement_batch  # images per Q forward (schema.py: why)


def code_names(space: LatentSpace) -> list[str]:
    """The representation's dimensions: categorical codes (argmax), then continuous
    (Q's mean), as the codes are numbered."""
    return space.cat_names + space.cont_names


class QCodes:
    """Images in [-1, 1] -> [n, d] float32 representation (see the module docstring)."""

    def __init__(self, D: nn.Module, space: LatentSpace):
        self.D, self.space = D, space
        self.dim = len(space.categorical) + space.num_continuous

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _, q = self.D(x, head="q")
        cats = self.space.predict_categories(q).float()
        return torch.cat([cats, self.space.split_q(q).mean], dim=1)


class CodeTable:
    """rows -> codes [n, d] (float64), each dataset row computed once, split over ranks."""

    def __init__(self, codes: QCodes, images, batch: int, device: torch.device | str):
        self.q, self.images, self.batch, self.device = codes, images, batch, device
        self.codes = np.zeros((len(images), codes.dim), dtype=np.float32)
        self.done = np.zeros(len(images), dtype=bool)

    @property
    def computed(self) -> int:
        return int(self.done.sum())

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        missing = np.unique(rows[~self.done[rows]])
        if len(missing):
            def chunk(part: slice) -> torch.Tensor:
                idx = torch.from_numpy(missing[part])
                return to_float(self.images.index_select(0, idx))

            self.codes[missing] = distributed_features(len(missing), self.batch, chunk, self.q,
                                                       self.device)
            self.done[missing] = True
        return self.codes[rows].astype(np.float64)


@dataclass
class FactorImages:
    """Decoded shards with factors, ready for the scores."""

    data: FactorData  # observations = rows
    set: FactorSet
    spec: str
    constant: list[str]  # the factors that take one value here, left out of the scores

    @classmethod
    def load(cls, spec: str) -> FactorImages:
        """ShardError (one line) for shards without factors, without every combination or
        with fewer than 2 factors that vary. A factor of one value (e.g. `--sprites
        --factor-sizes 3,1,40,32,32`) is no factor of variation: it is left out, as
        disentanglement_lib leaves out dSprites' color."""
        fs = load_labelled_factors(spec)
        sizes, names = [int(s) for s in fs.spec.sizes], list(fs.spec.names)
        kept = [k for k, size in enumerate(sizes) if size > 1]
        constant = [names[k] for k in range(len(sizes)) if k not in kept]
        if len(kept) < 2:
            raise ShardError(f"shards {spec}: factor sizes {sizes} ({', '.join(names)}): "
                             f"{len(kept)} factor(s) vary, the scores need 2 or more; make "
                             "shards where they do")
        try:
            data = FactorData.from_factors(fs.factors[:, kept], [sizes[k] for k in kept],
                                           [names[k] for k in kept], what=f"shards {spec}")
        except ValueError as e:
            raise ShardError(f"{e}; use shards with all of them (prepare-data without "
                             "--limit/--offset)") from None
        return cls(data, fs, spec, constant)


def scores(D: nn.Module, space: LatentSpace, images: FactorImages, device: torch.device | str,
           seed: int = 0, fraction: float = 1.0, batch: int = DEFAULT_BATCH) -> dict[str, Any]:
    """The report: the four headline scores, each score's details, the MI matrix of
    MIG's points (codes x factors, divided by each factor's entropy) and what was scored.
    Collective when a process group exists."""
    held = images.set.images
    expected = list(held.shape[1:])
    table = CodeTable(QCodes(D, space), held, batch, device)
    with eval_mode(D):
        details = score_all(table, images.data, seed=seed, fraction=fraction)
    mig = details["mig"]
    mi = np.asarray(mig["mi_matrix"]) / np.asarray(mig["entropy"])[None, :]
    names = code_names(space)
    return {
        **{name: float(details[name][name]) for name in SCORES.names()},
        "details": details,
        "codes": names,
        "factors": images.data.names, "constant_factors": images.constant,
        "mi_normalised": mi.tolist(),
        "best_factor": {c: images.data.names[int(np.argmax(mi[i]))] for i, c in enumerate(names)},
        "data": images.spec, "images": len(held), "image_shape": expected,
        "codes_computed": table.computed, "seed": seed, "fraction": fraction,
    }


class DisentanglementEvaluator:
    """eval/factorvae, eval/mig, eval/dci and eval/sap of a model's Q (collective when a
    process group exists: every rank calls it at the same steps). The shards are
    decoded on first use (every rank holds them: 377 MB for dSprites, packed)."""

    def __init__(self, shards: str, fraction: float, batch: int, device: torch.device | str,
                 seed: int = 0):
        self.shards, self.fraction, self.batch = shards, fraction, batch
        self.device, self.seed = device, seed
        self._images: FactorImages | None = None
        # the latest full report (its MI matrix labels the traversal pictures' codes)
        self.last_report: dict[str, Any] | None = None

    def __call__(self, D: nn.Module, space: LatentSpace) -> dict[str, float]:
        if self._images is None:
            self._images = FactorImages.load(self.shards)
        report = scores(D, space, self._images, self.device, self.seed, self.fraction,
                        self.batch)
        self.last_report = report
        return {f"eval/{name}": report[name] for name in SCORES.names()}
