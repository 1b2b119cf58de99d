"""Helpers shared by the test modules (``tests/`` is on sys.path through pytest's rootdir conftest)."""
from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

#: The modules whose import registers every entry script (``ENTRIES``) and recipe (``RECIPES``).
ENTRY_MODULES = ("kdvision.classification.datafree", "kdvision.classification.dfad", "kdvision.classification.teacher",
                 "kdvision.classification.mosaickd", "kdvision.classification.sdd", "kdvision.segmentation.dfad",
                 "kdvision.segmentation.teacher", "kdvision.segmentation.transfer",
                 "kdvision.detection.train_net", "kdvision.pretraining.kdep", "kdvision.classification.transfer")


def import_entry_modules() -> None:
    import importlib

    for module in ENTRY_MODULES:
        importlib.import_module(module)


def data_root() -> Path:
    """The shared real-data folder: $KDV_DATA, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("KDV_DATA", REPO.parent / "shared" / "data")).resolve()


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real-data file not found: {path} (set KDV_DATA to the shared data folder)")
    return path


def run_script(script: str, *args, timeout: int = 300, launcher: list[str] | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run an entry script (path relative to the repo) as a user would, capturing its output."""
    cmd = (launcher or [sys.executable]) + [str(REPO / script), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, env=env)


#: metrics.jsonl values that measure time, not training (differ between two identical runs)
TIMING_KEYS = ("iters_per_s",)


def metric_records(path: Path, split: str | None = None) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (``path``: the file or its run directory), timing values left out,
    only ``split`` ones when given."""
    import json

    path = Path(path)
    path = path / "metrics.jsonl" if path.is_dir() else path
    out = []
    for line in path.read_text().splitlines():
        record = {k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
        if split is None or record.get("split") == split:
            out.append(record)
    return out


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single ``error: ...`` line a failing entry script printed (no traceback, non-zero exit)."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def assert_same_training_state(a: dict, b: dict, players: tuple[str, ...], atol: float = 1e-6) -> None:
    """Two checkpoints hold the same step, best metric, player weights and every optimiser's state (to ``atol``)."""
    import torch

    assert a["step"] == b["step"]
    for player in players:
        wa, wb = a["method_state"]["modules"][player], b["method_state"]["modules"][player]
        for k in wa:
            assert (wa[k].double() - wb[k].double()).abs().max().item() < atol, (player, k)
    assert set(a["method_state"]["optimizers"]) == set(b["method_state"]["optimizers"])
    for name, opt in a["method_state"]["optimizers"].items():
        sa, sb = opt["state"], b["method_state"]["optimizers"][name]["state"]
        assert set(sa) == set(sb), name
        for i in sa:
            for k, v in sa[i].items():
                assert torch.allclose(torch.as_tensor(v).double(), torch.as_tensor(sb[i][k]).double(), atol=atol)
    assert a["best_metric"] == b["best_metric"]


#: The data-free end-to-end runs' shared small scale (MNIST on CPU).
DATAFREE_SMALL = ["--batch_size", "64", "--synthesis_batch_size", "64", "--ngf", "16", "--lr_g", "0.01",
                  "--eval-every", "100", "--device", "cpu", "--no-progress", "--log-interval", "1000",
                  "--channels-last"]


def distil_mnist(name: str, script: str, *args, output: Path) -> dict:
    """Run a data-free script on MNIST at :data:`DATAFREE_SMALL` (``args`` may override it), print what its student
    reached and return its summary."""
    import json

    proc = run_script(f"classification/{script}", "--dataset", "mnist", *DATAFREE_SMALL, *args, "--output", output,
                      timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((output / "summary.json").read_text())
    print(f"\n{name}: teacher {summary['teacher_metric']:.4f} student {summary['student_best']:.4f} "
          f"({summary['iterations']} KD steps, {summary['synthesis_rounds']} rounds, pool {summary['pool_size']}, "
          f"synthesis {summary['synthesis_time_s']:.1f} s of {summary['wall_time_s']:.1f} s)")
    return summary


def free_port() -> int:
    """A free TCP port for torchrun's rendezvous (port 0 hangs the launcher)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_downsampled(folder: Path, *, batches: int = 3, per: int = 5, num_classes: int = 1000, seed: int = 0,
                      val: Path | None = None, npz: bool = False, protocol: int = 2):
    """The official Imagenet32 layout: train_data_batch_k / val_data pickles of {'data' uint8 (N, 3072) planar
    R,G,B, 'labels' 1-based list, 'mean' (train only)}. Returns (train data, train labels, val data, val labels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    datas, labs = [], []

    def dump(path: Path, obj: dict) -> None:
        if npz:
            np.savez(str(path) + ".npz", **{k: np.asarray(v) for k, v in obj.items()})
        else:
            with open(path, "wb") as f:
                pickle.dump(obj, f, protocol=protocol)

    for k in range(1, batches + 1):
        data = rng.integers(0, 256, (per + k, 3072), dtype=np.uint8)  # batches of different sizes
        labels = [int(v) for v in rng.integers(1, num_classes + 1, len(data))]
        dump(folder / f"train_data_batch_{k}", {"data": data, "labels": labels,
                                                 "mean": data.mean(0).astype(np.float64)})
        datas.append(data)
        labs += labels
    vfolder = val if val is not None else folder
    vfolder.mkdir(parents=True, exist_ok=True)
    vdata = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    vlabels = [int(v) for v in rng.integers(1, num_classes + 1, 4)]
    dump(vfolder / "val_data", {"data": vdata, "labels": vlabels})
    return np.concatenate(datas), np.asarray(labs), vdata, np.asarray(vlabels)


class FakeVisdom:
    """A loopback HTTP server that answers as a Visdom server does and records every posted event:
    ``with FakeVisdom() as vis: ... vis.url ... vis.events`` (a list of (path, json body))."""

    def __enter__(self) -> "FakeVisdom":
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        events = self.events = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._reply(b"ok")

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("/win_exists"):
                    self._reply(b"false")
                    return
                events.append((self.path, json.loads(data)))
                self._reply(json.dumps("win").encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def windows(self) -> dict[str, list[dict]]:
        """Posted events by window name."""
        out: dict[str, list[dict]] = {}
        for path, body in self.events:
            if path.endswith("/events") and "win" in body:
                out.setdefault(body["win"], []).append(body)
        return out

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class LoopbackServer:
    """An HTTP server on 127.0.0.1 for a request handler class, as a context manager (``.url``)."""

    def serve(self, handler: type, poll_interval: float = 0.5) -> None:
        import http.server
        import threading

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": poll_interval},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@contextlib.contextmanager
def interrupt_after(monkeypatch, method_class: type, steps: int):
    """A context in which ``method_class.train_step`` raises KeyboardInterrupt on the call after ``steps`` calls (a
    run stopped mid-training, for the exact-resume tests)."""
    step, calls = method_class.train_step, []

    def stop(self):
        calls.append(1)
        if len(calls) > steps:
            raise KeyboardInterrupt
        return step(self)

    with monkeypatch.context() as m:
        m.setattr(method_class, "train_step", stop)
        yield


def _save_image(path: Path, seed: int, size: tuple[int, int], grey: bool = False) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if grey else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


DTD_FIXTURE_CLASSES = ("banded", "zigzagged", "cracked")  # folder order on purpose not sorted


def write_dtd(folder: Path, *, partitions=(1,), size: tuple[int, int] = (40, 30)) -> dict[str, list[str]]:
    """The official DTD release layout under ``folder`` (the ``dtd/`` folder itself):
    ``images/<class>/<class>_000k.jpg`` (4 per class, the first of ``cracked`` greyscale) and
    ``labels/{train,val,test}<p>.txt``. In partition p, image k of each class is in test when ``(k + p) % 4 == 0``,
    in val when it is 1, else in train (lines in sorted class order).
    Returns ``{"<kind><p>": ["<class>/<image>", ...]}``."""
    for ci, cls in enumerate(DTD_FIXTURE_CLASSES):
        for k in range(4):
            _save_image(folder / "images" / cls / f"{cls}_{k:04d}.jpg", 10 * ci + k, size,
                        grey=(cls == "cracked" and k == 0))
    lists: dict[str, list[str]] = {}
    for p in partitions:
        kinds: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for cls in sorted(DTD_FIXTURE_CLASSES):
            for k in range(4):
                kind = {0: "test", 1: "val"}.get((k + p) % 4, "train")
                kinds[kind].append(f"{cls}/{cls}_{k:04d}.jpg")
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        for kind, rels in kinds.items():
            (folder / "labels" / f"{kind}{p}.txt").write_text("".join(r + "\n" for r in rels))
            lists[f"{kind}{p}"] = rels
    return lists


CALTECH256_FIXTURE_CLASSES = ("001.ak47", "002.american-flag", "257.clutter")


def write_caltech256(folder: Path, *, per_class=(4, 3, 5), size: tuple[int, int] = (36, 28)) -> dict[str, list[str]]:
    """The official ``256_ObjectCategories/<NNN.name>/<NNN>_<kkkk>.jpg`` layout under ``folder`` (that folder itself),
    ``per_class`` images per class written in reverse name order, the third of ``002.american-flag`` a greyscale PNG,
    plus the archive's kinds of noise (a non-image file, a nested folder with an image, a hidden file).
    Returns ``{class: sorted image file names}``."""
    out: dict[str, list[str]] = {}
    for ci, (cls, n) in enumerate(zip(CALTECH256_FIXTURE_CLASSES, per_class)):
        num = cls.split(".")[0]
        names = [f"{num}_{k:04d}.png" if (ci == 1 and k == 3) else f"{num}_{k:04d}.jpg" for k in range(1, n + 1)]
        for k, name in reversed(list(enumerate(names))):
            _save_image(folder / cls / name, 100 * ci + k, size, grey=name.endswith(".png"))
        out[cls] = sorted(names)
    (folder / CALTECH256_FIXTURE_CLASSES[0] / "RENAME2").write_text("not an image")
    (folder / CALTECH256_FIXTURE_CLASSES[0] / ".hidden.jpg").write_bytes(b"")
    _save_image(folder / CALTECH256_FIXTURE_CLASSES[2] / "greg" / "nested.jpg", 999, size)
    return out
