"""Engine hooks of the data-free engine's image pool."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.base import open_image
from ..engine.rundir import warn
from ..engine.trainer import Hook
from ..errors import DataError


class PoolPNGHook(Hook):
    """``--save_dir`` / ``--save-samples pool``: after every epoch, write the pool's new images as PNG files (rank 0).

    How many images are written is checkpointed, so a resumed run continues the numbering instead of re-encoding
    the whole pool.
    """

    priority = 45

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.written = 0

    def before_train(self, trainer) -> None:
        if trainer.dist.is_main and not self.written and self.folder.exists() and any(self.folder.iterdir()):
            warn(f"{self.folder} is not empty; kdvision never reads it back (the pool is in memory), the PNG files "
                 f"of this run are written next to the old ones")

    def after_epoch(self, trainer) -> None:
        if trainer.dist.is_main:
            pool = trainer.method.synthesizer.pool
            self.written += pool.save_png(self.folder, start=self.written)

    def state_dict(self) -> dict[str, Any]:
        return {"written": self.written}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.written = int(state["written"])


def load_image_folder(folder: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """Every image under ``folder`` as a [0, 1] batch (``--cmi_init``); sizes must match the synthesized ones."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"--cmi_init folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise DataError(f"--cmi_init folder {root} holds no images")
    mode = "L" if shape[0] == 1 else "RGB"
    arrays = []
    for f in files:
        img = open_image(f, mode)
        if (img.height, img.width) != tuple(shape[1:]):
            raise DataError(f"{f} is {img.width}x{img.height}, the synthesized images are {shape[2]}x{shape[1]}")
        arrays.append(np.asarray(img, dtype=np.uint8).reshape(img.height, img.width, -1))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)
