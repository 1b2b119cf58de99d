"""Dataset registry, specs, front doors and the two dataset containers every reader returns.

Readers register a builder ``fn(root, split, *, train_transform, mean, std, download, **options)`` with
``@DATASETS.register(name, spec=DatasetSpec(...), splits=(...), find=fn(root, split) -> bool)``.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError, KDVisionError
from ..registry import Registry
from .normalization import NormalizeArg, Stats, normalization

DATASETS = Registry("dataset")


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset: classes, input shape and default normalisation."""

    name: str
    num_classes: int | None  # None: depends on the folder (imagefolder)
    in_channels: int
    image_size: tuple[int, int]  # (H, W) of the tensors the dataset yields
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None = None
    task: str = "classification"  # or "segmentation": items are (image, mask H x W with 255 = ignore)
    # The geometric part of the dataset's own training transform, in a form a batched augmenter of fixed-size
    # images can apply (the data-free image pool: kdvision.core.synthesis.Augment.from_spec):
    # RandomCrop(image_size, padding=train_crop_padding) (None: no crop) and RandomHorizontalFlip (train_hflip).
    # The defaults mean no augmentation; each registration states its own.
    train_crop_padding: int | None = None
    train_hflip: bool = False


def dataset_spec(name: str) -> DatasetSpec:
    """The registered :class:`DatasetSpec` of ``name`` (or an alias)."""
    return DATASETS.meta(name)["spec"]


def list_datasets(include_aliases: bool = False, task: str | None = "classification") -> list[str]:
    """Registered dataset names of one ``task`` (``"classification"``, ``"segmentation"``; ``None``: all)."""
    return DATASETS.names(include_aliases=include_aliases,
                          where=None if task is None else (lambda meta: meta["spec"].task == task))


def dataset_splits(name: str) -> tuple[str, ...]:
    """The split names a dataset accepts (an empty tuple: any folder name, as for ``imagefolder``)."""
    return tuple(DATASETS.meta(name)["splits"])


def is_embedded(name: str) -> bool:
    """Whether the dataset ships with its code (needs no data root), like ``digits``."""
    return bool(DATASETS.meta(name).get("embedded", False))


def _check_split(key: str, split: str) -> None:
    splits = DATASETS.meta(key)["splits"]
    if splits and split not in splits:
        raise ConfigError(f"dataset {key!r} has no split {split!r}; valid: {', '.join(splits)}")


def find_split(name: str, root: str | os.PathLike | None, split: str) -> bool:
    """Whether ``split`` of dataset ``name`` is present under ``root``; never raises for missing data.

    An unknown dataset name or a split name the dataset does not have is a configuration error
    (:class:`ConfigError`), not "absent": a typo must not silently switch evaluation off.
    """
    key = DATASETS.resolve(name)
    _check_split(key, split)
    try:
        return bool(DATASETS.meta(key)["find"](root, split))
    except (OSError, ValueError):
        return False


def get_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    train_transform: bool = False,
    normalize: NormalizeArg = None,
    *,
    download: bool = False,
    **options: Any,
) -> Dataset:
    """Build a dataset of ``(float image C×H×W normalised, int label)``.

    ``normalize``: ``None`` (the dataset's default constants), a key of :data:`NORMALIZATION`, an explicit
    ``(mean, std)`` pair, or ``False`` (images in [0, 1]). ``train_transform=True`` applies the dataset's training
    augmentation. ``download=True`` fetches missing files with torchvision where the dataset has a download source.
    ``options`` are dataset-specific keywords (e.g. ``image_size`` for ``imagefolder``).
    The returned dataset carries ``.spec``: the :class:`DatasetSpec` with the statistics actually applied.
    """
    key = DATASETS.resolve(name)
    _check_split(key, split)
    builder = DATASETS.get(key)
    spec: DatasetSpec = DATASETS.meta(key)["spec"]
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        fixed = {"root", "split", "train_transform", "mean", "std", "download"}
        valid = sorted(k for k in params if k not in fixed)
        unknown = sorted(k for k in options if k not in params or k in fixed)
        if unknown:
            raise ConfigError(
                f"dataset {key!r} takes no option {', '.join(map(repr, unknown))}; valid: {', '.join(valid) or 'none'}"
            )
    if normalize is None:
        mean, std = spec.mean, spec.std
    else:
        mean, std = normalization(normalize, channels=spec.in_channels)
    return builder(root=root, split=split, train_transform=bool(train_transform), mean=mean, std=std,
                   download=bool(download), **options)


def subset_indices(n_total: int, n: int, seed: int) -> list[int]:
    """The first ``n`` indices of a seeded permutation of ``range(n_total)``, sorted: the same images on every
    machine and in every run with that seed, whatever the run's own seed (which decides initialisation and order)."""
    if n > n_total:
        raise ConfigError(f"--train_subset {n} is larger than the training split ({n_total} images)")
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:n].tolist())


def labelled_subset(dataset: Dataset, n: int | None, seed: int) -> Dataset:
    """``dataset`` itself (``n`` None) or its :func:`subset_indices` subset (``--train_subset N --subset_seed S``)."""
    if n is None:
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, subset_indices(len(dataset), n, seed))


# ----------------------------------------------------------------------------------------------------------------
# helpers shared by the readers


def require_root(root: str | os.PathLike | None, name: str, *, create: bool = False) -> Path:
    """``root`` as a Path; a one-line :class:`DataError` when it is None or does not exist."""
    if root is None or str(root) == "":
        raise DataError(f"dataset {name!r} needs a data root (got none); pass --data_root")
    path = Path(root).expanduser()
    if not path.is_dir():
        if path.exists():
            raise DataError(f"data root {path} is not a directory")
        if create:
            try:
                path.mkdir(parents=True, exist_ok=True)
                return path
            except OSError as exc:
                raise DataError(f"cannot create data root {path}: {exc.strerror or exc}") from None
        raise DataError(f"data root {path} does not exist")
    return path


def run_download(fetch: Callable[[], Any], what: str, dest: Path) -> None:
    """Run a torchvision download; any failure (no network, bad checksum) becomes a one-line DataError."""
    try:
        fetch()
    except KDVisionError:
        raise
    except Exception as exc:  # noqa: BLE001 - torchvision raises URLError, RuntimeError, OSError, ...
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"downloading {what} into {dest} failed: {msg}") from None


def is_writable_dir(path: Path) -> bool:
    """Writable for us *and* not marked read-only: a folder whose mode has no write bit is treated as read-only
    even for root (the shared data folder), so nothing is ever written next to such data."""
    try:
        return path.is_dir() and os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)
    except OSError:
        return False


def open_image(path: str | os.PathLike, mode: str | None = "RGB", what: str = "image") -> Any:
    """A PIL image read from ``path`` and converted to ``mode`` (None: as stored); an unreadable file is a
    one-line :class:`DataError` naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode) if mode is not None else img.copy()
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read {what} {path}: {' '.join(str(exc).split())}") from None


def stratified_hash_split(labels: torch.Tensor, test_fraction: float, seed: int = 0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) sorted index tensors of a stratified split that no library version can change: for every class
    with ``n`` members, ``floor(test_fraction * n + 0.5)`` go to the test split — those whose
    ``sha256(f"{seed}/{label}/{index}")`` hex digests are smallest."""
    import hashlib

    train: list[int] = []
    test: list[int] = []
    for c in sorted(set(labels.tolist())):
        members = torch.nonzero(labels == c).flatten().tolist()
        n_test = int(test_fraction * len(members) + 0.5)
        ranked = sorted(members, key=lambda i: hashlib.sha256(f"{seed}/{c}/{i}".encode()).hexdigest())
        test += ranked[:n_test]
        train += ranked[n_test:]
    return torch.tensor(sorted(train), dtype=torch.int64), torch.tensor(sorted(test), dtype=torch.int64)


def stats_tensors(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return m, s


def with_stats(spec: DatasetSpec, stats: Stats, **changes: Any) -> DatasetSpec:
    mean, std = stats
    return replace(spec, mean=tuple(mean), std=tuple(std), **changes)


# ----------------------------------------------------------------------------------------------------------------
# containers


class RandomCropFlip:
    """RandomCrop(size, padding=pad, fill 0) + optional horizontal flip on uint8/float image batches (B, C, H, W).

    Vectorised over the batch, on the images' device; uses the global torch RNG of that device (PyTorch seeds it
    per DataLoader worker).
    """

    def __init__(self, pad: int = 4, flip: bool = True) -> None:
        self.pad = int(pad)
        self.flip = bool(flip)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        p, dev = self.pad, images.device
        if p > 0:
            padded = torch.nn.functional.pad(images, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (b,), device=dev)
            ox = torch.randint(0, 2 * p + 1, (b,), device=dev)
            rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])[:, :, None]  # (B, H, 1)
            cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])[:, None, :]  # (B, 1, W)
            batch = torch.arange(b, device=dev)[:, None, None]
            images = padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        if self.flip:
            flip = (torch.rand(b, device=dev) < 0.5).view(b, 1, 1, 1)
            images = torch.where(flip, images.flip(-1), images)
        return images.contiguous()

    def __repr__(self) -> str:
        return f"RandomCropFlip(pad={self.pad}, flip={self.flip})"


class TensorImageDataset(Dataset):
    """An in-memory image dataset: ``images`` uint8 (or float in [0, 1]) of shape (N, C, H, W), ``labels`` int64.

    Normalisation (and the optional training augmentation) happen on the fly, vectorised: ``__getitems__`` serves a
    whole DataLoader batch at once, and :meth:`batches` iterates normalised batches on any device without a
    DataLoader (the fast path for evaluation).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        spec: DatasetSpec | None = None,
    ) -> None:
        if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"images (N,C,H,W) and labels (N,) expected, got {tuple(images.shape)} / "
                             f"{tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.augment = augment
        self.spec = spec
        self.mean, self.std = tuple(mean), tuple(std)
        m, s = stats_tensors(self.mean, self.std)
        pixel = 255.0 if images.dtype == torch.uint8 else 1.0
        # x_norm = raw * scale + shift with raw in storage units (0..255 for uint8)
        self._scale = 1.0 / (s * pixel)
        self._shift = -m / s

    @property
    def classes(self) -> list[str] | None:
        return list(self.spec.class_names) if self.spec is not None and self.spec.class_names else None

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def normalize_batch(self, raw: torch.Tensor) -> torch.Tensor:
        """Storage-unit images (B, C, H, W) on any device → normalised float32."""
        scale = self._scale.to(raw.device)
        shift = self._shift.to(raw.device)
        return torch.addcmul(shift, raw.to(torch.float32), scale)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        raw = self.images[index : index + 1] if index >= 0 else self.images[index].unsqueeze(0)
        if self.augment is not None:
            raw = self.augment(raw)
        return self.normalize_batch(raw)[0], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        raw = self.images[idx]
        if self.augment is not None:
            raw = self.augment(raw)
        x = self.normalize_batch(raw)
        return list(zip(x.unbind(0), self.labels[idx].tolist()))

    def batches(
        self,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches (x normalised float32, y int64) on ``device``; the uint8 data is moved once."""
        device = torch.device(device) if device is not None else self.images.device
        images = self.images.to(device)
        labels = self.labels.to(device)
        n = len(self)
        order = torch.randperm(n, generator=generator).to(device) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            sel = slice(start, min(start + batch_size, n))
            if order is None:
                raw, y = images[sel], labels[sel]
            else:
                raw, y = images[order[sel]], labels[order[sel]]
            if self.augment is not None:
                raw = self.augment(raw)
            yield self.normalize_batch(raw), y

    def __repr__(self) -> str:
        name = self.spec.name if self.spec else "?"
        return (f"TensorImageDataset({name}, n={len(self)}, shape={tuple(self.images.shape[1:])}, "
                f"dtype={self.images.dtype}, augment={self.augment!r})")


class ImageListDataset(Dataset):
    """Images read lazily from files: ``samples`` is a list of ``(path, label)``; ``transform`` maps a PIL RGB image
    to a normalised tensor."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], transform: Callable[[Any], Any],
                 spec: DatasetSpec | None = None) -> None:
        self.samples = samples
        self.classes = classes
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        self.transform = transform
        self.spec = spec

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(open_image(path, "RGB")), label

    def __repr__(self) -> str:
        name = self.spec.name if self.spec else "?"
        return f"ImageListDataset({name}, n={len(self)}, classes={len(self.classes)})"
