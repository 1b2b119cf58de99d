"""A smoke run of every registered method variant (:func:`list_methods`): a new variant of an existing recipe is
tested here for free; a new recipe must add its tiny command line to :data:`SMOKE` (the test over the registry
fails until it does).

Each variant runs in-process for two training steps on the embedded scikit-learn digits from random-weight
teachers (and 8 random images where a baseline distils on an image folder), through its entry script's command line with the variant's config values given as ``--set``; the run
must finish, log finite losses and write the run directory.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from kdvision.core.models import build_model
from kdvision.core.recipes.base import ENTRIES, RECIPES, list_methods, method_recipe

from kdv_testutils import import_entry_modules

import_entry_modules()

COMMON = ["--device", "cpu", "--no-progress", "--epochs", "1", "--seed", "0"]
#: recipe -> (entry script, tiny command line; ``{lenet5}`` / ``{resnet8}`` name the random teachers).
SMOKE = {
    "dfad": ("dfad_mnist", ["--dataset", "digits", "--ckpt", "{lenet5}", "--batch_size", "4", "--iters-per-epoch", "2",
                            "--set", "ngf=8", "--test_batch_size", "512"]),
    "datafree": ("kd_datafree", ["--dataset", "digits", "--teacher", "resnet8", "--student", "resnet8",
                                 "--teacher_weights", "{resnet8}", "--kd_steps", "2", "--ep_steps", "2", "--g_steps",
                                 "1", "--batch_size", "4", "--synthesis_batch_size", "4", "--ngf", "8", "--nz", "16",
                                 "--bank_size", "16", "--n_neg", "4"]),
    "mosaickd": ("kd_mosaic", ["--dataset", "digits", "--unlabeled", "{images}", "--teacher", "resnet8", "--student",
                              "resnet8", "--teacher_weights", "{resnet8}", "--batch-size", "4", "--iters-per-epoch",
                              "2", "--ngf", "8", "--ndf", "8", "--nz", "16", "--kd_steps", "2", "--workers", "0"]),
    "sdd": ("sdd", ["--dataset", "digits", "--teacher", "resnet8", "--student", "resnet8", "--teacher_weights",
                    "{resnet8}", "--batch_size", "8", "--iters-per-epoch", "2", "--workers", "0"]),
    "kdep": ("kdep", ["--dataset", "{images}", "--teacher", "resnet8", "--teacher_weights", "{resnet8_rgb}",
                      "--teacher_num_classes", "10", "--arch", "resnet8", "--fc_classes", "10", "--basis", "{basis}",
                      "--image_size", "32", "--batch_size", "4", "--iters-per-epoch", "2", "--workers", "0"]),
    "supervised": ("train_teacher", ["--dataset", "digits", "--model", "resnet8", "--batch_size", "8",
                                     "--iters-per-epoch", "2"]),
}
#: Variants whose run needs one more setting than the recipe's tiny command line.
FAST = ["--warmup", "1", "--epochs", "2"]  # one warm-up epoch (synthesis only), then one KD epoch
EXTRA = {"datafree/rgal": ("rgal", ["--adv", "1", "--bn", "1", "--oh", "1", "--triplet", "0.1"]),
         "datafree/fast": ("kd_datafree", FAST), "datafree/fast_meta": ("kd_datafree", FAST),
         "dfad/kd_rel": ("dfad_mnist", ["--kd_data", "{images}"]),
         "dfad/kd_unr": ("dfad_mnist", ["--kd_data", "{images}"])}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    paths = {}
    for name in ("lenet5", "resnet8"):
        paths[name] = root / f"digits-{name}.pt"
        torch.save(build_model(name, 10, dataset="digits").state_dict(), paths[name])
    # KDEP: an RGB teacher and its basis (a random orthonormal one, recorded for that checkpoint)
    from kdvision.core.data.ood import file_sha256
    from kdvision.core.methods.kdep import SVDBasis

    paths["resnet8_rgb"] = root / "resnet8_rgb.pt"
    torch.save(build_model("resnet8", 10).state_dict(), paths["resnet8_rgb"])
    q, _ = torch.linalg.qr(torch.randn(64, 64))
    paths["basis"] = root / "basis.pt"
    SVDBasis(mean=torch.zeros(64), V=q, S=torch.ones(64), teacher="resnet8",
             teacher_sha256=file_sha256(paths["resnet8_rgb"]), images=0).save(paths["basis"])
    paths["images"] = root / "images"  # a folder of unlabelled images (the KD baselines' --kd_data)
    paths["images"].mkdir()
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32), dtype=np.uint8)).save(
            paths["images"] / f"{i}.png")
    return paths


def test_every_recipe_has_a_smoke_command_line():
    assert set(RECIPES.names()) <= set(SMOKE), f"add a tiny command line for {set(RECIPES.names()) - set(SMOKE)}"


@pytest.mark.parametrize("key", list_methods())
def test_method_variant_runs_two_steps(key, teachers, tmp_path):
    recipe, overrides = method_recipe(key)
    script, argv = SMOKE[recipe]
    script, extra = EXTRA.get(key, (script, []))
    argv = [a.format(**{k: str(v) for k, v in teachers.items()}) for a in argv + COMMON + extra]
    if recipe == "datafree" and script != "rgal":
        argv = ["--method", overrides.pop("method"), *argv]
    elif script == "rgal":
        overrides.pop("method")
    argv += [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "run"
    summary = ENTRIES[script].build([*argv, "--output", str(out)]).run()
    assert summary["iterations"] == 2, summary
    saved = json.loads((out / "summary.json").read_text())
    assert saved["iterations"] == 2 and (out / "checkpoints" / "last.pt").is_file()
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [v for r in train if r["split"] == "train" for k, v in r.items() if k.startswith("loss")]
    assert losses and all(math.isfinite(v) for v in losses), train
