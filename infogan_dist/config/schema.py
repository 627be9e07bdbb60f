"""The config schema: one tree of dataclasses, a comment per field with its unit or
allowed values. `load.py` reads YAML and overrides into it; `resume.py` says which keys
may not change on resume.

Fields that name a registered choice (model.arch, loss.adversarial, train.update,
data.mode, optim.adam, log.eval_metrics, the names in loss.extra) are plain strings
here: the schema imports no registry. Their field metadata names where the registry is
defined, and `infogan_dist/choices.py`, above both the schema and the registries, checks
them once the registries are filled, so the allowed values are what is registered.
`validate()` checks everything else. Validation runs on load, before any process group
exists, and raises `ConfigError` whose one-line message names the key, the bad value and
what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError  # also reached as infogan_dist.config.ConfigError


def choice(default: str, registry: str) -> Any:
    """A string field whose value must be registered in `registry` ("module:NAME", where
    the registry is defined; checked by infogan_dist/choices.py, not imported here)."""
    return field(default=default, metadata={"registry": registry})


@dataclass
class RunConfig:
    output_dir: str = "runs"  # parent folder of every run directory
    # run directory is {output_dir}/{name}; also the W&B group; at most 200 bytes
    name: str = "default"
    seed: int = 0  # seeds init, data order and every latent draw (keyed by step)


@dataclass
class DataConfig:
    # dir with index.json, a brace pattern (dir/shard-{000000..000009}.tar), or an
    # s3:// or http(s):// prefix holding index.json (docs/data.md)
    shards: str = "data/fashion_mnist/train"
    # memory: decode all shards once, index per step (exact resume, world-size invariant);
    # stream: webdataset pipeline (registry data.SOURCES)
    mode: str = choice("memory", "infogan_dist.data:SOURCES")
    num_workers: int = 0  # stream mode: DataLoader workers per rank
    shuffle_buffer: int = 1000  # stream mode: samples in each worker's shuffle buffer
    eval_shards: str = ""  # labelled shards scored by evaluation; "" = data.shards
    cache_dir: str = ""  # per-node cache of remote (s3://, http(s)://) shards; "" = off
    cache_max_gb: float = 0.0  # cache size limit in GB (1e9 bytes), LRU eviction; 0 = no limit
    s3_endpoint_url: str = ""  # S3-compatible store URL; "" = AWS_ENDPOINT_URL(_S3) or AWS
    retry_s: float = 30.0  # seconds a remote read retries transient faults without progress
    # stream mode on CUDA: each batch in pinned host memory, so its copy to the device is
    # asynchronous (non_blocking); off until measured on GPUs; no effect on CPU
    pin_memory: bool = False


@dataclass
class ModelConfig:
    # mlp (the seed's, any shape), infogan_mnist (the paper's, 28x28), dcgan32, dcgan64,
    # infogan_cr64 (InfoGAN-CR's dSprites networks, 64x64); registry models.MODELS
    arch: str = choice("infogan_mnist", "infogan_dist.models:MODELS")
    width: float = 1.0  # multiplies every hidden size; < 1 only for quick tests
    # EMA of G's weights (infogan_dist/ema.py): half-life in images; 0 = off. When on,
    # pictures, eval, sample and FID use the EMA generator unless told otherwise. Frozen on
    # resume, like all model.* (docs/evaluation.md "The EMA generator")
    ema_half_life_images: float = 0.0
    ema_rampup: float = 0.05  # half-life <= this x images seen (early steps); 0 = no ramp
    # spectral normalization (Miyato et al. 2018) of every conv and linear weight of D
    # (trunk and both heads) and of every discriminator an extension builds from D's trunk
    # (torch.nn.utils.parametrizations.spectral_norm: one power iteration per training
    # forward; its u and v vectors are buffers, saved in checkpoints)
    spectral_norm: bool = False


@dataclass
class LatentConfig:
    noise_dim: int = 62  # dimensions of the incompressible noise z
    noise: Literal["normal", "uniform"] = "uniform"  # z ~ N(0, 1) or U(-1, 1)
    categorical: list[int] = field(default_factory=lambda: [10])  # class count per code
    continuous: int = 2  # number of 1-d codes, each ~ U(-1, 1)
    # Q's Gaussian: fixed (sigma 1, the loss is MSE/2) or learned
    continuous_std: Literal["fixed", "learned"] = "fixed"


@dataclass
class LossConfig:
    # bce (non-saturating, on logits), lsgan, hinge, ...; registry losses.ADVERSARIAL
    adversarial: str = choice("bce", "infogan_dist.losses:ADVERSARIAL")
    lambda_cat: float = 1.0  # weight of the categorical info loss
    lambda_cont: float = 0.1  # weight of the continuous info loss
    # weight (x lambda_cat) of Q's category loss on randomly rotated (+-15 degrees), scaled
    # (+-10%) and shifted (+-2 px) fakes, so categories cannot differ by slant or size
    # alone (infogan_dist/augment.py); either update
    q_augment: float = 0.0
    # weights of loss terms added by extensions, by registered name (docs/extending.md),
    # e.g. {drift: 0.001}; a term that is absent or 0 is off
    extra: dict[str, float] = field(default_factory=dict)
    # the schedule of an extension term, by the same names: the step (0-based, counted
    # over the whole run) from which it is on, e.g. {contrastive: 288000}; before it the
    # term, and any phase its extension adds, does not run. Absent = 0 (on from the start)
    extra_start: dict[str, int] = field(default_factory=dict)
    # steps over which its weight then rises linearly from 0 to loss.extra.<name>
    # (step extra_start has 1/ramp of it); absent or 0 = the full weight at once
    extra_ramp: dict[str, int] = field(default_factory=dict)


@dataclass
class OptimConfig:
    # Adam learning rate of D (trunk, adversarial head, Q head); configs/mnist.yaml: 4e-4
    lr_d: float = 2e-4
    lr_g: float = 1e-3  # Adam learning rate of G
    lr_info: float = 2e-4  # Adam learning rate of the info optimizer (G and D)
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Adam (beta1, beta2)
    # Adam's implementation (registry updates.ADAM): auto = fused where torch has a fused
    # kernel for the device (CPU and CUDA in torch 2.14), else foreach; fused, foreach and
    # for_loop force one; torch_default = torch's choice (for_loop on CPU, foreach on CUDA)
    adam: str = choice("auto", "infogan_dist.updates:ADAM")


@dataclass
class TrainConfig:
    # three_optimizers (the seed's D / G / info steps), paper (the authors' code: the info
    # loss added to the D and G losses, two optimizers); registry updates.UPDATE_RULES
    update: str = choice("three_optimizers", "infogan_dist.updates:UPDATE_RULES")
    # images per step over all ranks; split evenly: must divide by the process count
    global_batch_size: int = 128
    max_steps: int = 5000  # optimizer iterations (one D, G and info update each)
    # G updates per iteration (InfoGAN-CR: 2): the update rule's G phase runs this many
    # times, each with its own optimizer step; the first uses the fakes of the D phase,
    # every further one draws fresh latents by its own key
    g_steps: int = 1
    precision: Literal["no", "bf16", "fp16"] = "no"  # fp16 needs a GPU
    # auto: newest complete checkpoint of the run dir; none; or a checkpoint dir
    resume: str = "auto"
    # GPU options (speed.py), off until measured on GPU nodes:
    compile: bool = False  # torch.compile G's and D's forward (Module.compile, in place)
    channels_last: bool = False  # NHWC layout for conv weights and real images
    tf32: bool = False  # TF32 for fp32 matmuls/convs on GPUs that have it (Ampere+); CPU: none
    # a non-finite loss or state: rollback (to the newest checkpoint, draws re-keyed) or
    # stop (exit 1); docs/checkpoints.md "Divergence guard"
    nonfinite: Literal["rollback", "stop"] = "rollback"
    max_rollbacks: int = 3  # rollbacks allowed over the whole run; one more divergence: exit 1


@dataclass
class CheckpointConfig:
    every: int = 500  # steps between checkpoints; one is always written at the end
    keep: int = 2  # complete checkpoints kept; >= 2 so a crash mid-save leaves one
    # steps between milestones: a checkpoint at a multiple of it is never pruned, so
    # rotation cannot delete every good checkpoint of a run; 0 = no milestones
    keep_every: int = 0
    # a metric name (e.g. eval/fid, eval/acc/c1): the checkpoint where it was best is kept
    # in checkpoints/best/ apart from the rotating ones; "" = off. The metric must be
    # computed at checkpoint steps (validated: its interval divides checkpoint.every).
    keep_best: str = ""
    # min, max, or auto: min for eval/fid, eval/kid, eval/mse/*, loss/*; max for
    # eval/acc/*, eval/mi/* (BEST_DIRECTION); another metric needs min or max
    keep_best_mode: Literal["auto", "min", "max"] = "auto"


# Bounds on counts whose memory grows with them (every feature is kept, float64 for the
# covariance): 200,000 Inception features are 1.6 GB in float32, 3.2 GB in float64.
MAX_FID_SAMPLES = 200_000
MAX_NAME_BYTES = 200  # run.name is a directory name; room left for a suffix tools add

# keep_best_mode=auto: the direction of a metric by its name's prefix
BEST_DIRECTION = {"eval/fid": "min", "eval/kid": "min", "eval/mse/": "min", "loss/": "min",
                  "eval/acc/": "max", "eval/mi/": "max", "eval/factorvae": "max",
                  "eval/mig": "max", "eval/dci": "max", "eval/sap": "max"}


def best_direction(metric: str, mode: str) -> str | None:
    """min or max for checkpoint.keep_best, None when auto does not know the metric."""
    if mode != "auto":
        return mode
    return next((d for prefix, d in BEST_DIRECTION.items() if metric.startswith(prefix)), None)


@dataclass
class LogConfig:
    every: int = 50  # steps between metric reductions (each one is a host sync)
    images_every: int = 500  # steps between traversal pictures; 0 = only at the end
    eval_every: int = 0  # steps between evaluations (log.eval_metrics); 0 = never
    # what an evaluation computes: names in scores.METRICS (codes: accuracy, MI, MSE;
    # fid: eval/fid and eval/kid, on every rank, needs eval.features; disentanglement:
    # eval/factorvae, eval/mig, eval/dci, eval/sap, on every rank, needs eval shards with
    # factor classes); codes runs on the main process alone, each code scored
    eval_metrics: list[str] = field(default_factory=lambda: ["codes"],
                                    metadata={"registry": "infogan_dist.scores:METRICS"})
    # steps between FID/KID evaluations (metric "fid"); 0 = never, unless fid is listed in
    # log.eval_metrics (then every log.eval_every)
    fid_every: int = 0
    # online needs WANDB_API_KEY (without it: offline)
    wandb: Literal["online", "offline", "off"] = "offline"
    project: str = "infogan-dist"  # W&B project
    progress: bool = True  # progress bar on the main process

    def metrics_at(self, step: int) -> list[str]:
        """The metrics due after `step`: eval_metrics every eval_every steps, fid every
        fid_every steps."""
        names = list(self.eval_metrics) if self.eval_every and step % self.eval_every == 0 \
            else []
        if self.fid_every and step % self.fid_every == 0 and "fid" not in names:
            names.append("fid")
        return names

    def interval_of(self, metric: str) -> int:
        """Steps between computations of a metric name (eval/...); 0 = never."""
        fid = metric.startswith(("eval/fid", "eval/kid"))
        if fid and self.fid_every:
            return self.fid_every
        listed = "fid" in self.eval_metrics if fid else bool(self.eval_metrics)
        return self.eval_every if listed else 0


@dataclass
class EvalConfig:
    # FID/KID features: a directory from `infogan train-features`, or "inception" (with
    # eval.inception_weights); "" = none (then the fid metric is refused); required when
    # FID is on
    features: str = ""
    # local safetensors file of the FID Inception-v3, with eval.features=inception
    # (nothing is downloaded; its header is checked at start)
    inception_weights: str = ""
    # generated images per FID/KID (FID depends on this count: compare like with like);
    # at most 200,000 (every feature is kept in memory)
    fid_samples: int = 10_000
    fid_batch: int = 250  # images per feature-network forward (chunks are split over ranks)
    # real images of FID, every image used; "" = data.eval_shards, else data.shards
    fid_data: str = ""
    # metric "disentanglement" (on data.eval_shards, else data.shards): the share of
    # disentanglement_lib's point and vote counts it draws (1 = theirs; less: cheaper,
    # noisier in-training scores)
    disentanglement_fraction: float = 1.0
    # images per Q forward of the metric "disentanglement" (chunks are split over ranks);
    # small on purpose: 64x64 activations of 100 images stay in a CPU's cache, and Q ran
    # 2.2x faster per image than at 500 (docs/disentanglement.md, Cost)
    disentanglement_batch: int = 100


@dataclass
class DistConfig:
    # sync: BatchNorm statistics over the global batch (CrossRankBatchNorm); local: per
    # rank (running statistics drift between ranks)
    batchnorm: Literal["sync", "local"] = "sync"
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
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Checks that need more than one field's type. Raises ConfigError."""
        name = self.run.name
        _check(name and not set(name) & {"/", "\0"} and name not in (".", "..")
               and len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES, "run.name",
               name if len(name) <= 80 else f"{name[:40]}...({len(name)} characters)",
               f"a non-empty name without '/', not . or .., at most {MAX_NAME_BYTES} bytes "
               "(a file name: most file systems allow 255)")
        _check(self.data.num_workers >= 0, "data.num_workers", self.data.num_workers, ">= 0")
        _check(self.model.width > 0, "model.width", self.model.width, "> 0")
        _check(self.model.ema_half_life_images >= 0, "model.ema_half_life_images",
               self.model.ema_half_life_images, ">= 0 images (0 = off)")
        _check(self.model.ema_rampup >= 0, "model.ema_rampup", self.model.ema_rampup, ">= 0")
        _check(self.latent.noise_dim >= 1, "latent.noise_dim", self.latent.noise_dim, ">= 1")
        _check(all(k >= 2 for k in self.latent.categorical), "latent.categorical",
               self.latent.categorical, "class counts >= 2")
        _check(self.latent.continuous >= 0, "latent.continuous", self.latent.continuous, ">= 0")
        _check(self.latent.categorical or self.latent.continuous, "latent.categorical",
               self.latent.categorical, "at least one code: a class count, or latent.continuous"
               " >= 1 (InfoGAN without codes is a plain GAN)")
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
        _check(self.train.g_steps >= 1, "train.g_steps", self.train.g_steps, ">= 1")
        _check(self.checkpoint.every >= 1, "checkpoint.every", self.checkpoint.every, ">= 1")
        _check(self.checkpoint.keep >= 2, "checkpoint.keep", self.checkpoint.keep,
               ">= 2 (a crash while saving must leave a complete checkpoint)")
        _check(self.checkpoint.keep_every >= 0, "checkpoint.keep_every",
               self.checkpoint.keep_every, ">= 0 (0 = no milestones)")
        _check(self.train.max_rollbacks >= 0, "train.max_rollbacks", self.train.max_rollbacks,
               ">= 0")
        _check(self.log.every >= 1, "log.every", self.log.every, ">= 1")
        for key in ("images_every", "eval_every", "fid_every"):
            _check(getattr(self.log, key) >= 0, f"log.{key}", getattr(self.log, key), ">= 0")
        self._check_fid_and_best()
        _check(self.dist.check_every >= 0, "dist.check_every", self.dist.check_every, ">= 0")
        _check(self.dist.timeout_s >= 5, "dist.timeout_s", self.dist.timeout_s, ">= 5 seconds")
        for name, weight in self.loss.extra.items():  # the names: choices.py
            _check(weight >= 0, f"loss.extra.{name}", weight, ">= 0")
        for key in ("extra_start", "extra_ramp"):
            for name, steps in getattr(self.loss, key).items():
                _check(name in self.loss.extra, f"loss.{key}", name,
                       f"names set in loss.extra ({', '.join(self.loss.extra) or 'none'})")
                _check(steps >= 0, f"loss.{key}.{name}", steps, ">= 0 steps")

    def _check_fid_and_best(self) -> None:
        fid = self.log.fid_every > 0 or "fid" in self.log.eval_metrics
        if fid:
            _check(self.eval.features, "eval.features", self.eval.features,
                   "a directory from `infogan train-features`, or inception (FID is on: "
                   "log.fid_every or fid in log.eval_metrics)")
        if self.eval.features == "inception":
            _check(self.eval.inception_weights, "eval.inception_weights",
                   self.eval.inception_weights, "a local safetensors file of the FID Inception")
        _check(2 <= self.eval.fid_samples <= MAX_FID_SAMPLES, "eval.fid_samples",
               self.eval.fid_samples, f"2..{MAX_FID_SAMPLES}")
        _check(self.eval.fid_batch >= 1, "eval.fid_batch", self.eval.fid_batch, ">= 1")
        _check(0 < self.eval.disentanglement_fraction <= 1, "eval.disentanglement_fraction",
               self.eval.disentanglement_fraction, "in (0, 1]")
        _check(self.eval.disentanglement_batch >= 1, "eval.disentanglement_batch",
               self.eval.disentanglement_batch, ">= 1")
        best = self.checkpoint.keep_best
        if best:
            _check(best_direction(best, self.checkpoint.keep_best_mode),
                   "checkpoint.keep_best_mode", self.checkpoint.keep_best_mode,
                   f"min or max: auto knows only {', '.join(BEST_DIRECTION)}*")
            every = self.log.interval_of(best)
            fid = "log.fid_every, or " if best.startswith(("eval/fid", "eval/kid")) else ""
            _check(every and self.checkpoint.every % every == 0, "checkpoint.keep_best", best,
                   f"a metric computed at every checkpoint: checkpoint.every="
                   f"{self.checkpoint.every} must be a multiple of the interval that computes "
                   f"it ({fid}log.eval_every with it in log.eval_metrics; now {every})")

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


def _check(ok: Any, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key}: bad value {value!r}; allowed: {allowed}")


