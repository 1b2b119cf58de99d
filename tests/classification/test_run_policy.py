"""The run-directory policy and run reproducibility, as a user meets them from the command line:

- a run's ``config.yaml`` passed back with ``--config`` (and nothing else) reproduces the run: the same summary
  metrics and the same logged losses, for supervised training, DFAD and the data-free engine (``method: cmi`` read
  from the file, no ``--method`` flag);
- a finished run is never lost or mixed with another: a non-empty ``--output`` without ``--resume`` is refused with
  one line naming ``--resume`` and ``--overwrite``; ``--overwrite`` replaces it; with no ``--output`` every run gets
  a fresh ``runs/<script>/<date-time>`` and ``--resume`` alone continues the latest one;
- a run refused for a bad ``--ckpt`` leaves no run directory behind;
- warnings are printed once and written to ``log.txt``;
- ``--set iters_per_epoch`` / ``--iters-per-epoch`` decide the number of steps in teacher training and data-free
  runs (they used to be overwritten).

Everything runs on the embedded scikit-learn digits (no download) at a few steps per run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from kdv_testutils import metric_records, one_line_error, run_script

pytestmark = pytest.mark.slow  # subprocess runs, ~5 s each

TEACHER = ["--dataset", "digits", "--model", "resnet8", "--epochs", "2", "--iters-per-epoch", "4", "--batch_size",
           "32", "--device", "cpu", "--no-progress"]
DFAD = ["--dataset", "digits", "--batch_size", "8", "--epochs", "2", "--iters-per-epoch", "2", "--set", "ngf=8", "--device", "cpu",
        "--test_batch_size", "512", "--no-progress"]
CMI = ["--method", "cmi", "--dataset", "digits", "--teacher", "resnet8", "--student", "resnet8", "--epochs", "2",
       "--kd_steps", "2", "--ep_steps", "2", "--g_steps", "2", "--batch_size", "8", "--synthesis_batch_size", "8",
       "--ngf", "8", "--nz", "16", "--bank_size", "32", "--n_neg", "8", "--device", "cpu", "--no-progress"]
#: Summary fields that measure the machine, not the run.
TIMING = {"train_iters_per_s", "wall_time_s", "synthesis_time_s", "export"}


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> Path:
    """A BN ResNet-8 on the digits (trained 8 steps: the plumbing needs BN statistics, not accuracy)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    proc = run_script("classification/train_teacher.py", *TEACHER, "--output", out)
    assert proc.returncode == 0, proc.stderr
    return out / "digits-resnet8.pt"


def run_ok(script: str, *args, cwd: Path | None = None):
    proc = run_script(f"classification/{script}", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def records(run: Path) -> list[dict]:
    return metric_records(run)  # timing values left out: two identical runs differ only there


def reproducible(run: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((run / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in TIMING}, records(run)


def flags_for(case: str, teacher: Path, toy_teacher: Path) -> tuple[str, list]:
    return {"train_teacher": ("train_teacher.py", TEACHER),
            "dfad": ("dfad_mnist.py", [*DFAD, "--ckpt", toy_teacher]),
            "cmi": ("kd_datafree.py", [*CMI, "--teacher_weights", teacher])}[case]


@pytest.mark.parametrize("case", ["train_teacher", "dfad", "cmi"])
def test_the_written_config_reproduces_the_run(case, digits_teacher, toy_teacher, tmp_path):
    script, flags = flags_for(case, digits_teacher, toy_teacher)
    run_ok(script, *flags, "--output", tmp_path / "first")
    written = yaml.safe_load((tmp_path / "first" / "config.yaml").read_text())
    assert written["output"] == str(tmp_path / "first") and "_run" in written
    run_ok(script, "--config", tmp_path / "first" / "config.yaml", "--output", tmp_path / "again")
    first, again = reproducible(tmp_path / "first"), reproducible(tmp_path / "again")
    assert first == again
    summary, logged = first
    assert summary["iterations"] == 8 if case == "train_teacher" else 4
    assert any(k.startswith("loss") for r in logged for k in r)  # the losses themselves are compared
    if case == "cmi":
        assert summary["method"] == "cmi" and summary["synthesis_rounds"] == 2


def test_a_finished_run_is_never_overwritten_or_mixed(toy_teacher, tmp_path):
    out = tmp_path / "run"
    run_ok("dfad_mnist.py", *DFAD, "--ckpt", toy_teacher, "--output", out)
    before = {p: p.read_bytes() for p in (out / "log.txt", out / "metrics.jsonl", out / "checkpoints" / "last.pt")}
    err = one_line_error(run_script("classification/dfad_mnist.py", *DFAD, "--ckpt", toy_teacher, "--output", out))
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert all(p.read_bytes() == data for p, data in before.items())  # nothing touched
    # --dry-run reports the same refusal (it checks what the run would do)
    assert one_line_error(run_script("classification/dfad_mnist.py", *DFAD, "--ckpt", toy_teacher, "--output", out,
                                     "--dry-run")) == err
    (out / "notes.txt").write_text("mine")
    run_ok("dfad_mnist.py", *DFAD, "--ckpt", toy_teacher, "--output", out, "--overwrite", "--seed", "7")
    log = (out / "log.txt").read_text()
    assert log.count("done (dfad)") == 1 and "replaced the previous run" in log
    assert len([r for r in records(out) if r["split"] == "train"]) == len(
        [r for r in json.loads("[" + ",".join(before[out / "metrics.jsonl"].decode().splitlines()) + "]")
         if r["split"] == "train"])  # the second run's records only, not appended to the first's
    assert json.loads((out / "summary.json").read_text())["seed"] == 7
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite removes the run's own files, nothing else


def test_the_default_output_is_a_fresh_directory_and_resume_continues_the_latest(toy_teacher, tmp_path):
    for _ in range(2):
        run_ok("dfad_mnist.py", *DFAD, "--ckpt", toy_teacher, "--epochs", "1", cwd=tmp_path)
    runs = sorted((tmp_path / "runs" / "dfad_mnist").iterdir())
    assert len(runs) == 2 and all((r / "summary.json").is_file() for r in runs)
    latest = max(runs, key=lambda r: (r / "checkpoints" / "last.pt").stat().st_mtime)
    proc = run_ok("dfad_mnist.py", *DFAD, "--ckpt", toy_teacher, "--epochs", "2", "--resume", cwd=tmp_path)
    assert sorted((tmp_path / "runs" / "dfad_mnist").iterdir()) == runs  # no third directory
    assert json.loads((latest / "summary.json").read_text())["iterations"] == 4
    assert f"resumed from {Path('runs') / 'dfad_mnist' / latest.name / 'checkpoints' / 'last.pt'}" in \
        proc.stdout + (latest / "log.txt").read_text()


def test_resume_without_any_run_names_the_folder(toy_teacher, tmp_path):
    err = one_line_error(run_script("classification/dfad_mnist.py", *DFAD, "--ckpt", toy_teacher, "--resume",
                                    cwd=tmp_path))
    assert "no run of dfad_mnist to resume" in err and "--output" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", ["dfad", "cmi"])
def test_a_bad_checkpoint_leaves_no_run_directory(case, digits_teacher, toy_teacher, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    script, flags = flags_for(case, digits_teacher, toy_teacher)
    flags = [text if f in (toy_teacher, digits_teacher) else f for f in flags]
    err = one_line_error(run_script(f"classification/{script}", *flags, "--output", tmp_path / "run", cwd=tmp_path))
    assert "notes.pt" in err and "not a" in err and "weights_only" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_a_warning_is_printed_once_and_written_to_the_log(digits_teacher, tmp_path):
    cmi = [a for a in CMI if a not in ("--device", "cpu")]  # --gpu N gives way to an explicit --device
    proc = run_ok("kd_datafree.py", *cmi, "--teacher_weights", digits_teacher, "--gpu", "0", "--output",
                  tmp_path / "run")
    line = "warning: --gpu 0 given but CUDA is not available; running on the CPU"
    assert proc.stdout.count(line) == 1
    assert (tmp_path / "run" / "log.txt").read_text().count(line) == 1  # said before the run directory existed


def test_iters_per_epoch_decides_the_steps_whichever_way_it_is_given(digits_teacher, tmp_path):
    base = [a for a in TEACHER if a not in ("--iters-per-epoch", "4")]
    for name, given in {"flag": ["--iters-per-epoch", "3"], "set": ["--set", "iters_per_epoch=3"]}.items():
        run_ok("train_teacher.py", *base, *given, "--output", tmp_path / f"teacher_{name}")
        assert json.loads((tmp_path / f"teacher_{name}" / "summary.json").read_text())["iterations"] == 6
    # data-free: an epoch is --ep_steps KD steps unless --iters-per-epoch says otherwise
    cmi = [*CMI[:CMI.index("--ep_steps")], *CMI[CMI.index("--ep_steps") + 2:], "--teacher_weights", digits_teacher]
    for name, given in {"flag": ["--iters-per-epoch", "4"], "set": ["--set", "iters_per_epoch=4"]}.items():
        run_ok("kd_datafree.py", *cmi, *given, "--output", tmp_path / f"cmi_{name}")
        summary = json.loads((tmp_path / f"cmi_{name}" / "summary.json").read_text())
        assert (summary["iterations"], summary["synthesis_rounds"]) == (8, 4)  # 2 epochs x 2 rounds of 2 KD steps


def test_the_pool_png_folder_continues_on_resume(digits_teacher, tmp_path):
    """--save_dir: a resumed run writes only the pool's new images, numbered on, and re-encodes nothing."""
    cmi = [*CMI, "--teacher_weights", digits_teacher, "--save_dir", tmp_path / "pool", "--output", tmp_path / "run"]
    run_ok("kd_datafree.py", *cmi, "--epochs", "1")
    first = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "pool").iterdir()}
    assert sorted(first) == [f"{i:06d}.png" for i in range(8)]  # one round of 8 images
    proc = run_ok("kd_datafree.py", *cmi, "--epochs", "2", "--resume")
    files = sorted(p.name for p in (tmp_path / "pool").iterdir())
    assert files == [f"{i:06d}.png" for i in range(16)]
    assert all((tmp_path / "pool" / name).stat().st_mtime_ns == stamp and
               (tmp_path / "pool" / name).read_bytes() == data for name, (data, stamp) in first.items())
    assert "is not empty" not in proc.stdout  # the folder is this run's own


def test_fast_warm_up_is_checkpointed_and_an_interrupted_run_resumes_exactly(digits_teacher, tmp_path, monkeypatch):
    """Fast's warm-up epochs run before the first KD step, each followed by a checkpoint: a run stopped right after
    the warm-up resumes from it without repeating it and ends where an uninterrupted run ends."""
    import kdvision.classification.datafree  # noqa: F401  (registers the entry scripts)
    from kdvision.core.checkpoint import read_checkpoint
    from kdvision.core.methods.datafree import DataFreeKD
    from kdvision.core.recipes.base import ENTRIES

    from kdv_testutils import assert_same_training_state

    fast = [*CMI[2:], "--method", "fast", "--warmup", "1", "--epochs", "3", "--teacher_weights", str(digits_teacher)]
    fast = [str(a) for a in fast]
    ENTRIES["kd_datafree"].build([*fast, "--output", str(tmp_path / "full")]).run()

    def interrupted(self):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(DataFreeKD, "train_step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ENTRIES["kd_datafree"].build([*fast, "--output", str(tmp_path / "part")]).run()
    saved = read_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert saved["step"] == 0  # the warm-up's checkpoint, before any KD step
    warmup = [r for r in records(tmp_path / "part") if r["split"] == "warmup"]
    assert [r["epoch"] for r in warmup] == [1] and "loss_syn" in warmup[0]
    ENTRIES["kd_datafree"].build([*fast, "--output", str(tmp_path / "part"), "--resume"]).run()
    assert [r["epoch"] for r in records(tmp_path / "part") if r["split"] == "warmup"] == [1]  # not run again
    full = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    part = read_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert full["step"] == 4
    assert_same_training_state(full, part, ("student", "syn_generator"))
    syn_full, syn_part = full["method_state"]["extra"]["synthesizer"], part["method_state"]["extra"]["synthesizer"]
    assert syn_full["rounds"] == syn_part["rounds"] == 3  # 1 warm-up round, then 2 KD epochs of one round each
    assert torch.equal(syn_full["pool"]["images"], syn_part["pool"]["images"])
