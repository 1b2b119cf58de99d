"""Name → constructor registries with front doors (``create_model``, ``list_models``, ...)."""
from __future__ import annotations

import difflib
import warnings
from typing import Any, Callable, Iterator

from .errors import ConfigError

PLUGIN_GROUP = "kdvision.plugins"
_plugins_loaded = False


def load_plugins() -> None:
    """Import every installed task subpackage that registers entries (entry-point group ``kdvision.plugins``).

    Runs once, on the first lookup that misses or the first listing, so that ``create_model("deeplabv3_resnet50")``
    works without importing ``kdvision.segmentation`` first; core itself never imports a task subpackage by name.
    A plugin that fails to import is reported with a warning, not fatal: the other registries stay usable.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken optional plugin must not break core
            warnings.warn(f"kdvision plugin {ep.name!r} ({ep.value}) failed to import: {exc}", stacklevel=2)


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
        for attempt in range(2):
            if name in self._entries:
                return name
            if name in self._aliases:
                return self._aliases[name]
            if attempt == 0:
                load_plugins()
        valid = self.names(include_aliases=True)
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown {self.kind} {name!r}{hint}; valid: {', '.join(valid)}")

    def get(self, name: str) -> Callable[..., Any]:
        return self._entries[self.resolve(name)]

    def meta(self, name: str) -> dict[str, Any]:
        return self._meta[self.resolve(name)]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build entry ``name``; the object is tagged with its canonical name as ``kd_name`` where it allows."""
        key = self.resolve(name)
        obj = self._entries[key](**kwargs)
        try:
            obj.kd_name = key
        except AttributeError:  # objects without a __dict__ (e.g. plain functions' results) stay untagged
            pass
        return obj

    def names(self, include_aliases: bool = False, where: Callable[[dict[str, Any]], bool] | None = None) -> list[str]:
        """Sorted names (and aliases); ``where(meta)`` keeps the entries whose metadata it accepts."""
        load_plugins()
        names = [n for n in self._entries if where is None or where(self._meta[n])]
        if include_aliases:
            kept = set(names)
            names += [alias for alias, target in self._aliases.items() if target in kept]
        return sorted(names)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
