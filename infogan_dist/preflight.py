"""Checks that run before Accelerate starts any process group, so bad input costs a
second and a one-line error (exit 2), not a hung or half-started distributed job."""

from __future__ import annotations

import math
import os

import torch

from . import checkpoint as ckpt
from .choices import check_choices
from .config import Config, ConfigError
from .data import ShardIndex, read_index, stores
from .data.shards import INDEX_NAME
from .data.stream import check_split
from .models import check_shape
from .updates import part_names


def launched_world_size() -> int:
    """The world size torchrun/accelerate will give us, read from the environment."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_not_a_file(key: str, spec: str) -> None:
    """ConfigError if a shards setting names a plain file (not a .tar pattern or an
    index.json): read_index would only say that no such directory exists."""
    if os.path.isfile(spec) and not spec.endswith((".tar", INDEX_NAME)):
        parent = os.path.dirname(spec) or "."
        hint = (f", e.g. {key}={parent}" if os.path.isfile(os.path.join(parent, INDEX_NAME))
                else f"; make one with `infogan prepare-data --out DIR ...` from {spec}")
        raise ConfigError(
            f"{key}={spec} is a file, not a shard directory; pass the directory that "
            f"`infogan prepare-data --out DIR` wrote (it holds {INDEX_NAME} and "
            f"shard-*.tar){hint}"
        )


def _check_factors(spec: str, index: ShardIndex) -> None:
    """The metric disentanglement samples every factor combination: the shards must have
    factor classes and at least one sample per combination (counted, not decoded)."""
    if index.factors is None:
        raise ConfigError(
            f"log.eval_metrics has disentanglement, which needs shards with factor "
            f"classes, but {spec} has none; set data.eval_shards to shards made by "
            "`infogan prepare-data --dsprites FILE.npz` or `--sprites`")
    combinations = math.prod(int(s) for s in index.factors.get("sizes", []))
    if index.total < combinations:
        raise ConfigError(
            f"log.eval_metrics has disentanglement, which samples all {combinations} factor "
            f"combinations, but {spec} holds {index.total} samples; set data.eval_shards to "
            "shards with every combination (prepare-data without --limit/--offset)")


def preflight(cfg: Config) -> ShardIndex:
    check_choices(cfg)  # a Config built in code, not loaded by choices.load_config, too
    cfg.check_world_size(launched_world_size())
    check_not_a_file("data.shards", str(cfg.data.shards))
    if cfg.data.eval_shards:
        check_not_a_file("data.eval_shards", str(cfg.data.eval_shards))
    if cfg.train.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError(
            "train.precision=fp16 needs a CUDA GPU (on a CPU Accelerate would silently train "
            "in fp32); use train.precision=bf16 or no"
        )
    stores.configure(cfg.data)  # endpoint, cache, retry window for every read below
    index = read_index(cfg.data.shards)
    if cfg.data.mode == "stream":
        world_size = launched_world_size()
        check_split(index, world_size, cfg.data.num_workers, cfg.batch_per_rank(world_size))
    need = check_shape(cfg.model.arch, index.image_shape)
    if need:
        c, h, w = index.image_shape
        raise ConfigError(
            f"model.arch={cfg.model.arch} needs {need}, but data.shards={cfg.data.shards} "
            f"holds {c}x{h}x{w}; pick another model.arch (mlp takes any shape)"
        )
    if cfg.log.eval_every:
        eval_spec = cfg.data.eval_shards or cfg.data.shards
        eval_index = read_index(eval_spec)
        if "codes" in cfg.log.eval_metrics and not eval_index.has_labels:
            raise ConfigError(
                f"log.eval_every={cfg.log.eval_every} needs labelled shards, but {eval_spec} "
                "has no labels; set data.eval_shards to labelled shards or log.eval_every=0"
            )
        if "disentanglement" in cfg.log.eval_metrics:
            _check_factors(eval_spec, eval_index)
    path, _ = ckpt.find_resume(cfg.run_dir, cfg.train.resume)
    if path is not None:
        conflicts = ckpt.resume_conflicts(path, cfg)
        if conflicts:
            raise ConfigError(
                f"cannot resume from {path}: {', '.join(conflicts)} differ from the "
                "checkpoint; use another run.name to start a new run"
            )
        held_parts, want = part_names(ckpt.read_config(path)), part_names(cfg)
        if held_parts != want:
            raise ConfigError(
                f"cannot resume from {path}: it holds the extension parts "
                f"[{', '.join(held_parts)}] but loss.extra builds [{', '.join(want)}] (an "
                "extension with a model part, e.g. contrastive, is on in one and off in the "
                "other); resume with the checkpoint's loss.extra, or use another run.name")
        held = ckpt.read_state(path).get("image_shape")
        if held and list(held) != list(index.image_shape):
            raise ConfigError(
                f"cannot resume from {path}: it holds a model of {list(held)} images but "
                f"data.shards={cfg.data.shards} holds {list(index.image_shape)}; resume with "
                "the data it was trained on, or use another run.name"
            )
    elif cfg.train.resume == "none" and ckpt.list_checkpoints(cfg.run_dir)[0]:
        raise ConfigError(
            f"train.resume=none but {cfg.run_dir} already holds checkpoints; use another "
            "run.name, or train.resume=auto to continue"
        )
    return index
