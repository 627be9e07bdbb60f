"""The Trainer: set-up (Accelerate, models, update rule, data, checkpoints, tracking)
and the loop. Everything else has its own home: checkpoints (checkpoint.py), update
rules and loss terms (updates.py, terms.py), tracking (tracking.py), ranks (ranks.py).

Distributed design (docs/distributed.md "How ranks stay in sync"):
- Every random draw of a step (data order, latents) is keyed by (seed, step) over the
  global batch; rank r takes its slice. One rank or eight train the same model.
- DDP with find_unused_parameters only where a phase leaves one of D's heads unused
  (UpdateRule.leaves_parameters_unused: three_optimizers yes, paper no) and
  broadcast_buffers off; BatchNorm statistics are global (CrossRankBatchNorm) under
  dist.batchnorm=sync, or per rank under `local` (running statistics drift, documented).
- Extensions (loss.extra, updates.register_extension) may add model parts with their
  own optimizers and phases: built after G and D, converted and prepared like D,
  checkpointed by Accelerate after G and D (model_2.safetensors, ...), and in the rank
  fingerprint.
- Sampling pictures uses the unwrapped G (its EMA when model.ema_half_life_images > 0,
  updated once per step after the phases: ema.py) in eval mode on the main process: no
  collective. Metrics marked collective (FID: fid.py) run on every rank at the same steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedDataParallelKwargs,
    InitProcessGroupKwargs,
    gather_object,
    set_seed,
)
from safetensors.torch import save_file
from tqdm import tqdm

from . import augment, faults, ranks, runlock, speed, startup
from .checkpoint import (
    STATE_FILE,
    CheckpointError,
    CheckpointManager,
    Part,
    TrainerState,
    read_state,
    save_tensors,
    write_text_durably,
)
from .config import Config, save_config
from .data import ShardIndex, open_source, to_float
from .data.labelled import eval_shards, load_eval_data
from .ema import EMA
from .fid import FidEvaluator
from .guard import ROLLBACK_BUDGET, Diverged, TrainingFailed
from .latent import LatentSpace, keyed_generator, rank_rows
from .models import build_models
from .pictures import clean_stale_tmp, factor_labels, save_pictures
from .scores import METRICS, EvalInputs
from .stop import StopRequest
from .tracking import Tracker
from .updates import UPDATE_RULES, StepInputs

EVAL_IMAGES, EVAL_SAMPLES = 2000, 2048


class Trainer:
    def __init__(self, cfg: Config, index: ShardIndex):
        self.cfg, self.index, self.run_dir = cfg, index, cfg.run_dir
        self.tracker = Tracker(cfg, self.run_dir)
        self.rule = rule = UPDATE_RULES[cfg.train.update]
        ranks.join_after_restart(timedelta(seconds=cfg.dist.timeout_s))
        self.acc = Accelerator(
            # Accelerate 1.15 treats a torchrun-launched CPU process as non-distributed
            # unless told cpu=True; with it, several CPU processes form a gloo group.
            cpu=not torch.cuda.is_available(),
            mixed_precision=cfg.train.precision,
            project_dir=str(self.run_dir),
            kwargs_handlers=[
                DistributedDataParallelKwargs(
                    find_unused_parameters=rule.leaves_parameters_unused(cfg),
                    broadcast_buffers=False),
                InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.dist.timeout_s)),
            ],
            **self.tracker.accelerator_kwargs(),
        )
        startup.mark("process group")  # every rank joined: waits for the slowest
        self.rank, self.world_size = self.acc.process_index, self.acc.num_processes
        self.device = self.acc.device
        self.local_batch = cfg.batch_per_rank(self.world_size)
        self.space = LatentSpace(cfg.latent)
        self.state = TrainerState(
            world_size=self.world_size, image_shape=list(index.image_shape),
            latent=dataclasses.asdict(cfg.latent), model=dataclasses.asdict(cfg.model))

        set_seed(cfg.run.seed)  # identical initial weights on every rank
        G, D = build_models(cfg.model, self.space.input_dim, self.space.q_dim, index.image_shape)
        parts = rule.build_parts(cfg, self.space, index.image_shape)  # after G and D
        if cfg.dist.batchnorm == "sync":
            for module in (G, D, *parts.values()):
                ranks.convert_batchnorm(module)
        speed.apply(cfg, G, D)
        self.optimizer_specs = rule.optimizer_specs(cfg)
        opts = rule.build_optimizers(cfg, {"G": G, "D": D, **parts}, self.device)
        prepared = self.acc.prepare(G, D, *parts.values(), *opts.values())
        self.G, self.D = prepared[0], prepared[1]
        self.parts = dict(zip(parts, prepared[2:2 + len(parts)], strict=True))
        self.optimizers = dict(zip(opts, prepared[2 + len(parts):], strict=True))
        self.G_raw, self.D_raw = self.acc.unwrap_model(self.G), self.acc.unwrap_model(self.D)
        self.parts_raw = {k: self.acc.unwrap_model(m) for k, m in self.parts.items()}
        self.phases = rule.build_phases(cfg, self.space, self.optimizers)
        # from the converted G: same module classes and state names (plain BN in eval)
        self.ema = EMA(self.G_raw, cfg.model.ema_half_life_images, cfg.model.ema_rampup,
                       cfg.train.global_batch_size)
        startup.mark("models")

        self.source = open_source(
            cfg.data, index, rank=self.rank, world_size=self.world_size,
            global_batch=cfg.train.global_batch_size, seed=cfg.run.seed, device=self.device,
        )
        # In-training evaluation runs on the main process while the others wait in the
        # next collective: keep it well inside dist.timeout_s (`infogan eval` does the
        # full test set on a checkpoint).
        self.eval_data = (load_eval_data(cfg, limit=EVAL_IMAGES) if cfg.log.eval_every
                          and "codes" in cfg.log.eval_metrics and self.acc.is_main_process
                          else None)
        # the disentanglement scores (all ranks): the shards load on first use
        self.disentanglement = None
        if "disentanglement" in cfg.log.eval_metrics:
            from .disentangle_eval import DisentanglementEvaluator  # scikit-learn: only then

            self.disentanglement = DisentanglementEvaluator(
                eval_shards(cfg), cfg.eval.disentanglement_fraction,
                cfg.eval.disentanglement_batch, self.device)
        # FID/KID (metric "fid", all ranks): features and real statistics load on first use
        self.fid = FidEvaluator(
            cfg.eval.fid_data or eval_shards(cfg), cfg.eval.features, cfg.eval.inception_weights,
            cfg.eval.fid_samples, cfg.eval.fid_batch, cfg.run.seed, self.device,
            self.run_dir / "fid-cache") if cfg.eval.features else None
        self.logged: tuple[int, dict[str, float]] = (-1, {})  # the last log step's values
        self.stop = StopRequest(self.run_dir / "STOP", self.acc.is_main_process)
        self.stop_agreement = ranks.StopAgreement()
        # fp16: optimizer steps skipped for overflow, counted on the device (read at logs)
        self.skipped = torch.zeros((), dtype=torch.int64, device=self.device)
        self.checkpoints = CheckpointManager(
            self.run_dir, cfg.checkpoint, self.acc, before_save=self._before_save,
            metrics=lambda step: self.logged[1] if self.logged[0] == step else {},
            must_be_finite=lambda: [t for _, t in self._named_state(skip_bn_stats=False)]
            + self.tracker.pending(), parts=[
                Part("generator.safetensors", lambda p: save_tensors(self.G_raw, p)),
                Part("config.yaml", lambda p: save_config(self.cfg, p)),
                Part(STATE_FILE, lambda p: write_text_durably(
                    p, json.dumps(self.state.state_dict(), indent=1)), load=self._load_state),
                *self.ema.parts(),
            ])

    # --- set-up --------------------------------------------------------------------
    def _start(self) -> Path | None:
        """Run directory, then the checkpoint to resume from (returned; None: fresh)."""
        if self.acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            self.stop.clear_stale_file()
            for stale in clean_stale_tmp(self.run_dir / "samples"):
                print(f"warning: removed the remains of an interrupted picture: {stale}",
                      flush=True)
        self.checkpoints.start()
        self.acc.wait_for_everyone()
        startup.mark("data")
        path = self.checkpoints.resume(self.cfg.train.resume)
        startup.mark("checkpoint")
        ranks.print0(startup.summary())
        if path is not None:
            self.checkpoints.set_aside_newer(self.state.step)
            ranks.print0(f"resumed from {path} at step {self.state.step}")
            for key, (old, new) in self._apply_optim_settings().items():
                ranks.print0(f"{key}: {old} -> {new} (changed on resume)")
        return path

    def _apply_optim_settings(self) -> dict[str, tuple[object, object]]:
        """optim.lr_* and optim.betas of this launch win over the values a loaded
        checkpoint's optimizer state brought back (Accelerate loads param_groups too).
        Returns the changes by config key: (old, new)."""
        changed: dict[str, tuple[object, object]] = {}
        for spec in self.optimizer_specs:
            want = {"lr": (f"optim.{spec.lr}", getattr(self.cfg.optim, spec.lr)),
                    "betas": ("optim.betas", tuple(self.cfg.optim.betas))}
            for group in self.optimizers[spec.name].param_groups:
                for name, (key, value) in want.items():
                    old = tuple(group[name]) if name == "betas" else group[name]
                    if old != value:
                        changed.setdefault(key, (old, value))
                        group[name] = value
        return changed

    def _load_state(self, file: Path) -> None:
        holds = TrainerState(image_shape=list(self.index.image_shape))
        self.state.load_state_dict(read_state(file.parent))
        if self.state.image_shape and self.state.image_shape != holds.image_shape:
            raise CheckpointError(
                f"{file.parent} holds a model of {self.state.image_shape} images, but data.shards="
                f"{self.cfg.data.shards} holds {holds.image_shape}; resume with its data")
        self.state.image_shape = holds.image_shape  # also for checkpoints written before it
        self.state.latent = dataclasses.asdict(self.cfg.latent)  # equal: frozen on resume
        self.state.model = dataclasses.asdict(self.cfg.model)
        self.state.world_size = self.world_size
        self.source.load_state_dict(self.state.data)
        self.source.rekey(self.state.rollbacks)

    def _inputs(self, real: torch.Tensor) -> StepInputs:
        cfg, step = self.cfg, self.state.step

        def sample(draw: int):
            return self.space.sample_step(
                cfg.run.seed, step, draw, cfg.train.global_batch_size, self.rank, self.world_size,
                rekey=self.state.rollbacks,
            ).to(self.device)

        def uniforms(draw: int):
            return augment.step_uniforms(
                cfg.run.seed, step, draw, cfg.train.global_batch_size, self.rank, self.world_size,
                rekey=self.state.rollbacks,
            )

        rekey = self.state.rollbacks

        def generator(draw: int):  # for the draws of extensions (keyed like the latents)
            return keyed_generator(cfg.run.seed, step, draw, 0xE87, *([rekey] if rekey else []))

        return StepInputs(
            cfg=cfg, space=self.space, step=step, real=real, G=self.G, D=self.D,
            G_raw=self.G_raw, D_raw=self.D_raw, sample=sample, uniforms=uniforms,
            backward=self.acc.backward, autocast=self.acc.autocast, no_sync=self.acc.no_sync,
            parts=self.parts, parts_raw=self.parts_raw, generator=generator,
            rows=rank_rows(cfg.train.global_batch_size, self.rank, self.world_size),
        )

    # --- the loop ------------------------------------------------------------------
    def train_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        images = faults.corrupt(images.to(self.device, non_blocking=True), self.rank,
                                self.state.step + 1)
        inputs = self._inputs(speed.layout(self.cfg, to_float(images)))
        stats: dict[str, torch.Tensor] = {}
        fakes = None  # the batch the D phase makes and the G phase uses
        scaler = self.acc.scaler
        for phase in self.phases:
            if not phase.active(inputs.step):  # an extension before loss.extra_start
                continue
            phase.optimizer.zero_grad(set_to_none=True)
            phase_stats, fakes = phase.run(inputs, fakes)
            stats |= phase_stats
            faults.poison_grads(phase.name, phase.optimizer, self.rank, self.state.step + 1)
            scale = None if scaler is None else scaler._scale.clone()
            phase.optimizer.step()
            if scaler is not None:
                # The scaler backs off (scale shrinks) exactly when it skipped the step. A
                # device comparison, unlike step_was_skipped (a host sync in scaler.step,
                # and always False with fused Adam: accelerate #4242).
                self.skipped += (scaler._scale < scale).sum()
        return stats

    def fit(self) -> str:
        """Trains to train.max_steps or a stop request. Returns why it ended."""
        cfg = self.cfg
        resumed = self._start() is not None
        if self.state.step >= cfg.train.max_steps:
            ranks.print0(f"nothing to do: step {self.state.step} >= train.max_steps="
                         f"{cfg.train.max_steps}")
            return "complete"
        self.tracker.start(self.acc, self.state.step, resumed)
        machine = os.environ.get("GROUP_RANK", 0)
        ranks.print0(f"rank 0/{self.world_size} machine {machine}: training {cfg.run.name} on "
                     f"{self.device}, {self.world_size} process(es), batch {self.local_batch}"
                     f"/rank, run dir {self.run_dir}")
        if self.rank != 0:
            ranks.print_all(f"machine {machine} on {self.device}")

        bar = tqdm(total=cfg.train.max_steps, initial=self.state.step, dynamic_ncols=True,
                   disable=not (self.acc.is_main_process and cfg.log.progress))
        batches = iter(self.source)
        ended, stopping = "complete", False
        while self.state.step < cfg.train.max_steps:
            waited = time.perf_counter()
            images, _labels = next(batches)  # labels are for evaluation only
            waited = time.perf_counter() - waited  # host clock: no device sync
            stats = self.train_step(images)
            self.state.step += 1
            self.state.images_seen += cfg.train.global_batch_size
            self.ema.update(self.G_raw, self.state.images_seen)
            self.state.epoch = self.source.epoch
            self.tracker.add(stats, data_wait_s=waited)
            bar.update(1)

            step = self.state.step
            faults.inject("step", self.rank, step)
            stopping = self.stop_agreement.poll(self.stop.local())  # read a step later
            last = stopping or step == cfg.train.max_steps
            if last:
                self.stop_agreement.drain()  # leave no collective in flight
            try:  # the flush and the save raise Diverged on every rank at the same step
                self._log(step, last, bar)
                if cfg.dist.check_every and step % cfg.dist.check_every == 0:
                    self.check_ranks()
                if cfg.log.images_every and step % cfg.log.images_every == 0 or last:
                    self.save_pictures(step)
                self.checkpoints.step(step, last=last)
            except Diverged as e:
                batches = self._roll_back(e)
                bar.reset(cfg.train.max_steps)
                bar.update(self.state.step)
                continue
            if stopping:
                ended = f"stopped ({self.stop.reason or 'another rank'})"
                break
        bar.close()
        if os.environ.get("INFOGAN_DUMP_STATE"):
            self.dump_state(Path(os.environ["INFOGAN_DUMP_STATE"]))
        if stopping:
            self.stop.clear_file()
        self.tracker.end()
        if self.acc.is_main_process:
            print(f"{ended} at step {self.state.step}; run dir {self.run_dir}", flush=True)
        return ended

    def _roll_back(self, e: Diverged):
        """train.nonfinite: back to the newest checkpoint with the draws re-keyed, or
        TrainingFailed (exit 1) once the policy's rollbacks are used up. Every rank."""
        train, diverged_at = self.cfg.train, self.state.step
        allowed = ROLLBACK_BUDGET[train.nonfinite](train)
        if self.state.rollbacks >= allowed:
            raise TrainingFailed(
                f"training diverged: {e}; train.nonfinite={train.nonfinite} allows "
                f"{allowed} rollback(s), {self.state.rollbacks} used; every checkpoint kept "
                "is finite: lower the learning rates (optim.lr_*) and resume")
        rollbacks = self.state.rollbacks + 1
        path = self.checkpoints.roll_back()
        if path is None:
            raise TrainingFailed(f"training diverged: {e}; no checkpoint to roll back to "
                                 "(before the first one): lower the learning rates")
        self.state.rollbacks = rollbacks  # the checkpoint holds the count of its own time
        self._apply_optim_settings()  # this launch's optim.* again, not the checkpoint's
        self.source.rekey(rollbacks)
        self.tracker.rolled_back(self.state.step, {
            "rollbacks": rollbacks, "diverged_step": diverged_at, "reason": str(e)})
        ranks.print0(f"warning: training diverged: {e}; rolled back to {path} (rollback "
                     f"{rollbacks} of {train.max_rollbacks}, random draws re-keyed)")
        return iter(self.source)

    def _log(self, step: int, last: bool, bar: tqdm) -> None:
        """At log steps (collective): metrics averaged over steps and ranks, evaluation."""
        cfg = self.cfg
        due = cfg.log.metrics_at(step)
        if not (step % cfg.log.every == 0 or last or due):
            return
        extra = {"progress/epoch": float(self.state.epoch),
                 "progress/images_seen": float(self.state.images_seen)}
        if due:
            extra |= self.evaluate(due)
        if self.acc.scaler is not None:
            extra |= {"amp/scale": float(self.acc.scaler.get_scale()),
                      "amp/skipped_steps": float(self.skipped)}  # a log step: may sync
        values = self.tracker.flush(step, extra)
        self.logged = (step, values)
        bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in values.items()
                         if k.startswith(("loss/", "mi/c1"))})

    # --- checks, pictures, checkpoints -------------------------------------------------
    def _named_state(self, skip_bn_stats: bool) -> list[tuple[str, torch.Tensor]]:
        return list(ranks.state_tensors(
            {"G": self.G_raw, "D": self.D_raw, **self.parts_raw, **self.ema.models()},
            {k: o.optimizer for k, o in self.optimizers.items()}, skip_bn_stats=skip_bn_stats))

    def check_ranks(self) -> None:
        named = self._named_state(skip_bn_stats=self.cfg.dist.batchnorm == "local")
        ranks.check_ranks_identical(named, self.device, self.state.step)

    def _before_save(self) -> None:
        """Every rank, before a checkpoint: never write ranks that disagree; gather
        every rank's data position into the state the main process writes."""
        self.check_ranks()
        self.state.data = gather_object([self.source.state_dict()])

    def evaluate(self, names: list[str]) -> dict[str, float]:
        """The metrics `names` (scores.METRICS): a collective one on every rank, the others
        on the main process alone. The tracker writes the main process's values with the
        step's other metrics."""
        images, labels = self.eval_data or (None, None)
        inputs = EvalInputs(self.G_raw, self.D_raw, self.space, images, labels, self.device,
                            EVAL_SAMPLES, sampler=self.ema.sampler(self.G_raw), fid=self.fid,
                            disentanglement=self.disentanglement)
        out: dict[str, float] = {}
        for name in names:
            metric = METRICS[name]
            if metric.collective or self.acc.is_main_process:
                out |= metric.fn(inputs)
        return out

    def dump_state(self, out: Path) -> None:
        """Every rank writes all its state tensors (for tests comparing ranks bitwise)."""
        out.mkdir(parents=True, exist_ok=True)
        save_file({n: t.detach().cpu().contiguous().clone()
                   for n, t in self._named_state(skip_bn_stats=False)},
                  str(out / f"rank{self.rank}.safetensors"))

    def save_pictures(self, step: int) -> None:
        """The traversal grids; where the metric disentanglement has run, the rows of
        step-N-codes.png name the factor each code captures best (its latest report;
        the MI matrix beside it in step-N-codes.json)."""
        if self.acc.is_main_process:
            runlock.ensure_held()
            out = self.run_dir / "samples" / f"step-{step:08d}.png"
            report = self.disentanglement.last_report if self.disentanglement else None
            labels = factor_labels(report) if report else None
            paths = save_pictures(self.ema.sampler(self.G_raw), self.space, self.cfg.run.seed,
                                  out, code_labels=labels)
            if report:
                write_text_durably(out.with_name(f"{out.stem}-codes.json"), json.dumps(
                    {k: report[k] for k in ("codes", "factors", "mi_normalised", "best_factor")},
                    indent=1))
            self.tracker.images(step, paths)
