"""Checks that run before Accelerate starts any process group, so bad input costs a
second and a one-line error (exit 2), not a hung or half-started distributed job."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import redact
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
    sizes = [int(s) for s in index.factors.get("sizes", [])]
    if sum(s > 1 for s in sizes) < 2:  # a factor of one value is left out of the scores
        raise ConfigError(
            f"log.eval_metrics has disentanglement, which needs 2 or more factors that "
            f"vary, but the factor sizes of {spec} are {sizes}; set data.eval_shards to "
            "shards where they do")
    combinations = math.prod(sizes)
    if index.total < combinations:
        raise ConfigError(
            f"log.eval_metrics has disentanglement, which samples all {combinations} factor "
            f"combinations, but {spec} holds {index.total} samples; set data.eval_shards to "
            "shards with every combination (prepare-data without --limit/--offset)")


# the longest path the trainer writes below the run directory, with room to spare
# (checkpoints/.tmp-step-00000000/optimizer_2.bin, wandb/offline-run-.../files/...)
DEEPEST_S = 160


def check_run_dir(cfg: Config) -> None:
    """ConfigError unless the run directory exists and is writable, or can be created:
    on a read-only file system, under a file, without permission or with a path too long,
    the first write would be a traceback, after the process group started."""
    run_dir = Path(os.path.abspath(cfg.run_dir))
    where = f"run directory {cfg.run_dir} (run.output_dir={cfg.run.output_dir}, run.name=" \
            f"{cfg.run.name})"
    fix = "set run.output_dir to a writable directory"
    limit = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
    if len(os.fsencode(run_dir)) + DEEPEST_S > limit:
        raise ConfigError(f"{where}: the path is {len(os.fsencode(run_dir))} bytes, too long "
                          f"for the files below it (at most {limit - DEEPEST_S}); {fix}")
    try:
        if not (os.path.lexists(run_dir) and not run_dir.is_dir()):  # readable_root says so
            problem = unwritable(run_dir)
            if problem:
                raise ConfigError(f"{where} cannot be written: {problem}; {fix}")
    except OSError as e:  # e.g. a component longer than the file system allows
        raise ConfigError(f"{where}: {e.strerror}; {fix}") from None


def unwritable(path: Path) -> str | None:
    """Why a directory at `path` cannot be written or created (its nearest existing
    ancestor: read-only, no permission, a file or dangling link on the way), or None.
    OSError for a path the system refuses outright (too long)."""
    probe = Path(os.path.abspath(path))
    while not os.path.lexists(probe):
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is {'a dangling link' if probe.is_symlink() else 'a file'}, not a " \
               "directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            return f"{probe} is on a read-only file system"
        return f"no permission to write in {probe}"
    return None


def check_cache_dir(cfg: Config) -> None:
    """ConfigError when data.cache_dir (used for remote shards) cannot be written: every
    shard read would fail on it, after the process group started."""
    if not (cfg.data.cache_dir and stores.is_remote(str(cfg.data.shards))):
        return
    try:
        problem = unwritable(Path(cfg.data.cache_dir))
    except OSError as e:
        problem = e.strerror
    if problem:
        raise ConfigError(f"data.cache_dir={cfg.data.cache_dir}: the node cache cannot be "
                          f"written: {problem}; set data.cache_dir to a writable node-local "
                          "directory, or data.cache_dir= to read without a cache")


def check_keep_best(cfg: Config) -> None:
    """ConfigError when checkpoint.keep_best names an eval/ metric that none of the run's
    evaluations reports (a code that does not exist, a metric not in log.eval_metrics):
    it would keep nothing without a word. Metrics that do not declare their names
    (Metric.names None) are not judged."""
    best = cfg.checkpoint.keep_best
    if not best.startswith("eval/"):
        return
    from .scores import METRICS

    due = list(cfg.log.eval_metrics) if cfg.log.eval_every else []
    if cfg.log.fid_every and "fid" not in due:
        due.append("fid")
    reported: list[str] = []
    for name in due:
        if METRICS[name].names is None:
            return
        reported += METRICS[name].names(cfg.latent)
    if best not in reported:
        raise ConfigError(
            f"config key checkpoint.keep_best: bad value {best!r}; the evaluations of this "
            f"run ({', '.join(due) or 'none'}) report only {', '.join(reported) or 'nothing'}"
            " (a code of latent.categorical/continuous, or a metric added to "
            "log.eval_metrics)")


def check_not_masked(cfg: Config) -> None:
    """ConfigError when a URL of the config carries the mask that written configs put where
    its credentials were (a run's config.yaml passed as --config): the real URL must come
    from the command line or the config file of every launch."""
    from .config.load import _flatten

    keys = redact.masked_keys(_flatten(cfg.to_dict(), "config"))
    if keys:
        raise ConfigError(
            f"config key {keys[0]}: its URL has credentials masked as {redact.MASK} (a config "
            "written by a run, which never holds secrets); give the real URL on the command "
            f"line ({keys[0]}=...) or in your own config file, e.g. from an environment "
            "variable of the job")


def preflight(cfg: Config) -> ShardIndex:
    check_choices(cfg)  # a Config built in code, not loaded by choices.load_config, too
    cfg.check_world_size(launched_world_size())
    check_not_masked(cfg)
    check_keep_best(cfg)
    check_run_dir(cfg)
    check_cache_dir(cfg)
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
    if cfg.eval.features:  # FID weights found bad at the first FID step lose the training
        from .features import check_features

        key = ("eval.inception_weights" if cfg.eval.features == "inception"
               else "eval.features")
        try:
            check_features(cfg.eval.features, cfg.eval.inception_weights)
        except ValueError as e:
            raise ConfigError(f"{key}={getattr(cfg.eval, key.split('.')[1])}: {e}") from None
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
