"""FID and KID: the math, the cache of the real statistics, and the feature extraction
split over ranks (shared by `infogan eval --fid` and the in-training metric "fid").

FID (Heusel et al. 2017) = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr sqrt(S_r S_g) over
feature means and covariances (float64). tr sqrt(S_r S_g) is computed as the sum of the
square roots of the eigenvalues of sqrt(S_r) S_g sqrt(S_r), which is symmetric PSD and has
the same eigenvalues as S_r S_g, so no complex sqrtm is needed.
KID (Binkowski et al. 2018) = the unbiased MMD^2 estimate with the kernel
k(x, y) = (x.y / d + 1)^3, averaged over KID_SUBSETS random subsets of up to
KID_SUBSET_SIZE features of each side (a keyed generator: the same number every time).
Both depend on the feature network and the sample count: compare numbers only with the
same features, the same real set and the same --fid-samples.

Distribution: the samples are cut into chunks of `batch` in global order; rank r takes
chunks r, r + W, r + 2W, ... (the latents of all samples come from one keyed draw), and
one all_gather of fixed-size padded tensors brings every rank every feature. Each image
goes through the networks in the same chunk whatever the world size, so 1 rank and W
ranks get the same features, and the cost per rank falls as 1/W. Every rank takes part,
so none waits alone inside a collective.

Cache: the real statistics (mean, covariance and the features, for KID) of a shard set
go to `<shard dir>/.fid-cache/<key>.safetensors`, key = sha256 of the real images
themselves (their decoded pixels, in order) and of the feature network's identity (kind
and the sha256 of its weights); the file records its key and is used only when that is
the key of the images now. Not index.json: shards rewritten under an unchanged index (one
without sha256) reused stale statistics. A hit costs one decode of the real shards (the
10,000 MNIST test digits: seconds), not the feature pass (minutes with the Inception on a
CPU). Written atomically (temporary file + rename). When
the shard directory cannot be written, the cache goes to the fallback directory (the
run directory's `fid-cache/` in training, `~/.cache/infogan-dist/fid` for the CLI), and
a line says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from . import redact
from .features import FeatureNet
from .latent import LatentSpace, keyed_generator

FID_KEY = 0xF1D  # the keyed draw of FID latents
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
CACHE_DIR = ".fid-cache"
USER_CACHE = Path.home() / ".cache" / "infogan-dist" / "fid"


# --- the math ---------------------------------------------------------------------------
@dataclass
class FeatureStats:
    mu: np.ndarray  # [d] float64
    sigma: np.ndarray  # [d, d] float64
    features: np.ndarray  # [n, d] float32, for KID

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        f = np.asarray(features, dtype=np.float64)
        if len(f) < 2:
            raise ValueError(f"FID needs at least 2 samples, got {len(f)}")
        return cls(f.mean(axis=0), np.cov(f, rowvar=False), np.asarray(features, np.float32))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    root = _psd_sqrt(s1)
    m = root @ s2 @ root
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples with the KID kernel: the within-sample
    means leave out the diagonal (i == j), the cross mean keeps every pair."""
    m = len(x)
    if m < 2 or len(y) != m:
        raise ValueError(f"mmd2_unbiased needs two samples of one size >= 2, got {m}, {len(y)}")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    kxx, kyy, kxy = poly_kernel(x, x), poly_kernel(y, y), poly_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.mean())


def kid(x: np.ndarray, y: np.ndarray, subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> float:
    m = min(len(x), len(y), subset_size)
    rng = np.random.default_rng(seed)
    return float(np.mean([mmd2_unbiased(x[rng.choice(len(x), m, replace=False)],
                                        y[rng.choice(len(y), m, replace=False)])
                          for _ in range(subsets)]))


def fid_kid(real: FeatureStats, fake: FeatureStats) -> dict[str, float]:
    return {"fid": frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma),
            "kid": kid(real.features, fake.features)}


# --- features, split over ranks ------------------------------------------------------------
def _world() -> tuple[int, int]:
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


@torch.no_grad()
def distributed_features(n: int, batch: int, images: Callable[[slice], torch.Tensor],
                         feats: FeatureNet, device: torch.device | str) -> np.ndarray:
    """Features [n, dim] of images(rows) (floats in [-1, 1]) for every chunk of rows;
    collective when a process group exists (every rank must call it, same n and batch)."""
    rank, world = _world()
    chunks = [slice(i, min(i + batch, n)) for i in range(0, n, batch)]
    mine = chunks[rank::world]
    local = torch.zeros(math.ceil(len(chunks) / world) * batch, feats.dim, device=device)
    for j, rows in enumerate(mine):
        out = feats(images(rows).to(device).float())
        local[j * batch: j * batch + len(out)] = out
    if world == 1:
        gathered = [local]
    else:
        gathered = [torch.empty_like(local) for _ in range(world)]
        tdist.all_gather(gathered, local)
    parts = [gathered[k % world][(k // world) * batch:(k // world) * batch + (c.stop - c.start)]
             for k, c in enumerate(chunks)]
    return torch.cat(parts).cpu().numpy()


def generator_images(G: nn.Module, space: LatentSpace, n: int, seed: int,
                     device: torch.device | str) -> Callable[[slice], torch.Tensor]:
    """rows -> G's images for those rows of one keyed draw of n latents (eval mode)."""
    latents = space.sample(n, keyed_generator(FID_KEY, seed))
    G.eval()

    def make(rows: slice) -> torch.Tensor:
        return G(space.generator_input(latents[rows].to(device)))

    return make


def generated_stats(G: nn.Module, space: LatentSpace, feats: FeatureNet, n: int, seed: int,
                    batch: int, device: torch.device | str) -> FeatureStats:
    """Statistics of n generated images (G's training flag is restored)."""
    was = G.training
    try:
        return FeatureStats.of(distributed_features(
            n, batch, generator_images(G, space, n, seed, device), feats, device))
    finally:
        G.train(was)


# --- the real statistics and their cache ---------------------------------------------------
def content_digest(images: torch.Tensor) -> str:
    """sha256 of uint8 images [n, C, H, W]: their shape and every pixel, in order."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy())  # the buffer itself: no copy
    return h.hexdigest()


def _decoded(shards: str) -> torch.Tensor:
    from .data.shards import decode_all, read_index

    return decode_all(read_index(shards))[0]


def cache_key(shards: str, identity: str, images: torch.Tensor | None = None) -> str:
    """sha256 of the real images themselves (decoded pixels, `images` if given, else
    those of `shards`) and of the feature network's identity. Not of index.json: a
    shard rewritten under an unchanged index (one without sha256) gets another key."""
    h = hashlib.sha256(identity.encode())
    h.update(content_digest(_decoded(shards) if images is None else images).encode())
    return h.hexdigest()[:32]


def _cache_paths(shards: str, key: str, fallback: Path) -> list[Path]:
    from .data.shards import read_index

    directory = Path(read_index(shards).paths[0]).parent
    return [directory / CACHE_DIR / f"{key}.safetensors", Path(fallback) / f"{key}.safetensors"]


def read_cached(shards: str, identity: str, fallback: Path,
                images: torch.Tensor | None = None) -> FeatureStats | None:
    """The cached statistics of these images, or None. A file is used only when the key
    it records (its metadata) is the key of the images now: a file copied or renamed
    onto the name, or written before files recorded their key, is recomputed."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    key = cache_key(shards, identity, images)
    for path in _cache_paths(shards, key, fallback):
        if path.is_file():
            try:
                with safe_open(str(path), "np") as f:
                    if (f.metadata() or {}).get("key") != key:
                        continue
                t = load_file(str(path))
                return FeatureStats(t["mu"], t["sigma"], t["features"])
            except Exception:  # a damaged cache is recomputed, never trusted
                continue
    return None


def write_cached(stats: FeatureStats, shards: str, identity: str, fallback: Path,
                 images: torch.Tensor | None = None) -> Path:
    """Atomic write to the shard directory's cache, else the fallback. Returns the path."""
    from safetensors.numpy import save_file

    key = cache_key(shards, identity, images)
    tensors = {"mu": stats.mu, "sigma": stats.sigma, "features": stats.features}
    primary, second = _cache_paths(shards, key, fallback)
    for path in (primary, second):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(tmp), metadata={"identity": identity, "key": key,
                                                   "shards": redact.text(shards)})
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if path == second:
                raise ValueError(f"cannot write the FID cache to {primary} or {second}: "
                                 f"{e}") from None
            print(f"note: {primary.parent} is not writable ({type(e).__name__}); FID cache "
                  f"goes to {second.parent}", file=sys.stderr, flush=True)
            continue
        return path
    raise AssertionError("unreachable")


def real_stats(shards: str, feats: FeatureNet, batch: int, device: torch.device | str,
               fallback: Path) -> FeatureStats:
    """The statistics of every image of `shards`, from the cache when it holds those very
    images (the key is their pixels: a hit costs one decode of the shards, not the
    feature pass), else computed (over all ranks when a process group exists:
    collective; every rank decodes the same images, so all agree on hit or miss)."""
    from .data import to_float

    images = _decoded(shards)
    cached = read_cached(shards, feats.identity, fallback, images)
    rank, world = _world()
    missing = torch.tensor([cached is None], dtype=torch.int32, device=device)
    if world > 1:  # all ranks agree, so either all compute or none does
        tdist.all_reduce(missing, op=tdist.ReduceOp.MAX)
    if cached is not None and not missing.item():
        return cached
    stats = FeatureStats.of(distributed_features(
        len(images), batch, lambda rows: to_float(images[rows]), feats, device))
    if rank == 0:
        where = write_cached(stats, shards, feats.identity, fallback, images)
        print(f"FID: real statistics of {redact.text(shards)} ({len(images)} images) cached "
              f"in {where}", file=sys.stderr, flush=True)
    return stats


# --- the in-training evaluator --------------------------------------------------------------
class FidEvaluator:
    """eval/fid and eval/kid of a generator against `shards` (collective when a process
    group exists: every rank calls it at the same steps). Loads its feature network and
    the real statistics on first use."""

    def __init__(self, shards: str, features: str, inception_weights: str, samples: int,
                 batch: int, seed: int, device: torch.device | str, fallback: Path):
        self.shards, self.features, self.inception_weights = shards, features, inception_weights
        self.samples, self.batch, self.seed = samples, batch, seed
        self.device, self.fallback = device, fallback
        self._feats: FeatureNet | None = None
        self._real: FeatureStats | None = None

    def __call__(self, G: nn.Module, space: LatentSpace) -> dict[str, float]:
        from .features import load_features

        if self._feats is None:
            self._feats = load_features(self.features, self.inception_weights).to(self.device)
            self._real = real_stats(self.shards, self._feats, self.batch, self.device,
                                    self.fallback)
        assert self._real is not None
        fake = generated_stats(G, space, self._feats, self.samples, self.seed, self.batch,
                               self.device)
        return {f"eval/{k}": v for k, v in fid_kid(self._real, fake).items()}
