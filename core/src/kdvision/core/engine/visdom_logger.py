"""Optional Visdom dashboard logging that never blocks the training loop.

Nothing is imported or contacted until a :class:`VisdomLogger` is created. Events go into a bounded queue that a
daemon thread drains; when the queue is full the event is dropped, and when the server cannot be reached one
warning is logged and the logger goes quiet.
"""
from __future__ import annotations

import queue
import threading
from typing import Any
from urllib.parse import urlparse

from .rundir import get_logger

DEFAULT_URL = "http://localhost:15550"  # DFAD's `visdom -p 15550`


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
        self._thread = threading.Thread(target=self._run, name="visdom-logger", daemon=True)
        self._thread.start()

    # -- called from the training loop: O(1), never waits -------------------------------------------------------
    def scalars(self, step: int, values: dict[str, float], split: str = "train") -> None:
        self._put(("scalars", step, split, dict(values)))

    def images(self, name: str, images: Any, caption: str = "", nrow: int = 8) -> None:
        self._put(("images", name, images.detach().float().cpu(), caption, nrow))

    def _put(self, item: tuple) -> None:
        if self._dead.is_set():
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        if not self._dead.is_set():
            self._put(("stop",))
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
            get_logger().warning(f"visdom: not logging to {self.server}:{self.port} ({type(exc).__name__}: {exc})")
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
                get_logger().warning(f"visdom: connection lost ({type(exc).__name__}); dashboard logging stopped")
                self._dead.set()
                return

    def _send(self, vis: Any, item: tuple) -> None:
        import numpy as np

        if item[0] == "scalars":
            _, step, split, values = item
            for key, val in values.items():
                win = f"{split}/{key}"
                update = "append" if vis.win_exists(win) else None
                vis.line(X=np.array([step]), Y=np.array([float(val)]), win=win, update=update,
                         opts={"title": win, "xlabel": "step"})
        elif item[0] == "images":
            _, name, imgs, caption, nrow = item
            vis.images(imgs.numpy(), nrow=nrow, win=name, opts={"title": name, "caption": caption})
