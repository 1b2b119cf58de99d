"""DFAD for segmentation: CamVid and NYUv2 configs over the one DFAD recipe in core.

``segmentation/dfad_camvid.py`` and ``segmentation/dfad_nyu.py`` call :func:`main` with their preset
(``configs/dfad_{camvid,nyuv2}.yaml``: the original scripts' defaults) and accept the original flags
(``--ckpt --data_root --scheduler --batch_size --test_batch_size --epochs --epoch_itrs --lr_S --lr_G
--weight_decay --nz --step_size --stu_ckpt --test_only --save_img --seed --no_cuda --log_interval --download``),
the common kdvision flags and the paper's baselines (``--baseline random_generator|kd_ori|kd_rel|kd_unr``).

Fixes of the originals: the NYUv2 script's crash after the last epoch (per-epoch metrics go to ``metrics.jsonl``),
no ImageNet download when a teacher checkpoint is given, and the default ``--ckpt`` names: the README's names
are the defaults and the scripts' own ``-256`` names are accepted when only those exist.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kdvision.core.engine.config import load_yaml
from kdvision.core.recipes.base import Entry
from kdvision.core.recipes.dfad import DFAD_FLAGS, DFADConfig, DFADRecipe, run_dfad

from .task import segmentation_task

CONFIG_DIR = Path(__file__).with_name("configs")
PRESETS: dict[str, dict[str, Any]] = {name: load_yaml(CONFIG_DIR / f"dfad_{name}.yaml") for name in ("camvid", "nyuv2")}
SCRIPTS = {"camvid": "dfad_camvid", "nyuv2": "dfad_nyu"}


def default_checkpoint(path: str) -> str:
    """The README's teacher name, or the original scripts' ``-256`` variant when only that one exists."""
    p = Path(path)
    alt = p.with_name(f"{p.stem}-256{p.suffix}")
    return str(alt) if not p.exists() and alt.exists() else path


def task_for(cfg: DFADConfig):
    # The KD scripts rebuild the teacher with ASPP dropout 0 (it is in eval mode anyway); the student keeps 0.5.
    return segmentation_task(cfg.dataset, cfg.normalize, dropout=0.0)


def run(cfg: DFADConfig, *, explicit_root: bool = True, dry_run: bool = False, given: set[str] = frozenset(),
        script: str = "dfad_seg", overwrite: bool = False) -> dict:
    return run_dfad(cfg, task_for(cfg), script=script, explicit_root=explicit_root, dry_run=dry_run, given=given,
                    overwrite=overwrite)


def _adjust(preset: str):
    def adjust(cfg: DFADConfig, given: set[str], args) -> None:
        if cfg.dataset != preset:
            from kdvision.core.errors import ConfigError

            raise ConfigError(f"invalid dataset: {cfg.dataset!r} ({SCRIPTS[preset]}.py trains on {preset})")
        if "ckpt" not in given and cfg.ckpt == PRESETS[preset].get("ckpt"):
            cfg.ckpt = default_checkpoint(cfg.ckpt)
    return adjust


ORIGINALS = {"camvid": "DFAD_camvid_deeplab.py", "nyuv2": "DFAD_nyu_deeplab.py"}
ENTRIES = {preset: Entry(DFADRecipe, task_for, script=SCRIPTS[preset], preset=PRESETS[preset],
                         aliases={**DFAD_FLAGS, "test_only": ["--test-only", "--test_only"]},
                         compat=dict(gpu=False, no_cuda=True, fp16=False), adjust=_adjust(preset),
                         description=f"DFAD for semantic segmentation ({preset}); flags of the original "
                                     f"{ORIGINALS[preset]}")
           for preset in ("camvid", "nyuv2")}


def main(preset: str, argv: list[str] | None = None) -> None:
    ENTRIES[preset].main(argv)
