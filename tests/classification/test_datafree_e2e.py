"""Data-free methods end to end on real data (slow), students distilled without any MNIST image and evaluated on
the 10,000 real test digits:

the BN-based methods (CMI, DeepInversion, Fast, Fast-Meta, RGAL with both triplet signs) from a BN ResNet-8
teacher trained on MNIST by train_teacher.py (the generative baselines: test_datafree_baselines_e2e.py).

Scale: 90-210 KD steps on CPU (25-45 s per method). The threshold 0.15 is far above chance (0.10; the
standard error of a chance-level accuracy on 10,000 images is 0.003) and above any constant predictor (the largest
MNIST test class is 11.35 %). The numbers each run reaches are printed (`pytest -s`) and reported in the issue.
"""
from __future__ import annotations

import json

import pytest

from kdv_testutils import distil_mnist, run_script

pytestmark = pytest.mark.slow

POOL = ["--kd_steps", "30", "--ep_steps", "30", "--g_steps", "20"]
CASES = {
    # CMI: 30 generator steps per round (with torch 2.15.0, 20 left seed 0 at chance, 0.09, and seed 1 at 0.17;
    # 30: 0.57 at seed 0)
    "cmi": ("kd_datafree.py", ["--method", "cmi", "--epochs", "5", *POOL, "--g_steps", "30", "--bank_size", "512",
                               "--n_neg", "256", "--adv", "0.5", "--cr", "0.8", "--cr_T", "0.1"]),
    # pixel inversion needs more steps per round than a generator (20 steps: near chance, 40: 0.23-0.26 over seeds)
    "deepinv": ("kd_datafree.py", ["--method", "deepinv", "--epochs", "3", *POOL, "--g_steps", "40",
                                   "--lr_g", "0.1"]),
    "fast": ("kd_datafree.py", ["--method", "fast", "--epochs", "8", "--warmup", "1", *POOL, "--g_steps", "5"]),
    "fast_meta": ("kd_datafree.py", ["--method", "fast_meta", "--epochs", "8", "--warmup", "1", *POOL,
                                     "--g_steps", "5"]),
    # RGAL: 30 generator steps per round (20 left both signs at 0.10-0.17; 30: 0.26-0.34 over seeds)
    **{f"rgal_{sign}": ("rgal.py", ["--epochs", "3", *POOL, "--g_steps", "30", "--adv", "1", "--bn", "1",
                                    "--oh", "1", "--T", "20", "--triplet", "0.1", "--striplet", "0.1",
                                    "--cd_loss", "0.1", "--triplet_target", "student", "--start_layer", "1",
                                    "--striplet_feature", "global", "--balanced_sampling",
                                    "--synthesis_triplet_sign", sign])
       for sign in ("code", "paper")},
}


@pytest.fixture(scope="module")
def mnist_bn_teacher(mnist_root):
    """A 1-channel RepDistiller ResNet-8 (BatchNorm) trained for 300 iterations on the real MNIST training set."""
    root = mnist_root
    out = root / "teacher"
    proc = run_script("classification/train_teacher.py", "--dataset", "mnist", "--model", "resnet8", "--data_root",
                      root, "--epochs", "2", "--iters-per-epoch", "150", "--batch_size", "128", "--lr", "0.1",
                      "--eval-every", "2", "--output", out, "--device", "cpu", "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stderr
    accuracy = json.loads((out / "summary.json").read_text())["student_best"]
    assert accuracy > 0.9, accuracy
    return root, out / "mnist-resnet8.pt"


@pytest.mark.parametrize("case", list(CASES))
def test_student_beats_chance_without_data(case, mnist_bn_teacher, tmp_path):
    root, teacher = mnist_bn_teacher
    script, args = CASES[case]
    summary = distil_mnist(case, script, "--teacher", "resnet8", "--student", "resnet8", "--teacher_weights",
                           teacher, "--data_root", root, *args, output=tmp_path / "run")
    assert summary["teacher_metric"] > 0.9
    assert summary["student_best"] > 0.15, summary
