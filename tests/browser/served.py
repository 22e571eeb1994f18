"""`trio-things serve` as a subprocess on a fixed free port, and the browser to look at it.

Shared by the browser tests and the screenshot script (``python -m tests.browser.screenshots``).
The port is picked once, so a test can stop the server and start it again at the same
address, as a user restarting it would, and the page can find it again.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import orjson

#: Debian's chromium; CHROMIUM names another binary.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: Flags for a headless browser in a container that touches nothing outside the test.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
MISSING_BROWSER = (
    f"the browser tests need Debian's chromium at {CHROMIUM} (or CHROMIUM=/path/to/it): "
    "run `make browser` (apt-get install chromium), or `make test`, which does")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's pick, released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Served:
    """One ``trio-things serve`` process at a time on ``127.0.0.1:port``."""

    def __init__(self, *args: str, cwd: Path, env: Mapping[str, str] | None = None,
                 port: int | None = None) -> None:
        """``cwd``: the server's folder (the demo keeps its settings there)."""
        self.args = args
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.cwd = cwd
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def start(self, timeout: float = 30.0) -> None:
        assert self.process is None, "already serving"
        self._log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trio_things.cli", "serve", *self.args,
             "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=self.env, cwd=self.cwd)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_drain, args=(self.process.stdout, lines), daemon=True).start()
        try:
            first = lines.get(timeout=timeout)
        except queue.Empty:
            first = ""
        expected = f"at {self.root}"
        if not (first.startswith("trio-things: serving ") and first.strip().endswith(expected)):
            self.stop()
            raise RuntimeError(f"trio-things serve did not start: {first!r}\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM, as a user's Ctrl-C or service manager: the server shuts down cleanly."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()

    # The HTTP API, as another client sees it.

    def url(self, path: str) -> str:
        return self.root + path.lstrip("/")

    def get(self, path: str, token: str | None = None) -> Any:
        with urllib.request.urlopen(self._request(path, token=token), timeout=10) as response:
            return orjson.loads(response.read())

    def put(self, path: str, value: Any, token: str | None = None) -> int:
        request = self._request(path, token=token, method="PUT", body=orjson.dumps(value))
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status

    def _request(self, path: str, *, token: str | None, method: str = "GET",
                 body: bytes | None = None) -> urllib.request.Request:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return urllib.request.Request(self.url(path), data=body, headers=headers, method=method)


def _drain(stream: IO[str] | None, lines: queue.Queue[str]) -> None:
    """Read the server's stdout to its end, so it never blocks on a full pipe."""
    if stream is None:
        return
    for line in stream:
        lines.put(line)


def launch_options(headless: bool = True) -> dict[str, Any]:
    """Keyword arguments for Playwright's ``chromium.launch``: the system browser, never
    a downloaded one, in a fresh temporary profile (Playwright makes one per launch)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise FileNotFoundError(MISSING_BROWSER)
    return {"executable_path": CHROMIUM, "headless": headless, "args": CHROMIUM_ARGS,
            "chromium_sandbox": False}
