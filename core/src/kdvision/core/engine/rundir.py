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
        logger = get_logger()
        logger.handlers.clear()
        logger.propagate = False
        logger.setLevel(logging.INFO if self.is_main else logging.WARNING)
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        console.setLevel(logging.INFO if verbose else logging.WARNING)
        logger.addHandler(console)
        if self.is_main and to_file:
            fh = logging.FileHandler(self.path / "log.txt")
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(fh)
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


