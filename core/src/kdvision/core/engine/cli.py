"""Command-line conventions shared by every entry script (DESIGN.md).

The parser of a script is generated from its config dataclass (:func:`config_parser`): every field is a flag with
its help and default, plus the script's alias table (the original projects' spellings). Flags default to
``argparse.SUPPRESS`` so that only what the user typed overrides the preset and the YAML file. A handful of flags
are not config fields: ``--config``, ``--set``, ``--dry-run``, ``--overwrite``, ``--debug``, and the originals'
device and precision switches (``--gpu N``, ``--no-cuda``, ``--fp16``), which map onto ``device`` and ``amp``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Iterable, NoReturn

from ..errors import KDVisionError
from .config import RunConfig, add_config_arguments
from .visdom_logger import DEFAULT_URL

#: RunConfig fields whose flags take an optional value (declared by hand in :func:`base_parser`).
_HAND_MADE = ("resume", "visdom", "progress")


class ArgumentParser(argparse.ArgumentParser):
    """argparse without prefix abbreviations; usage errors stay one line plus usage, exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("argument_default", argparse.SUPPRESS)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def base_parser(description: str) -> ArgumentParser:
    """The flags that are not config fields, plus RunConfig's optional-value flags."""
    p = ArgumentParser(description=description)
    g = p.add_argument_group("run (common to every kdvision script)")
    g.add_argument("--config", metavar="FILE.yaml", help="YAML file with config keys (a run's config.yaml works)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key (repeatable)")
    g.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from CKPT, or from <output>/checkpoints/last.pt when no path is given (with no "
                        "--output: the latest run of this script)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run in a non-empty --output directory (default: refuse)")
    g.add_argument("--visdom", nargs="?", const=DEFAULT_URL, metavar="URL",
                   help=f"log to a Visdom server (default URL {DEFAULT_URL})")
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    g.add_argument("--progress", dest="progress", action="store_const", const=True, help="force progress bars")
    g.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="resolve the config, build models, load checkpoints, look for data, print the plan, exit")
    g.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def config_parser(description: str, cls: type, *, preset: dict[str, Any] | None = None,
                  aliases: dict[str, Iterable[str]] | None = None, skip: Iterable[str] = (),
                  groups: dict[str, str] | None = None, title: str = "options") -> ArgumentParser:
    """A script's parser: :func:`base_parser`, the RunConfig fields, then every other field of ``cls``."""
    import dataclasses

    p = base_parser(description)
    run_fields = {f for f in RunConfig.__dataclass_fields__}
    # a recipe config that redefines a run field (MosaicKD's 200 epochs) shows its own default
    own = {f.name: f.default for f in dataclasses.fields(cls)
           if f.name in run_fields and f.default is not dataclasses.MISSING
           and f.default != RunConfig.__dataclass_fields__[f.name].default}
    add_config_arguments(p, RunConfig, preset={**own, **(preset or {})}, aliases=aliases,
                         skip=set(_HAND_MADE) | set(skip), title="run settings")
    add_config_arguments(p, cls, preset=preset, aliases=aliases, skip=run_fields | set(skip), groups=groups,
                         title=title)
    return p


def add_compat_device_flags(p: argparse.ArgumentParser, *, gpu: bool = True, no_cuda: bool = True,
                            fp16: bool = True) -> None:
    """The originals' ``--gpu N`` (= ``--device cuda:N``), ``--no-cuda`` (= ``--device cpu``), ``--fp16``."""
    g = p.add_argument_group("original device flags")
    if gpu:
        g.add_argument("--gpu", type=int, metavar="N", help="GPU index (= --device cuda:N; the CPU with a warning "
                       "when CUDA is absent)")
    if no_cuda:
        g.add_argument("--no-cuda", "--no_cuda", dest="device", action="store_const", const="cpu",
                       help="= --device cpu")
    if fp16:
        g.add_argument("--fp16", dest="amp", action="store_const", const=True,
                       help="= --amp (bf16 autocast; fp16 loss scaling is not needed with bf16)")


def apply_compat_device(args: argparse.Namespace, warn: Callable[[str], None]) -> None:
    """Turn ``--gpu N`` into ``device`` (unless ``--device`` was given)."""
    ns = vars(args)
    gpu = ns.pop("gpu", None)
    if gpu is None or "device" in ns:
        return
    import torch

    if torch.cuda.is_available():
        args.device = f"cuda:{gpu}"
    else:
        warn(f"--gpu {gpu} given but CUDA is not available; running on the CPU")
        args.device = "cpu"


def device_from_gpu_ids(value: str, flag: str, warn: Callable[[str], None]) -> str:
    """The device of one process for the original scripts' GPU-id lists (``0``, ``0,1,2,3``, ``[0,1]``): the first
    GPU, with a warning that several GPUs are used through torchrun, and the CPU (warned) without CUDA."""
    ids = [g.strip() for g in str(value).replace("[", "").replace("]", "").split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids):
        from ..errors import ConfigError

        raise ConfigError(f"{flag} {value}: expected a GPU index or a list such as 0,1")
    import torch

    if len(ids) > 1:
        warn(f"{flag} {value}: the original's DataParallel over {len(ids)} GPUs is not used; this process runs on "
             f"GPU {ids[0]} (torchrun --nproc_per_node={len(ids)} ... for all of them)")
    if torch.cuda.is_available():
        return f"cuda:{ids[0]}"
    warn(f"{flag} {value} given but CUDA is not available; running on the CPU")
    return "cpu"


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> NoReturn:
    """Run ``main`` turning user errors into one line on stderr and a non-zero exit (``--debug``: traceback)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = main(args)
    except KDVisionError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if debug:
            raise
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
