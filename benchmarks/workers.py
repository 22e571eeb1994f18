"""Worker processes a benchmark's load generators run in, driven over socket pairs.

A load generator (:mod:`benchmarks.loadgen`'s WebSocket and SSE clients,
:mod:`benchmarks.mqttload`'s MQTT subscribers) spreads its clients over worker processes
so that no single Python process limits what it can receive. Each worker is
``python -m <module> --control-fd FD``; the harness sends it commands (tuples) over its
end of a socket pair and waits for every worker's reply, so it sees a consistent
snapshot. :class:`WorkerPool` is that harness side, shared by both generators.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar, Self

__all__ = ["WorkerPool"]


class WorkerPool:
    """``workers`` worker processes running :attr:`module`.

    Resource handling: a context manager; leaving it ends every worker (by asking, then
    by its PID). Commands go to every worker and wait for every reply.
    """

    module: ClassVar[str]
    """The worker's module, run with ``python -m``."""
    what: ClassVar[str]
    """What the errors call a worker's pool ("load generator")."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a {self.what} needs at least one worker process")
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._processes: list[subprocess.Popen[bytes]] = []
        root = Path(__file__).resolve().parents[1]
        env = os.environ | {"PYTHONPATH": os.pathsep.join(
            filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        try:
            for _ in range(workers):
                ours, theirs = socket.socketpair()
                with theirs:
                    process = subprocess.Popen(
                        [sys.executable, "-m", self.module,
                         "--control-fd", str(theirs.fileno())],
                        pass_fds=[theirs.fileno()], cwd=root, env=env)
                self._processes.append(process)
                self._pipes.append(multiprocessing.connection.Connection(ours.detach()))
        except BaseException:
            self.close()
            raise

    @property
    def workers(self) -> int:
        return len(self._processes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _all(self, command: tuple[Any, ...], timeout: float = 30.0) -> list[Any]:
        for pipe in self._pipes:
            pipe.send(command)
        replies = []
        for pipe, process in zip(self._pipes, self._processes, strict=True):
            if not pipe.poll(timeout):
                raise RuntimeError(f"{self.what} worker {process.pid} did not answer "
                                   f"{command[0]!r} within {timeout:.0f} s")
            replies.append(pipe.recv())
        return replies

    def close(self) -> None:
        """End every worker: ask, then SIGTERM, then SIGKILL (by PID), each bounded."""
        for pipe in self._pipes:
            try:
                pipe.send(("exit",))
            except OSError:
                pass
        for process in self._processes:
            for step in (None, signal.SIGTERM, signal.SIGKILL):
                if process.poll() is not None:
                    break
                if step is not None:
                    process.send_signal(step)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    continue
        for pipe in self._pipes:
            pipe.close()
        self._pipes, self._processes = [], []
