"""Crash-safe checkpoints and the trainer state they carry.

Layout: {run_dir}/checkpoints/step-{N:08d}/ holds Accelerate's state (models as
safetensors, optimizers, scaler, per-rank RNG), `generator.safetensors` for sampling,
`train_state.json` and `config.yaml`, and a `COMPLETE` marker.

Write protocol: everything goes to `.tmp-step-N/`; all ranks finish
(`wait_for_everyone`); the main process writes COMPLETE, renames the directory into
place (atomic on one filesystem) and only then deletes the oldest beyond `keep`. A crash
at any point leaves the previous complete checkpoint untouched. Multi-node runs need
the run directory on a filesystem every node sees (as on any Slurm cluster).
Loading never unpickles: safetensors for models, `torch.load(weights_only=True)` inside
Accelerate for the rest, JSON for our state.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, config_from_dict, frozen_differences

PREFIX = "step-"
TMP_PREFIX = ".tmp-step-"
COMPLETE = "COMPLETE"
STATE_FILE = "train_state.json"


@dataclass
class TrainerState:
    """Everything besides tensors that the next step depends on."""

    step: int = 0  # optimizer iterations done
    epoch: int = 0  # epoch of the next batch
    images_seen: int = 0  # real images consumed, all ranks together
    world_size: int = 1  # of the run that wrote this state (informational)
    data: list[dict[str, Any]] = field(default_factory=list)  # data-source state per rank

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k in ("step", "epoch", "images_seen", "world_size", "data"):
            if k in d:
                setattr(self, k, d[k])


def checkpoints_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_dir(run_dir: Path, step: int) -> Path:
    return checkpoints_root(run_dir) / f"{PREFIX}{step:08d}"


def write_text_durably(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    """fsync a directory (its entries) or a regular file (its data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_complete(path: Path) -> bool:
    """Complete = marked, and its state file parses (a half-copied dir fails this)."""
    try:
        json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (path / COMPLETE).is_file()


def list_checkpoints(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(complete ones oldest first, incomplete or unreadable ones)."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return [], []
    good, bad = [], []
    for p in sorted(root.iterdir()):
        if p.name.startswith(TMP_PREFIX):
            bad.append(p)
        elif p.name.startswith(PREFIX) and p.is_dir():
            (good if is_complete(p) else bad).append(p)
    return good, bad


def find_resume(run_dir: Path, resume: str) -> tuple[Path | None, list[str]]:
    """The checkpoint to resume from (None: start fresh) and warnings to print."""
    if resume == "none":
        return None, []
    if resume != "auto":
        path = Path(resume)
        if not is_complete(path):
            from .config import ConfigError

            raise ConfigError(
                f"train.resume={resume}: not a complete checkpoint (needs {COMPLETE} and "
                f"{STATE_FILE}); use train.resume=auto or a checkpoints/step-N directory"
            )
        return path, []
    good, bad = list_checkpoints(run_dir)
    warnings = [f"ignoring incomplete or unreadable checkpoint {p}" for p in bad]
    return (good[-1] if good else None), warnings


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


def read_config(path: Path) -> Config:
    import yaml

    return config_from_dict(yaml.safe_load((path / "config.yaml").read_text()), str(path))


def resume_conflicts(path: Path, cfg: Config) -> list[str]:
    """Frozen keys (architecture, latent spec, update) that differ from the checkpoint."""
    old = read_config(path)
    flat_old, flat_new = old.to_dict(), cfg.to_dict()
    out = []
    for key in frozen_differences(old, cfg):
        section, name = key.split(".", 1)
        out.append(f"{key} ({flat_old[section][name]!r} -> {flat_new[section][name]!r})")
    return out


def finalize(run_dir: Path, tmp: Path, step: int, keep: int) -> Path:
    """Main process only, after every rank has written into `tmp`."""
    # Data before the marker: after a machine crash a COMPLETE checkpoint must not hold
    # files whose contents never reached the disk (renames can land before data).
    for f in sorted(tmp.iterdir()):
        if f.is_file():
            _fsync_dir(f)
    _fsync_dir(tmp)
    write_text_durably(tmp / COMPLETE, f"step {step}\n")
    final = step_dir(run_dir, step)
    if final.exists():  # re-reaching a step after a rollback: the new one replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    good, _ = list_checkpoints(run_dir)
    for old in good[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


ABANDONED_PREFIX = "abandoned-"


def set_aside_newer(run_dir: Path, step: int) -> list[Path]:
    """Complete checkpoints after `step` belong to a continuation abandoned by resuming
    from an older checkpoint: renamed `abandoned-step-N`, so neither resume=auto nor
    pruning (which could otherwise delete the checkpoint just resumed from) sees them."""
    moved = []
    for p in list_checkpoints(run_dir)[0]:
        if int(p.name[len(PREFIX):]) > step:
            dest = p.with_name(ABANDONED_PREFIX + p.name)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(p, dest)
            moved.append(dest)
    return moved


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely; the message is one line."""


def clean_stale_tmp(run_dir: Path) -> list[Path]:
    """Leftovers of a save that crashed; called by the main process at start."""
    root = checkpoints_root(run_dir)
    stale = sorted(root.glob(TMP_PREFIX + "*")) if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale
