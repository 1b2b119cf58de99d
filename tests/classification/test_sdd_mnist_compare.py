"""CE only vs KD vs DKD vs SD-DKD on a fixed 1,000-image labelled MNIST subset, 3 seeds, equal budget, on one CPU
thread (``benchmarks/sdd_mnist_compare.py``, default set-up ``lenet_gap``: a ``lenet5_gap`` teacher trained on the
full training split, distilled into ``lenet5_gap_half``; SD-DKD on the 5×5 map at M = [1,2,4]).

What is asserted is what the measurements support (numbers in ``docs/sdd.md`` and the issue note); the comparison
is seeded and single-threaded, so it is deterministic on a given machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from sdd_mnist_compare import compare, table  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(shared_data, tmp_path_factory):
    for name in ("MNIST/raw/train-images-idx3-ubyte.gz", "MNIST/raw/t10k-images-idx3-ubyte.gz"):
        if not (shared_data / name).is_file():
            pytest.skip(f"real-data file not found: {shared_data / name} (set KDV_DATA to the shared data folder)")
    pytest.importorskip("kdvision.classification")
    out = compare(shared_data, tmp_path_factory.mktemp("sdd_mnist"), threads=1, log=lambda *a: None)
    print(table(out))
    return out


def test_equal_budget_on_the_subset_with_one_teacher(result):
    p = result["params"]
    assert set(p["methods"]) == {"ce", "kd", "dkd", "sd_dkd"}
    for r in result["runs"]:
        assert r["iterations"] == p["epochs"] * p["iters"] == result["student_steps"]
        assert r["batch_size"] == p["batch"]
        assert r["train_images"] == 1000  # DATASET.TRAIN_SUBSET reached the recipe
    assert {(r["method"], r["seed"]) for r in result["runs"]} == {(m, s) for m in p["methods"] for s in p["seeds"]}
    # the teacher trained on all 60,000 images, measured the same by every distillation run
    t = result["teacher"]
    assert t["acc_full_test"] > 0.95 and t["acc_distil_runs"] == pytest.approx(t["acc_full_test"])


def test_every_distilled_student_beats_ce_only_by_more_than_the_seed_spread(result):
    """Measured (best acc, %, 3 seeds): CE only 91.40 ± 0.84, KD 94.75 ± 0.31, DKD 93.92 ± 0.34, SD-DKD
    94.23 ± 0.15 (last: 94.12 ± 0.29). KD, DKD and SD-DKD each beat CE only by 2.5-3.4 points, several times the
    largest seed spread; SD-DKD is 0.3 points above DKD, within DKD's spread, and KD wins at this scale."""
    s = result["summary"]
    ce = s["ce"]
    assert all(v["n"] == 3 for v in s.values())
    assert 0.85 < ce["best_mean"] < result["teacher"]["acc_full_test"]
    for method in ("kd", "dkd", "sd_dkd"):
        m = s[method]
        for which in ("best", "last"):
            gap = m[f"{which}_mean"] - ce[f"{which}_mean"]
            assert gap > 2 * max(ce[f"{which}_std"], m[f"{which}_std"]), (method, which, m, ce)
