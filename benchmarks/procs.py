"""A server under test as a child process: start it, talk to it, watch it, end it.

The harness started the process, so it may read its ``/proc/<pid>`` entries: resident
memory (``VmRSS``), CPU time (``utime + stime``) and open file descriptors, which count
its connections without asking the server. Linux only, like the rest of the benchmark.

Resource handling: :func:`start_server` is a context manager that ends the process by
its PID when the block exits, however it exits: end of input first (a clean shutdown),
then SIGINT, then SIGKILL, each after a bounded wait. It never signals anything else.
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = ["ServerError", "ServerProcess", "source_digest", "start_server"]

#: Seconds a server has to print its port.
START_TIMEOUT: Final = 20.0
#: Seconds each shutdown step (end of input, SIGINT) may take before the next one.
STOP_STEP: Final = 3.0
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE_KIB: Final = os.sysconf("SC_PAGE_SIZE") // 1024


class ServerError(RuntimeError):
    """A server under test failed to start, answer or stay up; the message ends with the
    tail of its stderr."""


class ServerProcess:
    """A running server: its pid, its port, and the control pipe (see
    :mod:`benchmarks.servers.control`)."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], stderr: Path) -> None:
        self.name = name
        self.process = process
        self.pid = process.pid
        self._stderr = stderr
        self._buffer = b""
        self.port = int(self._read_reply(START_TIMEOUT)["port"])

    # ------------------------------------------------------------------ control

    def request(self, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send one request line and return the reply (:class:`ServerError` if none
        comes within ``timeout`` seconds or the reply is an error)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(orjson.dumps(message) + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise self.error("the server closed its control pipe") from None
        reply = self._read_reply(timeout)
        if "error" in reply:
            raise self.error(f"the server refused {message}: {reply['error']}")
        return reply

    def stats(self) -> dict[str, Any]:
        return self.request({"op": "stats"})

    def _read_reply(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.error(f"no reply within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise self.error("the server exited")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            reply = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise self.error(f"not a JSON reply: {line[:200]!r}") from None
        if not isinstance(reply, dict):
            raise self.error(f"not a JSON object: {line[:200]!r}")
        return reply

    # ------------------------------------------------------------------ /proc

    def cpu_seconds(self) -> float:
        """User + system CPU time so far, from ``/proc/<pid>/stat`` (10 ms resolution)."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_kib(self) -> int:
        """Resident memory now, in KiB (``VmRSS``)."""
        with open(f"/proc/{self.pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_KIB

    def open_fds(self) -> int:
        """Open file descriptors now: the listener, a few pipes, and one per connection."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            text = self._stderr.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stderr_text(self) -> str:
        try:
            return self._stderr.read_text(errors="replace")
        except OSError:
            return ""

    def error(self, message: str) -> ServerError:
        tail = self.stderr_tail()
        return ServerError(f"{self.name} (pid {self.pid}): {message}"
                           + (f"\n--- its stderr ---\n{tail}" if tail else ""))

    # ------------------------------------------------------------------ ending

    def stop(self) -> None:
        """End the process: close its input, then SIGINT, then SIGKILL; bounded."""
        process = self.process
        if process.stdin is not None:
            try:
                process.stdin.close()
            except OSError:
                pass
        for step in (None, signal.SIGINT, signal.SIGKILL):
            if process.poll() is not None:
                break
            if step is not None:
                process.send_signal(step)
            try:
                process.wait(timeout=STOP_STEP)
            except subprocess.TimeoutExpired:
                continue
        if process.stdout is not None:
            process.stdout.close()


def source_digest(package: str = "trio_things", skip: tuple[str, ...] = ("client",)) -> str:
    """A short hash of the package's Python sources, as a server started now imports them
    (``skip``: subpackages the server never imports, such as the client).

    Why: the working tree may be edited while a long run goes on (it is shared); each
    record carries the digest its server started with, so a report can tell when its
    figures mix two versions of the code.
    """
    root = Path(__file__).resolve().parents[1] / package
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in skip:
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            pass
    return digest.hexdigest()[:12]


@contextmanager
def start_server(name: str, argv: Sequence[str]) -> Iterator[ServerProcess]:
    """Run ``python argv...`` from the repository root until the block exits.

    Raises :class:`ServerError` if it does not print its port within
    :data:`START_TIMEOUT`. Its stderr goes to a temporary file (a pipe nobody reads
    could fill and block the server), removed afterwards.
    """
    root = Path(__file__).resolve().parents[1]
    with tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log",
                                     delete=False) as log:
        stderr = Path(log.name)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(
        filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, *argv], cwd=root, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=err)
    server: ServerProcess | None = None
    try:
        try:
            server = ServerProcess(name, process, stderr)
        except ServerError:
            process.kill()
            process.wait()
            raise
        yield server
    finally:
        if server is not None:
            server.stop()
        elif process.poll() is None:
            process.kill()
            process.wait()
        stderr.unlink(missing_ok=True)
