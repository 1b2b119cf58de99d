"""Out-of-domain (OOD) training data for MosaicKD and Blind KD: one reader, one uint8 tensor.

>>> from kdvision.core.data.ood import load_ood, ood_normalization, ood_subset, subset_applies
>>> x = load_ood("cifar10", root)                 # uint8 (50000, 3, 32, 32): every training image, no transform
>>> x = load_ood("/data/my_images", None)         # an image folder (any depth), also "folder:/data/my_images"
>>> ood_normalization("imagenet_32x32")           # ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)): the legacy KD stream
>>> idx = ood_subset(x, teacher, n=50000, mean=..., std=..., batch_size=256, device="cuda",
...                  cache_dir="checkpoints/ood_index", dataset="cifar100-imagenet_32x32",
...                  teacher_checkpoint="checkpoints/pretrained/cifar100_wrn40_2.pth")

The original MosaicKD builds two DataLoaders over the same OOD set (reference/mosaickd.md §5.2, bug 11); here the
caller holds the one uint8 tensor returned by :func:`load_ood` (on the device) and applies each stream's
augmentation and normalisation there.

Sources (:data:`OOD_SOURCES`, a registry: ``OOD_SOURCES.names(include_aliases=True)``):

- ``cifar10``, ``cifar100``, ``svhn``: the training split through the core readers (``root`` as for
  :func:`~kdvision.core.data.get_dataset`: ``root/cifar-10-batches-py``, ``root/train_32x32.mat``, ...);
- ``imagenet_32x32`` (alias ``imagenet32``), ``places365_32x32`` (alias ``places365_32``): the pickled batch
  release (:mod:`kdvision.core.data.imagenet32`); when no batch files are found, MosaicKD's converted ImageFolder
  tree ``root/ImageNet_32x32/train`` (``root/Places365_32x32/train``) is read as an image folder;
- ``folder``: every image file under a folder, at any depth, sorted by path, hidden files (``.*``) skipped. Given
  as ``folder:PATH``, as a path (a name containing ``/``, or starting with ``~`` or ``.``), or as ``folder`` with
  the folder as ``root``. Images are not resized or converted: one of another size or channel count than asked
  is a one-line error naming it (palette images count as RGB; 16-bit or float images are refused).
"""
from __future__ import annotations

import difflib
import hashlib
import math
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, DataError
from ..registry import Registry
from .base import open_image, require_root
from .cifar import load_cifar_arrays
from .folder import IMAGE_SUFFIXES
from .imagenet32 import find_downsampled_files, load_downsampled
from .normalization import NORMALIZATION, Stats
from .svhn import load_svhn_arrays

OOD_SOURCES = Registry("OOD source")
"""name -> loader ``fn(root, *, size, channels) -> uint8 (N, C, H, W)``; metadata ``normalization`` (the key of
:data:`NORMALIZATION` of the set's own training transform, None for a folder), ``subset`` (whether
``--ood_subset`` applies) and ``description``."""

Size = tuple[int, int]


def _register(name: str, *, aliases: tuple[str, ...] = (), normalization: str | None, subset: bool,
              description: str) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    return OOD_SOURCES.register(name, aliases=aliases, normalization=normalization, subset=subset,
                                description=description)


def _fixed_shape(name: str, images: torch.Tensor, size: Size, channels: int) -> torch.Tensor:
    got = tuple(images.shape[1:])
    if got != (channels, *size):
        raise ConfigError(f"OOD data {name} has {'x'.join(map(str, got))} (CxHxW) images but {channels}x{size[0]}x"
                          f"{size[1]} are needed (the in-domain data's shape; OOD images are not resized)")
    return images


@_register("cifar10", normalization="cifar10", subset=False, description="CIFAR-10 train (50,000 images)")
def _load_cifar10(root, *, size: Size, channels: int) -> torch.Tensor:
    images, _ = load_cifar_arrays("cifar10", root, "train")
    return _fixed_shape("cifar10", torch.from_numpy(images), size, channels)


@_register("cifar100", normalization="cifar100", subset=False, description="CIFAR-100 train (50,000 images)")
def _load_cifar100(root, *, size: Size, channels: int) -> torch.Tensor:
    images, _ = load_cifar_arrays("cifar100", root, "train")
    return _fixed_shape("cifar100", torch.from_numpy(images), size, channels)


@_register("svhn", normalization="half", subset=False, description="SVHN train (73,257 images)")
def _load_svhn(root, *, size: Size, channels: int) -> torch.Tensor:
    images, _ = load_svhn_arrays(root, "train")
    return _fixed_shape("svhn", torch.from_numpy(images), size, channels)


_TREES = {"imagenet_32x32": "ImageNet_32x32", "places365_32x32": "Places365_32x32"}


def _downsampled(name: str) -> Callable[..., torch.Tensor]:
    def load(root, *, size: Size, channels: int) -> torch.Tensor:
        base = require_root(root, name)
        tree = base / _TREES[name] / "train"
        if find_downsampled_files(name, base, "train") is None and tree.is_dir():
            return load_image_folder(tree, size=size, channels=channels)  # MosaicKD's converted ImageFolder tree
        images, _ = load_downsampled(name, base, "train")
        return _fixed_shape(name, images, size, channels)

    return load


_register("imagenet_32x32", aliases=("imagenet32",), normalization="half", subset=True,
          description="ImageNet-32 train (Chrabaszcz et al. pickled batches, 1,281,167 images)")(
    _downsampled("imagenet_32x32"))
_register("places365_32x32", aliases=("places365_32",), normalization="half", subset=True,
          description="Places365-32 train (the ImageNet-32 batch layout)")(_downsampled("places365_32x32"))


@_register("folder", normalization=None, subset=False,
           description="every image file under a folder (folder:PATH or a path)")
def _load_folder(root, *, size: Size, channels: int) -> torch.Tensor:
    return load_image_folder(root, size=size, channels=channels)


# ----------------------------------------------------------------------------------------------------------------
# names


def _looks_like_path(name: str) -> bool:
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(s in name for s in seps) or name.startswith(("~", "."))


def resolve_ood(name: str) -> tuple[str, str | None]:
    """``(canonical source name, folder path or None)`` for an OOD name as a user writes it (``--unlabeled``).

    ``folder:PATH`` and anything that looks like a path give ``("folder", PATH)``; an unknown name is a
    :class:`ConfigError` listing the valid ones.
    """
    name = str(name).strip()
    if name.startswith("folder:"):
        path = name[len("folder:"):].strip()
        if not path:
            raise ConfigError("OOD data 'folder:' needs a path: folder:/path/to/images")
        return "folder", path
    if _looks_like_path(name):
        return "folder", name
    if name in OOD_SOURCES:
        return OOD_SOURCES.resolve(name), None
    valid = OOD_SOURCES.names(include_aliases=True)
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"unknown OOD data {name!r}{hint}; valid: {', '.join(valid)}, or an image folder given as "
                      f"folder:PATH or a path")


def list_ood_sources(include_aliases: bool = False) -> list[str]:
    """The OOD source names (``folder`` stands for any image folder)."""
    return OOD_SOURCES.names(include_aliases=include_aliases)


def _size(size: int | Sequence[int]) -> Size:
    try:
        h, w = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"OOD image size must be an int or (H, W), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"OOD image size must be positive, got {size!r}")
    return int(h), int(w)


def load_ood(name: str, root: str | os.PathLike | None, *, size: int | Sequence[int] = (32, 32),
             channels: int = 3) -> torch.Tensor:
    """ALL training images of OOD set ``name`` as one contiguous uint8 tensor (N, channels, H, W), untransformed.

    ``root`` is the data root (for ``folder``: the folder, unless the name carries it). ``size`` (H, W) and
    ``channels`` are what the caller needs (the in-domain shape); a set of another shape is a one-line error,
    never silently resized.
    """
    key, path = resolve_ood(name)
    if channels not in (1, 3):
        raise ConfigError(f"OOD images must have 1 or 3 channels, got channels={channels}")
    hw = _size(size)
    loader = OOD_SOURCES.get(key)
    source = path if key == "folder" and path is not None else root
    return loader(source, size=hw, channels=int(channels)).contiguous()


def ood_normalization(name: str) -> Stats:
    """The OOD set's own (mean, std), as the original's OOD training transform applies it (the ``legacy`` KD
    stream, reference/mosaickd.md §5.1-5.2): CIFAR-10 statistics for cifar10, CIFAR-100's for cifar100, 0.5/0.5
    for svhn, imagenet_32x32 and places365_32x32. An image folder has none (ConfigError)."""
    key, _ = resolve_ood(name)
    norm = OOD_SOURCES.meta(key)["normalization"]
    if norm is None:
        raise ConfigError(f"OOD data {name!r} (an image folder) has no normalisation of its own to reproduce; use "
                          f"ood_kd_normalization=in_domain")
    return NORMALIZATION[norm]


def subset_applies(name: str) -> bool:
    """Whether the teacher-entropy OOD subset (``--ood_subset``) applies: imagenet_32x32 and places365_32x32 only,
    as in the original (which silently ignored it elsewhere, reference/mosaickd.md §8 bug 2)."""
    key, _ = resolve_ood(name)
    return bool(OOD_SOURCES.meta(key)["subset"])


# ----------------------------------------------------------------------------------------------------------------
# image folders

# bands of the 8-bit PIL modes; palette images ("P") take their palette's bands
_MODE_BANDS = {"1": 1, "L": 1, "LA": 2, "La": 2, "RGB": 3, "YCbCr": 3, "RGBA": 4, "RGBa": 4, "CMYK": 4}


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Every image file (:data:`~kdvision.core.data.folder.IMAGE_SUFFIXES`) under ``folder``, at any depth,
    sorted by path; files and folders whose name starts with ``.`` are skipped."""
    root = Path(folder)
    files, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or a folder linked twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                files.append(Path(dirpath) / f)
    return sorted(files)


def _decode(path: Path, size: Size, channels: int) -> np.ndarray:
    img = open_image(path, mode=None, what="OOD image")
    mode = img.mode
    bands = (len(img.palette.mode) if img.palette is not None else 3) if mode == "P" else _MODE_BANDS.get(mode)
    h, w = size
    expected = f"expected {channels}x{h}x{w} (CxHxW) 8-bit images"
    if bands is None:
        raise DataError(f"OOD image {path} has pixel mode {mode} (not 8-bit); {expected}")
    if bands != channels or (img.height, img.width) != (h, w):
        raise DataError(f"OOD image {path} is {bands}x{img.height}x{img.width}; {expected} (OOD images are not "
                        f"resized or converted)")
    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def load_image_folder(folder: str | os.PathLike | None, *, size: int | Sequence[int] = (32, 32), channels: int = 3,
                      workers: int | None = None) -> torch.Tensor:
    """Every image under ``folder`` (:func:`image_files`) as uint8 (N, channels, H, W), decoded by ``workers``
    threads (default: up to 8) into one preallocated array; an image of another shape is a one-line DataError."""
    if folder is None or str(folder) == "":
        raise DataError("OOD data 'folder' needs a path: folder:/path/to/images (or a path as the name)")
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"OOD image folder {root} {'is not a directory' if root.exists() else 'does not exist'}")
    hw = _size(size)
    files = image_files(root)
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    out = np.empty((len(files), channels, *hw), dtype=np.uint8)
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = 512
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(files), chunk):
            part = files[start:start + chunk]
            for i, arr in enumerate(pool.map(lambda p: _decode(p, hw, channels), part)):  # file order: first error
                out[start + i] = arr
    return torch.from_numpy(out)


# ----------------------------------------------------------------------------------------------------------------
# teacher-entropy subset (reference/mosaickd.md §5.3)

_CACHE_VERSION = 1


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise CheckpointError(f"cannot read teacher checkpoint {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def images_fingerprint(images: torch.Tensor, samples: int = 256) -> str:
    """A cheap identity of an image tensor: sha256 of its shape, dtype and ``samples`` evenly spaced images."""
    n = len(images)
    idx = torch.linspace(0, n - 1, min(n, samples)).round().long().unique() if n else torch.zeros(0, dtype=torch.long)
    h = hashlib.sha256(f"{tuple(images.shape)}|{images.dtype}".encode())
    h.update(images[idx.to(images.device)].contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def teacher_entropy(images: torch.Tensor, teacher: torch.nn.Module, *, mean: Sequence[float], std: Sequence[float],
                    batch_size: int, device: torch.device | str, progress: bool | None = None) -> torch.Tensor:
    """Per-image natural-log Shannon entropy (float64, CPU, N) of ``softmax(teacher(x))``, ``x`` = the images
    (uint8 0..255, or float in [0, 1]) normalised with ``mean``/``std``, no augmentation; the teacher in eval mode
    under ``no_grad`` (its previous mode is restored), ``batch_size`` images at a time on ``device``."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    m = torch.as_tensor(tuple(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.as_tensor(tuple(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)
    scale = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
    n = len(images)
    was_training = teacher.training
    teacher.eval()
    out = []
    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = tqdm(total=n, desc="OOD subset: teacher entropy", unit="img", disable=not show, leave=False)
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                x = images[start:start + batch_size].to(device, non_blocking=True).to(torch.float32)
                x = (x * scale - m) / s
                logp = torch.log_softmax(teacher(x).to(torch.float64), dim=1)
                out.append(-(logp.exp() * logp).sum(dim=1))
                bar.update(len(x))
    finally:
        bar.close()
        teacher.train(was_training)
    return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.float64)


def top_entropy_indices(entropy: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` largest entropies (ties: the lower index first), sorted ascending, int64."""
    order = torch.sort(entropy, descending=True, stable=True).indices[:n]
    return torch.sort(order).values.to(torch.int64)


def subset_cache_path(cache_dir: str | os.PathLike, dataset: str, teacher_checkpoint: str | os.PathLike,
                      n: int) -> Path:
    """``cache_dir/<dataset>-<first 16 hex of sha256(teacher checkpoint file)>-<n>.pt`` (path separators in
    ``dataset`` become ``_``)."""
    safe = "".join("_" if c in ("/", "\\", os.sep) else c for c in str(dataset))
    return Path(cache_dir) / f"{safe}-{file_sha256(teacher_checkpoint)[:16]}-{int(n)}.pt"


def _read_cache(path: Path, expect: dict[str, Any], n: int, total: int) -> torch.Tensor | None:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt cache is recomputed, never fatal
        warnings.warn(f"OOD subset cache {path} is unreadable ({' '.join(str(exc).split())}); recomputing",
                      stacklevel=3)
        return None
    if not isinstance(obj, dict) or any(obj.get(k) != v for k, v in expect.items()):
        warnings.warn(f"OOD subset cache {path} was made for other images, statistics or teacher; recomputing",
                      stacklevel=3)
        return None
    idx = obj.get("indices")
    if (not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or idx.shape != (n,)
            or (n and (idx[0] < 0 or idx[-1] >= total or not bool((idx[1:] > idx[:-1]).all())))):
        warnings.warn(f"OOD subset cache {path} holds no valid index list; recomputing", stacklevel=3)
        return None
    return idx


def ood_subset(images: torch.Tensor, teacher: torch.nn.Module, *, n: int, mean: Sequence[float],
               std: Sequence[float], batch_size: int, device: torch.device | str,
               cache_dir: str | os.PathLike | None, dataset: str, teacher_checkpoint: str | os.PathLike | None,
               progress: bool | None = None) -> torch.Tensor:
    """Indices (int64, ascending) of the ``n`` OOD images the teacher is least sure of: the ``n`` highest
    natural-log entropies of ``softmax(teacher(x))`` (:func:`teacher_entropy`; x normalised with the in-domain
    ``mean``/``std``, no augmentation). Ties keep the lower index.

    Rule: ``0 < n < len(images)``, else a one-line ConfigError (``n >= len(images)`` would keep every image: leave
    the subset off instead).

    The result is cached in ``cache_dir/<dataset>-<sha256(teacher_checkpoint)[:16]>-<n>.pt`` (written atomically;
    ``dataset`` should name the in-domain/OOD pair, e.g. ``"cifar100-imagenet_32x32"``) and reused without a
    teacher pass; a changed checkpoint file gives another key. The file also records the images' fingerprint and
    the statistics: a cache made for other images or statistics is recomputed (with a warning) and overwritten.
    ``cache_dir=None`` or ``teacher_checkpoint=None`` (a teacher not from a file): no cache.
    """
    if images.ndim != 4:
        raise ConfigError(f"ood_subset needs images (N, C, H, W), got shape {tuple(images.shape)}")
    total = len(images)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < int(n) < total:
        raise ConfigError(f"ood_subset size n={n} must be between 1 and {total - 1} (the OOD set has {total} "
                          f"images; n >= {total} would keep them all: turn the subset off instead)")
    n = int(n)
    if batch_size <= 0:
        raise ConfigError(f"ood_subset batch_size must be positive, got {batch_size}")
    path = None
    if cache_dir is not None and teacher_checkpoint is not None:
        path = subset_cache_path(cache_dir, dataset, teacher_checkpoint, n)
    expect = {}
    if path is not None:
        expect = {"version": _CACHE_VERSION, "n": n, "num_images": total, "images": images_fingerprint(images),
                  "mean": [float(v) for v in mean], "std": [float(v) for v in std],
                  "teacher_sha256": file_sha256(teacher_checkpoint)}
        if path.is_file():
            cached = _read_cache(path, expect, n, total)
            if cached is not None:
                _log().info(f"OOD subset: the top-{n} of {total} images by teacher entropy, read from {path}")
                return cached
    entropy = teacher_entropy(images, teacher, mean=mean, std=std, batch_size=batch_size, device=device,
                              progress=progress)
    if not bool(torch.isfinite(entropy).all()):
        raise DataError(f"the teacher's entropy is not finite on {int((~torch.isfinite(entropy)).sum())} OOD "
                        f"images (NaN/Inf logits); check the teacher checkpoint")
    indices = top_entropy_indices(entropy, n)
    if path is not None:
        from ..checkpoint import atomic_write

        payload = {**expect, "dataset": dataset, "indices": indices,
                   "entropy_threshold": float(entropy[indices].min()) if n else math.nan}
        try:
            atomic_write(path, lambda fh: torch.save(payload, fh))
        except OSError as exc:
            warnings.warn(f"cannot write the OOD subset cache {path}: {exc.strerror or exc}", stacklevel=2)
    _log().info(f"OOD subset: the top-{n} of {total} images by teacher entropy"
                + (f", cached to {path}" if path is not None else ""))
    return indices


def _log():
    from ..engine.rundir import get_logger

    return get_logger()
