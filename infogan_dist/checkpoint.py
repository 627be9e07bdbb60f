"""Checkpoints, in one place: finding, loading, saving, pruning, setting aside, and
loading for inference (`infogan eval`, `infogan sample`).

Layout: {run_dir}/checkpoints/step-{N:08d}/ holds Accelerate's state (models as
safetensors, optimizers, scaler, per-rank RNG) and the manager's parts: by default
`generator.safetensors` for sampling, `config.yaml`, and `train_state.json` (the
TrainerState, which also says what the checkpoint holds: image shape, latent spec,
architecture), and a `COMPLETE` marker. A new file in every checkpoint is one more
Part in the list the trainer hands to CheckpointManager.

Write protocol: everything goes to `.tmp-step-N/`; all ranks finish
(`wait_for_everyone`); the main process writes COMPLETE, renames the directory into
place (atomic on one filesystem) and only then deletes the oldest beyond `keep`. A crash
at any point leaves the previous complete checkpoint untouched. Multi-node runs need
the run directory on a filesystem every node sees (as on any Slurm cluster).
Loading never unpickles: safetensors for models, `torch.load(weights_only=True)` inside
Accelerate for the rest, JSON for our state.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import faults, ranks, runlock
from .choices import config_from_dict
from .config import (
    CheckpointConfig,
    Config,
    ConfigError,
    LatentConfig,
    ModelConfig,
    read_yaml,
)
from .config import resume_conflicts as _conflicts
from .config.schema import best_direction
from .errors import naming
from .guard import Diverged, TrainingFailed, nonfinite

PREFIX = "step-"
TMP_PREFIX = ".tmp-step-"
COMPLETE = "COMPLETE"
STATE_FILE = "train_state.json"


class CheckpointError(RuntimeError):
    """A checkpoint (or checkpoints/) that cannot be used safely; the message is one line."""


@dataclass
class TrainerState:
    """Everything besides tensors that the next step depends on."""

    step: int = 0  # optimizer iterations done
    epoch: int = 0  # epoch of the next batch
    images_seen: int = 0  # real images consumed, all ranks together
    world_size: int = 1  # of the run that wrote this state (informational)
    data: list[dict[str, Any]] = field(default_factory=list)  # data-source state per rank
    # What the checkpoint holds, read back by eval, sample and resume (nothing guesses):
    image_shape: list[int] = field(default_factory=list)  # [C, H, W] G makes and D judges
    latent: dict[str, Any] = field(default_factory=dict)  # the LatentConfig of the codes
    model: dict[str, Any] = field(default_factory=dict)  # the ModelConfig (arch, width)
    # divergence rollbacks so far (train.nonfinite); keys the random draws when > 0
    rollbacks: int = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k in asdict(self):
            if k in d:
                setattr(self, k, d[k])


def checkpoints_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_dir(run_dir: Path, step: int) -> Path:
    return checkpoints_root(run_dir) / f"{PREFIX}{step:08d}"


def write_text_durably(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    with naming(path), open(tmp, "w") as f:
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


def _safetensors_problem(f: Path) -> str | None:
    """Why a safetensors file cannot be loaded, from its header alone: the size the
    header's offsets imply must be the file's (a truncated copy fails this)."""
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n > size:
                return f"{f.name} is truncated"
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"),
                  default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return f"{f.name} is unreadable"
    return None if size == 8 + n + end else f"{f.name} is truncated"


def _zip_problem(f: Path) -> str | None:
    """torch.save files are zip archives: a truncated one has no central directory."""
    try:
        with zipfile.ZipFile(f):
            return None
    except (OSError, zipfile.BadZipFile):
        return f"{f.name} is unreadable"


def _not_ours(path: Path) -> str | None:
    """Why `path` (named like a checkpoint) is nothing the trainer wrote: a symlink or
    not a directory. Such an entry is never followed, loaded, pruned or written through."""
    if path.is_symlink():
        return f"a symlink (to {os.readlink(path)}), not a checkpoint directory"
    if not path.is_dir():
        return "not a directory"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """None for a complete, loadable checkpoint; else why not, in a few words. Cheap:
    the marker, the state file, safetensors headers and sizes, zip directories."""
    if os.path.lexists(path) and _not_ours(path):
        return _not_ours(path)
    if not (path / COMPLETE).is_file():
        return f"no {COMPLETE} marker"
    try:
        json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return f"{STATE_FILE} is missing or unreadable"
    for f in sorted(path.iterdir()):
        check = _safetensors_problem if f.suffix == ".safetensors" else (
            _zip_problem if f.suffix in (".bin", ".pkl") else None)
        problem = check(f) if check else None
        if problem:
            return problem
    return None


def is_complete(path: Path) -> bool:
    """Complete = marked, its state file parses and its weight files are whole (a
    half-copied or truncated directory fails this)."""
    return checkpoint_problem(path) is None


def readable_root(run_dir: Path) -> Path | None:
    """checkpoints/, or None for a new run. A run directory or checkpoints/ that exists
    but cannot be read (a file, a dangling symlink, a symlink loop, no permission) is a
    CheckpointError: taking it for a new run would overwrite the history it stands for."""
    run_dir = Path(run_dir)
    root = checkpoints_root(run_dir)
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        raise CheckpointError(
            f"run directory {run_dir} exists but is not a directory (or a dangling link); "
            "move it away or choose another run.name / run.output_dir")
    if not os.path.lexists(root):
        return None
    try:
        os.listdir(root)
    except OSError as e:
        link = f", a symlink to {os.readlink(root)}" if root.is_symlink() else ""
        raise CheckpointError(
            f"{root} cannot be read ({e.strerror}{link}); it may hold this run's history: "
            "repair it (or move it away to start the run afresh), then launch again") from None
    return root


def list_checkpoints(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(complete ones oldest first, incomplete or unreadable ones)."""
    root = readable_root(run_dir)
    if root is None:
        return [], []
    good, bad = [], []
    for p in sorted(root.iterdir()):
        if p.name.startswith(TMP_PREFIX):
            bad.append(p)
        elif p.name.startswith(PREFIX) and (p.is_dir() or p.is_symlink()):
            # a symlink is "bad" even to a complete checkpoint: never followed
            (good if is_complete(p) else bad).append(p)
    return good, bad


def find_resume(run_dir: Path, resume: str) -> tuple[Path | None, list[str]]:
    """The checkpoint to resume from (None: start fresh) and warnings to print."""
    if resume == "none":
        return None, []
    if resume != "auto":
        path = Path(resume)
        problem = checkpoint_problem(path) if path.is_dir() else "not a directory"
        if problem:
            raise ConfigError(
                f"train.resume={resume}: not a complete checkpoint ({problem}); use "
                "train.resume=auto or another checkpoints/step-N directory"
            )
        return path, []
    good, bad = list_checkpoints(run_dir)
    warnings = [f"ignoring incomplete or unreadable checkpoint {p}"
                + (f" ({checkpoint_problem(p)})" if not p.name.startswith(TMP_PREFIX) else "")
                for p in bad]
    return (good[-1] if good else None), warnings


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


def read_config(path: Path) -> Config:
    """The config a checkpoint was trained with. Its file is untrusted input too: read
    with the bounds of a config file (config.load: size, UTF-8, alias expansion)."""
    import yaml

    from .config.load import read_config_text

    file = path / "config.yaml"
    try:
        with open(file, "rb"):
            pass
    except OSError as e:
        raise CheckpointError(
            f"{file} cannot be read ({e.strerror}); every checkpoint holds the config it was "
            "trained with: restore it, or resume from another checkpoint "
            "(train.resume=<checkpoints/step-N>)") from None
    try:
        data = read_yaml(read_config_text(file))
    except ConfigError as e:
        raise ConfigError(f"{file} {e}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{file}: not valid YAML") from None
    return config_from_dict(data, str(path))


def resume_conflicts(path: Path, cfg: Config) -> list[str]:
    """Frozen keys (architecture, latent spec, update) that differ from the checkpoint."""
    return _conflicts(read_config(path), cfg)


def is_milestone(path: Path, keep_every: int) -> bool:
    """A checkpoint.keep_every milestone: pruning never deletes it."""
    return bool(keep_every) and int(path.name[len(PREFIX):]) % keep_every == 0


def finalize(run_dir: Path, tmp: Path, step: int, keep: int, keep_every: int = 0) -> Path:
    """Main process only, after every rank has written into `tmp`."""
    # Data before the marker: after a machine crash a COMPLETE checkpoint must not hold
    # files whose contents never reached the disk (renames can land before data).
    for f in sorted(tmp.iterdir()):
        if f.is_file():
            _fsync_dir(f)
    _fsync_dir(tmp)
    write_text_durably(tmp / COMPLETE, f"step {step}\n")
    final = step_dir(run_dir, step)
    if os.path.lexists(final) and _not_ours(final):
        aside = set_aside(final)  # renames the entry itself: a link is never followed
        print(f"warning: {final} was {_not_ours(aside)}; moved it to {aside} and wrote "
              f"the checkpoint of step {step} there", flush=True)
    elif final.exists():  # re-reaching a step after a rollback: the new one replaces it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    good, _ = list_checkpoints(run_dir)
    for old in good[:-keep]:
        if not is_milestone(old, keep_every):
            shutil.rmtree(old, ignore_errors=True)
    return final


ABANDONED_PREFIX = "abandoned-"
ASIDE_PREFIX = "aside-"


def set_aside(path: Path) -> Path:
    """Renames `path` (a file, directory or symlink: never followed) to aside-NAME[-n]
    beside it; nothing is deleted."""
    dest, n = path.with_name(ASIDE_PREFIX + path.name), 1
    while os.path.lexists(dest):
        n += 1
        dest = path.with_name(f"{ASIDE_PREFIX}{path.name}-{n}")
    os.replace(path, dest)
    return dest


def remove(path: Path) -> None:
    """Deletes what the trainer wrote at `path`: a directory tree, or a link or file
    (unlinked, never followed)."""
    if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def set_aside_newer(run_dir: Path, step: int) -> list[Path]:
    """Complete checkpoints after `step` belong to a continuation abandoned by resuming
    from an older checkpoint: renamed `abandoned-step-N`, so neither resume=auto nor
    pruning (which could otherwise delete the checkpoint just resumed from) sees them."""
    moved = []
    for p in list_checkpoints(run_dir)[0]:
        if int(p.name[len(PREFIX):]) > step:
            dest = p.with_name(ABANDONED_PREFIX + p.name)
            remove(dest)
            os.replace(p, dest)
            moved.append(dest)
    return moved


def clean_stale_tmp(run_dir: Path) -> list[Path]:
    """Leftovers of a save that crashed; called by the main process at start."""
    root = checkpoints_root(run_dir)
    stale = sorted(root.glob(TMP_PREFIX + "*")) if root.is_dir() else []
    for p in stale:
        try:
            remove(p)  # a link named like a save is unlinked: its target stays
        except OSError:
            shutil.rmtree(p, ignore_errors=True)
    return stale


# --- the best checkpoint (checkpoint.keep_best) -------------------------------------------
BEST_DIR, BEST_FILE = "best", "BEST.json"


def read_best(run_dir: Path) -> dict[str, Any] | None:
    """checkpoints/best/BEST.json ({metric, value, mode, step}), or None."""
    root = checkpoints_root(run_dir)
    for d in (root / BEST_DIR, root / ".old-best"):  # .old-best: a crash between renames
        try:
            return json.loads((d / BEST_FILE).read_text())
        except (OSError, ValueError):
            continue
    return None


def _link_or_copy(src: str, dst: str) -> None:
    # Checkpoint files are never written again once complete (a save writes a new
    # directory, pruning unlinks), so a hard link is a safe, free copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def keep_best(run_dir: Path, checkpoint: Path, step: int, metric: str, mode: str,
              values: dict[str, float]) -> bool:
    """Main process, after `checkpoint` is complete: when `values[metric]` beats the kept
    best (lower for mode min, higher for max), checkpoints/best/ becomes a copy of it
    (hard links) with BEST.json, swapped in by renames. Pruning and resume=auto never
    look at it. Returns whether it was replaced."""
    value = values.get(metric)
    if value is None or value != value:  # not computed at this step, or NaN
        return False
    old = read_best(run_dir)
    if old is not None and old.get("metric") == metric and old.get("mode") == mode:
        if (value >= old["value"]) if mode == "min" else (value <= old["value"]):
            return False
    root = checkpoints_root(run_dir)
    tmp, best, prev = root / ".tmp-best", root / BEST_DIR, root / ".old-best"
    remove(tmp)
    shutil.copytree(checkpoint, tmp, copy_function=_link_or_copy)
    write_text_durably(tmp / BEST_FILE, json.dumps(
        {"metric": metric, "value": value, "mode": mode, "step": step,
         "source": checkpoint.name}) + "\n")
    _fsync_dir(tmp)
    remove(prev)
    if os.path.lexists(best):
        os.replace(best, prev)
    os.replace(tmp, best)
    _fsync_dir(root)
    remove(prev)
    print(f"checkpoint.keep_best: {metric} = {value:.6g} at step {step} is the best so far; "
          f"kept in {best}", flush=True)
    return True


# --- the manager ------------------------------------------------------------------------
@dataclass
class Part:
    """One file of every checkpoint beside Accelerate's: written by the main process
    into the temporary directory, read back on resume (every rank) when `load` is set."""

    name: str
    save: Callable[[Path], None]  # writes checkpoint_dir / name
    load: Callable[[Path], None] | None = None  # reads checkpoint_dir / name


class CheckpointManager:
    """Owns the checkpoint protocol and its timing. The loop calls `step(n, last=...)`
    after every optimizer step; the manager decides whether to save (every
    checkpoint.every steps and at the last step) and does it on every rank:
    `before_save` (all ranks: e.g. the cross-rank check and gathering per-rank state),
    Accelerate's state (all ranks), the parts (main), COMPLETE, rename, pruning."""

    def __init__(self, run_dir: Path, cfg: CheckpointConfig, accelerator: Any,
                 parts: list[Part], before_save: Callable[[], None] = lambda: None,
                 metrics: Callable[[int], dict[str, float]] = lambda step: {},
                 must_be_finite: Callable[[], Iterable[torch.Tensor]] = list):
        self.run_dir, self.cfg, self.acc = Path(run_dir), cfg, accelerator
        self.parts = parts
        self.before_save = before_save
        self.metrics = metrics  # step -> the values logged at that step (keep_best)
        self.must_be_finite = must_be_finite  # models, optimizer state, pending statistics
        self.main = accelerator.is_main_process

    def start(self) -> None:
        """Main process, at start-up: the remains of an interrupted save go."""
        if self.main:
            for p in clean_stale_tmp(self.run_dir):
                print(f"warning: removed the remains of an interrupted save: {p}", flush=True)

    def resume(self, setting: str) -> Path | None:
        """Loads the checkpoint `train.resume` names (auto: the newest complete one) into
        Accelerate's objects and every part; sets aside newer abandoned checkpoints.
        Returns its path, or None when the run starts fresh."""
        path, warnings = find_resume(self.run_dir, setting)
        if self.main:
            for w in warnings:
                print(f"warning: {w}", flush=True)
        if path is None:
            return None
        try:
            self.acc.load_state(str(path))
        except pickle.UnpicklingError as e:
            # weights_only refused an object: never retry with weights_only=False.
            raise CheckpointError(
                f"refusing to load {path}: it holds pickled objects beyond tensors "
                f"({str(e).splitlines()[-1][:120]}); it may not come from this trainer"
            ) from None
        for part in self.parts:
            if part.load is not None:
                part.load(path / part.name)
        return path

    def set_aside_newer(self, step: int) -> None:
        if self.main:
            for p in set_aside_newer(self.run_dir, step):
                print(f"warning: resumed from an older checkpoint; set aside {p}", flush=True)
        self.acc.wait_for_everyone()

    def step(self, step: int, last: bool) -> Path | None:
        """Called by every rank after every step; saves when it is time."""
        if step % self.cfg.every == 0 or last:
            return self.save(step)
        return None

    def save(self, step: int) -> Path:
        # Before anything else (the cross-rank check would call NaN bit patterns a
        # divergence of ranks): a non-finite state never reaches a checkpoint.
        if ranks.any_rank(nonfinite(self.must_be_finite(), self.acc.device)):
            raise Diverged(f"non-finite model, optimizer state or loss at step {step} "
                           "(checkpoint not written)")
        self.before_save()
        tmp = checkpoints_root(self.run_dir) / f"{TMP_PREFIX}{step:08d}"
        if self.main:
            runlock.ensure_held()  # another training owns the run directory: write nothing
            remove(tmp)  # start-up removed any .tmp left by a crash; this one came since
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        full = None
        try:
            self.acc.save_state(str(tmp))
            faults.inject("save", self.acc.process_index, step)
            if self.main:
                for part in self.parts:
                    part.save(tmp / part.name)
        except Exception as e:  # a full disk is one line for the user; the rest re-raises
            if not _disk_full(e, tmp):
                raise
            full = e
        # Every rank's files are on disk, or some rank's disk was full: all ranks agree
        # (save_state itself has no collective here, so a failed rank meets the others).
        if ranks.any_rank(torch.tensor(full is not None, device=self.acc.device)):
            if self.main:
                shutil.rmtree(tmp, ignore_errors=True)
            good = list_checkpoints(self.run_dir)[0]
            raise TrainingFailed(
                f"no space left on the device of {tmp.parent} while saving step {step}; the "
                f"partial save was removed, previous checkpoint "
                f"{good[-1].name if good else '(none)'} kept; free space, then launch again "
                "(train.resume=auto continues from it)")
        if self.main:
            for part in self.parts:
                part.save(tmp / part.name)
        self.acc.wait_for_everyone()  # every rank's files are on disk
        if self.main:
            runlock.ensure_held()  # nor rename or prune checkpoints beside another writer
            final = finalize(self.run_dir, tmp, step, self.cfg.keep, self.cfg.keep_every)
            if self.cfg.keep_best:
                keep_best(self.run_dir, final, step, self.cfg.keep_best,
                          str(best_direction(self.cfg.keep_best, self.cfg.keep_best_mode)),
                          self.metrics(step))
        self.acc.wait_for_everyone()
        return step_dir(self.run_dir, step)

    def roll_back(self) -> Path | None:
        """Every rank: loads the newest complete checkpoint (every saved one is finite),
        as on resume. None when there is none."""
        return self.resume("auto")


def _disk_full(e: BaseException, where: Path) -> bool:
    """Whether a failed save ran out of space. safetensors says so ("No space left");
    torch.save does not (torch 2.14: "[enforce fail at inline_container.cc] unexpected
    pos", no errno), so the filesystem is asked too: the failed write filled it, and
    less than 1 MiB free counts as full."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left" in str(seen) or "StorageFull" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        st = os.statvfs(where if where.exists() else where.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def save_tensors(module: nn.Module, path: Path) -> None:
    """A module's state as safetensors (CPU, contiguous)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
              str(path))


# --- loading for inference (infogan eval / sample) ---------------------------------------
GENERATOR_FILE, D_FILE = "generator.safetensors", "model_1.safetensors"
EMA_GENERATOR_FILE = "generator_ema.safetensors"  # written by ema.EMA when model.ema_* is on


@dataclass
class Loaded:
    path: Path
    cfg: Config
    space: Any  # LatentSpace
    G: nn.Module
    D: nn.Module | None
    step: int | None
    image_shape: tuple[int, int, int]
    generator_file: str = GENERATOR_FILE  # which G was loaded (EMA or raw)




def pick_device(name: str) -> torch.device:
    """--device of the inference commands: auto (cuda if available), cpu, cuda, cuda:N."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device here; use --device cpu")
    return torch.device(name)


def _not_a_checkpoint(path: Path, missing: str) -> ValueError:
    hint = "pass a checkpoints/step-N directory"
    try:
        good, _ = list_checkpoints(path) if path.is_dir() else ([], [])
    except CheckpointError:  # an unreadable checkpoints/ below it: no hint, same error
        good = []
    if good:
        hint = f"{path} is a run directory; pass one of its checkpoints, e.g. {good[-1]}"
    return ValueError(f"{path} is not a complete checkpoint (no {missing}); {hint}")


def check_files(path: Path, with_d: bool = True) -> None:
    """ValueError unless `path` holds what loading needs: config.yaml, train_state.json
    and generator.safetensors; with D also model_1.safetensors and COMPLETE."""
    need = ["config.yaml", STATE_FILE, GENERATOR_FILE]
    if with_d:
        need += [COMPLETE, D_FILE]
    if not path.is_dir():
        raise ValueError(f"checkpoint directory {path} does not exist")
    for name in need:
        if not (path / name).is_file():
            raise _not_a_checkpoint(path, name)


def read_holds(path: Path) -> tuple[list[int], LatentConfig, ModelConfig, int | None]:
    """(image shape, latent spec, architecture, step) that train_state.json records."""
    try:
        state = read_state(path)
        shape = [int(x) for x in state["image_shape"]]
        latent, model = LatentConfig(**state["latent"]), ModelConfig(**state["model"])
        step = int(state["step"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"{path / STATE_FILE} does not record image_shape, latent and model (written "
            "before checkpoints said what they hold, or damaged); use a checkpoint of this "
            "version, or resume the run once to write one"
        ) from None
    if len(shape) != 3:
        raise ValueError(f"{path / STATE_FILE}: image_shape {shape} is not [C, H, W]")
    return shape, latent, model, step


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))  # safetensors: never unpickles
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: unreadable safetensors file ({' '.join(str(e).split())})") \
            from None


def load_for_inference(path: str | Path, with_d: bool = True,
                       device: torch.device | str = "cpu", raw_generator: bool = False) -> Loaded:
    """G [+ D (model_1.safetensors)] of a checkpoint directory, built from what
    train_state.json says it holds, as plain modules in eval mode on `device`. G is the
    EMA generator (generator_ema.safetensors) when the checkpoint has one and
    `raw_generator` is False, else the trained G (generator.safetensors).
    ValueError (one line) for anything missing or mismatched."""
    from .latent import LatentSpace
    from .models import build_models

    path = Path(path)
    check_files(path, with_d)
    cfg = read_config(path)
    shape, latent, model, step = read_holds(path)
    space = LatentSpace(latent)
    G, D = build_models(model, space.input_dim, space.q_dim, tuple(shape))
    g_file = GENERATOR_FILE
    if not raw_generator and (path / EMA_GENERATOR_FILE).is_file():
        g_file = EMA_GENERATOR_FILE
    parts = [(G, g_file)] + ([(D, D_FILE)] if with_d else [])
    for module, name in parts:
        state = _read_weights(path / name)
        own = module.state_dict()
        if own.keys() != state.keys() or any(own[k].shape != state[k].shape for k in own):
            raise ValueError(
                f"{path / name}: weights do not fit what {STATE_FILE} records (model.arch="
                f"{model.arch}, width {model.width}, latent {space.input_dim} -> q "
                f"{space.q_dim}, images {shape})"
            )
        if any(not torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
            raise ValueError(
                f"{path / name}: holds non-finite weights (NaN or inf), the state of a run "
                "that diverged; use an earlier checkpoint")
        module.load_state_dict(state)
        module.to(device).eval()
    return Loaded(path, cfg, space, G, D if with_d else None, step, tuple(shape), g_file)
