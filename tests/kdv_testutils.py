"""Helpers shared by the test modules (``tests/`` is on sys.path through pytest's rootdir conftest)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """The shared real-data folder: $KDV_DATA, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("KDV_DATA", REPO.parent / "shared" / "data")).resolve()


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real-data file not found: {path} (set KDV_DATA to the shared data folder)")
    return path


def run_script(script: str, *args, timeout: int = 300, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run an entry script (path relative to the repo) as a user would, capturing its output."""
    cmd = (launcher or [sys.executable]) + [str(REPO / script), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
