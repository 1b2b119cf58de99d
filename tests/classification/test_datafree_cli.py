"""kd_datafree.py / datafree_kd.py / rgal.py: the published commands, --T handling, dry runs, exact resume."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from kdvision.core.checkpoint import read_checkpoint
from kdvision.core.models import create_model

from kdv_testutils import assert_same_training_state, free_port, one_line_error, run_script

# RGAL's README command (seed_commands.md §3.2), verbatim after the script path.
RGAL_README = """--epochs 200 --dataset cifar10 --batch_size 128 --synthesis_batch_size 256 --teacher wrn40_2 --student wrn16_1
--lr 0.1 --kd_steps 400 --ep_steps 400 --g_steps 400 --lr_g 1e-3 --adv 1.0 --bn 1.0 --oh 1.0 --act 0.001 --gpu 0
--seed 0 --T 20 --save_dir run/scratch1 --log_tag scratch1 --cd_loss 0.1 --gram_loss 0
--teacher_weights best_model/cifar10_wrn40_2.pth --custom_steps 1.0 --print_freq 50 --triplet_target student
--pair_sample --striplet_feature global --start_layer 2 --triplet 0.1 --striplet 0.1 --balanced_sampling
--balance 0.1""".split()

# Small CPU scale for the engine: appended flags win over earlier ones.
TINY = ["--device", "cpu", "--epochs", "2", "--kd_steps", "2", "--ep_steps", "2", "--g_steps", "2",
        "--batch_size", "8", "--synthesis_batch_size", "8", "--ngf", "8", "--nz", "16", "--bank_size", "32",
        "--n_neg", "8", "--log-interval", "1", "--no-progress"]


@pytest.fixture(scope="module")
def cmi_teachers(tmp_path_factory):
    """CMI-format teacher checkpoints ({'state_dict': ...}) under the CMI / RGAL default paths."""
    root = tmp_path_factory.mktemp("cmi")
    torch.manual_seed(0)
    for folder, name in (("best_model", "cifar10_wrn40_2.pth"), ("checkpoints/pretrained", "cifar10_resnet8.pth")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        arch = name.split("_", 1)[1][:-4]
        torch.save({"state_dict": create_model(arch, num_classes=10).state_dict(), "epoch": 200,
                    "arch": arch}, root / folder / name)
    return root


def test_rgal_readme_command_dry_run_prints_the_plan(cmi_teachers):
    proc = run_script("classification/rgal.py", *RGAL_README, "--device", "cpu", "--dry-run", cwd=cmi_teachers)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("data-free KD plan (rgal)", "wrn40_2 2.244 M params, weights best_model/cifar10_wrn40_2.pth",
                 "wrn16_1", "AdvTripletSynthesizer: 400 steps x 256 images", "balance 0.1",
                 "triplet", "weight 0.1 on student blocks ['block3']", "balanced sampler", "sign code",
                 "cd 0.1 on 3 block pairs", "striplet 0.1 on global (distance sampler)",
                 "200 epochs (0 warm-up) x 1 round(s) of 400 KD steps, batch 128 x2 views, KL at T=20",
                 "warning: --act has no effect in rgal.py"):
        assert text in out, (text, out)
    assert not (cmi_teachers / "run").exists()


def test_rgal_readme_command_trains_without_data(cmi_teachers, tmp_path):
    """The published line as written (scaled down by appended flags): no CIFAR-10 on disk, one warning, trains."""
    proc = run_script("classification/rgal.py", *RGAL_README, *TINY, "--output", tmp_path / "run",
                      "--save_dir", tmp_path / "pool", cwd=cmi_teachers)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if "test split" in line]
    assert len(warnings) == 1 and "training anyway (data-free); no evaluation will happen" in warnings[0]
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["balance"] == 0.1 and cfg["balanced_sampling"] is True and cfg["pair_sample"] is True
    assert cfg["T"] == 20 and cfg["triplet_target"] == "student" and cfg["striplet_feature"] == "global"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "rgal" and summary["iterations"] == 4 and summary["pool_size"] == 16
    assert summary["student_best"] is None and summary["synthesis_time_s"] > 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*records)
    assert {"loss_kd", "loss_cd", "loss_striplet", "loss_triplet", "loss_balance", "loss_adv"} <= keys
    assert len(list((tmp_path / "pool").glob("*.png"))) == 16  # --save_dir: the pool as PNG files
    assert (tmp_path / "run" / "samples" / "last.png").is_file()


def test_rgal_without_any_synthesis_weight_is_a_one_line_error(cmi_teachers, tmp_path):
    err = one_line_error(run_script("classification/rgal.py", "--dataset", "cifar10", "--teacher_weights",
                                    "best_model/cifar10_wrn40_2.pth", *TINY, cwd=cmi_teachers))
    assert "every synthesis weight" in err and "rgal_cifar10.yaml" in err


def test_generative_baselines_honour_T_unless_the_legacy_flag_is_given(cmi_teachers):
    base = ["--dataset", "cifar10", "--teacher", "resnet8", "--student", "resnet8", "--device", "cpu", "--dry-run"]
    preset = run_script("classification/kd_datafree.py", "--method", "dfq", *base, cwd=cmi_teachers)
    assert "KL at T=1" in preset.stdout  # the preset reproduces the published (T=1) rows
    given = run_script("classification/kd_datafree.py", "--method", "dfq", "--T", "20", *base, cwd=cmi_teachers)
    assert "KL at T=20" in given.stdout and "--T 20 is honoured for dfq" in given.stdout
    legacy = run_script("classification/kd_datafree.py", "--method", "dfq", "--T", "20", "--legacy_generative_kd_T1",
                        *base, cwd=cmi_teachers)
    assert "KL at T=1" in legacy.stdout and "--T 20 ignored" in legacy.stdout
    dfad = run_script("classification/datafree_kd.py", "--method", "dfad", "--T", "20", "--legacy_generative_kd_T1",
                      *base, cwd=cmi_teachers)
    assert ", L1," in dfad.stdout
    cmi = run_script("classification/kd_datafree.py", "--method", "cmi", *base, cwd=cmi_teachers)
    assert "KL at T=20" in cmi.stdout and "CMISynthesizer: 200 steps x 256 images" in cmi.stdout
    assert "contrastive" in cmi.stdout and "d=" in cmi.stdout


def test_cmi_model_name_mobilenetv2_means_torchvisions(tmp_path):
    torch.save({"state_dict": create_model("mobilenetv2_imagenet", num_classes=10).state_dict()},
               tmp_path / "t.pth")
    proc = run_script("classification/kd_datafree.py", "--method", "zskt", "--dataset", "cifar10", "--teacher",
                      "mobilenetv2", "--student", "resnet8", "--teacher_weights", tmp_path / "t.pth", "--device",
                      "cpu", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "mobilenetv2_imagenet 2.237 M params" in proc.stdout


def test_one_line_errors(cmi_teachers, tmp_path):
    err = one_line_error(run_script("classification/kd_datafree.py", "--method", "cmi", "--dataset", "cifar10",
                                    "--teacher", "wrn40_2", *TINY, cwd=tmp_path))
    assert "teacher checkpoint not found: checkpoints/pretrained/cifar10_wrn40_2.pth" in err
    err = one_line_error(run_script("classification/kd_datafree.py", "--method", "cmi", "--dataset", "cifar10",
                                    "--teacher", "resnet8", *TINY, "--kd_steps", "5", "--ep_steps", "3",
                                    cwd=cmi_teachers))
    assert "--ep_steps (3) must be >= --kd_steps (5)" in err
    assert "invalid method: 'nope'" in one_line_error(run_script("classification/kd_datafree.py", "--method", "nope"))
    # datafree_kd.py (CMI's name) needs a method; kd_datafree.py without one is MosaicKD's DFQ (test_mosaickd_cli)
    assert "--method is required" in one_line_error(run_script("classification/datafree_kd.py", "--dataset",
                                                               "cifar10"))


RESUME_CASES = {
    "cmi": ["--method", "cmi", "--adv", "0.5", "--cr", "0.8"],
    "fast_meta": ["--method", "fast_meta", "--warmup", "1", "--epochs", "3", "--is_maml", "0", "--bn", "1",
                  "--bn_mmt", "0.9"],  # Fast's momentum BN statistics: an EMA to resume
    "dfq": ["--method", "dfq"],
    "deepinv": ["--method", "deepinv"],
    "rgal": ["--adv", "1", "--bn", "1", "--oh", "1", "--triplet", "0.1", "--striplet", "0.1", "--cd_loss", "0.1",
             "--pair_sample", "--triplet_target", "student", "--start_layer", "1", "--T", "20"],
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_is_exact(case, cmi_teachers, tmp_path):
    """Generator(s), z, head, bank, pool, EMA statistics and every optimiser continue bit for bit."""
    args = ["--dataset", "cifar10", "--teacher", "resnet8", "--student", "resnet8", *TINY, *RESUME_CASES[case]]
    epochs = int(args[len(args) - 1 - args[::-1].index("--epochs") + 1])
    script = "classification/rgal.py" if case == "rgal" else "classification/kd_datafree.py"
    full = run_script(script, *args, "--output", tmp_path / "full", cwd=cmi_teachers)
    assert full.returncode == 0, full.stderr
    part = run_script(script, *args, "--epochs", str(epochs - 1), "--output", tmp_path / "part", cwd=cmi_teachers)
    assert part.returncode == 0, part.stderr
    resumed = run_script(script, *args, "--output", tmp_path / "part", "--resume", cwd=cmi_teachers)
    assert resumed.returncode == 0, resumed.stderr
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = read_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    players = tuple(a["method_state"]["modules"])
    assert "syn_generator" in players or case == "deepinv"
    if case == "cmi":
        assert {"syn_head", "syn_bank"} <= set(players)
    if case == "rgal":  # the 1x1 adapters are checkpointed with the student (the original lost them)
        assert "adapters.adapters.0.weight" in a["method_state"]["modules"]["student_terms"]
    assert_same_training_state(a, b, players)
    sa, sb = a["method_state"]["extra"]["synthesizer"], b["method_state"]["extra"]["synthesizer"]
    assert sa["rounds"] == sb["rounds"] and torch.equal(sa["pool"]["images"], sb["pool"]["images"]) \
        if "pool" in sa else sa["rounds"] == sb["rounds"]
    if "z" in sa:
        assert torch.allclose(sa["z"], sb["z"], atol=1e-6)
    if case == "fast_meta":  # the EMA is per-layer lists of tensors
        ha, hb = sa["bn_hook"], sb["bn_hook"]
        assert ha["mode"] == hb["mode"] == "momentum" and ha["layers"] == hb["layers"]
        for key in ("ema_mean", "ema_var"):
            assert ha[key] is not None and len(ha[key]) == len(hb[key]) == len(ha["layers"]) > 0
            for x, y in zip(ha[key], hb[key]):
                assert torch.allclose(x, y, atol=1e-6)


def test_torchrun_two_processes_on_cpu(cmi_teachers, tmp_path):
    import sys

    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    proc = run_script("classification/kd_datafree.py", "--method", "cmi", "--dataset", "cifar10", "--teacher",
                      "resnet8", "--student", "resnet8", *TINY, "--output", tmp_path / "run", launcher=launcher,
                      cwd=cmi_teachers, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations"] == 4
    assert summary["pool_size"] == 8  # rank 0's pool: 4 images per rank and round


def test_cmi_init_folder_starts_the_pool(cmi_teachers, tmp_path):
    from PIL import Image

    folder = tmp_path / "init"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (10 * i, 20, 30)).save(folder / f"{i}.png")
    proc = run_script("classification/kd_datafree.py", "--method", "cmi", "--dataset", "cifar10", "--teacher",
                      "resnet8", "--student", "resnet8", *TINY, "--epochs", "1", "--cmi_init", folder,
                      "--save-samples", "pool", "--output", tmp_path / "run", cwd=cmi_teachers)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["pool_size"] == 3 + 8
    first = Image.open(tmp_path / "run" / "pool" / "000001.png").getpixel((0, 0))
    assert first == (10, 20, 30)  # the pre-inverted images come first, bytes unchanged
    bad = one_line_error(run_script("classification/kd_datafree.py", "--method", "cmi", "--dataset", "cifar10",
                                    "--teacher", "resnet8", *TINY, "--cmi_init", tmp_path / "missing",
                                    "--output", tmp_path / "run2", cwd=cmi_teachers))
    assert "--cmi_init folder not found" in bad


def test_all_zero_synthesis_weights_is_a_one_line_error(cmi_teachers):
    err = one_line_error(run_script("classification/kd_datafree.py", "--method", "zskt", "--dataset", "cifar10",
                                    "--teacher", "resnet8", *TINY, "--adv", "0", cwd=cmi_teachers))
    assert "every synthesis loss weight (--adv --bn --oh --balance --act) is 0" in err
