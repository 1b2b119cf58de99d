"""``python -m kdvision.info``: versions of the installed kdvision subpackages and of the libraries they use.

Paste its output into bug reports.
"""
from __future__ import annotations

import platform

from kdvision.core.versions import DISTRIBUTIONS, versions  # noqa: F401  (one home, in core)


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
