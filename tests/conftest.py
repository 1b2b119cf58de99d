"""Shared fixtures: the real-data folder, the GPU marker, and the order the test files are handed to the workers."""
from __future__ import annotations

import pytest

from kdv_testutils import data_root


@pytest.fixture(scope="session")
def shared_data():
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder not found at {root} (set KDV_DATA)")
    return root


#: The heaviest test files (CPU seconds, one thread, measured on the CI machine), handed to the xdist workers first
#: (``make test``: ``--dist loadfile --no-loadscope-reorder``) so that the two workers finish together instead of one
#: running the long end-to-end files alone at the end. Files not listed follow in collection order.
HEAVY = {
    "tests/classification/test_datafree_e2e.py": 390, "tests/segmentation/test_seg_dfad.py": 185,
    "tests/classification/test_demo.py": 170, "tests/classification/test_datafree_baselines_e2e.py": 145,
    "tests/classification/test_datafree_cli.py": 145, "tests/classification/test_mosaickd_e2e.py": 140,
    "tests/classification/test_run_policy.py": 140, "tests/classification/test_sdd_mnist_compare.py": 125,
    "tests/test_bench_gpu.py": 95, "tests/classification/test_mosaickd_cli.py": 90,
    "tests/classification/test_sdd_cli.py": 60, "tests/classification/test_real_data.py": 50,
    "tests/classification/test_dfad_cli.py": 40, "tests/pretraining/test_kdep_e2e.py": 200,
    "tests/pretraining/test_kdep_cli.py": 60, "tests/detection/test_train_net.py": 35,
    "tests/segmentation/test_transfer_pspnet.py": 25, "tests/tools/test_dashboard_browser.py": 25,
}


def pytest_collection_modifyitems(config, items):
    import torch

    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-HEAVY.get(item.nodeid.split("::")[0], 0), order[id(item)]))

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run `make test-gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
