"""Image grids without torchvision (``kdvision.core.engine.grid``): the layout and PNG bytes of torchvision's
``make_grid`` / ``save_image``, which the samples/ folders of the originals use, and no torchvision import."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from kdvision.core.engine.grid import make_grid, save_image


@pytest.mark.parametrize("shape", [(5, 3, 8, 8), (1, 3, 8, 8), (3, 8, 8), (1, 8, 8), (17, 1, 6, 7), (9, 1, 4, 4)])
@pytest.mark.parametrize("nrow", [8, 3])
def test_grid_equals_torchvision(shape, nrow):
    import torchvision.utils as vutils

    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(make_grid(x, nrow=nrow, padding=2), vutils.make_grid(x, nrow=nrow, padding=2))


def test_png_bytes_equal_torchvision(tmp_path):
    import torchvision.utils as vutils

    x = torch.rand(10, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    save_image(x, tmp_path / "ours.png", nrow=4)
    vutils.save_image(x, tmp_path / "tv.png", nrow=4, padding=2)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ours.png")), np.asarray(Image.open(tmp_path / "tv.png")))
    with pytest.raises(ValueError, match="B×C×H×W"):
        make_grid(torch.rand(2, 2, 2, 2, 2))


def test_entry_scripts_do_not_import_torchvision():
    code = ("import sys, kdvision.classification.datafree, kdvision.classification.mosaickd, "
            "kdvision.classification.sdd, kdvision.core.models; print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
