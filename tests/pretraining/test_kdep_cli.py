"""pretraining/gen_svd_weights.py and pretraining/kdep.py as a user runs them: the original positional forms, a short
real run whose export loads strictly, and one-line errors for a basis that cannot serve the teacher/student pair."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdvision.core.methods.kdep import SVDBasis
from kdvision.core.models import build_model
from kdv_testutils import one_line_error, run_script

pytestmark = pytest.mark.slow

SMALL = ["--teacher", "resnet20_a", "--teacher_num_classes", "10", "--image_size", "32", "--workers", "0",
         "--device", "cpu", "--cache_images"]
STUDENT = ["--arch", "resnet20_a", "--fc_classes", "10", "--batch_size", "8"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An ImageNet-style folder of 24 random images, its 4-per-class subset as `imgnet_128k` under a data root, two
    random resnet20_a teacher checkpoints, and the basis of the first (written by the script, positional form)."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("kdep")
    rng = np.random.default_rng(0)
    for c in range(3):
        (tmp / "train" / f"c{c}").mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp / "train" / f"c{c}" / f"{i}.png")
    assert run_script("pretraining/make_imagenet_subset.py", tmp / "train", tmp / "imgnet_128k", "--per-class", 4
                      ).returncode == 0
    teachers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp / f"teacher{seed}.pt"
        torch.save(build_model("resnet20_a", 10).state_dict(), path)
        teachers.append(path)
    proc = run_script("pretraining/gen_svd_weights.py", "imgnet_128k", "ex_gen_svd", "0", "--data_root", tmp,
                      "--out-dir", tmp / "outdir", "--teacher_weights", teachers[0], *SMALL, "--batch_size", "5",
                      "--views", "2")
    assert proc.returncode == 0, proc.stderr
    return tmp, teachers, tmp / "outdir" / "ex_gen_svd" / "basis.pt"


def test_gen_svd_weights_positional_form_writes_a_named_basis(setup):
    tmp, teachers, basis_path = setup
    basis = SVDBasis.load(basis_path)
    summary = json.loads((basis_path.parent / "summary.json").read_text())
    subset = json.loads((tmp / "imgnet_128k" / "subset.json").read_text())
    assert basis.images == summary["images"] == 2 * 12  # 12 images x 2 views, every one once over the shards
    assert basis.subset_sha256 == subset["list_sha256"] == summary["images_sha256"]
    import hashlib

    assert basis.teacher_sha256 == hashlib.sha256(teachers[0].read_bytes()).hexdigest()
    assert basis.V.shape == (64, 64) and basis.teacher == "resnet20_a"
    assert torch.allclose(basis.V.T @ basis.V, torch.eye(64), atol=1e-5)


def test_kdep_positional_form_plan(setup):
    tmp, teachers, basis = setup
    proc = run_script("pretraining/kdep.py", "imgnet_128k", "exp_name", "3", "1", "1e-4", "0", "--data_root", tmp,
                      "--out-dir", tmp / "outdir", "--teacher_weights", teachers[0], "--basis", basis, *SMALL, *STUDENT,
                      "--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "KDEP pre-training plan" in out and "12 images" in out
    assert "3 epochs" in out and "every 1 epochs" in out and "wd 0.0001" in out and "lr 0.3" in out
    assert "first 64 of 64 components" in out and "never trained: linear" in out and "3 x MSE" in out
    assert str(tmp / "outdir" / "exp_name") in out and not (tmp / "outdir" / "exp_name").exists()


def test_kdep_short_run_exports_a_student_that_loads_strictly(setup):
    tmp, teachers, basis = setup
    out = tmp / "run"
    proc = run_script("pretraining/kdep.py", "--dataset", tmp / "imgnet_128k" / "train.txt", "--teacher_weights",
                      teachers[0], "--basis", basis, *SMALL, *STUDENT, "--epochs", "2", "--lr", "0.05",
                      "--step-lr", "1", "--output", out, "--log-interval", "1")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "kdep" and summary["iterations"] == 4 and summary["feature_dims"] == [64, 64]
    losses = [json.loads(line)["loss_feat"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if "loss_feat" in line]
    assert len(losses) == 4 and all(np.isfinite(losses))
    # robustness' StepLR steps after each epoch: epoch 1 at the base LR, epoch 2 at x0.1
    lrs = sorted({(r["epoch"], round(r["lr_model"], 12)) for r in map(json.loads, (out / "metrics.jsonl").read_text(
    ).splitlines()) if "lr_model" in r})
    assert lrs == [(1, 0.05), (2, 0.005)]
    student = build_model("resnet20_a", 10)
    student.load_state_dict(torch.load(out / "student.pt", weights_only=True), strict=True)
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert torch.equal(ckpt["state_dict"]["conv1.weight"], student.conv1.weight)
    # the head gets no gradient: frozen, it keeps its initial weights (the seed's fresh model)
    torch.manual_seed(1)
    fresh = build_model("resnet20_a", 10)
    assert torch.equal(student.linear.weight, fresh.linear.weight)
    assert not torch.equal(student.conv1.weight, fresh.conv1.weight)


def test_a_basis_of_another_teacher_checkpoint_is_refused_unless_legacy(setup):
    tmp, teachers, basis = setup
    common = ["--dataset", tmp / "imgnet_128k" / "train.txt", "--teacher_weights", teachers[1], "--basis", basis,
              *SMALL, *STUDENT, "--dry-run"]
    err = one_line_error(run_script("pretraining/kdep.py", *common))
    assert "was computed for teacher checkpoint" in err and "--legacy_ms_basis_for_sp" in err
    proc = run_script("pretraining/kdep.py", *common, "--legacy_ms_basis_for_sp")
    assert proc.returncode == 0, proc.stderr
    assert "warning: --legacy_ms_basis_for_sp: projecting onto a basis computed for another teacher" in (
        proc.stdout + proc.stderr)


@pytest.mark.parametrize("change,expect", [
    (["--arch", "wrn16_2"], "student's feature has 128 channels but the basis has only 64"),
    (["--teacher", "resnet56_a"], None),  # filled in below: a checkpoint of another architecture
    (["--teacher", "lenet5"], "declares no pre-ReLU final feature"),
    (["--basis", "missing.pt"], "basis file not found"),
    (["imgnet_128k", "a", "b", "c"], "4 positional arguments"),
])
def test_one_line_errors(setup, change, expect):
    tmp, teachers, basis = setup
    argv = ["--dataset", tmp / "imgnet_128k" / "train.txt", "--teacher_weights", teachers[0], "--basis", basis,
            *SMALL, *STUDENT, *change, "--dry-run"]
    err = one_line_error(run_script("pretraining/kdep.py", *argv))
    assert (expect or "does not match model resnet56_a") in err
