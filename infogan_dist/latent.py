"""The latent space: the only place that knows how z and the codes are laid out.

It samples (z, codes), builds the generator input, splits Q's output into per-code
parts, and computes the info loss and the mutual-information lower bounds.

World-size invariance: `sample_step` draws the latents of the *global* batch from a
generator keyed by (seed, step, phase) and returns this rank's slice, so step s sees the
same latents whether it runs on 1 rank or 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import LatentConfig

# Learned log-variances are clamped so one bad batch cannot make the likelihood explode.
LOGVAR_MIN, LOGVAR_MAX = -6.0, 4.0
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator whose stream depends only on `key` (well mixed by SeedSequence)."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(seed & ((1 << 63) - 1))


def rank_rows(global_batch: int, rank: int, world_size: int) -> slice:
    """The rows of a global-batch draw that belong to `rank`."""
    per_rank = global_batch // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


@dataclass
class Latent:
    """One batch of latents. `cat` holds class indices, one column per categorical code."""

    z: torch.Tensor  # [n, noise_dim]
    cat: torch.Tensor  # [n, num_categorical] int64
    cont: torch.Tensor  # [n, num_continuous]

    def to(self, device: torch.device | str) -> Latent:
        return Latent(self.z.to(device), self.cat.to(device), self.cont.to(device))

    def __getitem__(self, idx: slice | list[int] | torch.Tensor) -> Latent:
        return Latent(self.z[idx], self.cat[idx], self.cont[idx])

    def __len__(self) -> int:
        return self.z.shape[0]


@dataclass
class QOutput:
    """Q's output split per code."""

    logits: list[torch.Tensor]  # one [n, K_i] per categorical code
    mean: torch.Tensor  # [n, num_continuous]
    logvar: torch.Tensor | None  # [n, num_continuous] when the variance is learned


class LatentSpace:
    def __init__(self, cfg: LatentConfig):
        self.cfg = cfg
        self.categorical = list(cfg.categorical)
        self.num_continuous = cfg.continuous
        self.learned_std = cfg.continuous_std == "learned"

    # --- sizes and names -------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        """Width of the generator input: z, one-hot categorical codes, continuous codes."""
        return self.cfg.noise_dim + sum(self.categorical) + self.num_continuous

    @property
    def q_dim(self) -> int:
        """Width of Q's output: logits per categorical code, means (and log-variances)."""
        per_cont = 2 if self.learned_std else 1
        return sum(self.categorical) + per_cont * self.num_continuous

    @property
    def cat_names(self) -> list[str]:
        return [f"c{i + 1}" for i in range(len(self.categorical))]

    @property
    def cont_names(self) -> list[str]:
        first = len(self.categorical) + 1
        return [f"c{first + i}" for i in range(self.num_continuous)]

    # --- sampling --------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> Latent:
        """n latents on the CPU. The draw order is fixed: z, categorical, continuous."""
        if self.cfg.noise == "uniform":
            z = torch.rand(n, self.cfg.noise_dim, generator=generator) * 2 - 1
        else:
            z = torch.randn(n, self.cfg.noise_dim, generator=generator)
        cat = torch.stack(
            [torch.randint(k, (n,), generator=generator) for k in self.categorical], dim=1
        ) if self.categorical else torch.zeros(n, 0, dtype=torch.long)
        cont = torch.rand(n, self.num_continuous, generator=generator) * 2 - 1
        return Latent(z, cat, cont)

    def sample_step(
        self, seed: int, step: int, phase: int, global_batch: int, rank: int, world_size: int,
        rekey: int = 0,
    ) -> Latent:
        """This rank's slice of the global batch of latents for (seed, step, phase). `rekey`
        (the rollback count) joins the key only when > 0, so runs without a rollback draw
        what they always drew."""
        key = (seed, step, phase, 0x1A7E, *([rekey] if rekey else []))
        full = self.sample(global_batch, keyed_generator(*key))
        return full[rank_rows(global_batch, rank, world_size)]

    def generator_input(self, latent: Latent) -> torch.Tensor:
        parts = [latent.z]
        parts += [F.one_hot(latent.cat[:, i], k).to(latent.z.dtype)
                  for i, k in enumerate(self.categorical)]
        parts.append(latent.cont)
        return torch.cat(parts, dim=1)

    # --- Q and the info loss ---------------------------------------------------------
    def split_q(self, q: torch.Tensor) -> QOutput:
        q = q.float()  # the likelihoods are computed in fp32 even under autocast
        logits = list(torch.split(q[:, : sum(self.categorical)], self.categorical, dim=1))
        rest = q[:, sum(self.categorical):]
        mean = rest[:, : self.num_continuous]
        logvar = None
        if self.learned_std:
            logvar = rest[:, self.num_continuous:].clamp(LOGVAR_MIN, LOGVAR_MAX)
        return QOutput(logits, mean, logvar)

    def info_loss(
        self, q: torch.Tensor, latent: Latent, lambda_cat: float, lambda_cont: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_info = lambda_cat * sum CE + lambda_cont * sum Gaussian NLL (constants dropped).

        Returns the loss and detached statistics: `mi/<code>`, the lower bound of the
        mutual information of each code (nats): ln K - CE for a categorical code,
        ln 2 + E log q(c|x) for a U(-1, 1) code.
        """
        out = self.split_q(q)
        loss = q.new_zeros((), dtype=torch.float32)
        stats: dict[str, torch.Tensor] = {}
        for i, (name, k) in enumerate(zip(self.cat_names, self.categorical, strict=True)):
            ce = F.cross_entropy(out.logits[i], latent.cat[:, i])
            loss = loss + lambda_cat * ce
            stats[f"mi/{name}"] = math.log(k) - ce.detach()
        if self.num_continuous:
            err2 = (latent.cont.float() - out.mean) ** 2
            if out.logvar is None:
                nll = 0.5 * err2  # sigma fixed at 1: the MSE/2 of the notes
                log_q = -HALF_LOG_2PI - nll
            else:
                nll = 0.5 * out.logvar + 0.5 * err2 * torch.exp(-out.logvar)
                log_q = -HALF_LOG_2PI - nll
            loss = loss + lambda_cont * nll.mean(dim=0).sum()
            for j, name in enumerate(self.cont_names):
                stats[f"mi/{name}"] = math.log(2.0) + log_q[:, j].mean().detach()
        return loss, stats

    def predict_categories(self, q: torch.Tensor) -> torch.Tensor:
        """[n, num_categorical] argmax class per categorical code."""
        out = self.split_q(q)
        if not out.logits:
            return torch.zeros(q.shape[0], 0, dtype=torch.long, device=q.device)
        return torch.stack([lg.argmax(dim=1) for lg in out.logits], dim=1)
