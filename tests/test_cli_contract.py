"""Every entry script's flag table: each flag, ``--set key=value`` and a ``--config`` file key reach the same config
field with the same value, and every bad value of a field with choices is a one-line error, the same under
``--dry-run`` (the config is validated before the dry run returns), whichever layer it comes from.

The tests run in-process over the :data:`ENTRIES` registry, so a new entry script is covered for free.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest
import yaml

from kdvision.core.engine.config import RUN_CONTROL, _target_type
from kdvision.core.errors import ConfigError
from kdvision.core.recipes.base import ENTRIES

from kdv_testutils import import_entry_modules

import_entry_modules()

#: The least a script needs on its command line before its config resolves (the data-free scripts pick their preset by
#: ``--method``; rgal.py refuses a run in which every synthesis weight is 0, as in RGAL main.py's defaults).
BASE_ARGV = {"kd_datafree": ["--method", "cmi"], "datafree_kd": ["--method", "cmi"], "rgal": ["--adv", "1"]}
SCRIPTS = sorted(ENTRIES)
#: Fields a script accepts, records as given, and deliberately leaves at their default with a warning.
NO_EFFECT = {("rgal", "act")}  # RGAL's main.py parses --act but never uses it


def base_argv(script: str) -> list[str]:
    return list(BASE_ARGV.get(script, []))


def field_map(script: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(ENTRIES[script].recipe.config_class)}


def probe_value(cls: type, f: dataclasses.Field, current: typing.Any) -> typing.Any:
    """A valid value of field ``f`` that differs from ``current`` (the value the script resolves to by default)."""
    target = _target_type(cls, f.name)
    choices = f.metadata.get("choices")
    origin = typing.get_origin(target)
    if origin in (list, tuple):
        inner = (typing.get_args(target) or (str,))[0]
        if choices:
            options = [[c] for c in choices]
        else:
            options = {int: [[3, 5], [2]], float: [[0.5, 0.25], [0.75]]}.get(inner, [["a", "b"], ["c"]])
        return next(v for v in options if list(v) != list(current or []))
    if choices:
        return next(c for c in choices if c != current)
    if target is int:
        low = f.metadata.get("min")
        return (current if isinstance(current, int) else int(low or 0)) + 1
    if target is float:
        return (current if isinstance(current, (int, float)) else 0.0) + 0.5
    if target is str:
        return "probe_value" if current != "probe_value" else "probe_other"
    raise AssertionError(f"no probe value for {f.name}: {target}")


def as_flag_text(value: typing.Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def yaml_text(value: typing.Any) -> str:
    """``value`` as one would type it after ``--set key=``."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def flag_cases(script: str) -> list[tuple[str, argparse.Action]]:
    """(option string, action) for every spelling that sets a config field: --<name>, extra flags, aliases, the
    --no-<name> negatives and the originals' compat switches (--fp16, --no-cuda)."""
    fields = field_map(script)
    return [(opt, action) for action in ENTRIES[script].parser()._actions if action.dest in fields
            for opt in action.option_strings]


def resolved(script: str, argv: list[str]):
    cfg, given, _ = ENTRIES[script].resolve(base_argv(script) + argv)
    return dataclasses.asdict(cfg), given


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_reaches_the_same_field_as_set_and_config(script, tmp_path):
    entry = ENTRIES[script]
    cls = entry.recipe.config_class
    fields = field_map(script)
    default, _ = resolved(script, [])
    cases = flag_cases(script)
    assert len(cases) > 20, script
    for opt, action in cases:
        name = action.dest
        if isinstance(action, argparse._StoreConstAction):
            value, argv = action.const, [opt]
        else:
            value = probe_value(cls, fields[name], default[name])
            argv = [opt, as_flag_text(value)]
        base = [] if name in base_fields(script) else None  # the probed field itself replaces the base argv
        outcomes = [outcome(script, a, base) for a in (argv, ["--set", f"{name}={yaml_text(value)}"],
                                                        ["--config", str(write_yaml(tmp_path, {name: value}))])]
        (by_flag, given_flag), (by_set, given_set), (by_config, given_config) = outcomes
        if isinstance(by_flag, str):  # a script-level rule refused the probe (dfad_mnist.py trains on MNIST only)
            assert by_set == by_config == by_flag, (script, opt)
            continue
        assert by_flag == by_set, (script, opt)
        if name in RUN_CONTROL:  # a run's config.yaml records where it ran; passed back, that is not applied
            assert by_config == default and name not in given_config, (script, opt)
        else:
            assert by_config == by_flag and name in given_config, (script, opt)
        assert name in given_flag and name in given_set, (script, opt)
        if (script, name) in NO_EFFECT:
            assert by_flag[name] == default[name], (script, opt)
        elif by_flag[name] == default[name]:  # a store_const that repeats the default: it still must be recorded
            assert isinstance(action, argparse._StoreConstAction), (script, opt, value)


def base_fields(script: str) -> set[str]:
    argv = base_argv(script)
    return {a.dest for a in ENTRIES[script].parser()._actions if set(a.option_strings) & set(argv)}


def write_yaml(folder, values: dict) -> str:
    path = folder / f"{'-'.join(values)}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def outcome(script: str, argv: list[str], base: list[str] | None):
    """(config dict, given keys) of a command line, or the one-line error it is refused with."""
    try:
        cfg, given, _ = ENTRIES[script].resolve((base_argv(script) if base is None else base) + argv)
    except ConfigError as exc:
        return str(exc), None
    return dataclasses.asdict(cfg), given


def choice_fields(script: str) -> list[dataclasses.Field]:
    return [f for f in field_map(script).values() if f.metadata.get("choices")]


def bad_value(cls: type, f: dataclasses.Field) -> typing.Any:
    choices = f.metadata["choices"]
    bad = max(c for c in choices if isinstance(c, int)) + 1000 if all(isinstance(c, int) for c in choices) \
        else "bogus_value"
    return [bad] if typing.get_origin(_target_type(cls, f.name)) in (list, tuple) else bad


def exit_error(script: str, argv: list[str], capsys, base: list[str] | None = None) -> str:
    """Run the entry's main in-process; it must exit 1 with one ``error: ...`` line on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        ENTRIES[script].main((base_argv(script) if base is None else base) + argv)
    err = capsys.readouterr().err
    assert exc.value.code == 1, (argv, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (argv, err)
    return lines[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_choice_values_are_one_line_errors_also_under_dry_run(script, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, wherever the default output would go
    cls = ENTRIES[script].recipe.config_class
    fields = choice_fields(script)
    if not fields:
        assert script in ("gen_svd_weights", "kdep"), f"{script} has no choice fields to check"  # free-form only
        pytest.skip(f"{script} has no fields with choices")
    for f in fields:
        bad = bad_value(cls, f)
        base = [] if f.name in base_fields(script) else None
        dry = exit_error(script, ["--set", f"{f.name}={yaml_text(bad)}", "--dry-run"], capsys, base)
        assert f.name in dry and ("bogus_value" in dry or str(bad) in dry), (script, dry)
        config = write_yaml(tmp_path, {f.name: bad})
        assert exit_error(script, ["--config", config], capsys, base) == dry
        assert exit_error(script, ["--config", config, "--dry-run"], capsys, base) == dry
    assert all(p.suffix == ".yaml" for p in tmp_path.iterdir())  # no run directory, no runs/ folder


#: The bad values the Core 2 issue names as ending in a traceback (some after --dry-run had returned).
ISSUE_EXAMPLES = [("dfad_mnist", "scheduler", "poly", "expected bool"), ("dfad_mnist", "loss", "kl", "invalid loss"),
                  ("kd_datafree", "pool_dtype", "bf16", "invalid pool_dtype"),
                  ("rgal", "triplet_target", "x", "invalid triplet_target"),
                  ("train_teacher", "scheduler", "poly", "expected bool"),
                  ("kd_datafree", "lr_schedule", "poly", "invalid lr_schedule")]


@pytest.mark.parametrize("script,key,value,message", ISSUE_EXAMPLES)
def test_the_issues_examples_are_one_line_errors(script, key, value, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dry = exit_error(script, ["--set", f"{key}={value}", "--dry-run"], capsys)
    assert message in dry and repr(value) in dry, dry
    assert exit_error(script, ["--config", write_yaml(tmp_path, {key: value})], capsys) == dry
