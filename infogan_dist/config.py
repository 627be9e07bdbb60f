"""One config tree: dataclasses, set by a YAML file and `section.key=value` overrides.

Every field carries its unit or allowed values in the comment beside it. Validation runs
on load, before any process group exists, and raises `ConfigError` whose one-line
message names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad config file, key or value. The message is one line meant for the user."""


@dataclass
class RunConfig:
    output_dir: str = "runs"  # parent folder of every run directory
    name: str = "default"  # run directory is {output_dir}/{name}
    seed: int = 0  # seeds init, data order and every latent draw (keyed by step)


@dataclass
class DataConfig:
    shards: str = "data/fashion_mnist/train"  # dir with index.json, or a brace pattern
    mode: Literal["memory", "stream"] = "memory"  # memory: decode once, index; stream: webdataset
    num_workers: int = 0  # stream mode: DataLoader workers per rank
    shuffle_buffer: int = 1000  # stream mode: samples in each worker's shuffle buffer
    eval_shards: str = ""  # labelled shards scored by evaluation; "" = data.shards
    cache_dir: str = ""  # per-node cache of remote (s3://, http(s)://) shards; "" = off
    cache_max_gb: float = 0.0  # cache size limit in GB (1e9 bytes), LRU eviction; 0 = no limit
    s3_endpoint_url: str = ""  # S3-compatible store URL; "" = AWS_ENDPOINT_URL(_S3) or AWS
    retry_s: float = 30.0  # seconds a remote read retries transient faults without progress


@dataclass
class ModelConfig:
    arch: Literal["mlp", "infogan_mnist", "dcgan32", "dcgan64"] = "infogan_mnist"
    width: float = 1.0  # multiplies every hidden size; < 1 only for quick tests


@dataclass
class LatentConfig:
    noise_dim: int = 62  # dimensions of the incompressible noise z
    noise: Literal["normal", "uniform"] = "uniform"  # z ~ N(0, 1) or U(-1, 1)
    categorical: list[int] = field(default_factory=lambda: [10])  # class count per code
    continuous: int = 2  # number of 1-d codes, each ~ U(-1, 1)
    continuous_std: Literal["fixed", "learned"] = "fixed"  # Q's Gaussian: sigma 1 or learned


@dataclass
class LossConfig:
    adversarial: Literal["bce", "lsgan", "hinge"] = "bce"
    lambda_cat: float = 1.0  # weight of the categorical info loss
    lambda_cont: float = 0.1  # weight of the continuous info loss
    q_augment: float = 0.0  # weight (x lambda_cat) of Q's category loss on transformed fakes


@dataclass
class OptimConfig:
    lr_d: float = 2e-4  # Adam learning rate of D (trunk, adversarial head, Q head)
    lr_g: float = 1e-3  # Adam learning rate of G
    lr_info: float = 2e-4  # Adam learning rate of the info optimizer (G and D)
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Adam (beta1, beta2)


@dataclass
class TrainConfig:
    update: Literal["three_optimizers", "paper"] = "three_optimizers"
    global_batch_size: int = 128  # images per step over all ranks; split evenly
    max_steps: int = 5000  # optimizer iterations (one D, G and info update each)
    precision: Literal["no", "bf16", "fp16"] = "no"  # fp16 needs a GPU
    resume: str = "auto"  # auto: newest complete checkpoint; none; or a checkpoint dir


@dataclass
class CheckpointConfig:
    every: int = 500  # steps between checkpoints; one is always written at the end
    keep: int = 2  # complete checkpoints kept; >= 2 so a crash mid-save leaves one


@dataclass
class LogConfig:
    every: int = 50  # steps between metric reductions (each one is a host sync)
    images_every: int = 500  # steps between traversal pictures; 0 = only at the end
    eval_every: int = 0  # steps between evaluations of the codes; 0 = never
    wandb: Literal["online", "offline", "off"] = "offline"  # online needs WANDB_API_KEY
    project: str = "infogan-dist"  # W&B project
    progress: bool = True  # progress bar on the main process


@dataclass
class DistConfig:
    batchnorm: Literal["sync", "local"] = "sync"  # sync: SyncBatchNorm; local: per-rank stats
    check_every: int = 0  # steps between cross-rank checksums (and at checkpoints); 0 = only there
    timeout_s: int = 60  # collective timeout: a dead or stuck rank ends the run by then


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Checks that need more than one field's type. Raises ConfigError."""
        _check(self.run.name and "/" not in self.run.name, "run.name", self.run.name,
               "a non-empty name without '/'")
        _check(self.data.num_workers >= 0, "data.num_workers", self.data.num_workers, ">= 0")
        _check(self.model.width > 0, "model.width", self.model.width, "> 0")
        _check(self.latent.noise_dim >= 1, "latent.noise_dim", self.latent.noise_dim, ">= 1")
        _check(all(k >= 2 for k in self.latent.categorical), "latent.categorical",
               self.latent.categorical, "class counts >= 2")
        _check(self.latent.continuous >= 0, "latent.continuous", self.latent.continuous, ">= 0")
        _check(len(self.optim.betas) == 2 and all(0 <= b < 1 for b in self.optim.betas),
               "optim.betas", self.optim.betas, "two numbers in [0, 1)")
        for key in ("lr_d", "lr_g", "lr_info"):
            _check(getattr(self.optim, key) > 0, f"optim.{key}", getattr(self.optim, key), "> 0")
        _check(self.loss.q_augment >= 0, "loss.q_augment", self.loss.q_augment, ">= 0")
        if self.loss.q_augment > 0:
            _check(self.latent.categorical, "loss.q_augment", self.loss.q_augment,
                   "0 when latent.categorical is empty")
        _check(self.train.global_batch_size >= 1, "train.global_batch_size",
               self.train.global_batch_size, ">= 1")
        _check(self.train.max_steps >= 1, "train.max_steps", self.train.max_steps, ">= 1")
        _check(self.checkpoint.every >= 1, "checkpoint.every", self.checkpoint.every, ">= 1")
        _check(self.checkpoint.keep >= 2, "checkpoint.keep", self.checkpoint.keep,
               ">= 2 (a crash while saving must leave a complete checkpoint)")
        _check(self.log.every >= 1, "log.every", self.log.every, ">= 1")
        for key in ("images_every", "eval_every"):
            _check(getattr(self.log, key) >= 0, f"log.{key}", getattr(self.log, key), ">= 0")
        _check(self.dist.check_every >= 0, "dist.check_every", self.dist.check_every, ">= 0")
        _check(self.dist.timeout_s >= 5, "dist.timeout_s", self.dist.timeout_s, ">= 5 seconds")

    def check_world_size(self, world_size: int) -> None:
        """The global batch must split evenly over ranks (world-size invariant training)."""
        if self.train.global_batch_size % world_size:
            raise ConfigError(
                f"train.global_batch_size={self.train.global_batch_size} does not divide over "
                f"{world_size} processes; use a multiple of {world_size}"
            )

    def batch_per_rank(self, world_size: int) -> int:
        self.check_world_size(world_size)
        return self.train.global_batch_size // world_size


# Keys whose change makes an existing checkpoint meaningless (or its continuation no
# longer the same run: seed keys the data order and latents): resuming refuses them.
FROZEN_ON_RESUME = ("model", "latent", "train.update", "run.seed", "data.mode")


def _check(ok: Any, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key}: bad value {value!r}; allowed: {allowed}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp`; returns it, converted where lossless."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool):
            # YAML 1.1 reads off/no/on/yes as booleans: map back to the word allowed here.
            words = ("off", "no", "false") if value is False else ("on", "yes", "true")
            value = next((w for w in words if w in allowed), value)
        if value not in allowed:
            raise ConfigError(
                f"config key {key}: bad value {value!r}; allowed: {', '.join(map(str, allowed))}"
            )
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: a list like [1, 2]")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unions are not supported in the config ({key})")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: true, false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: a number")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: a string")
        return str(value)
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _section_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _apply(cfg: Config, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    sections = _section_types(Config)
    if len(parts) != 2 or parts[0] not in sections:
        raise ConfigError(
            f"{source}: unknown config key {key!r}; sections: {', '.join(sections)} "
            "(write section.key=value)"
        )
    section_name, name = parts
    section = getattr(cfg, section_name)
    fields = _section_types(type(section))
    if name not in fields:
        raise ConfigError(
            f"{source}: unknown config key {key!r}; keys of {section_name}: "
            f"{', '.join(fields)}"
        )
    setattr(section, name, _coerce(value, fields[name], key))


def _flatten(data: Any, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    flat = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of keys")
        for name, value in values.items():
            flat[f"{section}.{name}"] = value
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value`; the value is read as YAML, so 1e-3, [10, 10] and true work."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file, then overrides, then validation. Raises ConfigError with a one-line message."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; pass --config configs/NAME.yaml")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            where = f" line {line + 1}" if line is not None else ""
            raise ConfigError(f"config file {path}{where}: not valid YAML") from None
        for key, value in _flatten(data, str(path)).items():
            _apply(cfg, key, value, str(path))
    for text in overrides or []:
        key, value = parse_override(text)
        _apply(cfg, key, value, "command line")
    cfg.validate()
    return cfg


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    cfg = Config()
    for key, value in _flatten(data, source).items():
        _apply(cfg, key, value, source)
    cfg.validate()
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def frozen_differences(old: Config, new: Config) -> list[str]:
    """Keys under FROZEN_ON_RESUME whose values differ; empty when resuming is safe."""
    a, b = _flatten(old.to_dict(), "old"), _flatten(new.to_dict(), "new")
    return sorted(
        k for k in a
        if any(k == f or k.startswith(f + ".") for f in FROZEN_ON_RESUME) and a[k] != b.get(k)
    )
