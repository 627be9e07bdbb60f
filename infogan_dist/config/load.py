"""Reading a config: a YAML file, then `section.key=value` overrides, each value checked
against the schema's type (converted where lossless), then `Config.validate()`. Choice
keys (model.arch, ...) are checked against their registries above this package, by
`infogan_dist.choices.load_config`, which entry points use.

YAML quirks handled here: 1.1 reads off/no/on/yes as booleans (mapped back for choice
fields) and `1e-3` as a string (read as a float for float fields); a key given twice in
one mapping is refused (PyYAML would silently keep the last).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .. import redact
from ..errors import ConfigError
from .schema import Config


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"line {line}: key {key!r} is given twice; keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp`; returns it, converted where lossless."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool):
            # YAML 1.1 reads off/no/on/yes as booleans: map back to the word allowed here.
            words = ("off", "no", "false") if value is False else ("on", "yes", "true")
            value = next((w for w in words if w in allowed), value)
        if value not in allowed:
            raise ConfigError(
                f"config key {key}: bad value {value!r}; allowed: {', '.join(map(str, allowed))}"
            )
        return value
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: a mapping like "
                              "{name: 0.5}")
        return {_coerce(k, key_tp, key): _coerce(v, item_tp, f"{key}.{k}")
                for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: a list like [1, 2]")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unions are not supported in the config ({key})")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: true, false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: a number")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key {key}: bad value {value!r}; allowed: a string")
        return str(value)
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _section_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _apply(cfg: Config, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    sections = _section_types(Config)
    if len(parts) != 2 or parts[0] not in sections:
        raise ConfigError(
            f"{source}: unknown config key {key!r}; sections: {', '.join(sections)} "
            "(write section.key=value)"
        )
    section_name, name = parts
    section = getattr(cfg, section_name)
    fields = _section_types(type(section))
    if name not in fields:
        raise ConfigError(
            f"{source}: unknown config key {key!r}; keys of {section_name}: "
            f"{', '.join(fields)}"
        )
    setattr(section, name, _coerce(value, fields[name], key))


def _flatten(data: Any, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    flat = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of keys")
        for name, value in values.items():
            flat[f"{section}.{name}"] = value
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """`section.key=value`; the value is read as YAML, so 1e-3, [10, 10] and true work."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file, then overrides, then validation of everything but the choice keys
    (infogan_dist.choices.load_config adds those). Raises ConfigError (one line)."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; pass --config configs/NAME.yaml")
        try:
            data = read_yaml(path.read_text())
        except ConfigError as e:
            raise ConfigError(f"config file {path} {e}") from None
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            where = f" line {line + 1}" if line is not None else ""
            raise ConfigError(f"config file {path}{where}: not valid YAML") from None
        for key, value in _flatten(data, str(path)).items():
            _apply(cfg, key, value, str(path))
    for text in overrides or []:
        key, value = parse_override(text)
        _apply(cfg, key, value, "command line")
    cfg.validate()
    return cfg


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    cfg = Config()
    for key, value in _flatten(data, source).items():
        _apply(cfg, key, value, source)
    cfg.validate()
    return cfg


def dump_config(cfg: Config) -> str:
    """The config as YAML, URL credentials masked (redact.py): what may be written or shown."""
    return yaml.safe_dump(redact.tree(cfg.to_dict()), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(dump_config(cfg))
