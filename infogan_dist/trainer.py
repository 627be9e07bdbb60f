"""The Trainer: Accelerate for devices, DDP, precision and checkpoint state; phases for
the updates; one TrainerState; one Reporter.

Distributed design (README "How ranks stay in sync"):
- Every random draw of a step (data order, latents) is keyed by (seed, step) over the
  global batch; rank r takes its slice. One rank or eight train the same model.
- DDP with find_unused_parameters (each phase uses one of D's heads) and
  broadcast_buffers off; BatchNorm statistics are global (CrossRankBatchNorm) under
  dist.batchnorm=sync, or per rank under `local` (running statistics drift, documented).
- Sampling pictures uses the unwrapped G in eval mode on the main process: no collective.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

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

from . import augment, dist, faults
from . import checkpoint as ckpt
from .config import Config, save_config
from .data import ShardIndex, open_source, to_float
from .evaluate import evaluate_codes, load_eval_data
from .latent import LatentSpace
from .models import build_models
from .phases import StepContext, build_optimizers, build_phases
from .pictures import save_pictures
from .reporter import Reporter, truncate_metrics
from .stop import StopRequest

EVAL_IMAGES, EVAL_SAMPLES = 2000, 2048


class Trainer:
    def __init__(self, cfg: Config, index: ShardIndex):
        self.cfg = cfg
        self.index = index
        self.run_dir = cfg.run_dir
        wandb_mode = wandb_mode_for(cfg.log.wandb)
        self.acc = Accelerator(
            # Accelerate 1.15 treats a torchrun-launched CPU process as non-distributed
            # unless told cpu=True; with it, several CPU processes form a gloo group.
            cpu=not torch.cuda.is_available(),
            mixed_precision=cfg.train.precision,
            log_with="wandb" if wandb_mode else None,
            project_dir=str(self.run_dir),
            kwargs_handlers=[
                DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False),
                InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.dist.timeout_s)),
            ],
        )
        self.wandb_mode = wandb_mode
        self.rank, self.world_size = self.acc.process_index, self.acc.num_processes
        self.device = self.acc.device
        self.local_batch = cfg.batch_per_rank(self.world_size)
        self.space = LatentSpace(cfg.latent)
        self.state = ckpt.TrainerState(world_size=self.world_size)

        set_seed(cfg.run.seed)  # identical initial weights on every rank
        G, D = build_models(cfg.model, self.space.input_dim, self.space.q_dim, index.image_shape)
        if cfg.dist.batchnorm == "sync":
            dist.convert_batchnorm(G)
            dist.convert_batchnorm(D)
        opts = build_optimizers(cfg, G, D)
        prepared = self.acc.prepare(G, D, *opts.values())
        self.G, self.D = prepared[0], prepared[1]
        self.optimizers = dict(zip(opts, prepared[2:], strict=True))
        self.G_raw, self.D_raw = self.acc.unwrap_model(self.G), self.acc.unwrap_model(self.D)
        self.phases = build_phases(cfg, self.optimizers)

        self.source = open_source(
            cfg.data, index, rank=self.rank, world_size=self.world_size,
            global_batch=cfg.train.global_batch_size, seed=cfg.run.seed, device=self.device,
        )
        # In-training evaluation runs on the main process while the others wait in the
        # next collective: keep it well inside dist.timeout_s (`infogan eval` does the
        # full test set on a checkpoint).
        self.eval_data = (load_eval_data(cfg, limit=EVAL_IMAGES)
                          if cfg.log.eval_every and self.acc.is_main_process else None)
        self.stop = StopRequest(self.run_dir / "STOP", self.acc.is_main_process)
        self.reporter = Reporter(self.acc, self.run_dir / "metrics.jsonl",
                                 cfg.train.global_batch_size)

    # --- set-up --------------------------------------------------------------------
    def _resume(self) -> None:
        path, warnings = ckpt.find_resume(self.run_dir, self.cfg.train.resume)
        for w in warnings:
            dist.print0(f"warning: {w}")
        if path is None:
            return
        try:
            self.acc.load_state(str(path))
        except pickle.UnpicklingError as e:
            # weights_only refused an object: never retry with weights_only=False.
            raise ckpt.CheckpointError(
                f"refusing to load {path}: it holds pickled objects beyond tensors "
                f"({str(e).splitlines()[-1][:120]}); it may not come from this trainer"
            ) from None
        self.state.load_state_dict(ckpt.read_state(path))
        self.state.world_size = self.world_size
        self.source.load_state_dict(self.state.data)
        if self.acc.is_main_process:
            for p in ckpt.set_aside_newer(self.run_dir, self.state.step):
                print(f"warning: resumed from an older checkpoint; set aside {p}", flush=True)
        self.acc.wait_for_everyone()
        dist.print0(f"resumed from {path} at step {self.state.step}")

    def _start_run_dir(self) -> None:
        if self.acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for p in ckpt.clean_stale_tmp(self.run_dir):
                print(f"warning: removed the remains of an interrupted save: {p}", flush=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            self.stop.clear_stale_file()
        self.acc.wait_for_everyone()

    def _init_tracking(self) -> None:
        if self.acc.is_main_process:
            dropped = truncate_metrics(self.run_dir / "metrics.jsonl", self.state.step)
            if dropped:
                print(f"metrics.jsonl: dropped {dropped} entries after step {self.state.step} "
                      "(replayed from the checkpoint)", flush=True)
        if self.wandb_mode:
            self.acc.init_trackers(
                self.cfg.log.project, config=self.cfg.to_dict(),
                init_kwargs={"wandb": wandb_kwargs(self.cfg, self.run_dir, self.wandb_mode,
                                                   self.acc.is_main_process)},
            )

    # --- the loop ------------------------------------------------------------------
    def _context(self, real: torch.Tensor) -> StepContext:
        cfg, step = self.cfg, self.state.step

        def sample(draw: int):
            return self.space.sample_step(
                cfg.run.seed, step, draw, cfg.train.global_batch_size, self.rank, self.world_size
            ).to(self.device)

        def uniforms(draw: int):
            return augment.step_uniforms(
                cfg.run.seed, step, draw, cfg.train.global_batch_size, self.rank, self.world_size
            )

        return StepContext(
            cfg=cfg, space=self.space, step=step, real=real, G=self.G, D=self.D,
            G_raw=self.G_raw, D_raw=self.D_raw, sample=sample, uniforms=uniforms,
            backward=self.acc.backward, autocast=self.acc.autocast,
        )

    def train_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        ctx = self._context(to_float(images.to(self.device, non_blocking=True)))
        stats: dict[str, torch.Tensor] = {}
        for phase in self.phases:
            phase.optimizer.zero_grad(set_to_none=True)
            stats |= phase.run(ctx)
            faults.poison_grads(phase.name, phase.optimizer, self.rank, self.state.step + 1)
            phase.optimizer.step()
        return stats

    def fit(self) -> str:
        """Trains to train.max_steps or a stop request. Returns why it ended."""
        cfg = self.cfg
        self._start_run_dir()
        self._resume()
        if self.state.step >= cfg.train.max_steps:
            dist.print0(f"nothing to do: step {self.state.step} >= train.max_steps="
                        f"{cfg.train.max_steps}")
            return "complete"
        self._init_tracking()
        dist.print0(f"rank 0/{self.world_size} machine {os.environ.get('GROUP_RANK', 0)}: "
                    f"training {cfg.run.name} on {self.device}, {self.world_size} process(es), "
                    f"batch {self.local_batch}/rank, run dir {self.run_dir}")
        if self.rank != 0:
            dist.print_all(f"machine {os.environ.get('GROUP_RANK', 0)} on {self.device}")

        bar = tqdm(total=cfg.train.max_steps, initial=self.state.step, dynamic_ncols=True,
                   disable=not (self.acc.is_main_process and cfg.log.progress))
        batches = iter(self.source)
        ended, stopping, skipped = "complete", False, 0
        while self.state.step < cfg.train.max_steps:
            images, _labels = next(batches)  # labels are for evaluation only
            stats = self.train_step(images)
            skipped += sum(int(o.step_was_skipped) for o in self.optimizers.values())
            self.state.step += 1
            self.state.images_seen += cfg.train.global_batch_size
            self.state.epoch = self.source.epoch
            self.reporter.add(stats)
            bar.update(1)

            step = self.state.step
            faults.inject("step", self.rank, step)
            stopping = dist.agree(self.stop.local(), self.device)
            last = stopping or step == cfg.train.max_steps
            evaluating = bool(cfg.log.eval_every) and step % cfg.log.eval_every == 0
            if step % cfg.log.every == 0 or last or evaluating:
                extra = {"progress/epoch": float(self.state.epoch),
                         "progress/images_seen": float(self.state.images_seen)}
                if evaluating:
                    extra |= self.evaluate()  # main process only; {} elsewhere
                if self.acc.scaler is not None:
                    extra |= {"amp/scale": float(self.acc.scaler.get_scale()),
                              "amp/skipped_steps": float(skipped)}
                values = self.reporter.flush(step, extra)
                bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in values.items()
                                 if k.startswith(("loss/", "mi/c1"))})
            if cfg.dist.check_every and step % cfg.dist.check_every == 0:
                self.check_ranks()
            if cfg.log.images_every and step % cfg.log.images_every == 0 or last:
                self.save_pictures(step)
            if step % cfg.checkpoint.every == 0 or last:
                self.save_checkpoint()
            if stopping:
                ended = f"stopped ({self.stop.reason or 'another rank'})"
                break
        bar.close()
        if os.environ.get("INFOGAN_DUMP_STATE"):
            self.dump_state(Path(os.environ["INFOGAN_DUMP_STATE"]))
        if stopping:
            self.stop.clear_file()
        self.acc.end_training()
        if self.acc.is_main_process:
            print(f"{ended} at step {self.state.step}; run dir {self.run_dir}", flush=True)
        return ended

    # --- checks, pictures, checkpoints -------------------------------------------------
    def check_ranks(self) -> None:
        named = list(dist.state_tensors(
            {"G": self.G_raw, "D": self.D_raw},
            {k: o.optimizer for k, o in self.optimizers.items()},
            skip_bn_stats=self.cfg.dist.batchnorm == "local",
        ))
        dist.check_ranks_identical(named, self.device, self.state.step)

    def evaluate(self) -> dict[str, float]:
        """Scores the codes against the labels (`eval/acc/c1`, ...); main process only,
        no collective. The reporter writes them with the step's other metrics."""
        if not self.acc.is_main_process:
            return {}
        images, labels = self.eval_data
        return evaluate_codes(self.G_raw, self.D_raw, self.space, images, labels,
                              self.device, samples=EVAL_SAMPLES)

    def dump_state(self, out: Path) -> None:
        """Every rank writes all its state tensors (for tests comparing ranks bitwise)."""
        out.mkdir(parents=True, exist_ok=True)
        named = dist.state_tensors({"G": self.G_raw, "D": self.D_raw},
                                   {k: o.optimizer for k, o in self.optimizers.items()},
                                   skip_bn_stats=False)
        save_file({n: t.detach().cpu().contiguous().clone() for n, t in named},
                  str(out / f"rank{self.rank}.safetensors"))

    def save_pictures(self, step: int) -> None:
        if not self.acc.is_main_process:
            return
        paths = save_pictures(self.G_raw, self.space, self.cfg.run.seed,
                              self.run_dir / "samples" / f"step-{step:08d}.png")
        if self.wandb_mode:
            import wandb

            run = self.acc.get_tracker("wandb", unwrap=True)
            run.log({f"samples/{p.stem.split('-')[-1] if '-c' in p.stem else 'categories'}":
                     wandb.Image(str(p)) for p in paths}, step=step)

    def save_checkpoint(self) -> Path:
        self.check_ranks()  # never write a checkpoint of ranks that disagree
        step = self.state.step
        self.state.data = gather_object([self.source.state_dict()])
        tmp = ckpt.checkpoints_root(self.run_dir) / f"{ckpt.TMP_PREFIX}{step:08d}"
        if self.acc.is_main_process:
            tmp.mkdir(parents=True)  # start-up removed any .tmp left by a crash
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp))
        faults.inject("save", self.rank, step)
        if self.acc.is_main_process:
            state_dict = {k: v.detach().cpu().contiguous()
                          for k, v in self.G_raw.state_dict().items()}
            save_file(state_dict, str(tmp / "generator.safetensors"))
            save_config(self.cfg, tmp / "config.yaml")
            ckpt.write_text_durably(tmp / ckpt.STATE_FILE,
                                    json.dumps(self.state.state_dict(), indent=1))
        self.acc.wait_for_everyone()  # every rank's files are on disk
        final = ckpt.step_dir(self.run_dir, step)
        if self.acc.is_main_process:
            ckpt.finalize(self.run_dir, tmp, step, self.cfg.checkpoint.keep)
        self.acc.wait_for_everyone()
        return final


# --- W&B ------------------------------------------------------------------------------
def wandb_mode_for(setting: str) -> str | None:
    """offline unless online is asked for AND a key is configured; never a prompt."""
    if setting == "off":
        return None
    if setting == "online" and _wandb_key_configured():
        return "online"
    return "offline"


def _wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_kwargs(cfg: Config, run_dir: Path, mode: str, is_main: bool) -> dict[str, Any]:
    """Online: one W&B run for the whole training, resumed by its stored id. Offline runs
    cannot be resumed, so each segment is a new run in the same group (group = run.name)."""
    import wandb

    record = run_dir / "wandb_runs.json"
    runs = json.loads(record.read_text()) if record.exists() else []
    if mode == "online" and runs:
        run_id = runs[0]["id"]
    else:
        run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
    if is_main:
        runs.append({"id": run_id, "mode": mode, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        ckpt.write_text_durably(record, json.dumps(runs, indent=1))
    return {
        "dir": str(run_dir), "id": run_id, "group": cfg.run.name, "mode": mode,
        "name": f"{cfg.run.name}-{len(runs)}" if mode == "offline" else cfg.run.name,
        "resume": "allow" if mode == "online" else None,
        "settings": wandb.Settings(console="off", silent=True),
    }
