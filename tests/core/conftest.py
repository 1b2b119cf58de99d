import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Core tests use tiny batches: extra intra-op threads buy nothing, and on a busy machine (parallel CI jobs)
    they oversubscribe the cores and make the modules several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
