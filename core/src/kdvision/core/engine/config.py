"""Config as data: a dataclass per method, YAML files, original command-line flags and ``--set key=value``.

Precedence (later wins): dataclass defaults → script preset → ``--config FILE.yaml`` → flags given on the command
line → ``--set key=value``. Every hyper-parameter has exactly one home: its dataclass field.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError


@dataclasses.dataclass
class RunConfig:
    """Engine settings shared by every entry script."""

    output: str = "runs/latest"
    data_root: str | None = None
    device: str = "auto"
    seed: int = 1
    resume: str | None = None  # "auto" = <output>/checkpoints/last.pt, or a path
    amp: bool = False
    visdom: str | None = None  # URL of a visdom server; None = off
    epochs: int = 1
    iters_per_epoch: int = 50
    log_interval: int = 10
    eval_every: int = 1
    deterministic: bool = False
    channels_last: bool = False
    compile: bool = False
    progress: bool | None = None  # None = when stderr is a terminal
    verbose: bool = False


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _coerce(cls: type, key: str, value: Any) -> Any:
    """Coerce a YAML/--set value to the type of ``cls.key`` (ints for floats fields are fine, '1e-3' strings too)."""
    hints = typing.get_type_hints(cls)
    tp = hints[key]
    args = typing.get_args(tp)
    if value is None:
        return None
    base = [a for a in args if a is not type(None)] if args and type(None) in args else [tp]
    target = base[0] if len(base) == 1 else None
    origin = typing.get_origin(target) if target is not None else None
    try:
        if target is bool and isinstance(value, str):
            low = value.lower()
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(value)
            return low in ("true", "1", "yes", "on")
        if target in (int, float) and not isinstance(value, bool):
            v = float(value) if target is float else int(value)
            return v
        if target is str:
            return str(value)
        if origin in (list, tuple):
            items = value if isinstance(value, (list, tuple)) else yaml.safe_load(f"[{str(value).strip('[]')}]")
            inner = typing.get_args(target)[0] if typing.get_args(target) else None
            items = [inner(x) for x in items] if inner in (int, float, str) else list(items)
            return items if origin is list else tuple(items)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value {value!r} for {key} (expected {tp})") from exc
    return value


def apply_overrides(cfg: Any, overrides: dict[str, Any], source: str) -> Any:
    valid = field_names(type(cfg))
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in valid:
            raise ConfigError(f"unknown config key {key!r} in {source}; valid: {', '.join(valid)}")
        setattr(cfg, key, _coerce(type(cfg), key, value))
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def resolve_config(cls: type, preset: dict[str, Any], args: argparse.Namespace) -> Any:
    """Build the resolved config from the layers described in the module docstring."""
    cfg = cls()
    apply_overrides(cfg, preset, "the preset")
    ns = vars(args)
    if ns.get("config"):
        apply_overrides(cfg, load_yaml(ns["config"]), ns["config"])
    given = {k: v for k, v in ns.items() if k in field_names(cls)}
    apply_overrides(cfg, given, "the command line")
    if ns.get("set"):
        apply_overrides(cfg, parse_set(ns["set"]), "--set")
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
