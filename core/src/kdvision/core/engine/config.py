"""Config as data: one dataclass per recipe, whose fields are the one home of every hyper-parameter.

A field carries its help text, its choices and bounds, and its command-line spellings (:func:`param`); the entry
script's argparse is generated from the fields (:func:`add_config_arguments`), with a per-script alias table for
the original projects' spellings (``--lr_S``, ``--batch-size``, ``--epoch_itrs``...). ``--help`` shows each default
(the script's preset value, else the field's).

Precedence (later wins): field defaults → script preset → ``--config FILE.yaml`` → flags → ``--set key=value``.
A value behaves the same whichever layer it comes from: every layer goes through the same coercion, and
:meth:`Config.validate` (choices, bounds, cross-field rules) runs on the result, before ``--dry-run`` returns.

YAML presets are flat mappings of field names; ``_base_: other.yaml`` (a path relative to the file, or a list of
them) inherits from other files, the including file winning. The ``config.yaml`` a run writes is such a file: passed
back with ``--config`` it reproduces the run (its ``_run`` record and the run-control keys ``output``/``resume`` are
not applied).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import ConfigError

#: Keys of a written config.yaml that describe the run rather than configure it (not applied by ``--config``).
RUN_CONTROL = ("output", "resume")


def param(default: Any = dataclasses.MISSING, help: str = "", *, choices: Iterable[Any] | None = None,
          flags: Iterable[str] = (), min: float | None = None, max: float | None = None,
          factory: Any = dataclasses.MISSING, cli: bool = True) -> Any:
    """A config field with its documentation: help text, allowed values, bounds and extra flag spellings.

    ``flags``: spellings besides ``--<name>`` (every script); ``cli=False``: settable by ``--config``/``--set`` only.
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "flags": tuple(flags),
            "min": min, "max": max, "cli": cli}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Config:
    """Mixin of every recipe config: field-driven validation; subclasses add cross-field rules in ``validate``."""

    def validate(self) -> None:
        validate_fields(self)


def validate_fields(cfg: Any) -> None:
    """Choices and bounds declared with :func:`param`, one line per bad value."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        meta = f.metadata
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        choices = meta.get("choices")
        for v in values:
            if choices is not None and v not in choices:
                raise ConfigError(f"invalid {f.name}: {v!r} (valid: {', '.join(map(str, choices))})")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if meta.get("min") is not None and v < meta["min"]:
                    raise ConfigError(f"invalid {f.name}: {v!r} (must be >= {meta['min']:g})")
                if meta.get("max") is not None and v > meta["max"]:
                    raise ConfigError(f"invalid {f.name}: {v!r} (must be <= {meta['max']:g})")


@dataclasses.dataclass
class RunConfig(Config):
    """Engine settings shared by every entry script."""

    output: str | None = param(None, "run directory (default: a fresh runs/<script>/<date-time>)")
    data_root: str | None = param(None, "dataset root", flags=("--data-root",))
    device: str = param("auto", "cpu | cuda | cuda:N | auto")
    seed: int = param(1, "random seed")
    resume: str | None = param(None, "continue from CKPT, or from <output>/checkpoints/last.pt without a path "
                               "(with no --output: the latest run of this script)")
    amp: bool = param(False, "mixed precision (bf16 autocast)")
    visdom: str | None = param(None, "log to a Visdom server at URL")
    epochs: int = param(1, "epochs", min=1)
    iters_per_epoch: int | None = param(None, "iterations per epoch (the unit the original scripts call an epoch; "
                                        "default: the recipe's)", flags=("--iters-per-epoch",), min=1)
    log_interval: int = param(10, "steps between logs", flags=("--log-interval",), min=1)
    eval_every: int = param(1, "epochs between evaluations", flags=("--eval-every",), min=1)
    deterministic: bool = param(False, "deterministic cuDNN (slower)")
    channels_last: bool = param(False, "channels_last memory format", flags=("--channels-last",))
    compile: bool = param(False, "torch.compile the trained players")
    progress: bool | None = param(None, "progress bars (default: when stderr is a terminal)")
    verbose: bool = param(False, "verbose logging")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """The evaluated field annotations of a config class (evaluated once: string annotations cost a compile each)."""
    return typing.get_type_hints(cls)


def _target_type(cls: type, key: str) -> Any:
    tp = _hints(cls)[key]
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else tp
    return tp


def _coerce(cls: type, key: str, value: Any) -> Any:
    """Coerce a YAML/--set/flag value to the type of ``cls.key`` ('1e-3' strings and ints for floats are fine)."""
    if value is None:
        return None
    target = _target_type(cls, key)
    origin = typing.get_origin(target)
    try:
        if target is bool:
            if isinstance(value, str):
                low = value.lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return low in ("true", "1", "yes", "on")
            if value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if target is float and not isinstance(value, bool):
            return float(value)
        if target is int and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if target is str:
            if isinstance(value, (dict, list)):
                raise ValueError(value)
            return str(value)
        if origin in (list, tuple):
            items = parse_list(value)
            inner = typing.get_args(target)[0] if typing.get_args(target) else None
            items = [inner(x) for x in items] if inner in (int, float, str) else list(items)
            return items if origin is list else tuple(items)
    except (TypeError, ValueError) as exc:
        name = getattr(target, "__name__", str(target))
        raise ConfigError(f"invalid value {value!r} for {key} (expected {name})") from exc
    return value


def parse_list(value: Any) -> list:
    """``[1, 2]``, ``"1,2"``, ``"[1,2]"`` and ``"[1, 2]"`` → a list (the shells' and YAML's spellings)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    text = str(value).strip()
    if not text.strip("[]").strip():
        return []
    return list(yaml.safe_load(f"[{text.strip('[]')}]"))


def apply_overrides(cfg: Any, overrides: dict[str, Any], source: str) -> Any:
    valid = field_names(type(cfg))
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in valid:
            raise ConfigError(f"unknown config key {key!r} in {source}; valid: {', '.join(valid)}")
        setattr(cfg, key, _coerce(type(cfg), key, value))
    return cfg


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A flat YAML mapping, with ``_base_`` inheritance (relative paths, the including file wins)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: _base_ inheritance loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    bases = data.pop("_base_", None)
    if bases is None:
        return data
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else list(bases):
        merged.update(load_yaml(path.parent / base, _seen + (path.resolve(),)))
    return {**merged, **data}


def config_file_values(path: str | Path) -> dict[str, Any]:
    """The config keys of a ``--config`` file (a run's written config.yaml included: its record is skipped)."""
    data = load_yaml(path)
    return {k: v for k, v in data.items() if k != "_run" and k not in RUN_CONTROL}


def parse_set(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip().replace("-", "_")] = raw
    return out


def key_value_pairs(opts: list[str]) -> dict[str, Any]:
    """Trailing ``KEY VALUE`` pairs (yacs' ``merge_from_list``, Detectron2's opts): values parsed as Python literals
    where they are, kept as strings otherwise."""
    import ast

    if len(opts) % 2:
        raise ConfigError(f"overrides come as KEY VALUE pairs; {opts[-1]!r} has no value")
    flat: dict[str, Any] = {}
    for key, raw in zip(opts[::2], opts[1::2]):
        try:
            flat[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            flat[key] = raw
    return flat


def user_values(args: argparse.Namespace, fields: Iterable[str]) -> dict[str, Any]:
    """Every value the user gave, by field: ``--config`` file, then flags, then ``--set`` (later wins)."""
    ns = vars(args)
    fields = set(fields)
    out: dict[str, Any] = {}
    if ns.get("config"):
        out.update(config_file_values(ns["config"]))
    out.update({k: v for k, v in ns.items() if k in fields})
    if ns.get("set"):
        out.update(parse_set(ns["set"]))
    return out


def resolve(cls: type, preset: dict[str, Any], args: argparse.Namespace) -> tuple[Any, set[str]]:
    """The resolved, validated config and the set of keys the user gave (in any layer)."""
    cfg = cls()
    apply_overrides(cfg, preset, "the preset")
    ns = vars(args)
    if ns.get("config"):
        apply_overrides(cfg, config_file_values(ns["config"]), ns["config"])
    apply_overrides(cfg, {k: v for k, v in ns.items() if k in field_names(cls)}, "the command line")
    if ns.get("set"):
        apply_overrides(cfg, parse_set(ns["set"]), "--set")
    given = set(user_values(args, field_names(cls)))
    return cfg, given


def resolve_config(cls: type, preset: dict[str, Any], args: argparse.Namespace) -> Any:
    return resolve(cls, preset, args)[0]


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# -- argparse generated from the fields ------------------------------------------------------------------------------
def _metavar(cls: type, f: dataclasses.Field) -> str:
    target = _target_type(cls, f.name)
    if typing.get_origin(target) in (list, tuple):
        return "A,B,..."
    return {int: "N", float: "X"}.get(target, f.name.upper())


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v)) or "[]"
    return "none" if v is None else str(v)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, preset: dict[str, Any] | None = None,
                         aliases: dict[str, Iterable[str]] | None = None, skip: Iterable[str] = (),
                         groups: dict[str, str] | None = None, title: str | None = None) -> None:
    """One flag per field of ``cls``: ``--<name>``, the field's ``flags`` and the script's ``aliases[name]``.

    Booleans get ``--x`` and ``--no-x``; lists accept ``1,2``, ``[1,2]`` and ``[1, 2]``. Help shows the default
    that applies to this script (``preset`` value, else the field's). Fields in ``skip`` are left out (a script may
    declare its own flag for them).
    """
    preset = preset or {}
    aliases = aliases or {}
    skip = set(skip)
    made: dict[str, argparse._ArgumentGroup] = {}
    default_group = parser.add_argument_group(title) if title else parser
    taken = {s for a in parser._actions for s in a.option_strings}
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        meta = f.metadata
        group_title = (groups or {}).get(f.name)
        group = default_group
        if group_title:
            group = made.get(group_title) or made.setdefault(group_title, parser.add_argument_group(group_title))
        default = preset.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        spellings = [f"--{f.name}", *meta.get("flags", ()), *aliases.get(f.name, ())]
        spellings = list(dict.fromkeys(s for s in spellings if s not in taken))
        if not spellings:
            continue
        taken.update(spellings)
        helptext = meta.get("help", "")
        choices = meta.get("choices")
        if choices is not None and not isinstance(default, (list, tuple)):
            helptext += f" {{{', '.join(map(str, choices))}}}"
        if "default:" not in helptext:  # a help text that states its default in words keeps it
            helptext = f"{helptext} (default: {_show(default)})"
        helptext = helptext.strip().replace("%", "%%")
        target = _target_type(cls, f.name)
        if target is bool:
            group.add_argument(*spellings, dest=f.name, action="store_const", const=True, help=helptext)
            negative = f"--no-{f.name.replace('_', '-')}"
            if negative not in taken:
                taken.add(negative)
                group.add_argument(negative, dest=f.name, action="store_const", const=False, help=argparse.SUPPRESS)
            continue
        group.add_argument(*spellings, dest=f.name, metavar=_metavar(cls, f), help=helptext,
                           type=lambda v, _k=f.name: _coerce(cls, _k, v))
