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
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any, Callable, Mapping

import torch
import torch.nn as nn

from .errors import CheckpointError

CONTAINER_KEYS = ("state_dict", "model", "s_state_dict", "student")
_SHOW = 3  # keys named per category in a mismatch error


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Read a checkpoint file safely (``weights_only=True``, mapped to the CPU).

    A file that is refused or unreadable is one :class:`CheckpointError` line that says what the file is (empty,
    text, not a checkpoint, truncated or corrupt, holding pickled code objects); PyTorch's advice to retry with
    ``weights_only=False`` (running the file's code) is never repeated.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with warnings.catch_warnings():  # PyTorch's note on pickle protocols says nothing about the file
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors, truncated files, non-torch files
        reason = _diagnose(path, exc)
    raise CheckpointError(f"cannot read checkpoint {path}: {reason}")


# -- why a file is not a readable checkpoint ----------------------------------------------------------------------
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch's legacy (non-zip) format
_REFUSED = "refused: only tensors and plain containers are loaded"
_CORRUPT = "truncated or corrupt"
_GLOBAL_OPS = {"GLOBAL", "STACK_GLOBAL", "INST"}
_CALL_OPS = {"REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"}


def _allowed_globals() -> set[str]:
    try:  # the weights-only unpickler's own allowlist (private API; fall back to a conservative rule)
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
        allowed |= {f"{g.__module__}.{g.__qualname__}" for g in torch.serialization.get_safe_globals()
                    if hasattr(g, "__module__") and hasattr(g, "__qualname__")}
        return allowed
    except Exception:  # noqa: BLE001
        return set()


def _scan_pickles(data: bytes) -> tuple[list[list[tuple[str, Any]]], bool]:
    """The opcodes (name, arg) of the consecutive pickles at the start of ``data`` (torch's legacy format is
    several pickles followed by raw storage bytes), without executing anything; and whether the first one
    ended with STOP (False: a truncated or corrupt stream)."""
    import io
    import pickletools

    stream, pickles = io.BytesIO(data), []
    while stream.tell() < len(data):
        start, ops = stream.tell(), []
        try:
            for op, arg, _ in pickletools.genops(stream):
                ops.append((op.name, arg))
        except Exception:  # noqa: BLE001 - ValueError on bad opcodes/short data, anything else alike
            if not pickles:
                return [ops], False
            break  # trailing raw storage bytes after the last pickle
        if not ops or ops[-1][0] != "STOP" or stream.tell() == start:
            break
        pickles.append(ops)
    return pickles, bool(pickles)


def _globals_of(ops: list[tuple[str, Any]]) -> list[str]:
    """Names of the globals a pickle imports (GLOBAL/INST carry them; STACK_GLOBAL takes the last two strings)."""
    names, strings, memo = [], [], {}
    for name, arg in ops:
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
                    "STRING"):
            strings.append(str(arg))
        elif name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
            memo[arg] = strings[-1]
        elif name == "MEMOIZE" and strings:
            memo[len(memo)] = strings[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
            strings.append(memo[arg])
        if name in ("GLOBAL", "INST"):
            names.append(str(arg).replace(" ", "."))
        elif name == "STACK_GLOBAL":
            names.append(".".join(strings[-2:]) if len(strings) >= 2 else "?")
    return names


def _code_objects(pickles: list[list[tuple[str, Any]]]) -> list[str]:
    allowed = _allowed_globals()
    found: list[str] = []
    for ops in pickles:
        for g in _globals_of(ops):
            safe = g in allowed if allowed else g.startswith(("torch.", "collections.OrderedDict"))
            if not safe and g not in found:
                found.append(g)
    return found


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\n\r\f\v" for ch in text)


def _code_reason(names: list[str]) -> str:
    shown = ", ".join(names[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "")
    return f"contains pickled code objects ({shown}; {_REFUSED})"


def _diagnose(path: Path, exc: BaseException) -> str:
    """One phrase for why ``torch.load(weights_only=True)`` failed on ``path``, from the file itself."""
    import re
    import zipfile

    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if size == 0:
            return "empty file (0 bytes), not a PyTorch checkpoint"
        if head.startswith(b"PK\x03\x04"):
            try:
                with zipfile.ZipFile(path) as zf:
                    pkl = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                    if not pkl:
                        return "a zip archive without data.pkl, not a PyTorch checkpoint"
                    if zf.testzip() is not None:
                        return _CORRUPT
                    data = zf.read(pkl[0])
            except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError):
                return _CORRUPT
            pickles, complete = _scan_pickles(data)
        elif head[:1] == b"\x80":  # a pickle (protocol 2+): torch's legacy format or a plain Python pickle
            pickles, complete = _scan_pickles(path.read_bytes())
            first = pickles[0] if pickles else []
            legacy = len(first) > 1 and first[1] == ("LONG1", _TORCH_MAGIC)
            if not legacy:
                code = _code_objects(pickles)
                if code:
                    return _code_reason(code)
                return _CORRUPT + " pickle" if not complete else "a plain Python pickle, not a PyTorch checkpoint"
        elif _is_text(head):
            return "a text file, not a PyTorch checkpoint"
        else:
            return "unknown format (neither a zip archive nor a pickle), not a PyTorch checkpoint"
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    if refused:
        return _code_reason([refused.group(1)])
    code = _code_objects(pickles)
    if code:
        return _code_reason(code)
    if not complete or isinstance(exc, (EOFError, RuntimeError)):
        return _CORRUPT
    return f"{_CORRUPT} ({type(exc).__name__})"


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
