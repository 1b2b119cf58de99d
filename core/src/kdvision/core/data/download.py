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

:func:`download_file` is the generic transfer for single large files (the teacher archives of
``tools/download_teachers.py``): resumable over HTTP ``Range``, a tqdm progress bar, a SHA-256 check.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.request
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
    "caltech256": "use get_dataset('caltech256', root, download=True) (torchvision's Caltech256 source) or extract "
                  "256_ObjectCategories.tar under the data root",
    "cifar10_test_subset": "it has no download source: it ships with the project's shared data",
    "dtd": "use get_dataset('dtd', root, download=True) (torchvision's DTD archive, md5-checked) or extract the "
           "official dtd-r1.0.1.tar.gz under the data root",
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
# one large file: resumable, with a progress bar and a SHA-256 check


class ChecksumMismatch(DataError):
    """A downloaded file does not have the expected SHA-256 (raised by :func:`download_file`)."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def partial_path(dest: str | os.PathLike) -> Path:
    """Where :func:`download_file` keeps the bytes of ``dest`` received so far: ``dest`` + ``.partial``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".partial")


def download_file(url: str, dest: str | os.PathLike, *, sha256: str | None = None, progress: bool | None = None,
                  desc: str | None = None, resume: bool = True, chunk_size: int = 1 << 20) -> str:
    """Download ``url`` to the file ``dest`` and return its SHA-256 hex digest.

    - The bytes go to :func:`partial_path` (``dest.partial``) and ``dest`` appears (atomic rename) only once the
      transfer is complete and, when ``sha256`` is given, verified: ``dest`` is never a partial file.
    - ``resume``: an existing ``dest.partial`` is continued with an HTTP ``Range: bytes=N-`` request. A server that
      answers 206 appends to it; one that ignores ``Range`` (200) sends the whole file, which replaces it; 416 with
      the partial file as long as the whole file means it was already complete. ``resume=False`` starts afresh.
    - A transfer that fails or ends early **keeps** ``dest.partial`` (the next call continues it) and raises a
      one-line :class:`DataError` naming the URL, the reason and how many bytes are kept.
    - A SHA-256 mismatch **removes** ``dest.partial`` (bytes that hash wrong cannot be trusted as a prefix to
      resume from) and raises :class:`ChecksumMismatch`.
    - ``progress``: a tqdm bar on stderr (bytes, rate, ETA; it starts at the resumed offset); ``None``: only when
      stderr is a terminal.
    """
    dest = Path(dest)
    part = partial_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        part.unlink(missing_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    digest = hashlib.sha256()
    complete = False
    headers = {"User-Agent": "kdvision", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    total: int | None = None
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=SOCKET_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        size = _range_total(exc.headers.get("Content-Range")) if exc.code == 416 else None
        exc.close()
        if exc.code == 416 and offset and size == offset:
            complete = True  # the previous call received every byte but stopped before the rename
        elif exc.code == 416 and offset:
            part.unlink(missing_ok=True)  # the partial file does not fit the file served now: start again
            return download_file(url, dest, sha256=sha256, progress=progress, desc=desc, resume=False,
                                 chunk_size=chunk_size)
        else:
            raise DataError(f"downloading {url} failed: {_reason(exc)}{_kept(part)}") from None
    except Exception as exc:  # noqa: BLE001 - URLError, timeouts, OSError, http.client errors
        raise DataError(f"downloading {url} failed: {_reason(exc)}{_kept(part)}") from None
    if not complete:
        with resp:
            status = getattr(resp, "status", None) or 200
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if offset and status == 206 and _range_start(resp.headers.get("Content-Range")) == offset:
                mode = "ab"
            else:  # a full response (200, or a Range answer we cannot use): the file from its first byte
                mode, offset = "wb", 0
            total = None if length is None else offset + length
            if mode == "ab":
                with open(part, "rb") as f:  # the kept prefix counts towards the digest
                    for chunk in iter(lambda: f.read(chunk_size), b""):
                        digest.update(chunk)
            from tqdm.auto import tqdm

            show = sys.stderr.isatty() if progress is None else progress
            received = offset
            with open(part, mode) as out, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                               unit_divisor=1024, desc=desc or dest.name, disable=not show,
                                               dynamic_ncols=True) as bar:
                try:
                    for chunk in iter(lambda: resp.read(chunk_size), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except Exception as exc:  # noqa: BLE001 - the connection dropped or stalled mid-transfer
                    out.flush()
                    raise DataError(f"downloading {url} failed after {_size(received)}: {_reason(exc)}"
                                    f"{_kept(part)}") from None
            if total is not None and received < total:
                raise DataError(f"downloading {url} failed: the transfer ended after {_size(received)} of "
                                f"{_size(total)}{_kept(part)}")
    else:
        with open(part, "rb") as f:
            for chunk in iter(lambda: f.read(chunk_size), b""):
                digest.update(chunk)
    got = digest.hexdigest()
    if sha256 is not None and got != sha256.lower():
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(f"downloading {url} failed: checksum mismatch (sha256 {got}, expected "
                               f"{sha256.lower()}); the file was discarded")
    os.replace(part, dest)
    return got


def _range_start(content_range: str | None) -> int | None:
    """``bytes 100-199/200`` → 100."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", content_range or "")
    return int(m.group(1)) if m else None


def _range_total(content_range: str | None) -> int | None:
    """``bytes */200`` (a 416 answer) → 200."""
    m = re.fullmatch(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)\s*", content_range or "")
    return int(m.group(1)) if m else None


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def _kept(part: Path) -> str:
    """``; 12.0 MiB kept in X.partial, run again to resume`` when a partial file exists."""
    try:
        n = part.stat().st_size
    except OSError:
        return ""
    return f"; {_size(n)} kept in {part}, run again to resume" if n else ""


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
