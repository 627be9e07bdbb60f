"""One config tree: the schema (schema.py), reading YAML and overrides (load.py), and
what may change on resume (resume.py). Imports nothing of the package but errors.py:
choice keys are checked against their registries by infogan_dist/choices.py."""

from ..errors import ConfigError
from .load import config_from_dict, load_config, parse_override, read_yaml, save_config
from .resume import FROZEN_ON_RESUME, frozen_differences, resume_conflicts
from .schema import (
    CheckpointConfig,
    Config,
    DataConfig,
    DistConfig,
    LatentConfig,
    LogConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "FROZEN_ON_RESUME", "CheckpointConfig", "Config", "ConfigError", "DataConfig",
    "DistConfig", "LatentConfig", "LogConfig", "LossConfig", "ModelConfig", "OptimConfig",
    "RunConfig", "TrainConfig", "config_from_dict", "frozen_differences", "load_config",
    "parse_override", "read_yaml", "resume_conflicts", "save_config",
]
