"""Fetch the public datasets the original projects download on first use (MNIST, CIFAR-10/100, SVHN).

>>> from kdvision.core.data import download_dataset
>>> download_dataset("cifar100", "~/data")     # ~/data/cifar-100-python/{train,test,meta}
>>> download_dataset("svhn", "~/data", splits=("test",))

The URLs and md5 checksums are torchvision's own (read from ``torchvision.datasets.MNIST.mirrors`` /
``.resources``, ``CIFAR10.url`` / ``.tgz_md5`` / ``.train_list`` ..., ``SVHN.split_list`` at call time), and the
transfer and extraction are torchvision's (``download_url``, ``extract_archive``). What this module adds:

- the files end up in the layout our readers look for (:mod:`.mnist`, :mod:`.cifar`, :mod:`.svhn`), the same
  layout torchvision's dataset classes use;
- every file is downloaded, checked and extracted in a hidden staging folder inside ``root`` and only then moved
  into place (``os.replace``, same file system): an interrupted or failed download never leaves a partial file
  where a reader would take it for data;
- any failure is one line, a :class:`~kdvision.core.errors.DataError` naming the URL and the reason (no route,
  DNS, HTTP status, timeout, checksum mismatch), never a traceback.

Splits already present are not downloaded again.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import tempfile
import urllib.error
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..errors import DataError, KDVisionError
from .base import DATASETS, find_split, is_embedded, is_writable_dir, require_root

#: datasets :func:`download_dataset` can fetch, and the splits it fetches when none are named
DOWNLOADABLE: dict[str, tuple[str, ...]] = {
    "mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "svhn": ("train", "test"),  # "extra" (1.3 GB) only when asked for
}

#: why the other registered datasets cannot be downloaded
_NOT_DOWNLOADABLE = {
    "caltech101": "its source (caltech-101.zip on data.caltech.edu, a zip of nested archives) is not supported "
                  "here; extract 101_ObjectCategories/ under the data root",
    "cifar10_test_subset": "it has no download source: it ships with the project's shared data",
    "imagefolder": "it is a folder of your own images",
}

SOCKET_TIMEOUT_S = 60.0  # a stalled connection fails instead of hanging forever


def download_dataset(name: str, root: str | os.PathLike, *, splits: Sequence[str] | None = None) -> None:
    """Download dataset ``name`` into ``root`` (created if missing) so that its readers find it there.

    ``splits``: which splits to fetch (default: train and test; SVHN's ``extra`` only when named). Supported:
    ``mnist``, ``cifar10``, ``cifar100``, ``svhn`` (and their aliases). Any other dataset, or a failure, is a
    one-line :class:`DataError`; an unknown name is a :class:`~kdvision.core.errors.ConfigError`.
    """
    key = DATASETS.resolve(name)
    if key not in DOWNLOADABLE:
        if is_embedded(key):
            why = "it is embedded in the toolkit and needs no download"
        else:
            why = _NOT_DOWNLOADABLE.get(key, "it has no download source")
        raise DataError(f"dataset {key!r} cannot be downloaded: {why} (downloadable: {', '.join(DOWNLOADABLE)})")
    wanted = tuple(DOWNLOADABLE[key] if splits is None else splits)
    valid = DATASETS.meta(key)["splits"]
    bad = [s for s in wanted if s not in valid]
    if bad:
        raise DataError(f"dataset {key!r} has no split {', '.join(map(repr, bad))}; valid: {', '.join(valid)}")
    path = require_root(root, key, create=True)
    missing = [s for s in wanted if not find_split(key, path, s)]
    if not missing:
        return
    if not is_writable_dir(path):
        raise DataError(f"cannot download {key} into {path}: the folder is not writable")
    with _staging(path) as stage:
        _FETCHERS[key](key, path, stage, missing)
    still = [s for s in missing if not find_split(key, path, s)]
    if still:  # pragma: no cover - a fetcher that placed the wrong files
        raise DataError(f"downloaded {key} into {path}, but the {', '.join(still)} split is still not found")


# ---------------------------------------------------------------------------------------------------------------
# transfer, checksum and placement


@contextlib.contextmanager
def _staging(root: Path) -> Iterator[Path]:
    """A hidden folder inside ``root`` (same file system: the final move is an atomic rename), always removed."""
    try:
        stage = Path(tempfile.mkdtemp(prefix=".kdvision-download-", dir=root))
    except OSError as exc:
        raise DataError(f"cannot write into {root}: {exc.strerror or exc}") from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _reason(exc: BaseException) -> str:
    """A one-line reason for a failed transfer."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, socket.gaierror):
            return f"host name not resolved ({reason.strerror or reason})"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror.lower() if reason.strerror[:1].isupper() else reason.strerror
        return " ".join(str(reason).split()) or type(exc).__name__
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out after {SOCKET_TIMEOUT_S:g} s"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP response ({type(exc).__name__}: {' '.join(str(exc).split())})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def _fetch(url: str, stage: Path, filename: str, md5: str | None) -> Path:
    """Download ``url`` to ``stage/filename`` with torchvision and check its md5; :class:`DataError` on failure."""
    from torchvision.datasets.utils import calculate_md5, download_url

    target = stage / filename
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    try:
        with _socket_timeout(SOCKET_TIMEOUT_S):
            download_url(url, str(stage), filename=filename, md5=None)
    except KDVisionError:
        raise
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, timeouts, OSError, RuntimeError, ...
        target.unlink(missing_ok=True)
        raise DataError(f"downloading {url} failed: {_reason(exc)}") from None
    if not target.is_file():
        raise DataError(f"downloading {url} failed: no file was written")
    if md5 is not None:
        got = calculate_md5(str(target))
        if got != md5:
            target.unlink(missing_ok=True)
            raise DataError(f"downloading {url} failed: checksum mismatch (md5 {got}, expected {md5}); the file "
                            f"was discarded")
    return target


def _extract(archive: Path, dest: Path, url: str) -> None:
    from torchvision.datasets.utils import extract_archive

    try:
        extract_archive(str(archive), str(dest))
    except Exception as exc:  # noqa: BLE001 - tarfile.ReadError, EOFError, zlib.error, OSError, ...
        raise DataError(f"downloading {url} failed: cannot extract {archive.name} "
                        f"({' '.join(str(exc).split()) or type(exc).__name__})") from None


def _check_member(file: Path, md5: str | None, url: str) -> None:
    from torchvision.datasets.utils import calculate_md5

    if not file.is_file():
        raise DataError(f"downloading {url} failed: the archive has no {file.name}")
    if md5 is not None and calculate_md5(str(file)) != md5:
        raise DataError(f"downloading {url} failed: {file.name} in the archive does not match its checksum")


def _place(src: Path, dest: Path) -> None:
    """Move a checked file into place (atomic rename within the data root)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)


# ---------------------------------------------------------------------------------------------------------------
# per dataset


def _mnist(key: str, root: Path, stage: Path, splits: Sequence[str]) -> None:
    """``root/MNIST/raw/{prefix}-{images-idx3,labels-idx1}-ubyte[.gz]``, torchvision's layout (both kept)."""
    import torchvision

    tv = torchvision.datasets.MNIST
    prefixes = {"train": "train", "test": "t10k"}
    wanted = {prefixes[s] for s in splits}
    raw = root / "MNIST" / "raw"
    for filename, md5 in tv.resources:
        if filename.split("-")[0] not in wanted:
            continue
        errors = []
        for mirror in tv.mirrors:
            url = f"{mirror}{filename}"
            try:
                gz = _fetch(url, stage, filename, md5)
                _extract(gz, stage, url)
            except DataError as exc:
                errors.append(str(exc))
                continue
            break
        else:
            raise DataError("; ".join(errors) if errors else f"no MNIST mirror configured for {filename}")
        plain = stage / filename[: -len(".gz")]
        _place(plain, raw / plain.name)
        _place(gz, raw / filename)


def _cifar(key: str, root: Path, stage: Path, splits: Sequence[str]) -> None:
    """``root/cifar-10-batches-py/`` or ``root/cifar-100-python/`` with the batch files and the meta file."""
    import torchvision

    tv = torchvision.datasets.CIFAR10 if key == "cifar10" else torchvision.datasets.CIFAR100
    archive = _fetch(tv.url, stage, tv.filename, tv.tgz_md5)
    extracted = stage / "extracted"
    _extract(archive, extracted, tv.url)
    members = [(tv.meta["filename"], tv.meta["md5"])]
    if "train" in splits:
        members += [tuple(m) for m in tv.train_list]
    if "test" in splits:
        members += [tuple(m) for m in tv.test_list]
    for fname, md5 in members:  # check everything before anything is moved into place
        _check_member(extracted / tv.base_folder / fname, md5, tv.url)
    for fname, _ in members:
        _place(extracted / tv.base_folder / fname, root / tv.base_folder / fname)


def _svhn(key: str, root: Path, stage: Path, splits: Sequence[str]) -> None:
    """``root/{split}_32x32.mat``."""
    import torchvision

    for split in splits:
        url, filename, md5 = torchvision.datasets.SVHN.split_list[split]
        _place(_fetch(url, stage, filename, md5), root / filename)


_FETCHERS: dict[str, Callable[[str, Path, Path, Sequence[str]], Any]] = {
    "mnist": _mnist, "cifar10": _cifar, "cifar100": _cifar, "svhn": _svhn,
}
