"""Name → constructor registries with front doors (``create_model``, ``list_models``, ...)."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator

from .errors import ConfigError


class Registry:
    """A mapping from names (and aliases) to constructors.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("lenet5")
    ... def lenet5(num_classes=10): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._aliases: dict[str, str] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = (), **meta: Any):
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, fn, aliases=aliases, **meta)
            return fn

        return deco

    def add(self, name: str, fn: Callable[..., Any], *, aliases: tuple[str, ...] = (), **meta: Any) -> None:
        for key in (name, *aliases):
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
        self._entries[name] = fn
        self._meta[name] = dict(meta)
        for alias in aliases:
            self._aliases[alias] = name

    def resolve(self, name: str) -> str:
        """Canonical name for ``name`` (an entry or an alias); a :class:`ConfigError` lists the valid names."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        valid = self.names(include_aliases=True)
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown {self.kind} {name!r}{hint}; valid: {', '.join(valid)}")

    def get(self, name: str) -> Callable[..., Any]:
        return self._entries[self.resolve(name)]

    def meta(self, name: str) -> dict[str, Any]:
        return self._meta[self.resolve(name)]

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self, include_aliases: bool = False) -> list[str]:
        names = list(self._entries)
        if include_aliases:
            names += list(self._aliases)
        return sorted(names)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
