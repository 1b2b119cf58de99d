"""Offline Visdom dashboard: ``python tools/dashboard.py --port 8097 [RUN_DIR ...] [--compare NAME]``.

Starts a Visdom server on loopback (``127.0.0.1``) with the static files ``tools/visdom_assets.py`` installed (no
CDN is contacted: the page works on a node without internet), then replays run directories into it:

- each run into an environment named after its directory (the one a live ``--visdom`` run logs to), with the same
  panes live logging draws: ``train/<key>`` lines (each player's loss, learning rates, ``iters_per_s``),
  ``test/<metric>`` with the teacher's as a second line, the ``config`` and ``summary`` text panes and the latest
  ``samples`` grid. A replay first clears the environment, so replaying twice shows each point once.
- with two runs or more (or ``--compare``), an overlay environment (``compare`` by default) with one pane per
  logged value and a line per run, and a table of the runs.

Live runs write to the same server: ``python classification/dfad_mnist.py ... --visdom http://127.0.0.1:8097``.
``--server URL`` replays into a server that is already running (and exits); ``--replay-only`` starts the server,
replays, and exits with it (a check); otherwise the server runs until Ctrl-C.
"""
from __future__ import annotations

import argparse
import html
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from kdvision.core.engine.visdom_logger import STUDENT, TEACHER, config_html, run_env_name, send_line, send_text
from kdvision.core.errors import KDVisionError

from .runs import Run, expand, read_run

DEFAULT_PORT = 8097
DEFAULT_COMPARE_ENV = "compare"


class DashboardError(KDVisionError):
    """The dashboard cannot start (assets missing, port taken, server died)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class VisdomServer:
    """A Visdom server (:mod:`kdvision.tools.visdom_server`) bound to 127.0.0.1, as a context manager (``.url``); its output goes to
    ``<env_path>/server.log``.

    The installed Visdom's static files are checked first: without them ``visdom.server`` would try the CDNs and
    serve a blank page offline, so a missing file is an error that says how to install them.
    """

    def __init__(self, port: int = DEFAULT_PORT, env_path: str | Path | None = None, *, check_assets: bool = True,
                 timeout: float = 60.0) -> None:
        self.port = port
        self.env_path = Path(env_path).expanduser() if env_path else Path.home() / ".visdom"
        self.check_assets = check_assets
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    @property
    def log_path(self) -> Path:
        return self.env_path / "server.log"

    def start(self) -> "VisdomServer":
        if self.check_assets:
            from .visdom_assets import missing_assets

            missing = missing_assets()
            if missing:
                raise DashboardError(
                    f"the Visdom server's static files are not installed ({len(missing)} missing, e.g. "
                    f"{missing[0]}): run `make visdom-assets` (python tools/visdom_assets.py) once where the npm "
                    f"registry is reachable")
        if _port_in_use(self.port):
            raise DashboardError(f"port {self.port} on 127.0.0.1 is already in use (choose another with --port)")
        self.env_path.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "kdvision.tools.visdom_server", "-port", str(self.port), "-env_path", str(self.env_path),
               "-bind_local", "-logging_level", "WARNING"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise DashboardError(f"the Visdom server exited with status {self.proc.returncode}: "
                                     + " | ".join(tail))
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise DashboardError(f"the Visdom server did not answer on {self.url} within {self.timeout:g} s "
                             f"(log: {self.log_path})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "VisdomServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def connect(url: str) -> Any:
    """A Visdom client for ``url`` that raises on errors (and fails fast when no server answers)."""
    from urllib.parse import urlparse

    import logging

    import visdom

    logging.getLogger("visdom").setLevel(logging.ERROR)  # "Setting up a new session...", the socket notice
    parsed = urlparse(url if "://" in url else f"http://{url}")
    vis = visdom.Visdom(server=f"{parsed.scheme}://{parsed.hostname}", port=parsed.port or DEFAULT_PORT,
                        raise_exceptions=True, use_incoming_socket=False)
    if not vis.check_connection(timeout_seconds=5):
        raise DashboardError(f"no Visdom server answers at {url}")
    return vis


# ---------------------------------------------------------------------------------------------------------------
# replay


def summary_html(run: Run) -> str:
    rows = [("run", run.name), ("method", run.method), ("metric", run.metric), ("teacher", run.teacher_metric()),
            ("student best", run.best()), ("student last", run.last()), ("iterations", run.iterations()),
            ("train it/s", run.iters_per_s())]
    if run.summary:
        rows += [(k, run.summary[k]) for k in ("task", "batch_size", "wall_time_s", "device", "world_size", "seed")
                 if k in run.summary]
    cells = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>" + ("" if run.summary else "<p>(no summary.json: unfinished run)</p>")


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _read_png(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    return img.transpose(2, 0, 1)  # CHW, uint8


def replay(vis: Any, run: Run, env: str | None = None) -> list[str]:
    """Draw ``run`` into environment ``env`` (default: :func:`run_env_name` of its directory), replacing what the
    environment held. Returns the panes drawn."""
    env = env or run_env_name(run.path)
    vis.delete_env(env)
    panes = []
    send_text(vis, "config", config_html(run.config, f"{run.name}: {run.method}"), env=env)
    send_text(vis, "summary", summary_html(run), env=env)
    panes += ["config", "summary"]
    metric, teacher = run.metric, run.teacher_metric()
    for split in run.splits():
        for key, (xs, ys) in run.series(split).items():
            if split == "test" and (key.startswith("best_") or key.startswith("teacher_")):
                continue  # best_<metric> is derived; the teacher's is drawn next to the student's
            win = f"{split}/{key}"
            if split == "test" and key == metric and teacher is not None:
                send_line(vis, win, xs, ys, name=STUDENT, env=env)
                send_line(vis, win, xs, [teacher] * len(xs), name=TEACHER, env=env)
            else:
                send_line(vis, win, xs, ys, env=env)
            panes.append(win)
    if run.samples:
        grid = next((p for p in run.samples if p.name == "last.png"), run.samples[-1])
        epochs = [p for p in run.samples if p.name != "last.png"]
        caption = f"{run.name}: {epochs[-1].stem if epochs else grid.stem}"
        vis.image(_read_png(grid), win="samples", env=env, opts={"title": "samples", "caption": caption})
        panes.append("samples")
    return panes


def compare(vis: Any, runs: list[Run], env: str = DEFAULT_COMPARE_ENV) -> list[str]:
    """Overlay ``runs`` in environment ``env``: one pane per logged value, a line per run (named by its label),
    and a ``runs`` table."""
    from .inspect_run import table_rows

    vis.delete_env(env)
    header, rows = table_rows(runs)
    cells = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    vis.text(f"<table cellpadding=\"4\">{cells}</table>", win="runs", env=env, opts={"title": "runs", "width": 640})
    panes = ["runs"]
    wins: dict[str, list[tuple[Run, list[float], list[float]]]] = {}
    for run in runs:
        for split in run.splits():
            for key, (xs, ys) in run.series(split).items():
                if split == "test" and (key.startswith("best_") or key.startswith("teacher_")):
                    continue
                wins.setdefault(f"{split}/{key}", []).append((run, xs, ys))
    for win, lines in wins.items():
        for run, xs, ys in lines:
            send_line(vis, win, xs, ys, name=run.label, env=env)
        panes.append(win)
    return panes


# ---------------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    from kdvision.core.engine.cli import ArgumentParser

    p = ArgumentParser(prog="dashboard.py", description=__doc__, argument_default=None)
    p.add_argument("runs", nargs="*", metavar="RUN_DIR",
                   help="run directories to replay (or folders of run directories, e.g. a --seeds group)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default: {DEFAULT_PORT})")
    p.add_argument("--env-path", "--env_path", dest="env_path", metavar="DIR",
                   help="where the server keeps its environments (default: ~/.visdom)")
    p.add_argument("--compare", nargs="?", const=DEFAULT_COMPARE_ENV, metavar="ENV",
                   help=f"overlay the runs in one environment (default name {DEFAULT_COMPARE_ENV!r}; on by "
                        f"default with two runs or more)")
    p.add_argument("--server", metavar="URL",
                   help="replay into the Visdom server at URL (already running) instead of starting one, and exit")
    p.add_argument("--replay-only", "--replay_only", dest="replay_only", action="store_true",
                   help="start the server, replay, and stop (a check that everything draws)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def serve(args: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    runs = [read_run(p) for p in expand(args.runs)]
    compare_env = args.compare or (DEFAULT_COMPARE_ENV if len(runs) > 1 else None)

    def draw(url: str) -> None:
        vis = connect(url)
        for run in runs:
            panes = replay(vis, run)
            log(f"replayed {run.path} into environment {run_env_name(run.path)!r} ({len(panes)} panes)")
        if compare_env and runs:
            compare(vis, runs, compare_env)
            log(f"compared {len(runs)} runs in environment {compare_env!r}")

    if args.server:
        draw(args.server)
        return 0
    server = VisdomServer(args.port, args.env_path)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    with server:
        draw(server.url)
        env = run_env_name(runs[0].path) if len(runs) == 1 else compare_env
        log(f"dashboard: {server.url}/" + (f"env/{env}" if env else "") + " (Ctrl-C stops it)")
        if args.replay_only:
            return 0
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        raise DashboardError(f"the Visdom server stopped (log: {server.log_path})")


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not args.runs and args.server:
        raise KDVisionError("--server replays run directories: name at least one")
    return serve(args, log=lambda msg: print(msg, flush=True))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``tools/dashboard.py`` (exits)."""
    from kdvision.core.engine.cli import run_cli

    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    run_cli(_main, argv)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
