"""Image grids and PNGs from float batches in [0, 1], without importing torchvision.

The layout and the bytes are those of ``torchvision.utils.make_grid`` / ``save_image`` (the format people know from
the originals' ``samples/`` folders): cells of H×W separated and framed by ``padding`` pixels of ``pad_value``,
``nrow`` cells per row, one-channel images shown as grey RGB, values mapped to uint8 by ``x·255 + 0.5`` clamped;
a single image is written as it is, without a frame. torchvision is not imported because importing it costs about
1.5 s (its ops pull in ``torch._dynamo``), which every entry script would pay at start-up for two functions.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["make_grid", "save_image", "to_uint8"]


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> torch.Tensor:
    """C×H'×W' grid of a B×C×H×W (or C×H×W) batch; C = 1 becomes 3 (grey)."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"images must be B×C×H×W or C×H×W, got shape {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    b, c, h, w = images.shape
    if b == 1:
        return images[0].clone()
    cols = min(nrow, b)
    rows = math.ceil(b / cols)
    cell_h, cell_w = h + padding, w + padding
    grid = images.new_full((c, rows * cell_h + padding, cols * cell_w + padding), pad_value)
    for k in range(b):
        y, x = divmod(k, cols)
        grid[:, y * cell_h + padding:y * cell_h + padding + h, x * cell_w + padding:x * cell_w + padding + w] = images[k]
    return grid


def to_uint8(grid: torch.Tensor) -> torch.Tensor:
    """H×W×C uint8 of a C×H×W float image in [0, 1] (``x·255 + 0.5``, clamped, truncated)."""
    return grid.detach().float().cpu().mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8)


def save_image(images: torch.Tensor, path: str | Path, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> None:
    """Write ``make_grid(images, ...)`` as a PNG (RGB)."""
    from PIL import Image

    Image.fromarray(to_uint8(make_grid(images, nrow, padding, pad_value)).numpy()).save(path)
