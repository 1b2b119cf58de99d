"""Optional Visdom dashboard logging that never blocks the training loop.

Nothing is imported or contacted until a :class:`VisdomLogger` is created. Events go into a bounded queue that a
daemon thread drains; when the queue is full the event is dropped, and when the server cannot be reached one
warning is logged and the logger goes quiet.

One Visdom environment per run (named after the run directory, :func:`run_env_name`), with these panes (the same
ones ``tools/dashboard.py`` draws when it replays a finished run directory, through :func:`send_line` and friends):

- ``train/<key>``: a line per logged training value: each player's loss, ``lr_<player>``, ``iters_per_s``;
- ``test/<metric>``: the student's evaluation metric, with the teacher's as a second trace (:meth:`reference`);
- ``config``: the resolved configuration (text pane);
- ``samples``: the latest grid of synthetic samples (segmentation: samples with predictions).
"""
from __future__ import annotations

import html
import queue
import re
import threading
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

from .rundir import warn

DEFAULT_URL = "http://localhost:15550"  # DFAD's `visdom -p 15550`


#: trace names of a pane that shows the student next to a constant reference (the teacher)
STUDENT, TEACHER = "student", "teacher"


def run_env_name(path: str | Path) -> str:
    """The Visdom environment of a run directory: its name, with characters Visdom's file names cannot hold
    replaced by ``_``."""
    name = Path(path).resolve().name or "kdvision"
    return re.sub(r"[^A-Za-z0-9_.+=@-]", "_", name)


def send_line(vis: Any, win: str, x: Sequence[float], y: Sequence[float], *, name: str | None = None,
              env: str | None = None) -> None:
    """Append points to the line ``name`` (None: the pane's only line) of pane ``win``, creating either."""
    import numpy as np

    opts = {"title": win, "xlabel": "step", "ylabel": win.split("/", 1)[-1]}
    if name is not None:
        opts["showlegend"] = True
    vis.line(X=np.asarray(x, dtype=float), Y=np.asarray(y, dtype=float), win=win, env=env, name=name,
             update="append", opts=opts)


def config_html(config: dict[str, Any], title: str = "config") -> str:
    """The resolved configuration as a text pane: its YAML in a ``<pre>`` block."""
    import yaml

    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
    return f"<b>{html.escape(title)}</b><pre style=\"font-size:11px\">{html.escape(body)}</pre>"


def send_text(vis: Any, win: str, text: str, *, env: str | None = None) -> None:
    vis.text(text, win=win, env=env, opts={"title": win})


class VisdomLogger:
    def __init__(self, url: str | None = None, env: str = "kdvision", maxsize: int = 256) -> None:
        url = url or DEFAULT_URL
        parsed = urlparse(url if "://" in url else f"http://{url}")
        self.server = f"{parsed.scheme}://{parsed.hostname or 'localhost'}"
        self.port = parsed.port or 8097
        self.env = env
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._dead = threading.Event()
        self.dropped = 0
        self.sent = 0
        self._refs: dict[str, tuple[float, str]] = {}  # pane -> (reference value, trace name); worker thread only
        self._thread = threading.Thread(target=self._run, name="visdom-logger", daemon=True)
        self._thread.start()

    # -- called from the training loop: O(1), never waits -------------------------------------------------------
    def scalars(self, step: int, values: dict[str, float], split: str = "train") -> None:
        self._put(("scalars", step, split, dict(values)))

    def images(self, name: str, images: Any, caption: str = "", nrow: int = 8) -> None:
        self._put(("images", name, images.detach().float().cpu(), caption, nrow))

    def text(self, win: str, text: str) -> None:
        self._put(("text", win, text))

    def config(self, config: dict[str, Any], title: str = "config") -> None:
        """The resolved configuration as the ``config`` text pane."""
        self.text("config", config_html(config, title))

    def reference(self, split: str, key: str, value: float, name: str = TEACHER) -> None:
        """Draw ``value`` (the teacher's metric, say) as a second line ``name`` next to the ``student`` line in
        the pane ``split/key``, at every step that pane gets a point."""
        self._put(("reference", f"{split}/{key}", float(value), name))

    def _put(self, item: tuple) -> None:
        if self._dead.is_set():
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (waiting at most ``timeout`` seconds) and stop the worker."""
        if not self._dead.is_set():
            try:
                self._queue.put(("stop",), timeout=timeout)
            except queue.Full:
                return
            self._thread.join(timeout)

    # -- worker thread -----------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            import visdom

            vis = visdom.Visdom(server=self.server, port=self.port, env=self.env, raise_exceptions=True,
                                use_incoming_socket=False)
            if not vis.check_connection(timeout_seconds=2):
                raise ConnectionError("no answer")
        except Exception as exc:  # ImportError, ConnectionError, ...
            warn(f"visdom: no dashboard server at {self.server}:{self.port} ({type(exc).__name__}: {exc}); "
                 f"training continues without it")
            self._dead.set()
            return
        while True:
            item = self._queue.get()
            if item[0] == "stop":
                return
            try:
                self._send(vis, item)
                self.sent += 1
            except Exception as exc:
                warn(f"visdom: connection to {self.server}:{self.port} lost ({type(exc).__name__}); dashboard "
                     f"logging stopped, training continues")
                self._dead.set()
                return

    def _send(self, vis: Any, item: tuple) -> None:
        if item[0] == "scalars":
            _, step, split, values = item
            for key, val in values.items():
                win = f"{split}/{key}"
                ref = self._refs.get(win)
                send_line(vis, win, [step], [float(val)], name=STUDENT if ref else None)
                if ref:
                    send_line(vis, win, [step], [ref[0]], name=ref[1])
        elif item[0] == "reference":
            _, win, value, name = item
            self._refs[win] = (value, name)
        elif item[0] == "text":
            _, win, text = item
            send_text(vis, win, text)
        elif item[0] == "images":
            _, name, imgs, caption, nrow = item
            vis.images(imgs.numpy(), nrow=nrow, win=name, opts={"title": name, "caption": caption})
