"""Versions of the installed kdvision distributions and of the libraries they use (config.yaml, bug reports).

Lives in core so that any subset of the distributions works: core must not import the ``kdvision`` meta-package.
"""
from __future__ import annotations

import importlib.metadata as md

DISTRIBUTIONS = ("kdvision", "kdvision-core", "kdvision-classification", "kdvision-segmentation",
                 "kdvision-detection", "kdvision-pretraining", "kdvision-tools", "torch", "torchvision",
                 "numpy", "scikit-learn", "visdom")


def versions() -> dict[str, str | None]:
    """``{distribution: version or None}`` for :data:`DISTRIBUTIONS`."""
    out: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def package_versions() -> dict[str, str]:
    """The installed ones only."""
    return {k: v for k, v in versions().items() if v is not None}
