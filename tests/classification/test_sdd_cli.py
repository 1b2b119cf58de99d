"""classification/sdd.py: SDD's command lines, the yacs configs (the shipped ones and the originals' as they are),
one-line errors for bad input, the recorded summary, exact resume and torchrun."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

import kdvision.classification.sdd  # noqa: F401  (registers the entry script)
from kdvision.classification.sdd_configs import CONFIG_DIR, configs, list_configs, render
from kdvision.core.checkpoint import read_checkpoint
from kdvision.core.models import build_model, create_model
from kdvision.core.recipes.base import ENTRIES

from kdv_testutils import (assert_same_training_state, free_port, interrupt_after, metric_records, one_line_error,
                           run_script)

README = ["--cfg", "configs/cifar100/sdd_dkd/res32x4_shuv1.yaml", "--gpu", "1", "--M", "[1,2,4]"]
TINY = ["DATASET.TYPE", "digits", "DISTILLER.TEACHER", "resnet8", "DISTILLER.STUDENT", "resnet8",
        "SOLVER.BATCH_SIZE", "8", "--iters-per-epoch", "2", "--device", "cpu", "--no-progress", "--workers", "0",
        "--log-interval", "1"]


def resolved(argv):
    cfg, given, _ = ENTRIES["sdd"].resolve([str(a) for a in argv])
    cfg.validate()
    return cfg


def dry_run(argv, cwd=None) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        ENTRIES["sdd"].build([*map(str, argv), "--dry-run", "--device", "cpu"]).run()
    return out.getvalue()


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("sdd")
    torch.manual_seed(0)
    path = root / "digits-resnet8.pth"
    torch.save({"model": build_model("resnet8", 10, dataset="digits").state_dict(), "epoch": 240}, path)
    return path


def test_the_readme_command_runs_from_any_directory_and_reads_the_shipped_config(tmp_path):
    proc = run_script("classification/sdd.py", *README, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for text in ("logit distillation plan", "ShuffleV1 0.949 M params", "resnet32x4 7.434 M params",
                 "ramp x DKD (alpha=1 beta=8 T=4) on 21 regions (M=[1, 2, 4]", "warm-up 20 epochs",
                 "240 epochs", "global batch 64", "SGD lr 0.01 m=0.9 wd=0.0005", "after epochs [150, 180, 210]",
                 "clip 40"):
        assert text in proc.stdout, (text, proc.stdout)
    # no CIFAR-100 and no teacher here: a dry run validates the config and says what is missing
    assert "data root not found: data (dry run" in proc.stderr + proc.stdout  # mdistiller's ./data
    assert "python tools/download_teachers.py --set repdistiller-cifar100" in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("spelling", ["[1,2]", "1,2", "[1, 2]"])
def test_M_in_every_spelling_is_recorded_in_the_config(spelling):
    cfg = resolved([*README[:2], "--M", spelling])
    assert cfg.scales == [1, 2]
    assert "on 5 regions (M=[1, 2]" in dry_run([*README[:2], "--M", spelling])


def test_every_shipped_config_validates_in_a_dry_run():
    names = list_configs()
    assert len(names) == 108 and len(names) == len(configs())
    for name in names:
        out = dry_run(["--cfg", f"configs/{name}"])
        assert "logit distillation plan" in out and "loss" in out, name


def test_the_shipped_configs_are_exactly_what_the_table_generates():
    for rel, tree in configs().items():
        text = (CONFIG_DIR / rel).read_text()
        assert text.split("\n", 1)[1] == render(tree), rel


def test_the_recipe_lives_in_the_config_files():
    shuv1 = resolved(["--cfg", "configs/cifar100/sdd_dkd/res32x4_shuv1.yaml"])
    assert (shuv1.lr, shuv1.weight_decay, shuv1.batch_size, shuv1.epochs) == (0.01, 5e-4, 64, 240)
    assert shuv1.clip_grad_norm == 40.0 and shuv1.lr_decay_stages == [150, 180, 210]
    vgg = resolved(["--cfg", "configs/cifar100/dkd/vgg13_vgg8.yaml"])
    assert (vgg.lr, vgg.dkd_beta, vgg.clip_grad_norm) == (0.05, 6.0, None)  # mdistiller's baselines: no clipping
    r34 = resolved(["--cfg", "configs/imagenet/r34_r18/sdd_dkd.yaml"])
    assert (r34.batch_size, r34.lr, r34.warmup, r34.dkd_t, r34.scales) == (512, 0.2, 1.0, 1.0, [1, 2])
    kd, sdkd = (resolved(["--cfg", f"configs/imagenet/r50_mv2/{m}.yaml"]) for m in ("kd", "sdd_kd"))
    assert (kd.kd_t, kd.kd_ce_weight, kd.kd_weight) == (1.0, 0.5, 0.5)
    assert (sdkd.kd_t, sdkd.kd_ce_weight, sdkd.kd_weight) == (4.0, 0.1, 0.9)  # as published (bug #3)
    assert "mobilenet_v1" in dry_run(["--cfg", "configs/imagenet/r50_mv2/sdd_dkd.yaml"])


# SDD's configs/cifar100/sdd_nkd/vgg13_vgg8.yaml-style file, as the original ships it (no NKD node, no M).
ORIGINAL = """EXPERIMENT:
  NAME: ""
  TAG: "sdd_nkd,vgg13,vgg8"
  PROJECT: "cifar100_baselines"
DISTILLER:
  TYPE: "SDD_NKD"
  TEACHER: "vgg13_sdd"
  STUDENT: "vgg8_sdd"
SOLVER:
  BATCH_SIZE: 64
  EPOCHS: 240
  LR: 0.05
  LR_DECAY_STAGES: [150, 180, 210]
  LR_DECAY_RATE: 0.1
  WEIGHT_DECAY: 0.0005
  MOMENTUM: 0.9
  TYPE: "SGD"
DKD:
  BETA: 6.0
"""


def test_an_original_sdd_file_means_what_it_meant_there(tmp_path):
    (tmp_path / "orig.yaml").write_text(ORIGINAL)
    cfg = resolved(["--cfg", tmp_path / "orig.yaml", "--M", "[1,2]", "--warmup", "10", "SOLVER.LR", "0.02"])
    d = cfg.logit_distiller()
    # SD-NKD borrowed tau = DKD.T (4), gamma = DKD.BETA, DKD.CE_WEIGHT and DKD.WARMUP, with the all-class mask
    assert (d.kind, d.T, d.gamma, d.ce_weight, d.warmup, d.legacy_mask) == ("sd_nkd", 4.0, 6.0, 1.0, 20.0, True)
    assert cfg.scales == [1, 2] and cfg.warmup == 10.0 and cfg.lr == 0.02 and cfg.clip_grad_norm == 40.0
    assert cfg.teacher == "vgg13_sdd" and "vgg13 " in dry_run(["--cfg", tmp_path / "orig.yaml"])
    # the NKD baseline of the same file: tau 1, gamma 1.5 (SDD's nkd.py)
    base = resolved(["--cfg", tmp_path / "orig.yaml", "DISTILLER.TYPE", "NKD"]).logit_distiller()
    assert (base.T, base.gamma, base.legacy_mask) == (1.0, 1.5, True)


@pytest.mark.parametrize("problem", ["distiller", "model", "M", "key", "class_count", "overrides", "missing_cfg"])
def test_bad_input_is_one_line_and_leaves_no_run_directory(problem, digits_teacher, tmp_path):
    args = [*TINY, "--teacher_weights", digits_teacher, "--output", tmp_path / "run"]
    expected = {"distiller": ("GL_DKD", "SDD_DKD"), "model": ("resnet9000", "valid"), "M": ("scale",),
                "key": ("DKD.GAMA", "known nodes"), "class_count": ("does not match",),
                "overrides": ("KEY VALUE",), "missing_cfg": ("config not found", "--list-configs")}[problem]
    if problem == "distiller":  # SDD's resnet32_mobinetv2.yaml names this unregistered distiller
        args += ["DISTILLER.TYPE", "GL_DKD"]
    elif problem == "model":
        args += ["DISTILLER.STUDENT", "resnet9000"]
    elif problem == "M":
        args += ["--M", "[1,x]"]
    elif problem == "key":
        args += ["DKD.GAMA", "2"]
    elif problem == "class_count":
        bad = tmp_path / "c100.pth"
        torch.save({"model": create_model("resnet8", num_classes=100, in_channels=1).state_dict()}, bad)
        args += ["--teacher_weights", bad]
    elif problem == "overrides":
        args += ["SOLVER.LR"]
    else:
        args += ["--cfg", "configs/cifar100/sdd_dkd/nope.yaml"]
    err = one_line_error(run_script("classification/sdd.py", "--cfg", "configs/cifar100/sdd_dkd/res32x4_shuv1.yaml",
                                    *args, cwd=tmp_path))
    assert all(text in err for text in expected), (problem, err)
    assert not (tmp_path / "run").exists()


def test_list_configs_prints_every_shipped_file(tmp_path):
    proc = run_script("classification/sdd.py", "--list-configs", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.split() == [f"configs/{name}" for name in list_configs()]


def test_a_run_records_best_and_last_seed_world_size_and_global_batch(digits_teacher, tmp_path):
    args = ["--cfg", "configs/cifar100/sdd_dkd/res32x4_shuv1.yaml", *TINY, "SOLVER.EPOCHS", "2",
            "--teacher_weights", digits_teacher, "--seed", "3", "--output", tmp_path / "run"]
    summary = ENTRIES["sdd"].build([str(a) for a in args]).run()
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("student_best", "student_last", "teacher_metric"):
        assert 0.0 <= saved[key] <= 1.0, key
    assert saved["student_best"] >= saved["student_last"]
    assert (saved["seed"], saved["world_size"], saved["batch_size"], saved["method"]) == (3, 1, 8, "sd_dkd")
    assert summary["iterations"] == 4
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "scales:\n- 1\n- 2\n- 4" in config or "scales: [1, 2, 4]" in config
    ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert set(ckpt["method_state"]["modules"]) == {"student"}  # the teacher is not saved every epoch
    # the exported student is the plain model's state_dict (loads into the zoo model strictly)
    build_model("resnet8", 10, checkpoint=str(tmp_path / "run" / "digits-resnet8.pt"), dataset="digits")


def test_resume_is_exact(digits_teacher, tmp_path, monkeypatch):
    """Stopped in epoch 2 and resumed, the run ends bit for bit where the uninterrupted one ends (the student, its
    SGD momentum, the LR law and the data order)."""
    from kdvision.core.methods.logit_kd import LabelledKD

    args = [str(a) for a in ("--cfg", "configs/cifar100/sdd_dkd/res32x4_shuv1.yaml", *TINY, "SOLVER.EPOCHS", "3",
                             "SOLVER.LR_DECAY_STAGES", "[1]", "SDD.WARMUP", "2", "--teacher_weights", digits_teacher)]
    ENTRIES["sdd"].build([*args, "--output", str(tmp_path / "full")]).run()
    with interrupt_after(monkeypatch, LabelledKD, 3), pytest.raises(KeyboardInterrupt):
        ENTRIES["sdd"].build([*args, "--output", str(tmp_path / "part")]).run()
    ENTRIES["sdd"].build([*args, "--output", str(tmp_path / "part"), "--resume"]).run()
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = read_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6
    assert_same_training_state(a, b, ("student",))
    train = lambda run: metric_records(tmp_path / run, "train")  # noqa: E731
    assert train("part")[-2:] == train("full")[-2:]


@pytest.mark.slow
def test_torchrun_splits_the_global_batch_and_keeps_the_replicas_identical(digits_teacher, tmp_path):
    import sys

    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    proc = run_script("classification/sdd.py", "--cfg", "configs/cifar100/sdd_dkd/res32x4_shuv1.yaml", *TINY,
                      "--teacher_weights", digits_teacher, "SOLVER.EPOCHS", "1", "--output", tmp_path / "run",
                      launcher=launcher, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["world_size"], summary["batch_size"], summary["iterations"]) == (2, 8, 2)
    assert summary["rank_spread"] == {"student": 0.0}


def test_seeds_runs_once_per_seed_and_reports_mean_and_std(digits_teacher, tmp_path, capsys):
    import statistics

    from kdvision.classification.sdd import main

    args = ["--cfg", "configs/cifar100/kd/res32x4_shuv1.yaml", *TINY, "SOLVER.EPOCHS", "1", "--teacher_weights",
            digits_teacher, "--seeds", "0,1,2", "--output", tmp_path / "runs"]
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    assert exit_.value.code == 0
    report = json.loads((tmp_path / "runs" / "seeds.json").read_text())
    assert [r["seed"] for r in report["runs"]] == [0, 1, 2]
    for r in report["runs"]:
        summary = json.loads((tmp_path / "runs" / f"seed{r['seed']}" / "summary.json").read_text())
        assert (summary["seed"], summary["student_best"], summary["student_last"]) == (r["seed"], r["best"], r["last"])
    best = [r["best"] for r in report["runs"]]
    assert report["best"]["mean"] == pytest.approx(statistics.fmean(best))
    assert report["best"]["std"] == pytest.approx(statistics.stdev(best))
    assert len({r["last"] for r in report["runs"]}) > 1  # the seeds do change the run
    assert f"3 seeds 0,1,2: best {report['best']['mean']:.4f} ± {report['best']['std']:.4f}" in capsys.readouterr().out
    err = one_line_error(run_script("classification/sdd.py", *map(str, args[:-3]), "--seeds", "a,b", cwd=tmp_path))
    assert "--seeds" in err and "0,1,2" in err
