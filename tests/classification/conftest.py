import shutil
from pathlib import Path

import pytest
import torch

from kdvision.core.models import create_model


@pytest.fixture(scope="session")
def toy_teacher(tmp_path_factory) -> Path:
    """A LeNet-5 in DFAD's raw state_dict format (random weights: enough for plumbing tests)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "digits-lenet5.pt"
    torch.save(create_model("lenet5").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def mnist_root(shared_data, tmp_path_factory) -> Path:
    """A private copy of the shared MNIST folder (torchvision unpacks next to the .gz files)."""
    root = tmp_path_factory.mktemp("mnist")
    shutil.copytree(shared_data / "MNIST", root / "MNIST")
    return root
