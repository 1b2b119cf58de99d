"""A small W3C WebDriver client for chromedriver (enough for the dashboard's browser test), and the set-up that
installs Debian's ``chromium`` and ``chromium-driver`` when they are missing."""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "chromedriver"


def find_chromium() -> tuple[str, str] | None:
    browser = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    driver = shutil.which(CHROMEDRIVER)
    return (browser, driver) if browser and driver else None


def ensure_chromium(timeout: int = 900) -> tuple[str, str] | str:
    """``(chromium, chromedriver)`` paths, installing the Debian packages with apt-get when missing (as root);
    a string says why they are not available."""
    found = find_chromium()
    if found:
        return found
    if not shutil.which("apt-get"):
        return "chromium/chromedriver not found and apt-get is not available to install them"
    if os.geteuid() != 0:
        return "chromium/chromedriver not found (install them: apt-get install chromium chromium-driver)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:  # the package lists may be missing on a fresh machine
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=timeout, env=env)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    found = find_chromium()
    if found:
        return found
    return f"apt-get could not install chromium/chromium-driver: {proc.stderr.strip().splitlines()[-1:]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(RuntimeError):
    pass


class Chromium:
    """Headless Chromium through chromedriver's W3C WebDriver HTTP API, with the performance (network) log on.

    ``offline``: the browser resolves no host name but loopback's, as on a node without internet (a request to any
    other host would still appear in the network log, and fail)."""

    def __init__(self, browser: str, driver: str, *, width: int = 1600, height: int = 1000, offline: bool = True,
                 log_path: Path | None = None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except (urllib.error.URLError, OSError, WebDriverError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.quit()
                raise WebDriverError("chromedriver did not start")
            time.sleep(0.1)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
                "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider"]
        if offline:
            args.append("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1")
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": args},
            "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
        }}}
        try:
            self.session = self._call("POST", "/session", caps)["sessionId"]
        except Exception:
            self.quit()
            raise

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float = 60) -> Any:
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            raise WebDriverError(f"{method} {path}: {payload.get('value', payload)}") from None
        return payload.get("value")

    def cmd(self, method: str, path: str, body: dict | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, timeout: float = 30, interval: float = 0.25) -> Any:
        """Poll ``script`` (a function body returning a value) until it returns something truthy."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.js(script)
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for: {script} (last value {value!r})")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.cmd("GET", "/screenshot")))
        return path

    def log(self, kind: str) -> list[dict]:
        """Entries of chromedriver's ``performance`` or ``browser`` log (consumed on reading)."""
        return self.cmd("POST", "/se/log", {"type": kind})

    def network_requests(self) -> list[dict]:
        """Every request the page made (``Network.requestWillBeSent``) and its response status, from the
        performance log."""
        requests: dict[str, dict] = {}
        for entry in self.log("performance"):
            msg = json.loads(entry["message"])["message"]
            params = msg.get("params", {})
            if msg["method"] == "Network.requestWillBeSent":
                requests.setdefault(params["requestId"], {})["url"] = params["request"]["url"]
            elif msg["method"] == "Network.responseReceived":
                requests.setdefault(params["requestId"], {})["status"] = params["response"]["status"]
            elif msg["method"] == "Network.loadingFailed":
                requests.setdefault(params["requestId"], {})["failed"] = params.get("errorText")
        return [r for r in requests.values() if "url" in r]

    def quit(self) -> None:
        try:
            if getattr(self, "session", None):
                self._call("DELETE", f"/session/{self.session}", timeout=20)
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.quit()
