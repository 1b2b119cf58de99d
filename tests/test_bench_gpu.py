"""The GPU benchmark suite's driver (``benchmarks/bench_gpu.py``, ``make bench-gpu``), tested on the CPU: the smoke
run writes every part's numbers, a missing GPU is a one-line error, and a short budget skips parts instead of
overrunning."""
from __future__ import annotations

import json
import time

import pytest
import torch

from kdv_testutils import run_script

PARTS = ["dfad-mnist", "dfad-cifar", "datafree-cmi", "datafree-rgal", "mosaickd", "seg-camvid", "dfad-caltech101"]


def report(out_dir) -> dict:
    assert (out_dir / "bench_gpu.md").is_file()
    return json.loads((out_dir / "bench_gpu.json").read_text())


@pytest.mark.slow
def test_smoke_runs_every_part(tmp_path):
    # no budget here: this tests the suite's plumbing, and a CPU without native bf16 (AVX2 only) runs the amp
    # variants ~9x slower than fp32, which made a 480 s budget skip parts (the budget has its own test below)
    proc = run_script("benchmarks/bench_gpu.py", "--device", "cpu", "--smoke", "--out-dir", tmp_path,
                      "--budget-s", "100000", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = report(tmp_path)
    assert list(result["parts"]) == PARTS
    assert result["torch"] == torch.__version__ and result["device"] == "cpu" and result["smoke"]
    assert result["started"] <= result["finished"]
    md = (tmp_path / "bench_gpu.md").read_text()
    assert md in proc.stdout
    for name, part in result["parts"].items():
        assert part["status"] == "ok", (name, part)
        assert part["wall_s"] > 0
        res = part["result"]
        if "it_per_s" in res:  # bench_dfad
            rates, ratios = res["it_per_s"], res["ratio_vs_reference"]
            assert set(ratios) == set(rates) - {"reference"} and len(rates) >= 3
        else:  # bench_datafree: KD step and synthesis step
            loops = [r for method in res["results"].values() for kind in ("kd", "synth") for r in method[kind].values()]
            rates = {i: r["steps_per_s"] for i, r in enumerate(loops)}
            ratios = {i: r["ratio_vs_reference"] for i, r in enumerate(loops)}
            assert len(loops) == 8
        assert all(v > 0 for v in rates.values()) and all(v > 0 for v in ratios.values()), (name, res)
        assert f"| {name}" in md
    print(f"\nbench_gpu --smoke: {result['wall_s']} s; "
          + ", ".join(f"{k} {v['wall_s']:.1f} s" for k, v in result["parts"].items()))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_missing_is_one_line_error(tmp_path):
    proc = run_script("benchmarks/bench_gpu.py", "--device", "cuda", "--out-dir", tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "CUDA" in lines[0], proc.stderr
    assert not (tmp_path / "bench_gpu.json").exists()


def test_tiny_budget_skips_parts(tmp_path):
    start = time.monotonic()
    proc = run_script("benchmarks/bench_gpu.py", "--device", "cpu", "--smoke", "--budget-s", "2", "--out-dir",
                      tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = report(tmp_path)
    assert list(result["parts"]) == PARTS
    for part in result["parts"].values():
        assert part["status"] == "skipped" and part["reason"].startswith("budget"), part
        assert "result" not in part
    assert result["wall_s"] <= 2
    assert time.monotonic() - start < 60  # the process: imports, no part run
    assert "skipped: budget" in (tmp_path / "bench_gpu.md").read_text()
