"""Evaluation of the learned codes: `infogan eval` and the trainer's in-training scores.

    infogan eval --checkpoint runs/mnist/checkpoints/step-00005000
    infogan eval --checkpoint runs/mnist/checkpoints/step-00005000 --json --limit 2000
    infogan eval --checkpoint DIR --data data/mnist/test10k --batch 256
    infogan eval --checkpoint DIR --data data/mnist/test10k --fid --features features/mnist
    infogan eval --checkpoint runs/dsprites/checkpoints/step-00010000 --disentanglement

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
With --fid: `fid` and `kid` of the generator's --fid-samples images against every image
of --data, on the features of --features (a directory from `infogan train-features`, or
`inception` with --inception-weights); the real statistics are cached (fid.py).

Everything runs the plain (unwrapped) modules in eval mode under no_grad: BatchNorm
uses its running statistics, no collective is issued, no Accelerate is involved, and
every latent comes from a fixed keyed generator (global RNG streams are untouched), so
the numbers of a checkpoint are reproducible and the trainer's resume stays exact.

With --disentanglement (shards with factor classes: `infogan prepare-data --dsprites` or
`--sprites`): the FactorVAE score, MIG, DCI disentanglement and SAP of Q's reading of
the images (disentangle_eval.py, docs/disentanglement.md), at disentanglement_lib's
sample counts times --disentanglement-fraction, and which factor each code captures best
(MI divided by the factor's entropy).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from . import redact
from .checkpoint import check_files, load_for_inference, pick_device, read_config, read_holds
from .config.schema import MAX_FID_SAMPLES, EvalConfig
from .data import stores
from .data.labelled import eval_shards, load_labelled
from .latent import LatentSpace
from .scores import EVAL_SAMPLES, score_codes

# fresh latents for MI / MSE are drawn at once: a bound keeps that in memory (1e6: ~0.3 GB)
MAX_SAMPLES = 1_000_000


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
        description=EVAL_INTRO + "\n\n".join(__doc__.split("\n\n")[2:5]),
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
    p.add_argument("--fid", action="store_true", help="also report FID and KID (needs --features)")
    p.add_argument("--features", default=None,
                   help="FID features: a directory from `infogan train-features`, or inception")
    p.add_argument("--inception-weights", default="",
                   help="safetensors file of the FID Inception weights (--features inception)")
    p.add_argument("--fid-samples", type=int, default=10_000,
                   help="generated images for FID/KID (default 10000)")
    p.add_argument("--disentanglement", action="store_true",
                   help="also the FactorVAE score, MIG, DCI and SAP (needs shards with factors)")
    p.add_argument("--disentanglement-fraction", type=float, default=1.0,
                   help="share of disentanglement_lib's sample counts (default 1: theirs)")
    p.add_argument("--disentanglement-seed", type=int, default=0,
                   help="seed of the scores' sampling (default 0)")
    p.add_argument("--disentanglement-batch", type=int,
                   default=EvalConfig.disentanglement_batch,
                   help=f"images per Q forward of the scores (default "
                        f"{EvalConfig.disentanglement_batch}, eval.disentanglement_batch's)")
    p.add_argument("--raw-generator", action="store_true",
                   help="score the trained G (generator.safetensors), not its EMA "
                        "(generator_ema.safetensors, the default when the checkpoint has one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for flag in ("batch", "disentanglement_batch"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise ValueError(f"--samples must be 1..{MAX_SAMPLES}, got {args.samples}")
    if args.fid and not args.features:
        raise ValueError("--fid needs --features DIR (from `infogan train-features`) or "
                         "--features inception --inception-weights FILE")
    if not 2 <= args.fid_samples <= MAX_FID_SAMPLES:
        raise ValueError(f"--fid-samples must be 2..{MAX_FID_SAMPLES} (every feature is kept "
                         f"in memory), got {args.fid_samples}")
    if not 0 < args.disentanglement_fraction <= 1:
        raise ValueError(f"--disentanglement-fraction must be in (0, 1], got "
                         f"{args.disentanglement_fraction}")
    device = pick_device(args.device)
    path = Path(args.checkpoint)
    check_files(path)  # a bad checkpoint fails before any data is decoded
    cfg = read_config(path)
    shape, latent, model, _ = read_holds(path)
    images = labels = None
    num_labels = None
    spec = args.data or eval_shards(cfg)
    if redact.is_masked(spec):  # configs are written without secrets (redact.py)
        raise ValueError(f"{path / 'config.yaml'} names the evaluation shards {spec}, whose "
                         "credentials were masked when it was written; pass --data with the "
                         "full URL")
    stores.configure(cfg.data)  # s3 endpoint, node cache, retry window of the run's config
    factor_images = None
    if args.disentanglement:  # decoded once, for the accuracy too
        from .disentangle_eval import FactorImages

        factor_images = FactorImages.load(spec)
        if list(factor_images.set.images.shape[1:]) != shape:
            raise ValueError(
                f"the checkpoint's generator (model.arch={model.arch}) makes images of shape "
                f"{shape}, not {list(factor_images.set.images.shape[1:])} like {spec}; pass "
                "matching --data")
    if latent.categorical and factor_images is not None:
        images, labels, num_labels = _labelled_head(factor_images, spec, args.limit)
    elif latent.categorical:
        images, labels, num_labels = load_labelled(spec, args.limit)
        if list(images.shape[1:]) != shape:
            raise ValueError(
                f"the checkpoint's generator (model.arch={model.arch}) makes images of shape "
                f"{shape}, not {list(images.shape[1:])} like {spec}; pass matching --data")
    loaded = load_for_inference(path, with_d=True, device=device,
                                raw_generator=args.raw_generator)
    assert loaded.D is not None
    codes = score_codes(loaded.G, loaded.D, loaded.space, images, labels, device,
                        args.batch, args.samples, num_labels)
    fid_report: dict[str, Any] = {}
    if args.fid:
        fid_report = _fid(args, loaded, spec, device)
    if factor_images is not None:
        from .disentangle_eval import scores

        fid_report["disentanglement"] = scores(
            loaded.D, loaded.space, factor_images, device, args.disentanglement_seed,
            args.disentanglement_fraction, args.disentanglement_batch)
    pictures: list[str] = []
    if not args.no_pictures:
        from .pictures import factor_labels, save_pictures

        # with --disentanglement, traversal-codes.png names each code's best factor
        labels = (factor_labels(fid_report["disentanglement"])
                  if "disentanglement" in fid_report else None)
        try:
            pictures = [str(p) for p in save_pictures(loaded.G, loaded.space, cfg.run.seed,
                                                       path / "traversal.png",
                                                       code_labels=labels)]
        except OSError as e:  # a read-only checkpoint (shared, archived): keep the scores
            print(f"warning: no pictures: cannot write into {path} ({e.strerror}); the "
                  "scores are complete (--no-pictures skips them)", file=sys.stderr, flush=True)
    report = {
        "checkpoint": str(path), "step": loaded.step, "generator": loaded.generator_file,
        "images": 0 if images is None else len(images),
        "data": spec if images is not None else None, "samples": args.samples,
        "device": str(device), "codes": codes, "pictures": pictures, **fid_report,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report, loaded.space))
    return 0


def _labelled_head(factor_images: Any, spec: str, limit: int | None):
    """(images, labels, number of labels) of the first `limit` samples of decoded shards
    with factors, as load_labelled gives them (packed images stay packed)."""
    held, labels = factor_images.set.images, factor_images.set.labels
    if labels is None:
        raise ValueError(f"shards {spec} have no labels (index.json has_labels=false); the "
                         "accuracy of a categorical code needs labelled shards")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    images = held.head(limit) if hasattr(held, "head") else held[:limit]
    return images, labels[:limit], int(labels.max()) + 1


def _fid(args: argparse.Namespace, loaded: Any, spec: str, device: torch.device) -> dict:
    """{"fid", "kid", "fid_features", "fid_samples", "fid_data"} of the loaded generator."""
    from .features import load_features
    from .fid import USER_CACHE, fid_kid, generated_stats, real_stats

    feats = load_features(args.features, args.inception_weights).to(device)
    real = real_stats(spec, feats, args.batch, device, USER_CACHE)
    fake = generated_stats(loaded.G, loaded.space, feats, args.fid_samples, loaded.cfg.run.seed,
                           args.batch, device)
    return {**fid_kid(real, fake), "fid_features": args.features,
            "fid_samples": args.fid_samples, "fid_data": spec}


def format_report(report: dict[str, Any], space: LatentSpace) -> str:
    lines = [
        f"checkpoint {report['checkpoint']} (step {report['step']}, {report['generator']}) "
        f"on {report['device']}",
        # without a categorical code there is no accuracy to score, so no labelled images
        (f"{report['images']} labelled images from {report['data']}"
         if report["data"] is not None else "no labelled images (no categorical code)")
        + f"; {report['samples']} fresh latents for MI / MSE",
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
    if "fid" in report:
        lines += ["", f"FID {report['fid']:.4f}  KID {report['kid']:.6f}  ({report['fid_samples']}"
                  f" samples vs {report['fid_data']}, features {report['fid_features']})"]
    if "disentanglement" in report:
        lines += ["", *format_disentanglement(report["disentanglement"])]
    if report["pictures"]:
        lines += ["", "pictures: " + ", ".join(report["pictures"])]
    return "\n".join(lines)


def format_disentanglement(d: dict[str, Any]) -> list[str]:
    """The scores and the codes x factors table of normalised MI."""
    lines = [f"disentanglement on {d['images']} images of {d['data']} (seed {d['seed']}, "
             f"{d['fraction']:g} x disentanglement_lib's sample counts; "
             f"{d['codes_computed']} images through Q)",
             "  ".join(f"{k} {d[k]:.4f}" for k in ("factorvae", "mig", "dci", "sap")),
             *([f"left out (one value in these shards): {', '.join(d['constant_factors'])}"]
               if d.get("constant_factors") else []),
             "", "MI / H(factor) of each code (rows) and factor (columns):",
             f"{'code':<6}" + "".join(f"{f:>13}" for f in d["factors"]) + "  best"]
    for i, code in enumerate(d["codes"]):
        lines.append(f"{code:<6}" + "".join(f"{v:>13.3f}" for v in d["mi_normalised"][i])
                     + f"  {d['best_factor'][code]}")
    return lines
