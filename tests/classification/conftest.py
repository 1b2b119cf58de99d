import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdvision.core.models import create_model

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "classification"


def run_script(name: str, *args: str, timeout: int = 300, launcher: list[str] | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable]) + [str(SCRIPTS / name), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, env=env)


@pytest.fixture(scope="session")
def toy_teacher(tmp_path_factory) -> Path:
    """A LeNet-5 in DFAD's raw state_dict format (random weights: enough for plumbing tests)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "digits-lenet5.pt"
    torch.save(create_model("lenet5").state_dict(), path)
    return path


TINY = ["--dataset", "digits", "--batch_size", "8", "--epochs", "1", "--iters-per-epoch", "2", "--set", "ngf=8",
        "--device", "cpu", "--test_batch_size", "128"]
