"""``python -m kdvision.info``: versions of the installed kdvision subpackages and of the libraries they use.

Paste its output into bug reports.
"""
from __future__ import annotations

import importlib.metadata as md
import platform

DISTRIBUTIONS = ("kdvision", "kdvision-core", "kdvision-classification", "kdvision-segmentation",
                 "kdvision-detection", "kdvision-pretraining", "kdvision-tools", "torch", "torchvision",
                 "numpy", "scikit-learn", "visdom")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def main() -> None:
    print(f"python {platform.python_version()} on {platform.platform()}")
    for dist, ver in versions().items():
        print(f"{dist:26s} {ver or '-'}")
    try:
        import torch
        print(f"{'cuda':26s} {torch.cuda.is_available()} ({torch.cuda.device_count()} devices)")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
