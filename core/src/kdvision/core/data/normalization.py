"""Per-dataset input normalisation constants (mean, std), as the published projects use them.

A model's expected normalisation travels with the model entry (DFAD's CIFAR-100 teacher expects the CIFAR-10
statistics), so callers often pass a key of :data:`NORMALIZATION` explicitly instead of the dataset's default.
"""
from __future__ import annotations

from typing import Sequence, Union

from ..errors import ConfigError

Stats = tuple[tuple[float, ...], tuple[float, ...]]
NormalizeArg = Union[None, bool, str, Sequence[Sequence[float]]]

NORMALIZATION: dict[str, Stats] = {
    # LeCun's MNIST training-set statistics; every project here uses them.
    "mnist": ((0.1307,), (0.3081,)),
    # DFAD / CMI / MosaicKD constants. The std values are the mean of per-image stds (smaller than the true
    # per-pixel std 0.247/0.243/0.261); kept because the released teachers were trained with them.
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    # True CIFAR-100 training-set statistics (CMI, Fast, MosaicKD, RGAL). DFAD uses "cifar10" for CIFAR-100.
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    # torchvision / ImageNet-1k training-set statistics.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Maps [0, 1] to [-1, 1]: DFAD Caltech101/CamVid/NYUv2, CMI/MosaicKD for SVHN, ImageNet-32, Places365-32.
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # No normalisation: KDEP's original CUB / DTD / Caltech-256 fine-tuning (classification/transfer.py
    # --legacy_no_norm).
    "identity": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    # SVHN train-split (73,257 images) per-channel statistics as widely published with PyTorch SVHN recipes
    # (e.g. the classic "pytorch-classification"-style loaders and many robustness code bases:
    # mean (0.4377, 0.4438, 0.4728), std (0.1980, 0.2010, 0.1970); like the CIFAR-10 constants above, the std is
    # the mean of per-image stds). NOTE: the CMI and MosaicKD code bases normalise SVHN with "half"
    # (0.5/0.5) instead; their configs pass normalize="half" explicitly.
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    # kdvision's embedded "digits" dataset (scikit-learn load_digits, scaled to [0, 1], bilinear 8x8 -> 32x32):
    # mean and (population, all-pixel) std of its 1,438-image training split, computed once and rounded to 4
    # decimals. tests/core/test_data.py recomputes them.
    "digits": ((0.3044,), (0.3229,)),
}


def normalization(spec: NormalizeArg, channels: int | None = None) -> Stats:
    """Resolve ``spec`` to ``(mean, std)`` tuples of floats.

    ``spec`` is a key of :data:`NORMALIZATION`, an explicit ``(mean, std)`` pair of sequences, or ``False``
    (no normalisation: mean 0, std 1, images stay in [0, 1]). With ``channels`` given, one-value statistics are
    broadcast to that many channels (DFAD's ``Normalize((0.5,), (0.5,))`` on RGB) and a mismatch raises
    :class:`ConfigError`. ``None`` is not accepted here; :func:`kdvision.core.data.get_dataset` maps it to the
    dataset's default.
    """
    if spec is False:
        mean: tuple[float, ...] = (0.0,)
        std: tuple[float, ...] = (1.0,)
    elif isinstance(spec, str):
        if spec not in NORMALIZATION:
            raise ConfigError(f"unknown normalization {spec!r}; valid: {', '.join(sorted(NORMALIZATION))}")
        mean, std = NORMALIZATION[spec]
    elif spec is None or spec is True:
        raise ConfigError(f"normalization must be a key of NORMALIZATION, a (mean, std) pair or False, got {spec!r}")
    else:
        try:
            m, s = spec
            mean = tuple(float(v) for v in (m if isinstance(m, (list, tuple)) else (m,)))
            std = tuple(float(v) for v in (s if isinstance(s, (list, tuple)) else (s,)))
        except (TypeError, ValueError):
            raise ConfigError(
                f"normalization must be a key of NORMALIZATION or a (mean, std) pair, got {spec!r}") from None
        if not mean or len(mean) != len(std):
            raise ConfigError(f"normalization mean and std must have the same non-zero length, got {spec!r}")
        if any(v <= 0 for v in std):
            raise ConfigError(f"normalization std must be positive, got {std}")
    if channels is not None and len(mean) != channels:
        if len(mean) == 1:
            mean, std = mean * channels, std * channels
        else:
            raise ConfigError(
                f"normalization has {len(mean)} channels but the dataset has {channels}: mean={mean}, std={std}"
            )
    return mean, std


def dataset_normalization(dataset: str, normalize: str | None = None) -> Stats:
    """The (mean, std) a run on ``dataset`` uses: the dataset's own, or the named NORMALIZATION entry."""
    if normalize is None:
        from .base import dataset_spec

        spec = dataset_spec(dataset)
        return tuple(spec.mean), tuple(spec.std)
    return normalization(normalize)
