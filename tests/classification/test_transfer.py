"""classification/transfer.py: the backbone init (strict but for the new head, reported), the protocol's input view,
--legacy_no_norm, and the dataset x seed table. Runs in-process on the embedded digits (no data root)."""
from __future__ import annotations

import json

import pytest
import torch

from kdvision.classification.transfer import ENTRIES, head_prefix
from kdvision.core.data.imagelist import Resized
from kdvision.core.errors import CheckpointError
from kdvision.core.models import build_model

TINY = ["--dataset", "digits", "--model", "lenet5_gap", "--epochs", "1", "--iters-per-epoch", "2", "--batch_size",
        "16", "--image_size", "0", "--workers", "0", "--device", "cpu", "--log-interval", "1"]


@pytest.fixture()
def backbone(tmp_path):
    torch.manual_seed(3)
    model = build_model("lenet5_gap", 7)  # another head: it is replaced, never loaded
    path = tmp_path / "student.pt"
    torch.save(model.state_dict(), path)
    return model, path


def test_init_loads_every_backbone_tensor_and_replaces_the_head(backbone, tmp_path):
    model, path = backbone
    recipe = ENTRIES["transfer"].build([*TINY, "--init", str(path), "--output", str(tmp_path / "run")])
    summary = recipe.run()
    assert recipe.head == "fc." and head_prefix(build_model("resnet20_a", 10)) == "linear."
    assert summary["init_loaded"] == len(recipe.report.matched) == len(model.state_dict()) - 2
    assert set(recipe.report.skipped) == {"fc.weight", "fc.bias"}
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["init"] == str(path) and saved["init_loaded"] == summary["init_loaded"]
    assert saved["train_images"] == 1438  # what finish() adds reaches summary.json


def test_init_before_training_equals_the_file(backbone, tmp_path):
    model, path = backbone
    recipe = ENTRIES["transfer"].build([*TINY, "--init", str(path), "--output", str(tmp_path / "r"), "--dry-run"])
    recipe.run()
    student = recipe.players["student"]
    assert torch.equal(student.conv1.weight, model.conv1.weight) and student.fc.out_features == 10


def test_bad_init_is_a_checkpoint_error(tmp_path):
    torch.save(build_model("resnet20_a", 10).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        ENTRIES["transfer"].build([*TINY, "--init", str(tmp_path / "other.pt"), "--output", str(tmp_path / "r"),
                                   "--dry-run"]).run()


def test_legacy_no_norm_and_the_default_normalisation():
    cfg, _, _ = ENTRIES["transfer"].resolve([*TINY, "--dataset", "cifar10_846"])
    assert cfg.normalize == "imagenet"  # one normalisation for every colour dataset
    assert ENTRIES["transfer"].resolve(TINY)[0].normalize is None  # grey digits keep their own statistics
    recipe = ENTRIES["transfer"].build([*TINY, "--legacy_no_norm", "--dry-run"])
    recipe.check()
    assert recipe.cfg.normalize == "identity"
    from kdvision.classification.transfer import _legacy_normalization

    assert _legacy_normalization("cifar100") == "cifar100" and _legacy_normalization("cub200") == "identity"


def test_resized_view_is_the_protocol_geometry():
    base = torch.utils.data.TensorDataset(torch.randn(2, 3, 32, 40), torch.tensor([0, 1]))
    x, y = Resized(base, 24, train=False)[1]
    assert x.shape == (3, 24, 24) and y == 1
    assert Resized(base, 24, train=True)[0][0].shape == (3, 24, 24)


def test_datasets_by_seeds_table(backbone, tmp_path):
    from kdvision.classification.transfer import run_table

    _, path = backbone
    out = tmp_path / "table"
    report = run_table([*TINY, "--init", str(path), "--output", str(out)], ["digits"], [0, 1])
    runs = report["datasets"]["digits"]["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and all((out / "digits" / f"seed{s}" / "summary.json").is_file()
                                                       for s in (0, 1))
    best = [r["best"] for r in runs]
    assert report["average"]["best"] == pytest.approx(sum(best) / 2)
    table = (out / "transfer.md").read_text()
    assert "| digits |" in table and "| **average** |" in table
    assert json.loads((out / "transfer.json").read_text())["seeds"] == [0, 1]
