"""Reading run directories (DESIGN.md's contract) for the dashboard and ``inspect_run.py``.

A run directory holds ``config.yaml``, ``metrics.jsonl``, ``summary.json`` (once finished), ``samples/*.png`` and
``checkpoints/``. A run that is still going or crashed has no summary: its numbers are then taken from the metrics.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdvision.core.errors import KDVisionError

#: record keys that are bookkeeping, not values to plot
META_KEYS = ("step", "epoch", "split")


@dataclass
class Run:
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def method(self) -> str:
        if self.summary and self.summary.get("method"):
            return str(self.summary["method"])
        return str(self.config.get("method") or self.config.get("_run", {}).get("method") or "?")

    @property
    def label(self) -> str:
        """How plots and tables name the run: ``<directory> (<method>)``."""
        return f"{self.name} ({self.method})"

    @property
    def metric(self) -> str | None:
        """The evaluation metric (``acc``, ``miou``): the summary's, else the first one the metrics hold."""
        if self.summary and self.summary.get("metric"):
            return str(self.summary["metric"])
        for key in ("acc", "miou"):
            if any(key in r for r in self.records if r.get("split") == "test"):
                return key
        return None

    def series(self, split: str) -> dict[str, tuple[list[float], list[float]]]:
        """``{key: (steps, values)}`` of the numeric values logged under ``split`` (in logging order)."""
        out: dict[str, tuple[list[float], list[float]]] = {}
        for r in self.records:
            if r.get("split") != split:
                continue
            for k, v in r.items():
                if k in META_KEYS or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    continue
                xs, ys = out.setdefault(k, ([], []))
                xs.append(float(r.get("step", len(xs))))
                ys.append(float(v))
        return out

    def splits(self) -> list[str]:
        seen: list[str] = []
        for r in self.records:
            s = r.get("split")
            if isinstance(s, str) and s not in seen:
                seen.append(s)
        return seen

    def teacher_metric(self) -> float | None:
        if self.summary and self.summary.get("teacher_metric") is not None:
            return float(self.summary["teacher_metric"])
        metric = self.metric
        for r in self.records:
            if metric and f"teacher_{metric}" in r:
                return float(r[f"teacher_{metric}"])
        return None

    def student_values(self) -> list[float]:
        metric = self.metric
        return [float(r[metric]) for r in self.records if r.get("split") == "test" and metric in r] if metric else []

    def best(self) -> float | None:
        if self.summary and self.summary.get("student_best") is not None:
            return float(self.summary["student_best"])
        values = self.student_values()
        return max(values) if values else None

    def last(self) -> float | None:
        if self.summary and self.summary.get("student_last") is not None:
            return float(self.summary["student_last"])
        values = self.student_values()
        return values[-1] if values else None

    def iterations(self) -> int | None:
        if self.summary and self.summary.get("iterations") is not None:
            return int(self.summary["iterations"])
        steps = [r["step"] for r in self.records if isinstance(r.get("step"), int)]
        return max(steps) if steps else None

    def iters_per_s(self) -> float | None:
        if self.summary and self.summary.get("train_iters_per_s") is not None:
            return float(self.summary["train_iters_per_s"])
        xs = self.series("train").get("iters_per_s", ([], []))[1]
        return statistics.fmean(xs) if xs else None

    def comparable_config(self) -> str:
        """The configuration without what differs between seeds of one experiment (seed, output, the run record)."""
        cfg = {k: v for k, v in self.config.items() if k not in ("seed", "output", "_run", "resume")}
        return json.dumps(cfg, sort_keys=True, default=str)


def is_run(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("metrics.jsonl", "summary.json", "config.yaml"))


def read_run(path: str | Path) -> Run:
    """Read a run directory; one that holds none of the run files is an error."""
    path = Path(path)
    if not path.is_dir():
        raise KDVisionError(f"run directory not found: {path}")
    if not is_run(path):
        raise KDVisionError(f"{path} is not a run directory (no metrics.jsonl, summary.json or config.yaml)")
    run = Run(path)
    if (path / "config.yaml").is_file():
        run.config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    if (path / "summary.json").is_file():
        run.summary = json.loads((path / "summary.json").read_text())
    if (path / "metrics.jsonl").is_file():
        for line in (path / "metrics.jsonl").read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                run.records.append(json.loads(line))
            except ValueError:  # a line cut short by a crash
                continue
    samples = path / "samples"
    if samples.is_dir():
        run.samples = sorted(samples.glob("*.png"))
    return run


def expand(paths: list[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: a run directory itself, or a folder of run directories (a ``--seeds``
    group's ``seed<k>/`` folders, a ``runs/<script>/`` folder)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if is_run(p):
            out.append(p)
        elif p.is_dir() and any(is_run(c) for c in p.iterdir()):
            out.extend(sorted(c for c in p.iterdir() if is_run(c)))
        elif not p.exists():
            raise KDVisionError(f"run directory not found: {p}")
        else:
            raise KDVisionError(f"{p} is neither a run directory nor a folder of run directories")
    return out


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """Mean and sample standard deviation (n − 1; 0 for a single value), as ``run_seeds`` reports them."""
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
