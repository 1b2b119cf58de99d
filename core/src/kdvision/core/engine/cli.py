"""Command-line conventions shared by every entry script (DESIGN.md).

Flags default to ``argparse.SUPPRESS`` so that only what the user typed overrides the preset and the YAML file.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn

from ..errors import KDVisionError
from .visdom_logger import DEFAULT_URL


class ArgumentParser(argparse.ArgumentParser):
    """argparse without prefix abbreviations; usage errors stay one line plus usage, exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("argument_default", argparse.SUPPRESS)
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def base_parser(description: str) -> ArgumentParser:
    p = ArgumentParser(description=description)
    g = p.add_argument_group("run (common to every kdvision script)")
    g.add_argument("--config", metavar="FILE.yaml", help="YAML file with config keys")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key (repeatable)")
    g.add_argument("--output", metavar="DIR", help="run directory")
    g.add_argument("--data_root", "--data-root", dest="data_root", metavar="DIR", help="dataset root")
    g.add_argument("--device", help="cpu | cuda | cuda:N | auto")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from CKPT, or from <output>/checkpoints/last.pt when no path is given")
    g.add_argument("--amp", action="store_true", help="mixed precision (bf16 autocast)")
    g.add_argument("--visdom", nargs="?", const=DEFAULT_URL, metavar="URL", help="log to a Visdom server")
    g.add_argument("--epochs", type=int, help="epochs")
    g.add_argument("--iters-per-epoch", "--iters_per_epoch", dest="iters_per_epoch", type=int,
                   help="iterations per epoch (the unit the original scripts call an epoch)")
    g.add_argument("--log-interval", "--log_interval", dest="log_interval", type=int, help="steps between logs")
    g.add_argument("--eval-every", "--eval_every", dest="eval_every", type=int, help="epochs between evaluations")
    g.add_argument("--deterministic", action="store_true", help="deterministic cuDNN (slower)")
    g.add_argument("--channels-last", "--channels_last", dest="channels_last", action="store_true",
                   help="channels_last memory format")
    g.add_argument("--compile", action="store_true", help="torch.compile the trained players")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="resolve the config, build models, load checkpoints, look for data, print the plan, exit")
    g.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


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
