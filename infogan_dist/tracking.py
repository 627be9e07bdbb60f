"""Tracking, in one place: metrics.jsonl, W&B (mode, run ids, resume, images).

The trainer only reports: `Tracker.add(stats, data_wait_s)` every step (device
tensors, no host sync; the seconds the loop waited for the batch, a host clock),
`Tracker.flush(step, extra)` at log intervals (averaged over steps and ranks in one
all-reduce, one host sync; perf/step_s, perf/data_wait_s and on CUDA perf/max_mem_gb;
written to metrics.jsonl and W&B on the main process with an explicit step),
`Tracker.images(step, paths)` for pictures.

W&B is offline unless log.wandb=online AND a key is configured (WANDB_API_KEY, or an
api.wandb.ai entry in the netrc file that `wandb login` writes); it never prompts.
Online: one W&B run for the whole training, resumed by its stored id
(run_dir/wandb_runs.json). Offline runs cannot be resumed, so each segment is a new run
in the same group (group = run.name).

metrics.jsonl stays strict JSON: a non-finite value (NaN, inf) is written as null, and
such a row makes flush raise Diverged (guard.py) on every rank. A divergence rollback
appends an event row {"step": S, "event": "rollback", ...} after dropping the rows past
the checkpoint's step S. It is rewritten only once a checkpoint was loaded; a fresh start
over an existing metrics.jsonl sets it aside as metrics.jsonl.abandoned-<n>.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import redact, runlock
from .config import Config
from .errors import naming
from .guard import Diverged


class Tracker:
    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg = cfg
        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        self.global_batch = cfg.train.global_batch_size
        self.wandb_mode = wandb_mode_for(cfg.log.wandb)
        self.wandb_broken = ""  # why W&B was left off in this segment ("" = it works)
        self.acc: Any = None  # the Accelerator, from start()
        self.sums: dict[str, torch.Tensor] = {}
        # steps each statistic was added in since the last flush: a statistic that starts
        # mid-interval (an extension's loss.extra_start) is the mean of its own steps
        self.counts: dict[str, int] = {}
        self.steps = 0  # steps added since the last flush
        self.data_wait_s = 0.0  # host seconds spent in next(batches) since the last flush
        self.t0 = time.perf_counter()

    def accelerator_kwargs(self) -> dict[str, Any]:
        """What the Accelerator needs to be built with for this tracking."""
        return {"log_with": "wandb" if self.wandb_mode else None}

    def start(self, accelerator: Any, step: int, resumed: bool) -> None:
        """After a checkpoint was loaded (resumed): drop metrics rows after `step` (a
        resume from an older checkpoint replays them); after a fresh start: set an
        existing metrics.jsonl aside (it belongs to a run no checkpoint continues). Then
        open the W&B run."""
        self.acc = accelerator
        if accelerator.is_main_process and resumed:
            self._truncate(step)
        elif accelerator.is_main_process and self.path.exists():
            aside = set_aside(self.path)
            print(f"warning: starting fresh, no checkpoint to continue from: moved the old "
                  f"{self.path.name} to {aside}", flush=True)
        if self.wandb_mode:
            accelerator.init_trackers(
                self.cfg.log.project, config=redact.tree(self.cfg.to_dict()),
                init_kwargs={"wandb": wandb_kwargs(self.cfg, self.run_dir, self.wandb_mode,
                                                   accelerator.is_main_process)},
            )
        self.t0 = time.perf_counter()

    def _to_wandb(self, what: str, call: Callable[[], object]) -> None:
        """A W&B call after the start, which must not cost the training: W&B runs a
        service process of its own, which a preemption signals with every other process
        of the job (Slurm signals them all) and a full disk or a crash can end; its next
        call then raises (ConnectionResetError, OSError). metrics.jsonl is the record: the
        first failure leaves W&B off for the rest of this segment, said in one line."""
        if self.wandb_broken:
            return
        try:
            call()
        except Exception as e:
            self.wandb_broken = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
            self.acc.trackers = [t for t in self.acc.trackers if t.name != "wandb"]
            print(f"warning: W&B failed while {what} ({self.wandb_broken}); metrics.jsonl "
                  "and the checkpoints go on, W&B is off until the next launch",
                  file=sys.stderr, flush=True)
            import wandb

            try:  # drops W&B's exit hook first, which would meet the same dead service
                wandb.teardown()
            except Exception:
                pass

    def images(self, step: int, paths: list[Path]) -> None:
        """Traversal pictures (main process) to W&B, keyed samples/<grid>."""
        if not self.wandb_mode or not self.acc.is_main_process or self.wandb_broken:
            return
        import wandb

        run = self.acc.get_tracker("wandb", unwrap=True)
        self._to_wandb("logging pictures", lambda: run.log(
            {f"samples/{p.stem.split('-')[-1] if '-c' in p.stem else 'categories'}":
             wandb.Image(str(p)) for p in paths}, step=step))

    def end(self) -> None:
        if self.wandb_mode and self.acc.is_main_process:
            self._to_wandb("finishing its run", lambda: [t.finish() for t in self.acc.trackers])
            self.acc.trackers = []  # finished (or gone): end_training must not finish again
        self.acc.end_training()

    def _truncate(self, step: int) -> None:
        dropped = truncate_metrics(self.path, step)
        if dropped:
            print(f"metrics.jsonl: dropped {dropped} entries after step {step} "
                  "(replayed from the checkpoint)", flush=True)

    def pending(self) -> list[torch.Tensor]:
        """The sums not yet reduced: non-finite if any step since the last flush was."""
        return list(self.sums.values())

    def rolled_back(self, step: int, event: dict[str, Any]) -> None:
        """After a divergence rollback to the checkpoint at `step`: rows after it go (the
        replay writes them again), an event row records the rollback, sums restart."""
        self.sums, self.counts, self.steps = {}, {}, 0
        self.t0 = time.perf_counter()
        if self.acc.is_main_process:
            runlock.ensure_held()
            self._truncate(step)
            append_line(self.path, json.dumps({"step": step, "event": "rollback", **event},
                                              allow_nan=False))

    def add(self, stats: dict[str, torch.Tensor], data_wait_s: float = 0.0) -> None:
        self.data_wait_s += data_wait_s
        for k, v in stats.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.steps += 1

    def flush(self, step: int, extra: dict[str, float] | None = None) -> dict[str, float]:
        """Collective: every rank calls it at the same steps."""
        keys = sorted(self.sums)
        values: dict[str, float] = {}
        if keys:
            vec = torch.stack([self.sums[k] for k in keys])
            if all(self.counts[k] == self.steps for k in keys):
                vec = vec / max(self.steps, 1)
            else:
                vec = vec / torch.tensor([float(self.counts[k]) for k in keys],
                                         device=vec.device)
            vec = self.acc.reduce(vec, reduction="mean")
            values = dict(zip(keys, vec.tolist(), strict=True))  # the one host sync
        # Wall clock over the interval, after the host sync above: with the device work of
        # every step finished, interval / steps is the step time without a sync per step.
        elapsed = time.perf_counter() - self.t0
        if self.steps:
            values["perf/images_per_s"] = self.global_batch * self.steps / elapsed
            values["perf/step_s"] = elapsed / self.steps
            values["perf/s_per_step"] = elapsed / self.steps  # the older name, still read
            values["perf/data_wait_s"] = self.data_wait_s / self.steps
        if self.acc.device.type == "cuda":  # allocator statistics: host-side, no sync
            values["perf/max_mem_gb"] = torch.cuda.max_memory_allocated(self.acc.device) / 1e9
        values |= extra or {}
        self.sums, self.counts, self.steps, self.data_wait_s = {}, {}, 0, 0.0
        self.t0 = time.perf_counter()
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if self.acc.is_main_process:
            runlock.ensure_held()  # another training owns the run directory: not a row more
            row = {k: None if k in bad else v for k, v in values.items()}
            append_line(self.path, json.dumps({"step": step, **row}, allow_nan=False))
            if self.wandb_mode:
                self._to_wandb("logging metrics", lambda: self.acc.log(values, step=step))
        if bad:  # the values were reduced over ranks: every rank raises here
            raise Diverged(f"non-finite {', '.join(bad)} in the steps up to {step}")
        return values


def append_line(path: Path, line: str) -> None:
    """Appends one row; an OSError (a full disk, ...) names the file, for its one line."""
    with naming(path), open(path, "a") as f:
        f.write(line + "\n")


def truncate_metrics(path: Path, step: int) -> int:
    """Drops entries after `step` (a resume from an older checkpoint replays them), so
    metrics.jsonl never holds two entries for one step. Returns how many were dropped."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by a crash
            dropped += 1
            continue
        if entry.get("step", 0) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(".partial")
        tmp.write_text("".join(k + "\n" for k in kept))
        tmp.replace(path)
    return dropped


def set_aside(path: Path) -> Path:
    """Renames `path` to `path.abandoned-<n>` (the first n free); nothing is deleted."""
    n = 1
    while path.with_name(f"{path.name}.abandoned-{n}").exists():
        n += 1
    dest = path.with_name(f"{path.name}.abandoned-{n}")
    os.replace(path, dest)
    return dest


# --- W&B ------------------------------------------------------------------------------
def wandb_mode_for(setting: str) -> str | None:
    """offline unless online is asked for AND a key is configured; never a prompt."""
    if setting == "off":
        return None
    if setting == "online" and wandb_key_configured():
        return "online"
    return "offline"


def wandb_key_configured() -> bool:
    """WANDB_API_KEY, or a netrc entry for W&B's host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC", os.path.join(os.path.expanduser("~"), ".netrc"))
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    try:
        entry = netrc.netrc(path).authenticators(host.split("/")[0])
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def wandb_kwargs(cfg: Config, run_dir: Path, mode: str, is_main: bool) -> dict[str, Any]:
    """init kwargs: the stored id (online) or a new run in the group (offline)."""
    import wandb

    from .checkpoint import write_text_durably

    record = run_dir / "wandb_runs.json"
    runs = json.loads(record.read_text()) if record.exists() else []
    if mode == "online" and runs:
        run_id = runs[0]["id"]
    else:
        run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
    if is_main:
        runs.append({"id": run_id, "mode": mode, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        write_text_durably(record, json.dumps(runs, indent=1))
    return {
        "dir": str(run_dir), "id": run_id, "group": cfg.run.name, "mode": mode,
        "name": f"{cfg.run.name}-{len(runs)}" if mode == "offline" else cfg.run.name,
        "resume": "allow" if mode == "online" else None,
        "settings": wandb.Settings(console="off", silent=True),
    }
