"""tools/inspect_run.py on run directories written here (the run-directory contract of DESIGN.md): the report of one
run, the table of several, mean ± std of seed groups, and the figure whose axes and legend name runs and methods."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kdvision.core.errors import KDVisionError
from kdvision.tools import inspect_run as ir
from kdvision.tools.runs import read_run

from kdv_testutils import one_line_error, run_script


def write_run(path: Path, method: str, *, seed: int = 0, accs=(0.2, 0.5, 0.4), teacher: float = 0.98,
              losses=("loss_S", "loss_G"), config: dict | None = None, finished: bool = True) -> Path:
    path.mkdir(parents=True)
    cfg = {"method": method, "lr": 0.1, **(config or {}), "seed": seed, "output": str(path), "_run": {"seed": seed}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    records = [{"step": 0, "epoch": 0, "split": "test", "teacher_acc": teacher}]
    for epoch, acc in enumerate(accs, 1):
        for half in (1, 2):
            step = (epoch - 1) * 10 + half * 5
            records.append({"step": step, "epoch": epoch, "split": "train", "lr_student": 0.1, "iters_per_s": 50.0,
                            **{k: 1.0 / step + i for i, k in enumerate(losses)}})
        records.append({"step": epoch * 10, "epoch": epoch, "split": "test", "acc": acc, "best_acc": max(accs[:epoch])})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 3')  # cut short
    if finished:
        (path / "summary.json").write_text(json.dumps({
            "method": method, "task": "classification", "metric": "acc", "teacher_metric": teacher,
            "student_best": max(accs), "student_last": accs[-1], "iterations": 10 * len(accs), "batch_size": 8,
            "train_iters_per_s": 48.5, "wall_time_s": 3.0, "device": "cpu", "world_size": 1, "seed": seed}))
    return path


def test_report_of_one_run_gives_best_last_and_every_curve(tmp_path, capsys):
    run = write_run(tmp_path / "dfad-a", "dfad")
    out = ir.inspect([run], log=print)
    text = capsys.readouterr().out
    assert "method     dfad  (task classification)" in text
    assert "acc        teacher 0.9800  student best 0.5000  last 0.4000" in text
    assert "iterations 30  (48.50 it/s training, 3.0 s wall)" in text
    assert "train/loss_G" in text and "train/lr_student" in text and "test/best_acc" not in text
    assert out == run / "curves.png" and out.stat().st_size > 10_000


def test_an_unfinished_run_is_read_from_its_metrics(tmp_path):
    run = read_run(write_run(tmp_path / "crashed", "dfad", accs=(0.3, 0.6, 0.1), finished=False))
    assert run.summary is None and run.metric == "acc"
    assert (run.best(), run.last(), run.teacher_metric(), run.iterations()) == (0.6, 0.1, 0.98, 30)
    assert run.iters_per_s() == 50.0 and len(run.records) == 10  # the line cut short is skipped
    assert "unfinished (no summary.json)" in ir.describe(run)


def test_two_methods_in_one_figure_whose_axes_and_legend_name_them(tmp_path):
    a = write_run(tmp_path / "run-dfad", "dfad")
    b = write_run(tmp_path / "run-dafl", "dafl", accs=(0.1, 0.3, 0.35), teacher=0.95, losses=("loss_oh", "loss_ie"))
    png = ir.inspect([a, b], plot=tmp_path / "cmp.png", log=print)
    assert png == tmp_path / "cmp.png" and png.stat().st_size > 10_000
    fig = ir.plot_runs([read_run(a), read_run(b)])
    ax_m, ax_l = fig.axes
    assert (ax_m.get_title(), ax_m.get_xlabel(), ax_m.get_ylabel()) == ("test acc", "step", "acc")
    assert (ax_l.get_title(), ax_l.get_xlabel(), ax_l.get_ylabel()) == ("training losses", "step", "loss")
    legend_m = [t.get_text() for t in ax_m.get_legend().get_texts()]
    assert legend_m == ["run-dfad (dfad) student", "run-dfad (dfad) teacher", "run-dafl (dafl) student",
                        "run-dafl (dafl) teacher"]
    legend_l = [t.get_text() for t in ax_l.get_legend().get_texts()]
    assert legend_l == ["run-dfad (dfad) loss_S", "run-dfad (dfad) loss_G", "run-dafl (dafl) loss_oh",
                        "run-dafl (dafl) loss_ie"]
    student = {line.get_label(): line for line in ax_m.get_lines()}
    assert list(student["run-dafl (dafl) student"].get_ydata()) == [0.1, 0.3, 0.35]
    assert list(student["run-dafl (dafl) teacher"].get_ydata()) == [0.95, 0.95]  # axhline
    assert "run-dfad (dfad)" in fig._suptitle.get_text() and "run-dafl (dafl)" in fig._suptitle.get_text()


def test_seed_groups_report_mean_and_sample_std(tmp_path, capsys):
    group = tmp_path / "seeds-dfad"
    for seed, accs in ((0, (0.3, 0.5)), (1, (0.6, 0.6)), (2, (0.7, 0.4))):
        write_run(group / f"seed{seed}", "dfad", seed=seed, accs=accs)
    write_run(tmp_path / "other", "dfad", config={"lr": 0.2}, accs=(0.9, 0.9))  # another config: its own group
    ir.inspect([group, tmp_path / "other"], seeds=True, no_plot=True, log=print)
    text = capsys.readouterr().out
    header, rows = ir.seed_rows([read_run(p) for p in sorted(group.iterdir())] + [read_run(tmp_path / "other")])
    assert rows == [("seeds-dfad", "dfad", "acc", "0,1,2", "3", "0.6000 ± 0.1000", "0.5000 ± 0.1000"),
                    ("other", "dfad", "acc", "0", "1", "0.9000 ± 0.0000", "0.9000 ± 0.0000")]
    assert "0.6000 ± 0.1000" in text and text.count("seed") >= 3  # the per-run table lists seed0..seed2 too


def test_not_a_run_directory_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(KDVisionError, match="neither a run directory nor a folder of run directories"):
        ir.inspect([tmp_path / "empty"], log=print)


@pytest.mark.slow
def test_command_line_writes_the_comparison_plot_and_fails_in_one_line(tmp_path):
    a = write_run(tmp_path / "run-dfad", "dfad")
    b = write_run(tmp_path / "run-dafl", "dafl")
    proc = run_script("tools/inspect_run.py", a, b, "--plot", tmp_path / "out" / "cmp.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "run-dfad  dfad" in proc.stdout and "run-dafl  dafl" in proc.stdout
    assert (tmp_path / "out" / "cmp.png").stat().st_size > 10_000
    err = one_line_error(run_script("tools/inspect_run.py", tmp_path / "nope"))
    assert err == f"error: run directory not found: {tmp_path / 'nope'}"
