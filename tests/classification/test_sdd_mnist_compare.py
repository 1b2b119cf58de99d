"""CE only vs KD vs DKD on a fixed 1,000-image labelled MNIST subset, 3 seeds, equal budget, on one CPU thread
(``benchmarks/sdd_mnist_compare.py``, set-up ``lenet``: the shared LeNet-5 teacher into ``lenet5_half``).

SD-DKD is not in this test: it needs a pooled final feature map in teacher and student (``kdvision.core.taps``),
which LeNet-5 lacks, and the smallest zoo model that has one (``resnet8``) costs ~10x per CPU step: at a budget that
fits this test the resnet8 students do not converge (see the benchmark's docstring and the issue note).

What is asserted is what the measurements support (see the issue note for the numbers); the comparison is
seeded and single-threaded, so it is deterministic on a given machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from sdd_mnist_compare import SETUPS, compare, fixed_subset, table  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(shared_data, tmp_path_factory):
    for name in ("MNIST/raw/train-images-idx3-ubyte.gz", "MNIST/raw/t10k-images-idx3-ubyte.gz",
                 SETUPS["lenet"]["teacher_weights"]):
        if not (shared_data / name).is_file():
            pytest.skip(f"real-data file not found: {shared_data / name} (set KDV_DATA to the shared data folder)")
    pytest.importorskip("kdvision.classification")
    out = compare(shared_data, tmp_path_factory.mktemp("sdd_mnist"), threads=1, log=lambda *a: None)
    print(table(out))
    return out


def test_subset_is_fixed_and_seeded():
    a = fixed_subset(60000, 1000, 0)
    assert a == fixed_subset(60000, 1000, 0) and len(set(a)) == 1000
    assert a != fixed_subset(60000, 1000, 1)


def test_equal_budget_and_subset(result):
    p = result["params"]
    for r in result["runs"]:
        assert r["iterations"] == p["epochs"] * p["iters"] == result["student_steps"]
        assert r["batch_size"] == p["batch"]
        assert r["train_images"] == 1000
    assert {(r["method"], r["seed"]) for r in result["runs"]} == {(m, s) for m in p["methods"] for s in p["seeds"]}
    # the shared LeNet-5 teacher, measured by the recipe on the evaluation images
    assert result["teacher"]["acc_eval_subset"] > 0.98


def test_distilled_students_vs_ce_only(result):
    """Measured (issue note): CE only 92.81 ± 0.62, KD 95.70 ± 0.25, DKD 92.11 ± 1.42 (best acc, %, 3 seeds).

    KD beats CE only by more than the larger of the two seed spreads. DKD does NOT at this budget (its mean is
    0.7 points below CE only, within the seed spread): asserted is only what holds -- it learns (far above chance)
    and stays within 2 points of CE only.
    """
    s = result["summary"]
    ce, kd, dkd = s["ce"], s["kd"], s["dkd"]
    assert ce["n"] == kd["n"] == dkd["n"] == 3
    # CE only on 1,000 images: far above chance, below the teacher
    assert 0.88 < ce["best_mean"] < result["teacher"]["acc_eval_subset"]
    assert kd["best_mean"] - ce["best_mean"] > max(ce["best_std"], kd["best_std"]), (kd, ce)
    assert kd["last_mean"] - ce["last_mean"] > max(ce["last_std"], kd["last_std"]), (kd, ce)
    assert dkd["best_mean"] > 0.88
    assert abs(dkd["best_mean"] - ce["best_mean"]) < 0.02, (dkd, ce)
