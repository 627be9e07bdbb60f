"""Reading a config: a YAML file, then `section.key=value` overrides, each value checked
against the schema's type (converted where lossless), then `Config.validate()`. Choice
keys (model.arch, ...) are checked against their registries above this package, by
`infogan_dist.choices.load_config`, which entry points use.

YAML quirks handled here: 1.1 reads off/no/on/yes as booleans (mapped back for choice
fields) and `1e-3` as a string (read as a float for float fields); a key given twice in
one mapping is refused (PyYAML would silently keep the last).

Hostile files are bounded: a config file is a UTF-8 text file of at most MAX_FILE_BYTES,
and a document (a file or one override's value) may expand to at most MAX_NODES YAML
nodes once its aliases are followed: an alias bomb (`b: [*a, *a, ...]` nested ten deep)
is a few hundred bytes that grow to gigabytes when walked. Counted on the composed
graph, before anything is constructed; each node is counted once per path to it.
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


MAX_FILE_BYTES = 1_000_000  # a config is a few KB
MAX_NODES = 10_000  # YAML nodes of one document with its aliases expanded (a config: ~200)


def _expanded_nodes(root: yaml.Node, limit: int) -> int:
    """Nodes of the document with every alias expanded, counting up to just past `limit`
    (an alias that contains itself counts as past it)."""
    memo: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in memo:
            return memo[id(node)]
        memo[id(node)] = limit + 1  # while inside it: a node reached again is recursive
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                break
        memo[id(node)] = min(total, limit + 1)
        return memo[id(node)]

    return size(root)


def read_yaml(text: str) -> Any:
    """One YAML document (SafeLoader, no duplicate keys) of at most MAX_NODES nodes with
    its aliases expanded; ConfigError beyond."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_NODES) > MAX_NODES:
            raise ConfigError(f"expands to more than {MAX_NODES} YAML nodes through its "
                              "aliases (an alias bomb?); write the values out")
        return loader.construct_document(node)
    finally:
        loader.dispose()


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
        value = read_yaml(raw) if raw.strip() else ""
    except ConfigError as e:
        raise ConfigError(f"override {key.strip()}: {e}") from None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file, then overrides, then validation of everything but the choice keys
    (infogan_dist.choices.load_config adds those). Raises ConfigError (one line)."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        try:
            data = read_yaml(read_config_text(path))
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


def read_config_text(path: Path) -> str:
    """The text of a config file; ConfigError (one line, without the 'config file X'
    prefix the caller adds) when it is not a small UTF-8 text file."""
    if not path.exists():
        raise ConfigError("not found; pass --config configs/NAME.yaml")
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        raise ConfigError(f"is {what}; pass a YAML file, e.g. --config configs/NAME.yaml")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"is {size} bytes, more than a config ({MAX_FILE_BYTES} at "
                              "most): is it the right file?")
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot be read ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"is not a text file (not UTF-8 at byte {e.start}); pass a YAML "
                          "file") from None


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
