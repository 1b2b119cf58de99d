"""Shared fixtures: the real-data folder, and the GPU marker."""
from __future__ import annotations

import pytest

from kdv_testutils import data_root


@pytest.fixture(scope="session")
def shared_data():
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder not found at {root} (set KDV_DATA)")
    return root


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run `make test-gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
