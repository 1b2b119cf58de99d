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
