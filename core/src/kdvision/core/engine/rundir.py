"""The run directory contract (DESIGN.md): config.yaml, metrics.jsonl, summary.json, checkpoints/, samples/, log.txt.

Only the main process (rank 0) writes; other ranks get a RunDir whose writers are no-ops.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ..versions import package_versions  # noqa: F401  (re-exported)

LOGGER_NAME = "kdvision"
SUMMARY_KEYS = ("method", "task", "metric", "teacher_metric", "student_best", "student_last", "iterations",
                "batch_size", "train_iters_per_s", "wall_time_s", "device", "world_size", "seed")


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, Path):
        return str(v)
    return v


#: Files and folders of the run-directory contract: a directory holding any of them holds a run.
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "log.txt", "checkpoints", "samples")


def _rank() -> int:
    return int(os.environ.get("RANK", 0))


class _EarlyRecords(logging.Handler):
    """Keeps the records logged before the run directory exists, so that log.txt gets them too."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def init_logging(verbose: bool = True, *, keep: bool = True) -> logging.Logger:
    """Console logging for this process (rank 0 only; other ranks show errors only), buffering for log.txt.

    ``keep``: records buffered so far (said before the run directory exists) stay for log.txt; a new command starts
    with ``keep=False``.
    """
    logger = get_logger()
    early = _EarlyRecords()
    for handler in logger.handlers if keep else ():
        if isinstance(handler, _EarlyRecords):
            early.records = handler.records
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if _rank() == 0 else logging.ERROR)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.addHandler(console)
    logger.addHandler(early)
    return logger


def warn(message: str) -> None:
    """A warning for the user: printed once (rank 0), and written to the run's log.txt."""
    logger = get_logger()
    if not logger.handlers:
        init_logging()
    logger.warning(f"warning: {message}")


def note(message: str) -> None:
    """An informational line (rank 0), also written to log.txt."""
    logger = get_logger()
    if not logger.handlers:
        init_logging()
    logger.info(f"note: {message}")


def holds_run(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def latest_run(parent: Path) -> Path | None:
    """The most recently started run directory under ``parent`` (one with a checkpoint), or None."""
    runs = [p for p in parent.glob("*/checkpoints/last.pt")] if parent.is_dir() else []
    return max(runs, key=lambda p: p.stat().st_mtime).parents[1] if runs else None


def choose_output(output: str | None, script: str, *, resume: str | None, overwrite: bool) -> Path:
    """Where this run writes (DESIGN.md: a run directory is never overwritten or mixed with another run).

    - no ``--output``: a fresh ``runs/<script>/<YYYYmmdd-HHMMSS>`` (``--resume``: the latest run of the script);
    - an ``--output`` that already holds a run: continued with ``--resume``, replaced with ``--overwrite``,
      otherwise refused with an error naming both.
    """
    from ..errors import KDVisionError

    if output is None:
        parent = Path("runs") / script
        if resume == "auto":
            latest = latest_run(parent)
            if latest is None:
                raise KDVisionError(f"--resume: no run of {script} to resume under {parent}/ (pass --output DIR)")
            return latest
        import time

        stamp = time.strftime("%Y%m%d-%H%M%S")
        path, k = parent / stamp, 1
        while path.exists():
            k += 1
            path = parent / f"{stamp}-{k}"
        return path
    path = Path(output)
    if holds_run(path) and not resume:
        if not overwrite:
            raise KDVisionError(f"{path} already holds a run: pass --resume to continue it, --overwrite to replace "
                                f"it, or another --output")
    return path


def clear_run(path: Path) -> bool:
    """Remove the run-contract files of ``path`` (``--overwrite``); other files are left. Whether any existed."""
    import shutil

    found = False
    for name in RUN_FILES:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
            found = True
        elif target.exists():
            target.unlink()
            found = True
    return found


class RunDir:
    def __init__(self, path: str | os.PathLike, is_main: bool = True) -> None:
        self.path = Path(path)
        self.is_main = is_main
        self.checkpoints = self.path / "checkpoints"
        self.samples = self.path / "samples"
        if is_main:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self.samples.mkdir(parents=True, exist_ok=True)

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best_ckpt(self) -> Path:
        return self.checkpoints / "best.pt"

    def setup_logging(self, verbose: bool = True, to_file: bool = True) -> logging.Logger:
        """Add ``log.txt`` (rank 0) to the console logging, with the lines logged before the directory existed."""
        logger = get_logger()
        if not logger.handlers:
            init_logging(verbose)
        early = next((h for h in logger.handlers if isinstance(h, _EarlyRecords)), None)
        if self.is_main and to_file:
            fh = logging.FileHandler(self.path / "log.txt")
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            for record in early.records if early is not None else []:
                fh.handle(record)
            logger.addHandler(fh)
        if early is not None and to_file:
            logger.removeHandler(early)
        return logger

    def write_config(self, config: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.path / "config.yaml", "w") as fh:
                yaml.safe_dump(config, fh, sort_keys=False)

    def log_metrics(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.path / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        missing = [k for k in SUMMARY_KEYS if k not in summary]
        if missing:
            raise ValueError(f"summary lacks {missing}")
        if self.is_main:
            with open(self.path / "summary.json", "w") as fh:
                json.dump({k: _jsonable(v) for k, v in summary.items()}, fh, indent=2)


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


