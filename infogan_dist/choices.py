"""Choice keys against their registries: the one place where the config meets what is
registered. It sits above both: the schema (config/) imports no registry, and the
registries (models, losses, terms, updates, data, scores) know nothing of this check.
Importing this module fills every built-in registry; an extension registers before the
config is loaded (tests/integration/test_extending.py).

Entry points load configs with `load_config` here (train.py, the CLI commands, the
benchmarks), configs saved in checkpoints go through `config_from_dict` here
(checkpoint.read_config), and preflight checks again, so an unregistered name is a
one-line ConfigError before any process group starts. Choice keys are the schema fields
made with `choice(...)` (their metadata names where the registry is defined) plus the
names in loss.extra (the registered extension loss terms), and what an enabled extension
needs of the config (updates.check_extensions). The extensions shipped in
infogan_dist/extensions/ register when this module imports that package.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from . import (
    config,
    extensions,  # noqa: F401 (registers the shipped extension terms)
)
from .config import Config, ConfigError
from .data import SOURCES
from .losses import ADVERSARIAL
from .models import MODELS
from .registry import Registry
from .scores import METRICS
from .terms import LOSS_TERMS, extension_terms
from .updates import ADAM, UPDATE_RULES, check_extensions

# The registry of every choice key, by the key its values configure.
REGISTRIES: dict[str, Registry[Any]] = {
    r.key: r for r in (MODELS, ADVERSARIAL, UPDATE_RULES, ADAM, SOURCES, METRICS)
}


def choice_fields() -> list[tuple[str, dataclasses.Field]]:
    """("section.key", field) of every schema field that names a registered choice."""
    return [(f"{section.name}.{f.name}", f)
            for section in dataclasses.fields(Config)
            for f in dataclasses.fields(section.default_factory)  # type: ignore[arg-type]
            if "registry" in f.metadata]


def allowed(key: str) -> list[str]:
    """The registered names a choice key (or loss.extra) allows."""
    return extension_terms() if key == "loss.extra" else REGISTRIES[key].names()


def check_choices(cfg: Config) -> Config:
    """Every choice value of `cfg` is registered; ConfigError (one line naming the key, the
    value and the registered names) otherwise. Returns `cfg`."""
    for key, _ in choice_fields():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        for item in value if isinstance(value, list) else [value]:
            REGISTRIES[key][item]  # raises the registry's one-line ConfigError
    for name in cfg.loss.extra:
        if name not in extension_terms():
            raise ConfigError(
                f"config key loss.extra: bad value {name!r}; allowed: names of extension loss "
                f"terms: {', '.join(extension_terms()) or 'none'} (registered terms: "
                f"{', '.join(LOSS_TERMS)})")
    check_extensions(cfg)  # what the enabled extensions need; parts and optimizers unique
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """config.load_config (YAML file, overrides, validation), then the choice keys."""
    return check_choices(config.load_config(path, overrides))


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """config.config_from_dict, then the choice keys."""
    return check_choices(config.config_from_dict(data, source))
