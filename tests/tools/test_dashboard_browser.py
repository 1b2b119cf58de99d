"""The Visdom dashboard end to end, on one short real ``dfad_mnist.py`` run (shared MNIST and LeNet-5 teacher):

- live logging: the run logs to a real Visdom server; its environment holds every pane the engine sends;
- a dead server: training completes with exactly one warning;
- replay: ``tools/dashboard.py`` serves the finished run (and a comparison) on loopback, and headless Chromium (Debian's
  ``chromium`` + ``chromium-driver``, installed by :func:`webdriver_client.ensure_chromium` when missing) renders the
  page: the environment is listed, the plot panes hold data (asserted on the DOM), the sample grid is shown, a
  screenshot is written, and the browser's network log shows no request leaving 127.0.0.1.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from kdvision.tools import visdom_assets as va
from kdvision.tools.dashboard import VisdomServer, connect, free_port

from kdv_testutils import REPO, data_root, require, run_script
from webdriver_client import Chromium, ensure_chromium

pytestmark = pytest.mark.slow

TEACHER = "teachers/mnist_lenet5_classic.pth"
#: the plot panes of the run (best_acc and teacher_acc records are drawn in test/acc, not on their own)
PLOTS = sorted(["train/loss_S", "train/loss_G", "train/lr_student", "train/lr_generator", "train/iters_per_s",
                "test/acc", "test/loss"])
TINY = ["--batch_size", "32", "--ngf", "16", "--test_batch_size", "1000", "--device", "cpu", "--no-progress"]


def dfad(shared_data, out, *args):
    """Run dfad_mnist.py on the shared MNIST teacher and test set."""
    return run_script("classification/dfad_mnist.py", "--ckpt", require(shared_data / TEACHER), "--data_root",
                      require(shared_data / "MNIST"), *TINY, *args, "--output", out)


@pytest.fixture(scope="module")
def assets():
    if va.missing_assets():
        try:
            va.install(log=print)
        except Exception as exc:
            pytest.skip(f"Visdom assets missing and the npm registry is unreachable ({exc})")


@pytest.fixture(scope="module")
def live(assets, tmp_path_factory):
    """A Visdom server, and one short DFAD run on MNIST that logged to it live (2 epochs x 10 steps, logs every 5)."""
    tmp = tmp_path_factory.mktemp("live")
    with VisdomServer(free_port(), tmp / "visdom") as server:
        proc = dfad(data_root(), tmp / "mnist-dfad", "--epochs", "2", "--iters-per-epoch", "10",
                    "--log-interval", "5", "--visdom", server.url)
        assert proc.returncode == 0, proc.stderr[-3000:]
        yield server, tmp / "mnist-dfad", proc


def test_live_run_logs_every_pane_into_its_own_environment(live):
    server, run, proc = live
    assert "visdom" not in proc.stdout + proc.stderr  # no warning with a live server
    vis = connect(server.url)
    assert "mnist-dfad" in vis.get_env_list()
    panes = json.loads(vis.get_window_data(env="mnist-dfad"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [5, 10, 15, 20] and all(r["iters_per_s"] > 0 for r in train)

    def traces(win):
        return {t.get("name"): (t["x"], t["y"]) for t in panes[win]["content"]["data"]}

    for key in ("loss_S", "loss_G", "lr_student", "lr_generator", "iters_per_s"):
        (xs, ys), = traces(f"train/{key}").values()  # one line per player's loss, learning rate, throughput
        assert xs == [5, 10, 15, 20] and ys == pytest.approx([r[key] for r in train], rel=1e-6), key
    summary = json.loads((run / "summary.json").read_text())
    acc = traces("test/acc")
    assert acc["student"][0] == [10, 20] and acc["student"][1] == pytest.approx(
        [r["acc"] for r in records if r["split"] == "test" and "acc" in r])
    assert acc["teacher"][1] == pytest.approx([summary["teacher_metric"]] * 2)
    assert panes["config"]["type"] == "text" and "ngf: 16" in panes["config"]["content"]
    assert panes["samples"]["type"] == "image" and panes["samples"]["content"]["src"].startswith("data:image/png")


def test_dead_visdom_server_costs_one_warning_and_nothing_else(assets, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    proc = dfad(data_root(), tmp_path / "run", "--epochs", "1", "--iters-per-epoch", "3", "--log-interval", "1",
                "--visdom", dead)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "visdom:" in line.lower() or "visdom server" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: visdom: no dashboard server at {dead}"), lines
    assert "training continues without it" in lines[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["iterations"] == 3


def test_dashboard_replays_runs_and_chromium_renders_them_offline(live, tmp_path):
    found = ensure_chromium()
    if isinstance(found, str):
        pytest.skip(found)
    _, run, _ = live
    other = tmp_path / "mnist-dfad-copy"  # a second run directory, for the comparison environment
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("checkpoints"))
    port = free_port()
    dash = subprocess.Popen([sys.executable, str(REPO / "tools" / "dashboard.py"), "--port", str(port), "--env-path",
                             str(tmp_path / "visdom"), str(run), str(other)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        out = []
        for line in dash.stdout:
            out.append(line)
            if line.startswith("dashboard:"):
                break
        assert out and out[-1].strip() == f"dashboard: http://127.0.0.1:{port}/env/compare (Ctrl-C stops it)", out
        assert f"replayed {run} into environment 'mnist-dfad'" in "".join(out)
        base = f"http://127.0.0.1:{port}"
        with Chromium(*found, width=1500, height=1250, log_path=tmp_path / "chromedriver.log") as browser:
            browser.get(f"{base}/env/mnist-dfad")
            plots = "return document.querySelectorAll('.js-plotly-plot').length"
            assert browser.wait_for(f"{plots} >= {len(PLOTS)} && {plots.removeprefix('return ')}", 60) == len(PLOTS)
            browser.wait_for("return Array.from(document.querySelectorAll('img')).some(i => i.naturalWidth > 0)")
            # the run's environment is listed and selected
            assert {"mnist-dfad", "mnist-dfad-copy", "compare"} <= set(browser.js("return ENV_LIST"))
            assert browser.js("return ACTIVE_ENV") == "mnist-dfad"
            assert "mnist-dfad" in browser.js("return document.querySelector('.navbar, nav, body').innerText")
            # every plot pane is drawn with its data: a trace with points and an SVG line path
            drawn = browser.js("""return Array.from(document.querySelectorAll('.js-plotly-plot')).map(e => ({
                title: e.layout && e.layout.title && (e.layout.title.text || e.layout.title),
                traces: e.data.map(t => [t.name, t.x.length]),
                paths: Array.from(e.querySelectorAll('.scatterlayer path.js-line'))
                            .filter(p => (p.getAttribute('d') || '').length > 10).length}))""")
            assert sorted(d["title"] for d in drawn) == PLOTS
            for d in drawn:
                assert d["paths"] == len(d["traces"]) and all(n >= 2 for _, n in d["traces"]), d
            acc = next(d for d in drawn if d["title"] == "test/acc")
            assert sorted(name for name, _ in acc["traces"]) == ["student", "teacher"]
            text = browser.js("return document.body.innerText")
            assert "mnist-dfad: dfad" in text and "ngf: 16" in text  # config pane
            assert "student best" in text and "teacher" in text  # summary pane
            time.sleep(1.5)  # the grid layout settles (panes slide into place) before the picture is taken
            shot = browser.screenshot(tmp_path / "visdom_dashboard.png")
            print(f"\nscreenshot: {shot}")
            # the comparison environment: one line per run in every pane
            browser.get(f"{base}/env/compare")
            browser.wait_for(f"{plots} >= {len(PLOTS)}")
            browser.wait_for("return document.body.innerText.includes('mnist-dfad-copy')")
            names = browser.js("return Array.from(document.querySelectorAll('.js-plotly-plot'))"
                               ".map(e => e.data.map(t => t.name).sort().join('|'))")
            assert set(names) == {"mnist-dfad (dfad)|mnist-dfad-copy (dfad)"}, names
            time.sleep(1.5)
            browser.screenshot(tmp_path / "visdom_compare.png")
            requests = browser.network_requests()
        # nothing left loopback: every request the page made went to this server (or was inline data)
        assert len(requests) >= 18
        outside = [r["url"] for r in requests if not r["url"].startswith((f"{base}/", "data:", "blob:"))]
        assert outside == []
        failed = [r for r in requests if r.get("failed") or r.get("status", 200) >= 400]
        assert failed == []
        assert any("/static/js/plotly-plotly.min.js" in r["url"] for r in requests)
    finally:
        dash.terminate()
        dash.wait(20)
    assert dash.returncode in (0, -15)
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (1250, 1500) or img.shape[1] == 1500
    assert img.std() > 20  # not a blank page
