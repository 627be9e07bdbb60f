"""What the explorer serves: the complete checkpoints of a run directory (re-read at most
once a second, so a checkpoint that a running training finishes appears without a
restart) or one named checkpoint, each under an id; and their generators, loaded on
first use. Checkpoints are read as `infogan sample` reads them (checkpoint.py:
safetensors and JSON, never pickle)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import (
    EMA_GENERATOR_FILE,
    CheckpointError,
    Loaded,
    check_files,
    checkpoint_problem,
    list_checkpoints,
    load_for_inference,
    read_holds,
)
from ..latent import LatentSpace

REFRESH_S = 1.0  # the run directory is listed again at most this often (seconds)
LOADED_MAX = 4  # generators kept in memory (checkpoint x EMA/raw), least recently used out


@dataclass(frozen=True)
class Entry:
    """One checkpoint the page can pick: `id` is all a request ever names."""

    id: str  # the directory name, e.g. step-00000300
    path: Path
    step: int | None
    space: LatentSpace
    has_ema: bool  # generator_ema.safetensors is there (the EMA/raw switch)


def resolve(target: Path) -> tuple[Path | None, Path | None]:
    """(run directory to watch, or None; the checkpoint named, or None) of the command's
    argument. ValueError, one line, for anything that is neither a run directory with a
    complete checkpoint nor a complete checkpoint."""
    hint = ("pass a run directory (runs/NAME) or a complete checkpoint "
            "(runs/NAME/checkpoints/step-N)")
    if not target.exists():
        raise ValueError(f"{target} does not exist; {hint}")
    if not target.is_dir():
        raise ValueError(f"{target} is not a directory; {hint}")
    if target.name == "checkpoints" and not (target / "COMPLETE").exists():
        target = target.parent  # runs/NAME/checkpoints: the run directory meant
    if (target / "checkpoints").exists():
        try:
            good, bad = list_checkpoints(target)
        except CheckpointError as e:
            raise ValueError(str(e)) from None
        if not good:
            raise ValueError(
                f"{target} has no complete checkpoint yet ({len(bad)} incomplete in "
                f"{target / 'checkpoints'}); wait for the first one (checkpoint.every) or "
                "pass a complete checkpoint directory")
        return target, None
    problem = checkpoint_problem(target)
    if problem:
        raise ValueError(f"{target} is not a complete checkpoint ({problem}) nor a run "
                         f"directory (no checkpoints/); {hint}")
    check_files(target, with_d=False)
    return (target.parent.parent if target.parent.name == "checkpoints" else None), target


def _entry(path: Path) -> Entry:
    _, latent, _, step = read_holds(path)
    return Entry(path.name, path, step, LatentSpace(latent),
                 (path / EMA_GENERATOR_FILE).is_file())


class Catalog:
    """The checkpoints on offer and their loaded generators; safe to use from the
    server's request threads."""

    def __init__(self, target: Path, device: torch.device):
        self.run_dir, self.named = resolve(Path(target))
        self.device = device
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._listed_at = -REFRESH_S
        self._loaded: OrderedDict[tuple[str, bool], Loaded] = OrderedDict()
        self._load_lock = threading.Lock()
        # the checkpoint shown first must be readable: its error is the command's error
        _entry(self.named or list_checkpoints(self.run_dir)[0][-1])  # type: ignore[arg-type]
        self.refresh(force=True)

    # --- the list ---------------------------------------------------------------------
    def refresh(self, force: bool = False) -> dict[str, Entry]:
        """The entries, oldest first, the run directory re-listed when REFRESH_S passed."""
        with self._lock:
            if force or time.monotonic() - self._listed_at >= REFRESH_S:
                self._listed_at = time.monotonic()
                paths = []
                if self.run_dir is not None:
                    try:
                        paths = list_checkpoints(self.run_dir)[0]
                    except CheckpointError:
                        paths = [e.path for e in self._entries.values()]  # keep what we had
                if self.named is not None and self.named not in paths:
                    paths.append(self.named)
                entries = {}
                for p in paths:
                    old = self._entries.get(p.name)
                    try:
                        entries[p.name] = old if old and old.path == p else _entry(p)
                    except ValueError:
                        continue  # a checkpoint this version cannot read is not offered
                self._entries = entries
            return dict(self._entries)

    def default_id(self) -> str:
        """The named checkpoint, else the newest."""
        entries = self.refresh()
        if self.named is not None and self.named.name in entries:
            return self.named.name
        return list(entries)[-1]

    # --- generators -------------------------------------------------------------------
    def generator(self, entry: Entry, raw: bool) -> Loaded:
        """The entry's G (its EMA unless `raw`), loaded on first use. ValueError (one
        line) when its files cannot be loaded."""
        key = (entry.id, raw or not entry.has_ema)
        with self._load_lock:
            loaded = self._loaded.get(key)
            if loaded is None or loaded.path != entry.path:
                loaded = load_for_inference(entry.path, with_d=False, device=self.device,
                                            raw_generator=raw)
                self._loaded[key] = loaded
                while len(self._loaded) > LOADED_MAX:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(key)
            return loaded
