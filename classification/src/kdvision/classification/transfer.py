"""KDEP's classification transfer (``classification/transfer.py``, ``reference/kdep.md`` §6.1).

Full fine-tuning of a pre-trained backbone with a new classifier: SGD momentum 0.9, wd 5e-4, batch 64, 150 epochs,
StepLR x0.1 every 50, LR 0.001 (configs/transfer.yaml); train RandomResizedCrop + flip, test Resize(256) +
CenterCrop(224) (``--image_size 224``, ``0`` keeps a dataset's own transforms; CIFAR is upsampled by the same transforms). The backbone comes from
``--init`` (alias ``--model-path``): a KDEP student (``student.pt`` or a run's ``checkpoints/last.pt``), a
``convert_kdep.py --to semseg`` export, a torchvision file or a released KDEP/robustness checkpoint; it loads
strictly except the classifier, and what loaded is reported and recorded in ``summary.json``. ``--init none`` is
the random-initialisation baseline.

One normalisation for every dataset: the pre-training's (ImageNet statistics). The original fine-tuned CUB, DTD
and Caltech-256 without normalisation and CIFAR-100 with CIFAR statistics (bug 8): ``--legacy_no_norm``.
The original picked the best epoch on the test split (bug 7); both best and last are reported here.

``--datasets cifar100,dtd,caltech256,cub200 --seeds 0,1`` runs every dataset x seed as its own run
(``OUTPUT/<dataset>/seed<k>``), each writing its summary, and then one table of mean ± std per dataset and their
average (KDEP's Fig. 1 number), ``OUTPUT/transfer.md`` and ``.json``. Finished runs are not repeated.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from kdvision.core.data.imagelist import Resized
from kdvision.core.engine.config import param
from kdvision.core.engine.method import unwrap
from kdvision.core.errors import ConfigError
from kdvision.core.recipes.base import Entry, pop_seeds, run_seeds
from kdvision.core.recipes.supervised import SupervisedConfig, SupervisedRecipe

from .common import CLASSIFICATION, load_preset

PRESET: dict[str, Any] = load_preset("transfer")
TRANSFER_FLAGS = {"init": ["--model-path", "--model_path"], "weight_decay": ["--wd"], "workers": ["-j"]}


@dataclass
class TransferConfig(SupervisedConfig):
    init: str = param("none", "pre-trained backbone (KDEP student, convert_kdep.py export, torchvision or robustness "
                      "checkpoint), or none: random initialisation")
    image_size: int = param(0, "RandomResizedCrop (train) / Resize(size*256/224) + CenterCrop (test) at this size "
                            "(the protocol: 224); 0: the dataset's own transforms", min=0)
    legacy_no_norm: bool = param(False, "the original's inputs: no normalisation for CUB/DTD/Caltech-256, CIFAR "
                                 "statistics for CIFAR-100 (bug 8)")

    def validate(self) -> None:
        super().validate()
        if self.legacy_no_norm and self.normalize not in (None, "imagenet"):
            raise ConfigError("--legacy_no_norm sets the normalisation itself; drop --normalize")


def head_prefix(model: nn.Module) -> str:
    """``"<name>."`` of the model's classifier: its last ``nn.Linear``."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    return names[-1] + "."


def _legacy_normalization(dataset: str) -> str:
    return "cifar100" if dataset.startswith("cifar100") else "identity"


class TransferRecipe(SupervisedRecipe):
    name = "transfer"
    config_class = TransferConfig
    plan_title = "transfer plan"

    def check(self) -> None:
        cfg = self.cfg
        if cfg.legacy_no_norm:
            cfg.normalize = _legacy_normalization(cfg.dataset)
        super().check()
        if cfg.init.lower() != "none" and not Path(cfg.init).expanduser().is_file():
            raise ConfigError(f"--init: checkpoint not found: {cfg.init}")

    def load_train_set(self):
        ds = super().load_train_set()
        return Resized(ds, self.cfg.image_size, train=self.cfg.augment) if self.cfg.image_size else ds

    def test_view(self, dataset):
        return Resized(dataset, self.cfg.image_size, train=False) if self.cfg.image_size else dataset

    def build_players(self):
        from kdvision.core.backbones import load_backbone, read_backbone

        players = super().build_players()
        model = unwrap(players["student"])
        self.head = head_prefix(model)
        self.report = None
        if self.cfg.init.lower() != "none":
            state = read_backbone(self.cfg.init)
            self.report = load_backbone(model, state, skip=(self.head,), what=f"--init {self.cfg.init}")
            self.ctx.log.info(str(self.report))
        else:
            self.ctx.log.info("--init none: random initialisation (the baseline)")
        return players

    def plan(self) -> dict[str, str]:
        plan = super().plan()
        plan["init"] = ("random" if self.report is None else
                        f"{self.cfg.init}: {len(self.report.matched)} tensors loaded, new {self.head[:-1]}")
        plan["input"] = (f"{self.cfg.image_size} px (RandomResizedCrop / Resize+CenterCrop)" if self.cfg.image_size
                         else "the dataset's own transforms") + f", normalisation {self.cfg.normalize or 'dataset'}"
        return plan

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        summary = super().finish(summary)
        summary["init"] = self.cfg.init
        summary["init_loaded"] = None if self.report is None else len(self.report.matched)
        return summary


def _adjust(cfg: TransferConfig, given: set[str], args: argparse.Namespace) -> None:
    """ImageNet statistics (the pre-training's) for every colour dataset unless --normalize says otherwise."""
    from kdvision.core.data import DATASETS, dataset_spec

    if "normalize" not in given and cfg.normalize is None and cfg.dataset in DATASETS:
        if dataset_spec(cfg.dataset).in_channels == 3:
            cfg.normalize = "imagenet"


ENTRIES = {
    "transfer": Entry(TransferRecipe, CLASSIFICATION, script="transfer", preset=PRESET, aliases=TRANSFER_FLAGS,
                      adjust=_adjust,
                      extend_parser=lambda p: p.add_argument_group("several runs").add_argument(
                          "--datasets", metavar="D,D,...", help="run every dataset (x every --seeds seed) and "
                          "write one table (OUTPUT/transfer.md)"),
                      description="KDEP transfer: fine-tune a pre-trained backbone with a new classifier"),
}


def _pop(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag or arg.startswith(flag + "="):
            value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            del argv[i:i + (1 if "=" in arg else 2)]
            return value
    return None


def _fmt(s: dict[str, float | None]) -> str:
    return "n/a" if s["mean"] is None else f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"


def run_table(argv: list[str], datasets: list[str], seeds: list[int]) -> dict[str, Any]:
    """Every dataset x seed (``run_seeds`` per dataset), then one table: mean ± std of best and last accuracy per
    dataset and the average over datasets."""
    entry = ENTRIES["transfer"]
    cfg, _, _ = entry.resolve(argv)
    import time

    root = Path(cfg.output) if cfg.output else Path("runs") / "transfer" / time.strftime("table-%Y%m%d-%H%M%S")
    rows = {}
    for name in datasets:
        rows[name] = run_seeds(entry, [*argv, "--dataset", name, "--output", str(root / name)], seeds)
    avg = {k: statistics.fmean(r[k]["mean"] for r in rows.values()) if all(r[k]["mean"] is not None
                                                                         for r in rows.values()) else None
           for k in ("best", "last")}
    lines = [f"# transfer of {cfg.init} ({cfg.model}), seeds {','.join(map(str, seeds))}", "",
             "| dataset | best acc (%) | last acc (%) |", "|---|---|---|",
             *(f"| {n} | {_fmt(r['best'])} | {_fmt(r['last'])} |" for n, r in rows.items()),
             "| **average** | " + " | ".join("n/a" if avg[k] is None else f"{100 * avg[k]:.2f}"
                                            for k in ("best", "last")) + " |"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "transfer.md").write_text("\n".join(lines) + "\n")
    report = {"init": cfg.init, "model": cfg.model, "seeds": seeds, "datasets": rows, "average": avg}
    (root / "transfer.json").write_text(json.dumps(report, indent=2))
    print("\n".join(lines))
    return report


def main(argv: list[str] | None = None) -> None:
    from kdvision.core.engine.cli import run_cli
    from kdvision.core.engine.rundir import init_logging

    def _main(args: list[str]) -> int:
        init_logging(keep=False)
        args = list(args)
        seeds = pop_seeds(args)
        datasets = _pop(args, "--datasets")
        if datasets:
            run_table(args, [d for d in datasets.split(",") if d.strip()], seeds or [ENTRIES["transfer"].resolve(
                args)[0].seed])
        elif seeds:
            run_seeds(ENTRIES["transfer"], args, seeds)
        else:
            ENTRIES["transfer"].build(args).run()
        return 0

    run_cli(_main, sys.argv[1:] if argv is None else argv)
