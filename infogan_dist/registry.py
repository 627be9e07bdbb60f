"""Registries: one mapping per choice (models, adversarial losses, loss terms, update
rules, data modes). A config value naming a choice is checked against its registry, so
the allowed values are whatever is registered, and an unknown name is a config error
naming the key and the registered names, never a silent fallback.

    MODELS = Registry("model.arch")

    @MODELS.register("mlp")
    def mlp_models(...): ...

Registering is the only edit a new choice needs (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, key: str):
        self.key = key  # the config key whose value names an entry, e.g. "model.arch"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: registers the decorated class or function under `name`."""

        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.key}: {name!r} is registered twice")
        self._entries[name] = obj

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __getitem__(self, name: str) -> T:
        """The entry; ConfigError (one line, naming the key) for an unregistered name."""
        if name not in self._entries:
            raise ConfigError(
                f"config key {self.key}: bad value {name!r}; registered: {', '.join(self._entries)}"
            )
        return self._entries[name]
