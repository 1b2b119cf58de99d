"""``make_imagenet_subset.py SRC DST --per-class N --seed S``: the seeded N-per-class subset of an ImageNet-style
folder as a published file list (``DST/train.txt``, ``DST/subset.json``), optionally with a symlink tree
(``DST/train/<class>/<image>``) — no copying (``reference/kdep.md`` §4, bug 6).

The default ``--per-class 128`` is the original's 10 % subset (``imgnet_128k``); ``kdep.py`` and
``gen_svd_weights.py`` read it as ``--dataset DST/train.txt`` (or ``imgnet_128k`` with ``--data_root`` the parent of
``DST`` when ``DST`` is named ``imgnet_128k``).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from kdvision.core.data.imagelist import make_subset, write_image_list
from kdvision.core.errors import DataError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make_imagenet_subset.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("src", metavar="SRC", help="ImageNet-style training folder: SRC/<class>/<image>")
    p.add_argument("dst", metavar="DST", help="output folder (train.txt, subset.json)")
    p.add_argument("--per-class", "--per_class", type=int, default=128, help="images per class (128: the 10 %% subset)")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice")
    p.add_argument("--symlinks", action="store_true", help="also create DST/train/<class>/<image> symlinks")
    return p


def run(args: argparse.Namespace) -> dict:
    src, dst = Path(args.src).expanduser().resolve(), Path(args.dst).expanduser()
    files = make_subset(src, args.per_class, args.seed)
    classes = sorted({f.split("/", 1)[0] for f in files})
    sha = write_image_list(dst / "train.txt", files, src, per_class=args.per_class, seed=args.seed)
    if args.symlinks:
        for f in files:
            link = dst / "train" / f
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                if link.resolve() == (src / f).resolve():
                    continue
                raise DataError(f"{link} exists and points elsewhere; use an empty DST")
            os.symlink(src / f, link)
    info = {"source": str(src), "per_class": args.per_class, "seed": args.seed, "classes": len(classes),
            "images": len(files), "list": "train.txt", "list_sha256": sha, "symlinks": bool(args.symlinks)}
    (dst / "subset.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"{len(files)} images of {len(classes)} classes (seed {args.seed}) -> {dst / 'train.txt'} "
          f"(sha256 {sha[:16]})")
    return info


def main(argv: list[str] | None = None) -> None:
    from kdvision.core.engine.cli import run_cli

    run_cli(lambda a: run(parser().parse_args(a)) and 0, argv)
