"""What may change when a run resumes. Keys under FROZEN_ON_RESUME make an existing
checkpoint meaningless (architecture, latent spec, update rule) or its continuation no
longer the same run (the seed keys the data order and every latent draw; the data mode
decides what the saved data position means): resuming with another value is refused
before any process group starts. Everything else may change (e.g. train.max_steps)."""

from __future__ import annotations

from .load import _flatten
from .schema import Config

FROZEN_ON_RESUME = ("model", "latent", "train.update", "run.seed", "data.mode")


def frozen_differences(old: Config, new: Config) -> list[str]:
    """Keys under FROZEN_ON_RESUME whose values differ; empty when resuming is safe."""
    a, b = _flatten(old.to_dict(), "old"), _flatten(new.to_dict(), "new")
    return sorted(
        k for k in a
        if any(k == f or k.startswith(f + ".") for f in FROZEN_ON_RESUME) and a[k] != b.get(k)
    )


def resume_conflicts(old: Config, new: Config) -> list[str]:
    """frozen_differences as 'key (old -> new)' for the one-line refusal."""
    flat_old, flat_new = _flatten(old.to_dict(), "old"), _flatten(new.to_dict(), "new")
    return [f"{k} ({flat_old[k]!r} -> {flat_new.get(k)!r})" for k in frozen_differences(old, new)]
