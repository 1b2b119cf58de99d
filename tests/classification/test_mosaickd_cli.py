"""kd_mosaic.py / kd_vanilla.py: the README command's dry run, one-line errors for bad input (no run directory
left), exact resume through the script, and Blind KD's run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from kdvision.core.checkpoint import read_checkpoint
from kdvision.core.models import create_model

from kdv_testutils import (FakeVisdom, assert_same_training_state, free_port, interrupt_after, metric_records,
                           one_line_error, require, run_script, write_downsampled)

# MosaicKD's README command (seed_commands.md §1), verbatim after the script path.
README = ("--lr 0.1 --batch-size 256 --teacher wrn40_2 --student wrn16_1 --dataset cifar100 --unlabeled cifar10 "
          "--epoch 200 --lr 0.1 --local 1 --align 1 --adv 1 --balance 10 --gpu 0").split()
TINY = ["--dataset", "cifar10", "--teacher", "resnet8", "--student", "resnet8", "--batch-size", "4", "--ngf", "8",
        "--ndf", "8", "--nz", "16", "--kd_steps", "2", "--iters-per-epoch", "2", "--epochs", "1", "--device", "cpu",
        "--workers", "0",
        "--no-progress", "--log-interval", "1"]


def write_images(folder, n: int, size: int = 32, mode: str = "RGB", seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """CMI-layout teachers (random weights) for CIFAR-100 (wrn40_2) and CIFAR-10 (resnet8), and an OOD folder."""
    root = tmp_path_factory.mktemp("mosaic")
    (root / "checkpoints" / "pretrained").mkdir(parents=True)
    torch.manual_seed(0)
    for dataset, arch, classes in (("cifar100", "wrn40_2", 100), ("cifar10", "resnet8", 10)):
        torch.save({"state_dict": create_model(arch, num_classes=classes).state_dict()},
                   root / "checkpoints" / "pretrained" / f"{dataset}_{arch}.pth")
    write_images(root / "ood", 24)
    return root


def test_readme_command_dry_run_prints_the_plan(setup):
    proc = run_script("classification/kd_mosaic.py", *README, "--unlabeled", setup / "ood", "--device", "cpu",
                      "--dry-run", cwd=setup)
    assert proc.returncode == 0, proc.stderr
    for text in ("OOD distillation plan (mosaickd)", "cifar100 (100 classes", "24 images (3, 32, 32)",
                 "wrn40_2 2.255 M params, weights checkpoints/pretrained/cifar100_wrn40_2.pth", "wrn16_1",
                 "mosaickd nz=100 2.026 M params", "patch 0.531 M params",
                 "G: adv 1.0 align 1.0 local 1.0 balance 10.0", "KL at T=1 on [256 mosaics; 256 OOD]",
                 "200 epochs x 1 it (1 D, 1 G, 5 S steps each)", "normalised in-domain",
                 "(world size 1)"):
        assert text in proc.stdout, (text, proc.stdout)
    assert not (setup / "runs").exists()


@pytest.mark.parametrize("problem", ["unknown_source", "wrong_size", "grayscale", "class_mismatch", "subset",
                                     "legacy_folder", "missing_teacher"])
def test_bad_input_is_one_line_and_leaves_no_run_directory(problem, setup, tmp_path):
    ood = setup / "ood"
    args = [*TINY, "--unlabeled", ood, "--output", tmp_path / "run"]
    expected = {"unknown_source": ("imagenet64", "valid"), "wrong_size": ("16x16", "32"),
                "grayscale": ("grayscale.png",), "class_mismatch": ("does not match",),
                "subset": ("--ood_subset applies to imagenet_32x32 and places365_32x32 only",),
                "legacy_folder": ("folder",), "missing_teacher": ("teacher checkpoint not found",)}[problem]
    if problem == "unknown_source":
        args += ["--unlabeled", "imagenet64"]
    elif problem == "wrong_size":
        bad = write_images(tmp_path / "mixed", 3)
        write_images(tmp_path / "mixed" / "small", 1, size=16)
        args += ["--unlabeled", bad]
        expected = ("16", "32")
    elif problem == "grayscale":
        bad = write_images(tmp_path / "gray", 2)
        Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(bad / "grayscale.png")
        args += ["--unlabeled", bad]
    elif problem == "class_mismatch":
        args += ["--dataset", "cifar100", "--teacher_weights", setup / "checkpoints" / "pretrained" /
                 "cifar10_resnet8.pth"]
    elif problem == "subset":
        args += ["--unlabeled", "cifar10", "--ood_subset"]
    elif problem == "legacy_folder":
        args += ["--ood_kd_normalization", "legacy"]
    else:
        args += ["--teacher_weights", tmp_path / "nope.pth"]
    err = one_line_error(run_script("classification/kd_mosaic.py", *args, cwd=setup))
    assert all(text in err for text in expected), (problem, err)
    assert not (tmp_path / "run").exists()


def test_resume_is_exact(setup, tmp_path, monkeypatch):
    """A run stopped after its first epoch and resumed ends where the uninterrupted run ends: G, D, S, their
    optimisers, the per-iteration cosine (whose length is the whole run's) and both OOD streams, bit for bit."""
    import kdvision.classification.mosaickd  # noqa: F401  (registers the entry scripts)
    from kdvision.core.methods.mosaickd import MosaicKD
    from kdvision.core.recipes.base import ENTRIES

    monkeypatch.chdir(setup)
    args = [str(a) for a in (*TINY, "--unlabeled", setup / "ood", "--local", "1", "--align", "1", "--balance", "10",
                             "--epochs", "2")]
    ENTRIES["kd_mosaic"].build([*args, "--output", str(tmp_path / "full")]).run()
    with interrupt_after(monkeypatch, MosaicKD, 2), pytest.raises(KeyboardInterrupt):
        ENTRIES["kd_mosaic"].build([*args, "--output", str(tmp_path / "part")]).run()
    assert read_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["step"] == 2
    ENTRIES["kd_mosaic"].build([*args, "--output", str(tmp_path / "part"), "--resume"]).run()
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = read_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert a["step"] == 4 and set(a["method_state"]["modules"]) == {"student", "generator", "discriminator"}
    assert_same_training_state(a, b, ("student", "generator", "discriminator"))
    assert a["method_state"]["extra"]["d_stream"] == b["method_state"]["extra"]["d_stream"]
    assert a["method_state"]["extra"]["kd_stream"] == b["method_state"]["extra"]["kd_stream"]
    train = lambda run: metric_records(tmp_path / run, "train")  # noqa: E731
    assert train("part") == train("full")  # every logged loss and learning rate, epoch 2 included


def test_blind_kd_trains_the_student_on_the_ood_images_at_T5(setup, tmp_path):
    proc = run_script("classification/kd_vanilla.py", *TINY, "--unlabeled", setup / "ood", "--output",
                      tmp_path / "run", cwd=setup)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "blind_kd" and summary["iterations"] == 2
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert set(ckpt["method_state"]["modules"]) == {"student"}
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "method: blind_kd" in config and "T: 5.0" in config
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_kd" in r for r in records)


# MosaicKD README's DFQ line (seed_commands.md §1.3), verbatim after the script path: no --method.
DFQ_README = ("--lr 0.1 --batch-size 256 --teacher wrn40_2 --student wrn16_1 --dataset cifar100 --unlabeled cifar10 "
              "--epoch 200 --lr 0.1 --local 1 --align 1 --adv 1 --balance 10 --gpu 0").split()


def test_kd_datafree_without_method_is_mosaickds_dfq_and_its_readme_line_runs(setup):
    proc = run_script("classification/kd_datafree.py", *DFQ_README, "--device", "cpu", "--dry-run", cwd=setup)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    notes = [line for line in out.splitlines() if line.startswith(("note:", "warning:"))]
    assert "note: DFQ (MosaicKD's kd_datafree.py) does not use --unlabeled --local --align --balance" in notes
    assert any("--lr 0.1 is the DFQ student's Adam learning rate" in line for line in notes)
    for text in ("OOD distillation plan (dfq)", "no training image", "G: adv 1.0 oh 0.5 ie 20.0 (log10) bn 1.0",
                 "200 epochs x 200 it (1 G, 5 S steps each), batch 256, S Adam lr 0.1"):
        assert text in out, (text, out)


def test_kd_datafree_with_a_method_is_the_engine_and_datafree_kd_still_needs_one(setup, tmp_path):
    (tmp_path / "cmi.yaml").write_text("method: cmi\n")
    for args in (["--method", "cmi"], ["--config", tmp_path / "cmi.yaml"], ["--set", "method=cmi"]):
        proc = run_script("classification/kd_datafree.py", "--dataset", "cifar10", "--teacher", "resnet8",
                          "--student", "resnet8", "--device", "cpu", "--dry-run", *args, cwd=setup)
        assert proc.returncode == 0 and "data-free KD plan (cmi)" in proc.stdout, (args, proc.stderr)
    err = one_line_error(run_script("classification/datafree_kd.py", "--dataset", "cifar10", "--dry-run", cwd=setup))
    assert "--method is required" in err


def test_kd_datafree_help_is_dfqs_without_a_method_and_the_engines_with_one(tmp_path):
    from kdvision.classification.datafree import method_given

    (tmp_path / "lr.yaml").write_text("lr: 0.1\n")
    (tmp_path / "cmi.yaml").write_text("method: cmi\n")
    assert not method_given(list(DFQ_README)) and not method_given(["--config", str(tmp_path / "lr.yaml")])
    assert not method_given(["--help"]) and not method_given(["-h", "--set", "lr=1"])
    for argv in (["--method", "cmi"], ["--method=cmi", "--help"], ["--set", "method=cmi"],
                 ["--config", str(tmp_path / "cmi.yaml")]):
        assert method_given(argv), argv
    dfq = run_script("classification/kd_datafree.py", "--help")
    engine = run_script("classification/kd_datafree.py", "--method", "cmi", "--help")
    assert dfq.returncode == engine.returncode == 0
    assert "--unlabeled" in dfq.stdout and "--unlabeled" not in engine.stdout and "--bank_size" in engine.stdout


def test_dfq_trains_without_data(setup, tmp_path):
    proc = run_script("classification/kd_datafree.py", "--dataset", "cifar10", "--teacher", "resnet8", "--student",
                      "resnet8", "--batch-size", "4", "--ngf", "8", "--nz", "16", "--kd_steps", "2",
                      "--iters-per-epoch", "2", "--epochs", "2", "--device", "cpu", "--workers", "0", "--no-progress",
                      "--output", tmp_path / "run", cwd=setup)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "dfq_mosaickd" and summary["iterations"] == 4
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert set(ckpt["method_state"]["modules"]) == {"student", "generator"}
    assert ckpt["method_state"]["optimizers"]["student"]["param_groups"][0]["betas"] == (0.9, 0.999)  # Adam


def test_fp16_is_bf16_autocast_with_a_note_and_evaluate_reads_a_resumed_student(setup, shared_data, tmp_path):
    require(shared_data / "cifar10_test_subset" / "cifar10_test_first846.npz")
    args = [*TINY, "--unlabeled", setup / "ood", "--eval-dataset", "cifar10_test_subset", "--data_root", shared_data]
    proc = run_script("classification/kd_mosaic.py", *args, "--fp16", "--output", tmp_path / "run", cwd=setup)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("note: --fp16/--amp: bf16 autocast") == 1
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [v for r in records if r["split"] == "train" for k, v in r.items() if k.startswith("loss")]
    assert losses and all(np.isfinite(losses))
    trained = [r["acc"] for r in records if r["split"] == "test" and "acc" in r][-1]
    # --evaluate (the original's flag) with --resume: the teacher and the resumed student, no training, no new run
    ev = run_script("classification/kd_mosaic.py", *args, "--fp16", "--evaluate", "--resume",
                    tmp_path / "run" / "checkpoints" / "last.pt", "--output", tmp_path / "eval", cwd=setup)
    assert ev.returncode == 0, ev.stderr
    assert "teacher resnet8 test acc" in ev.stdout and f"student test acc {trained:.4f}" in ev.stdout, ev.stdout
    assert not (tmp_path / "eval").exists()


def test_visdom_panels_and_sample_grids_show_mosaics_above_real_ood_images(setup, tmp_path):
    with FakeVisdom() as server:
        proc = run_script("classification/kd_mosaic.py", *TINY, "--unlabeled", setup / "ood", "--visdom", server.url,
                          "--output", tmp_path / "run", cwd=setup)
        assert proc.returncode == 0, proc.stderr
        windows = server.windows()
    # one line panel per player's loss, each with a point per logged step, and the learning rates
    for name in ("train/loss_d", "train/loss_g", "train/loss_s", "train/loss_adv", "train/loss_align",
                 "train/loss_local"):
        assert len(windows.get(name, [])) == 2, (name, sorted(windows))
    assert any(name.startswith("train/lr_") for name in windows), sorted(windows)
    (grid_event,) = windows["samples"]
    grids = sorted((tmp_path / "run" / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["epoch_0001.png", "last.png"] and "epoch 1" in json.dumps(grid_event)
    grid = np.asarray(Image.open(grids[0]).convert("RGB"))
    real = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((setup / "ood").glob("*.png"))]
    cell, nrow = 32 + 2, 8  # torchvision's make_grid: 2-pixel padding, 8 images per row
    rows = (grid.shape[0] - 2) // cell
    assert grid.shape[1] == 2 + nrow * cell and grid.shape[0] == 2 + rows * cell
    is_real = [any(np.array_equal(grid[2 + r * cell:2 + r * cell + 32, 2 + c * cell:2 + c * cell + 32], x)
                   for x in real) for r in range(rows) for c in range(nrow)]
    n_real = sum(is_real)
    # the mosaics come first, then the real OOD images (bytes unchanged): all 24 of the folder, each once
    assert n_real == len(real) and is_real == [False] * (len(is_real) - n_real) + [True] * n_real
    assert len(is_real) - n_real >= nrow


def test_ood_subset_through_the_script_on_an_imagenet32_release_uses_and_reuses_its_cache(setup, tmp_path):
    root = tmp_path / "data"
    write_downsampled(root / "Imagenet32_train", batches=2, per=6)  # 7 + 8 = 15 images in the official pickles
    args = [*TINY, "--unlabeled", "imagenet_32x32", "--data_root", root, "--ood_subset", "--ood_subset_size", "6"]
    first = run_script("classification/kd_mosaic.py", *args, "--output", tmp_path / "a", cwd=setup)
    assert first.returncode == 0, first.stderr
    (cache,) = (setup / "checkpoints" / "ood_index").glob("cifar10-imagenet_32x32-*-6.pt")
    assert "OOD subset: the top-6 of 15 images by teacher entropy, cached to" in first.stdout
    stamp = cache.stat().st_mtime_ns
    again = run_script("classification/kd_mosaic.py", *args, "--output", tmp_path / "b", cwd=setup)
    assert again.returncode == 0, again.stderr
    assert f"read from {cache.relative_to(setup)}" in again.stdout and cache.stat().st_mtime_ns == stamp
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["iterations"] == 2


def test_torchrun_two_processes_keep_every_player_identical(setup, tmp_path):
    import sys

    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    proc = run_script("classification/kd_mosaic.py", *TINY, "--unlabeled", setup / "ood", "--output", tmp_path / "run",
                      launcher=launcher, cwd=setup)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations"] == 2
    # the batch of 4 is split 2 + 2; after DDP's averaged updates the replicas agree to the bit
    assert summary["rank_spread"] == {"student": 0.0, "generator": 0.0, "discriminator": 0.0}
