"""dfad_*.py entry points: one-line errors, dry run, run-directory contract, exact resume, torchrun."""
import json
import sys

import pytest
import torch
import yaml

from kdvision.classification.dfad import PRESETS, DFADConfig, lr_decay_epochs, run
from kdvision.core.checkpoint import read_checkpoint
from kdvision.core.engine.config import apply_overrides
from kdvision.core.engine.rundir import SUMMARY_KEYS
from kdvision.core.models import create_model

from kdv_testutils import assert_same_training_state, free_port, one_line_error, run_script

TINY = ["--dataset", "digits", "--batch_size", "8", "--epochs", "1", "--iters-per-epoch", "2", "--set", "ngf=8",
        "--device", "cpu", "--test_batch_size", "128"]


def test_missing_checkpoint(tmp_path):
    err = one_line_error(run_script("classification/dfad_mnist.py", *TINY, "--ckpt", tmp_path / "nope.pt", "--output", tmp_path))
    assert "checkpoint file not found" in err and "nope.pt" in err


def test_wrong_architecture_checkpoint_names_keys(tmp_path):
    torch.save(create_model("lenet5_half").state_dict(), tmp_path / "half.pt")
    err = one_line_error(run_script("classification/dfad_mnist.py", *TINY, "--ckpt", tmp_path / "half.pt", "--output", tmp_path))
    assert "does not match model lenet5" in err and "conv1.weight (3, 1, 5, 5) vs (6, 1, 5, 5)" in err


def test_missing_data_root(tmp_path, toy_teacher):
    err = one_line_error(run_script("classification/dfad_mnist.py", "--ckpt", toy_teacher, "--data_root", tmp_path / "no_such_dir",
                                     "--epochs", "1", "--iters-per-epoch", "1", "--output", tmp_path / "run"))
    assert "data root not found" in err and "no_such_dir" in err


def test_unknown_model_lists_valid_names(tmp_path, toy_teacher):
    err = one_line_error(run_script("classification/dfad_mnist.py", *TINY, "--ckpt", toy_teacher, "--teacher", "lenet7",
                                     "--output", tmp_path))
    assert "unknown model 'lenet7'" in err and "lenet5" in err and "wrn40_2" in err


def test_debug_shows_traceback(tmp_path):
    proc = run_script("classification/dfad_mnist.py", *TINY, "--ckpt", tmp_path / "nope.pt", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_dry_run_prints_plan_and_writes_nothing(tmp_path, toy_teacher):
    proc = run_script("classification/dfad_mnist.py", *TINY, "--ckpt", toy_teacher, "--output", tmp_path / "run", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    for word in ("DFAD plan", "teacher", "lenet5 61,706 params", "student", "lenet5_half 15,738 params",
                 "generator", "schedule", "evaluation", "digits test split"):
        assert word in proc.stdout, word
    assert not (tmp_path / "run").exists()


def _cfg(tmp_path, teacher, name, **kw):
    cfg = DFADConfig()
    apply_overrides(cfg, {**PRESETS["digits"], "ckpt": str(teacher), "batch_size": 8, "ngf": 8, "epochs": 2,
                          "iters_per_epoch": 3, "device": "cpu", "output": str(tmp_path / name), "progress": False,
                          "test_batch_size": 256, **kw}, "test")
    return cfg


def test_run_directory_contract(tmp_path, toy_teacher):
    summary = run(_cfg(tmp_path, toy_teacher, "run"), explicit_root=False)
    out = tmp_path / "run"
    saved = json.loads((out / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(saved) and saved["student_best"] == summary["student_best"]
    assert (saved["method"], saved["task"], saved["metric"], saved["iterations"], saved["world_size"]) == \
        ("dfad", "classification", "acc", 6, 1)
    assert 0 <= saved["student_best"] <= 1 and 0 <= saved["teacher_metric"] <= 1 and saved["train_iters_per_s"] > 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["lr_S"] == PRESETS["digits"]["lr_S"] and cfg["_run"]["world_size"] == 1
    assert "torch" in cfg["_run"]["versions"] and "git_commit" in cfg["_run"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"train", "test"} and all("step" in r and "epoch" in r for r in records)
    assert [r["epoch"] for r in records if "acc" in r] == [1, 2]
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert (out / "samples" / "epoch_0002.png").is_file() and (out / "samples" / "last.png").is_file()
    assert "teacher lenet5 test acc" in (out / "log.txt").read_text()


def test_resume_is_exact(tmp_path, toy_teacher):
    run(_cfg(tmp_path, toy_teacher, "full", epochs=2), explicit_root=False)
    run(_cfg(tmp_path, toy_teacher, "part", epochs=1), explicit_root=False)
    run(_cfg(tmp_path, toy_teacher, "part", epochs=2, resume="auto"), explicit_root=False)
    full = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    part = read_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert full["step"] == 6
    assert_same_training_state(full, part, ("student", "generator"))


def test_resume_without_checkpoint_is_an_error(tmp_path, toy_teacher):
    err = one_line_error(run_script("classification/dfad_mnist.py", *TINY, "--ckpt", toy_teacher, "--output", tmp_path,
                                     "--resume"))
    assert "no checkpoint to resume from" in err


def test_missing_eval_split_trains_with_one_warning(tmp_path, toy_teacher):
    root = tmp_path / "empty_root"
    root.mkdir()
    proc = run_script("classification/dfad_mnist.py", "--ckpt", toy_teacher, "--data_root", root, "--batch_size", "8", "--epochs",
                      "1", "--iters-per-epoch", "2", "--set", "ngf=8", "--device", "cpu", "--output", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no evaluation will happen" in warnings[0]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["student_best"] is None and summary["iterations"] == 2


def test_original_scheduler_semantics():
    def decay(**kw):
        return lr_decay_epochs(apply_overrides(DFADConfig(), kw, "test"))

    assert decay(**PRESETS["cifar"], scheduler=True) == [100, 200]  # MultiStepLR at epoch start
    assert decay(**PRESETS["mnist"], scheduler=True) == []  # StepLR(100) never fires within 40 epochs
    assert decay(**PRESETS["caltech101"], scheduler=True) == [100, 200, 300]
    assert decay(scheduler=True, epochs=300, step_size=100, scheduler_timing="end") == [101, 201]
    assert decay(**PRESETS["cifar"]) == []  # no --scheduler: constant LR


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path, toy_teacher):
    proc = run_script("classification/dfad_mnist.py", *TINY, "--ckpt", toy_teacher, "--output", tmp_path / "ddp", timeout=600,
                      launcher=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                                f"--master_port={free_port()}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations"] == 2 and summary["batch_size"] == 8
    assert yaml.safe_load((tmp_path / "ddp" / "config.yaml").read_text())["_run"]["world_size"] == 2
