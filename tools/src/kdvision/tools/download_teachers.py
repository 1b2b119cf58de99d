"""Fetch published teacher checkpoints: ``python tools/download_teachers.py --set repdistiller-cifar100``.

This replaces SDD's ``fetch_pretrained_teachers.sh``. For a set of :data:`SETS` it downloads the published archive,
verifies its SHA-256, checks that it holds the expected members, and unpacks them under ``--root`` (default: the
working directory):

=========================  ===================================================================================
set                        where the files land (relative to ``--root``)
=========================  ===================================================================================
``repdistiller-cifar100``  ``checkpoints/teachers/cifar100/<arch>_vanilla/ckpt_epoch_240.pth`` for ``resnet56``,
                           ``resnet110``, ``resnet32x4``, ``ResNet50``, ``wrn_40_2``, ``vgg13`` (the RepDistiller /
                           mdistiller ``cifar_teachers.tar``: ``{'epoch', 'model', 'accuracy', 'optimizer'}``)
=========================  ===================================================================================

``checkpoints/teachers/cifar100/`` is the toolkit's teacher folder: ``classification/sdd.py`` looks there
(the originals use ``./save/models/<arch>_vanilla/`` (SDD) and ``download_ckpts/cifar_teachers/`` (mdistiller);
the ``<arch>_vanilla/ckpt_epoch_240.pth`` part is the same, so either original's folder can be pointed at too).

Behaviour:

- **Idempotent.** When every file of the set is present, nothing is downloaded (``--force`` fetches and unpacks
  again). When some are missing, only those are unpacked; present files are not touched.
- **Resumable.** The archive is downloaded to ``<dest>/<archive>.partial``; an interrupted run keeps it, and the
  next run continues it with an HTTP ``Range`` request (:func:`kdvision.core.data.download.download_file`).
- **Progress bar** (tqdm) on stderr when it is a terminal; ``--no-progress`` / ``--progress`` switch it.
- **Verified.** The archive's SHA-256 is checked against the set's pinned digest, or ``--sha256 HEX`` (which takes
  precedence, e.g. for a mirror). A mismatch is a one-line error and the **downloaded file is removed** (it cannot
  be resumed from: its bytes are wrong somewhere); an archive you placed by hand is left where it is. A set whose
  digest is not pinned yet (``sha256=None``) is downloaded anyway, and the digest is printed so that it can be
  pinned in :data:`SETS` or passed as ``--sha256`` next time; the member list below still guards against a wrong
  archive.
- **Checked and safe unpacking.** Every member of the archive is inspected before anything is written: absolute
  paths, ``..`` components, links pointing outside the archive, device files and FIFOs make it refuse the whole
  archive. The set's expected members must all be present as regular files (otherwise it is the wrong archive);
  only those are unpacked (streamed, never via ``tar.extract``), through a hidden staging folder, and moved into
  place with an atomic rename. Other members are ignored (said in one line). The archive is deleted after a
  successful unpack unless ``--keep-archive`` (one you placed by hand is kept).
- **Offline.** A failed transfer is one line naming the URL and the reason, and says how to get the file another
  way: ``--mirror BASE_URL`` (or the ``KDV_TEACHER_MIRROR`` environment variable; the archive's file name is
  appended to it), or a manual download placed at ``<dest>/<archive>``, which the next run verifies and unpacks.

User errors exit with status 1 and one ``error: ...`` line on stderr (``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import os
import posixpath
import re
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdvision.core.errors import ConfigError, DataError

#: environment variable with a base URL that replaces the sets' own download location (like ``--mirror``)
MIRROR_ENV = "KDV_TEACHER_MIRROR"


@dataclass(frozen=True)
class TeacherSet:
    """One downloadable set of teachers: an archive and what it must contain."""

    name: str
    description: str
    url: str                    #: the published archive
    sha256: str | None          #: its SHA-256 (lower-case hex); None = not pinned yet
    dest: str                   #: folder relative to ``--root`` that receives the members
    strip: str                  #: leading folder of the members inside the archive, removed when unpacking
    members: tuple[str, ...]    #: files the archive must hold (relative to ``strip`` and to ``dest``)
    size: str = ""              #: approximate download size, for ``--list``

    @property
    def filename(self) -> str:
        return posixpath.basename(self.url)

    def url_for(self, mirror: str | None) -> str:
        return f"{mirror.rstrip('/')}/{self.filename}" if mirror else self.url


_REPDISTILLER = ("resnet56", "resnet110", "resnet32x4", "ResNet50", "wrn_40_2", "vgg13")

#: the known sets, by name
SETS: dict[str, TeacherSet] = {s.name: s for s in [
    TeacherSet(
        name="repdistiller-cifar100",
        description="RepDistiller / mdistiller CIFAR-100 teachers (SDD, DKD, KD baselines): "
                    + ", ".join(_REPDISTILLER),
        url="https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar",
        sha256=None,  # not pinned yet: pin the digest the first download prints (models.md §2)
        dest="checkpoints/teachers/cifar100",
        strip="cifar_teachers",
        members=tuple(f"{arch}_vanilla/ckpt_epoch_240.pth" for arch in _REPDISTILLER),
        size="≈ 364 MB",
    ),
]}


def get_set(name: str) -> TeacherSet:
    try:
        return SETS[name]
    except KeyError:
        raise ConfigError(f"unknown teacher set {name!r}; valid: {', '.join(SETS)}") from None


# ---------------------------------------------------------------------------------------------------------------
# the archive


#: how a rejected archive is got rid of (it is kept so that it can be inspected)
_AGAIN = "; delete it and run again (or run with --force to download it afresh)"


def _norm(name: str) -> str:
    """A member name without a leading ``./`` and trailing ``/``."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _unsafe(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be unpacked anywhere (None if it is harmless)."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "has a '..' component"
    if member.issym() or member.islnk():
        target = member.linkname
        if member.issym():  # relative to the link's own folder
            target = posixpath.join(posixpath.dirname(_norm(name)), target) if not target.startswith("/") else target
        if target.startswith("/") or posixpath.normpath(target).split("/")[0] == "..":
            return f"is a link pointing outside the archive ({member.linkname})"
        return None
    if not (member.isfile() or member.isdir()):
        return "is a device file or FIFO"
    return None


def inspect_archive(archive: Path, tset: TeacherSet) -> tuple[dict[str, tarfile.TarInfo], list[str], tarfile.TarFile]:
    """Open ``archive`` and check every member; returns (expected member → TarInfo, other names, open tar)."""
    try:
        tar = tarfile.open(archive, "r:*")
        members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive} is not a readable tar archive ({' '.join(str(exc).split()) or type(exc).__name__})"
                        f"{_AGAIN}") from None
    try:
        for m in members:
            why = _unsafe(m)
            if why:
                raise DataError(f"refusing to unpack {archive}: member {m.name!r} {why}; this is not the "
                                f"{tset.name} archive{_AGAIN}")
        prefix = f"{tset.strip}/" if tset.strip else ""
        wanted = {prefix + rel: rel for rel in tset.members}
        found: dict[str, tarfile.TarInfo] = {}
        others: list[str] = []
        for m in members:
            name = _norm(m.name)
            if name in wanted:
                if not m.isfile():
                    raise DataError(f"refusing to unpack {archive}: member {m.name!r} is not a regular "
                                    f"file{_AGAIN}")
                found[wanted[name]] = m
            elif not m.isdir():
                others.append(name)
        missing = [name for name, rel in wanted.items() if rel not in found]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{archive} is not the {tset.name} archive: it has no {missing[0]}{more}{_AGAIN}")
    except BaseException:
        tar.close()
        raise
    return found, others, tar


def unpack(archive: Path, tset: TeacherSet, dest: Path, wanted: list[str]) -> list[str]:
    """Unpack the set's members ``wanted`` (relative names) from ``archive`` into ``dest``; returns other members."""
    found, others, tar = inspect_archive(archive, tset)
    dest.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".kdvision-unpack-", dir=dest))
    try:
        with tar:
            for rel in wanted:
                src = tar.extractfile(found[rel])
                if src is None:  # pragma: no cover - isfile() members always have data
                    raise DataError(f"cannot read {rel} from {archive}")
                out = stage / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with src, open(out, "wb") as f:
                        shutil.copyfileobj(src, f, 1 << 20)
                except (tarfile.TarError, EOFError) as exc:
                    raise DataError(f"{archive} is damaged: cannot read {rel} ({exc}){_AGAIN}") from None
                except OSError as exc:
                    raise DataError(f"cannot write {out}: {exc.strerror or exc}") from None
        for rel in wanted:  # everything read: move into place (same file system, atomic per file)
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return others


# ---------------------------------------------------------------------------------------------------------------
# the command


def fetch(tset: TeacherSet, root: Path, *, mirror: str | None = None, sha256: str | None = None,
          force: bool = False, keep_archive: bool = False, progress: bool | None = None,
          log=print) -> list[Path]:
    """Make the files of ``tset`` present under ``root`` (see the module docstring); returns their paths."""
    dest = root / tset.dest
    targets = [dest / rel for rel in tset.members]
    wanted = [rel for rel, t in zip(tset.members, targets) if force or not t.is_file()]
    if not wanted:
        log(f"{tset.name}: all {len(targets)} teachers are present in {dest}; nothing to download "
            f"(--force fetches them again)")
        return targets
    if root.exists() and not root.is_dir():
        raise DataError(f"--root {root} is not a directory")
    # imported here: kdvision.core.data imports torch (seconds), which --list and a no-op run do not need
    from kdvision.core.data.download import ChecksumMismatch, download_file, partial_path, sha256_file

    expected = (sha256 or tset.sha256 or "").lower() or None
    archive = dest / tset.filename
    url = tset.url_for(mirror)
    placed_by_hand = archive.is_file() and not force
    if placed_by_hand:
        log(f"{tset.name}: using the archive already at {archive}")
        digest = sha256_file(archive)
        if expected is not None and digest != expected:
            raise DataError(f"{archive} does not match the {tset.name} checksum (sha256 {digest}, expected "
                            f"{expected}); it was left in place: delete it (or pass the right --sha256) and run "
                            f"again")
    else:
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create {dest}: {exc.strerror or exc}") from None
        if force:
            archive.unlink(missing_ok=True)
        part = partial_path(archive)
        what = f"resuming at {part.stat().st_size} bytes" if part.is_file() and not force else tset.size
        log(f"{tset.name}: downloading {url}{f' ({what})' if what else ''}")
        try:
            digest = download_file(url, archive, sha256=expected, progress=progress, desc=tset.filename,
                                   resume=not force)
        except ChecksumMismatch:
            raise
        except DataError as exc:
            raise DataError(f"{exc}; check the connection, use --mirror BASE_URL (or ${MIRROR_ENV}), or download "
                            f"{url} by hand to {archive} and run again") from None
    if expected is None:
        log(f"note: the {tset.name} archive is not pinned; its sha256 is {digest}: pin it in "
            f"kdvision.tools.download_teachers.SETS, or pass --sha256 {digest} to verify future downloads")
    else:
        log(f"{tset.name}: sha256 verified ({digest})")
    others = unpack(archive, tset, dest, wanted)
    if others:
        log(f"note: ignored {len(others)} other member(s) of the archive (first: {others[0]})")
    if not placed_by_hand and not keep_archive:
        archive.unlink(missing_ok=True)
    for rel in wanted:
        log(f"  {dest / rel}")
    log(f"{tset.name}: {len(wanted)} teacher(s) unpacked into {dest}"
        + (f" ({len(targets) - len(wanted)} already present)" if len(wanted) < len(targets) else ""))
    return targets


def list_sets(log=print) -> None:
    for s in SETS.values():
        pin = "sha256 " + s.sha256 if s.sha256 else "sha256 not pinned"
        log(f"{s.name}: {s.description}")
        log(f"    {s.url} ({', '.join(x for x in (s.size, pin) if x)})")
        log(f"    -> <root>/{s.dest}/{{{', '.join(s.members)}}}")


def build_parser() -> argparse.ArgumentParser:
    from kdvision.core.engine.cli import ArgumentParser

    p = ArgumentParser(prog="download_teachers.py", description=__doc__, argument_default=None)
    p.add_argument("--set", dest="set_name", metavar="NAME", help=f"the teacher set to fetch ({', '.join(SETS)})")
    p.add_argument("--list", action="store_true", help="list the known sets and exit")
    p.add_argument("--root", default=".", metavar="DIR",
                   help="folder under which the set's files land (default: the working directory)")
    p.add_argument("--mirror", metavar="URL", help=f"base URL to download the archive from instead (its file name "
                   f"is appended; default: ${MIRROR_ENV}, else the published location)")
    p.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the archive (overrides the pinned one)")
    p.add_argument("--force", action="store_true",
                   help="download and unpack again even when the files or an archive are present")
    p.add_argument("--keep-archive", "--keep_archive", dest="keep_archive", action="store_true",
                   help="keep the downloaded archive after unpacking")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    p.add_argument("--progress", dest="progress", action="store_const", const=True,
                   help="force the progress bar (default: only on a terminal)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        list_sets()
        return 0
    if not args.set_name:
        raise ConfigError(f"name a set with --set NAME (valid: {', '.join(SETS)}), or --list")
    tset = get_set(args.set_name)
    sha = args.sha256
    if sha is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        raise ConfigError(f"--sha256 must be 64 hexadecimal digits, got {sha!r}")
    mirror = args.mirror or os.environ.get(MIRROR_ENV) or None
    if mirror is not None and not re.match(r"^(https?|file)://", mirror):
        raise ConfigError(f"--mirror must be an http(s):// or file:// URL, got {mirror!r}")
    fetch(tset, Path(args.root).expanduser(), mirror=mirror, sha256=sha, force=args.force,
          keep_archive=args.keep_archive, progress=args.progress, log=lambda msg: print(msg, flush=True))
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``tools/download_teachers.py`` (exits)."""
    from kdvision.core.engine.cli import run_cli

    run_cli(_main, argv)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
