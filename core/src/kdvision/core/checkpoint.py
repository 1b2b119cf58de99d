"""Checkpoint I/O: strict loading of the original projects' files and atomic saving.

Loader rules (``docs/models.md``):

1. ``torch.load(path, map_location="cpu", weights_only=True)`` — no arbitrary unpickling;
2. unwrap the container: a raw state_dict, or the first present of ``state_dict``, ``model``, ``s_state_dict``,
   ``student``;
3. strip a leading ``module.`` when every key carries it (DataParallel / DDP);
4. ``load_state_dict(strict=True)``; on mismatch raise one :class:`CheckpointError` naming the first missing,
   unexpected and shape-mismatched keys.
"""
from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any, Callable, Mapping

import torch
import torch.nn as nn

from .errors import CheckpointError

CONTAINER_KEYS = ("state_dict", "model", "s_state_dict", "student")
_SHOW = 3  # keys named per category in a mismatch error


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Read a checkpoint file safely (``weights_only=True``, mapped to the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated files, non-torch files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from exc


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj: Any, source: str = "checkpoint") -> "OrderedDict[str, torch.Tensor]":
    """Unwrap a container and strip a common ``module.`` prefix."""
    if not _is_state_dict(obj):
        if isinstance(obj, Mapping):
            for key in CONTAINER_KEYS:
                if key in obj and _is_state_dict(obj[key]):
                    obj = obj[key]
                    break
            else:
                raise CheckpointError(
                    f"{source} holds no state_dict (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
        else:
            raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state_dict")
    sd = OrderedDict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = OrderedDict((k[len("module."):], v) for k, v in sd.items())
    return sd


def _fmt(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> list[str]:
    """Describe every way ``sd`` fails to match ``model`` exactly (empty when it loads strictly)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_fmt(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_fmt(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {len(mismatched)} (checkpoint vs model): {_fmt(mismatched)}")
    return problems


def load_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], strict: bool = True,
                    source: str = "checkpoint") -> nn.Module:
    """Load ``sd`` into ``model``; with ``strict`` any mismatch is one :class:`CheckpointError`."""
    problems = check_state_dict(model, sd)
    name = getattr(model, "kd_name", type(model).__name__)
    if problems and strict:
        raise CheckpointError(f"{source} does not match model {name}: " + "; ".join(problems))
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(sd, strict=strict)
    return model


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Read ``path`` with the loader rules and load it into ``model``."""
    sd = extract_state_dict(read_checkpoint(path), source=str(path))
    return load_state_dict(model, sd, strict=strict, source=str(path))


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fh)`` on a temporary file in the same folder, fsync, then rename it over ``path``.

    A crash while writing leaves the previous file intact and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` with :func:`atomic_write`."""
    atomic_write(path, lambda fh: torch.save(obj, fh))
