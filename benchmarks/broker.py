"""A real Mosquitto broker (Debian's ``mosquitto``) on a free loopback port, for tests
and benchmarks: started, stopped and restarted on the same port by its PID.

One process manager for both: the tests use it through the ``mosquitto`` fixture
(``tests/conftest.py``), the MQTT benchmark (:mod:`benchmarks.mqtt`) directly. It lives
here, not under ``tests/``, because the benchmarks never import the tests.

``make test`` installs the package where it is missing; a test that needs the broker
fails (never skips) when it is not there.

Many connections: a broker holds one descriptor per client, and the usual soft limit
on open files (1,024) stops it near a thousand (it logs each refused connection as
"denied access by tcpd"). ``open_files`` starts it with a higher soft limit: through
``sh -c 'ulimit -Sn N; exec mosquitto ...'``, so the limit is set in the child before
the broker runs, the broker keeps the PID we started, and nothing runs between fork and
exec in this (perhaps multithreaded) process, as a ``preexec_fn`` would. Raising another
process's limit afterwards (``prlimit``) is refused in some containers.
"""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Final

__all__ = ["Mosquitto", "free_port", "mosquitto_binary"]

_CANDIDATES: Final = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")
#: What Mosquitto logs once it listens.
_READY: Final = b" running"
_START_TIMEOUT: Final = 10.0


def mosquitto_binary() -> str:
    """The broker's executable; AssertionError (a failure, not a skip) if missing."""
    found = shutil.which("mosquitto") or next(
        (path for path in _CANDIDATES if os.access(path, os.X_OK)), None)
    assert found is not None, ("Debian's mosquitto is not installed: `make test` installs "
                               "it (apt-get install mosquitto mosquitto-clients)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """One broker process listening on ``127.0.0.1:port``, anonymous, no persistence
    (a restart forgets retained messages, as a broker without a database does).

    ``extra_config`` is appended to its ``mosquitto.conf``; ``open_files`` raises the
    broker's soft limit on open files to that many (capped at the hard limit), for
    thousands of clients (see the module docstring)."""

    def __init__(self, folder: Path, port: int | None = None, *,
                 extra_config: str = "", open_files: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            # As root, Mosquitto would switch to the "mosquitto" user, who may not read
            # the test's files (certificates, passwords) in its private folder.
            + ("user root\n" if os.getuid() == 0 else "")
            + "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            + extra_config)
        self.open_files = open_files
        self.process: subprocess.Popen[bytes] | None = None
        self.log = bytearray()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's PID while it runs."""
        return None if self.process is None else self.process.pid

    def _argv(self) -> list[str]:
        argv = [mosquitto_binary(), "-c", str(self.config)]
        if self.open_files is None:
            return argv
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = self.open_files if hard == resource.RLIM_INFINITY else min(
            self.open_files, hard)
        if soft == resource.RLIM_INFINITY or soft >= wanted:
            return argv  # it inherits enough already
        # $0 is the limit, "$@" the broker's command line: no quoting of paths needed.
        return ["/bin/sh", "-c", 'ulimit -Sn "$0" && exec "$@"', str(wanted), *argv]

    def start(self) -> None:
        """Start the broker and return once it listens (its log says so)."""
        assert self.process is None, "already running"
        self.log.clear()
        process = self.process = subprocess.Popen(
            self._argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        deadline = time.monotonic() + _START_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while _READY not in self.log:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.stop()
                    raise AssertionError(f"mosquitto did not start: {bytes(self.log)!r}")
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    self.process = None
                    process.wait()
                    raise AssertionError(f"mosquitto exited: {bytes(self.log)!r}")
                self.log += chunk
        # Keep draining its log, so that a chatty broker never blocks on a full pipe
        # (the thread ends when the broker does: end of file).
        threading.Thread(target=self._drain, args=(process.stdout,), daemon=True,
                         name=f"mosquitto {self.port} log").start()

    def _drain(self, pipe: IO[bytes]) -> None:
        try:
            while chunk := os.read(pipe.fileno(), 65536):
                self.log += chunk[-65536:]
                del self.log[:-262144]
        except (OSError, ValueError):
            pass  # the pipe was closed by stop()

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s) and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # were it paused
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()

    def pause(self) -> None:
        """Stop the broker in its tracks (SIGSTOP): its sockets stay open and fill up,
        as a broker that is backed up."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker go on (SIGCONT)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
