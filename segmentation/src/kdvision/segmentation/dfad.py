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

from kdvision.core.engine.cli import base_parser, run_cli
from kdvision.core.engine.config import load_yaml, resolve_config
from kdvision.core.recipes.dfad import DFADConfig, add_dfad_arguments, run_dfad

from .task import segmentation_task

CONFIG_DIR = Path(__file__).with_name("configs")
PRESETS: dict[str, dict[str, Any]] = {name: load_yaml(CONFIG_DIR / f"dfad_{name}.yaml") for name in ("camvid", "nyuv2")}


def build_parser(preset: str):
    script = {"camvid": "DFAD_camvid_deeplab.py", "nyuv2": "DFAD_nyu_deeplab.py"}[preset]
    p = base_parser(f"DFAD for semantic segmentation ({preset}); flags of the original {script}")
    add_dfad_arguments(p, [preset])
    k = p.add_argument_group("segmentation")
    k.add_argument("--resize", type=int, help="short side of the test images (and of real images before cropping)")
    return p


def default_checkpoint(path: str) -> str:
    """The README's teacher name, or the original scripts' ``-256`` variant when only that one exists."""
    p = Path(path)
    alt = p.with_name(f"{p.stem}-256{p.suffix}")
    return str(alt) if not p.exists() and alt.exists() else path


def run(cfg: DFADConfig, *, explicit_root: bool, dry_run: bool = False, given: set[str] = frozenset()) -> dict:
    # The KD scripts rebuild the teacher with ASPP dropout 0 (it is in eval mode anyway); the student keeps 0.5.
    task = segmentation_task(cfg.dataset, cfg.normalize, dropout=0.0)
    return run_dfad(cfg, task, explicit_root=explicit_root, dry_run=dry_run, given=given)


def main(preset: str, argv: list[str] | None = None) -> None:
    def _main(args_list: list[str]) -> int:
        args = build_parser(preset).parse_args(args_list)
        cfg = resolve_config(DFADConfig, PRESETS[preset], args)
        given = set(vars(args))
        if "ckpt" not in given and cfg.ckpt == PRESETS[preset].get("ckpt"):
            cfg.ckpt = default_checkpoint(cfg.ckpt)
        explicit_root = "data_root" in given or cfg.data_root != PRESETS[preset].get("data_root")
        run(cfg, explicit_root=explicit_root, dry_run=getattr(args, "dry_run", False), given=given)
        return 0

    run_cli(_main, argv)
