"""Evaluation of the learned codes: `infogan eval` and the trainer's in-training scores.

    infogan eval --checkpoint runs/mnist/checkpoints/step-00005000
    infogan eval --checkpoint runs/mnist/checkpoints/step-00005000 --json --limit 2000
    infogan eval --checkpoint DIR --data data/mnist/test10k --batch 256

Per categorical code (c1, ...):
  accuracy   unsupervised accuracy of Q's argmax on the labelled images: the best
             one-to-one map of categories to labels (Hungarian algorithm on the
             confusion matrix), as the paper's "5% error" on MNIST;
  mapping    mapping[k] = label given to category k (None: category left unmatched);
  confusion  [K categories x L labels] counts;
  mi         the lower bound ln K - CE of I(c; G(z, c)) in nats, on fresh latents
             through G then Q (max ln K).
Per continuous code: `mi` (ln 2 + E log q(c|x), the bound the trainer logs) and `mse`
(mean squared error of Q's mean against the true code; a code Q ignores scores the
prior's variance, 1/3).

Everything runs the plain (unwrapped) modules in eval mode under no_grad: BatchNorm
uses its running statistics, no collective is issued, no Accelerate is involved, and
every latent comes from a fixed keyed generator (global RNG streams are untouched), so
the numbers of a checkpoint are reproducible and the trainer's resume stays exact.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from . import checkpoint as ckpt
from .config import Config
from .data import ShardIndex, decode_all, read_index, to_float
from .latent import LatentSpace, keyed_generator
from .models import build_models

EVAL_KEY = 0xE7A1  # the keyed generator of evaluation latents
EVAL_SAMPLES = 10_000  # fresh latents per MI / MSE estimate
CANDIDATE_SHAPES = [(c, s, s) for s in (28, 32, 64) for c in (1, 3)]


# --- the metric -----------------------------------------------------------------------
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


# --- data -----------------------------------------------------------------------------
def head_of_index(index: ShardIndex, limit: int | None) -> ShardIndex:
    """The leading shards that hold the first `limit` samples (all when None)."""
    if limit is None or limit >= index.total:
        return index
    total, k = 0, 0
    while total < limit:
        total += index.counts[k]
        k += 1
    return dataclasses.replace(index, paths=index.paths[:k], counts=index.counts[:k])


def eval_shards(cfg: Config) -> str:
    return cfg.data.eval_shards or cfg.data.shards


def load_labelled(spec: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(uint8 images [n, C, H, W], int64 labels [n], number of label classes) of the
    shards `spec`. ValueError (one line) when the shards carry no labels."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    index = read_index(spec)
    if not index.has_labels:
        raise ValueError(
            f"shards {spec} have no labels (index.json has_labels=false); the accuracy needs "
            "labelled shards: pass --data with shards made by `infogan prepare-data --labels` "
            "or from a folder of class subfolders (or set data.eval_shards)"
        )
    images, labels = decode_all(head_of_index(index, limit))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    num_labels = index.num_classes or int(labels.max()) + 1
    return images, labels, num_labels


def load_eval_data(cfg: Config, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's evaluation set: data.eval_shards (or data.shards), uint8 + labels."""
    images, labels, _ = load_labelled(eval_shards(cfg), limit)
    return images, labels


# --- checkpoints ----------------------------------------------------------------------
@dataclass
class Loaded:
    path: Path
    cfg: Config
    space: LatentSpace
    G: nn.Module
    D: nn.Module | None
    step: int | None
    image_shape: tuple[int, int, int]


def _not_a_checkpoint(path: Path, missing: str) -> ValueError:
    hint = "pass a checkpoints/step-N directory"
    good, _ = ckpt.list_checkpoints(path) if path.is_dir() else ([], [])
    if good:
        hint = f"{path} is a run directory; pass one of its checkpoints, e.g. {good[-1]}"
    return ValueError(f"{path} is not a complete checkpoint (no {missing}); {hint}")


def check_files(path: Path, with_d: bool = True) -> None:
    """ValueError unless `path` holds what loading needs: config.yaml and
    generator.safetensors; with D also model_1.safetensors, COMPLETE, train_state.json."""
    need = ["config.yaml", "generator.safetensors"]
    if with_d:
        need += [ckpt.COMPLETE, ckpt.STATE_FILE, "model_1.safetensors"]
    if not path.is_dir():
        raise ValueError(f"checkpoint directory {path} does not exist")
    for name in need:
        if not (path / name).is_file():
            raise _not_a_checkpoint(path, name)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))  # safetensors: never unpickles
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: unreadable safetensors file ({' '.join(str(e).split())})") \
            from None


def _shapes_match(module: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = module.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def _image_shape(cfg: Config, g_state: dict[str, torch.Tensor],
                 hint: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The image shape G was built for: the hint (the data being scored), else the
    training shards' index, else the first common shape whose G matches the weights."""
    space = LatentSpace(cfg.latent)
    candidates: list[tuple[int, int, int]] = [hint] if hint else []
    for spec in (cfg.data.shards, cfg.data.eval_shards):
        with contextlib.suppress(ValueError, OSError):
            if spec:
                candidates.append(read_index(spec).image_shape)
    candidates += CANDIDATE_SHAPES
    with torch.device("meta"):  # shapes only: no memory, no init cost
        for shape in dict.fromkeys(candidates):
            try:
                G, _ = build_models(cfg.model, space.input_dim, space.q_dim, shape)
            except (ValueError, KeyError, RuntimeError):
                continue
            if _shapes_match(G, g_state):
                return shape
    if hint:
        raise ValueError(
            f"the checkpoint's generator (model.arch={cfg.model.arch}) does not make images "
            f"of shape {list(hint)}, the shape of the data to score; pass matching --data"
        )
    raise ValueError(
        f"cannot tell the image shape of the checkpoint's generator (model.arch="
        f"{cfg.model.arch}): its data.shards {cfg.data.shards} is unreadable here"
    )


def load_checkpoint(
    path: str | Path, with_d: bool = True, image_shape: tuple[int, int, int] | None = None,
    device: torch.device | str = "cpu",
) -> Loaded:
    """config.yaml + G (generator.safetensors) [+ D (model_1.safetensors)] of a
    checkpoint directory, as plain modules in eval mode on `device`. ValueError (one
    line) for anything missing or mismatched."""
    path = Path(path)
    check_files(path, with_d)
    cfg = ckpt.read_config(path)
    step = None
    if (path / ckpt.STATE_FILE).is_file():
        try:
            step = int(ckpt.read_state(path)["step"])
        except (ValueError, KeyError, TypeError):
            if with_d:
                raise _not_a_checkpoint(path, f"readable {ckpt.STATE_FILE}") from None
    space = LatentSpace(cfg.latent)
    g_state = _read_weights(path / "generator.safetensors")
    shape = _image_shape(cfg, g_state, image_shape)
    G, D = build_models(cfg.model, space.input_dim, space.q_dim, shape)
    parts = [(G, g_state, "generator.safetensors")]
    if with_d:
        parts.append((D, _read_weights(path / "model_1.safetensors"), "model_1.safetensors"))
    for module, state, name in parts:
        if not _shapes_match(module, state):
            raise ValueError(
                f"{path / name}: weights do not fit the config's model (model.arch="
                f"{cfg.model.arch}, width {cfg.model.width}, latent {space.input_dim} -> "
                f"q {space.q_dim}, images {list(shape)})"
            )
        module.load_state_dict(state)
        module.to(device).eval()
    return Loaded(path, cfg, space, G, D if with_d else None, step, shape)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device here; use --device cpu")
    return torch.device(name)


EVAL_INTRO = """\
Score the codes of a checkpoint directory: config.yaml, G from generator.safetensors, D
and Q from model_1.safetensors (safetensors only, never pickle). Writes DIR/traversal.png
(categories x noise) and DIR/traversal-<code>.png per continuous code.

"""


# --- the CLI --------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score a checkpoint's codes: unsupervised accuracy, MI bounds, traversal pictures",
        description=EVAL_INTRO + __doc__.split("\n\n")[2] + "\n\n" + __doc__.split("\n\n")[3],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + __doc__.split("\n\n")[1],
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoints/step-N directory")
    p.add_argument("--data", default=None,
                   help="labelled shards to score (dir or brace pattern; default: the "
                        "config's data.eval_shards, else data.shards)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--batch", type=int, default=512, help="batch size (default 512)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images")
    p.add_argument("--samples", type=int, default=EVAL_SAMPLES,
                   help=f"fresh latents for the MI and MSE estimates (default {EVAL_SAMPLES})")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda:N")
    p.add_argument("--no-pictures", action="store_true",
                   help="do not write DIR/traversal*.png")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    device = pick_device(args.device)
    path = Path(args.checkpoint)
    check_files(path)  # a bad checkpoint fails before any data is decoded
    cfg = ckpt.read_config(path)
    images = labels = None
    num_labels = None
    shape = None
    spec = args.data or eval_shards(cfg)
    if cfg.latent.categorical:
        images, labels, num_labels = load_labelled(spec, args.limit)
        shape = tuple(images.shape[1:])
    loaded = load_checkpoint(path, with_d=True, image_shape=shape, device=device)
    assert loaded.D is not None
    codes = score_codes(loaded.G, loaded.D, loaded.space, images, labels, device,
                        args.batch, args.samples, num_labels)
    pictures: list[str] = []
    if not args.no_pictures:
        from .pictures import save_pictures

        pictures = [str(p) for p in save_pictures(loaded.G, loaded.space, cfg.run.seed,
                                                   path / "traversal.png")]
    report = {
        "checkpoint": str(path), "step": loaded.step,
        "images": 0 if images is None else len(images),
        "data": spec if images is not None else None, "samples": args.samples,
        "device": str(device), "codes": codes, "pictures": pictures,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report, loaded.space))
    return 0


def format_report(report: dict[str, Any], space: LatentSpace) -> str:
    lines = [
        f"checkpoint {report['checkpoint']} (step {report['step']}) on {report['device']}",
        f"{report['images']} labelled images from {report['data']}; "
        f"{report['samples']} fresh latents for MI / MSE",
        "",
        f"{'code':<6}{'kind':<12}{'accuracy':>10}{'MI (nats)':>11}{'max MI':>9}{'MSE':>9}",
    ]
    for name, k in zip(space.cat_names, space.categorical, strict=True):
        c = report["codes"][name]
        acc = f"{c['accuracy']:.4f}" if "accuracy" in c else "-"
        lines.append(f"{name:<6}{f'cat({k})':<12}{acc:>10}{c['mi']:>11.4f}"
                     f"{math.log(k):>9.4f}{'-':>9}")
    for name in space.cont_names:
        c = report["codes"][name]
        lines.append(f"{name:<6}{'continuous':<12}{'-':>10}{c['mi']:>11.4f}{'-':>9}"
                     f"{c['mse']:>9.4f}")
    for name in space.cat_names:
        c = report["codes"][name]
        if "confusion" not in c:
            continue
        conf = c["confusion"]
        width = max(5, len(str(max(max(r) for r in conf))) + 1)
        lines += ["", f"{name}: confusion (rows: categories -> mapped label; columns: labels)",
                  " " * 10 + "".join(f"{j:>{width}}" for j in range(len(conf[0])))]
        for i, row in enumerate(conf):
            m = c["mapping"][i]
            lines.append(f"{i:>3} -> {'-' if m is None else m:<3} "
                         + "".join(f"{v:>{width}}" for v in row))
    if report["pictures"]:
        lines += ["", "pictures: " + ", ".join(report["pictures"])]
    return "\n".join(lines)
