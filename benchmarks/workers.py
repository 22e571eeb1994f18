"""Worker processes a benchmark's load generators run in, driven over socket pairs.

A load generator (:mod:`benchmarks.loadgen`'s WebSocket and SSE clients,
:mod:`benchmarks.mqttload`'s MQTT subscribers) spreads its clients over worker processes
so that no single Python process limits what it can receive. Each worker is
``python -m <module> --control-fd FD``; the harness sends it commands (tuples) over its
end of a socket pair and waits for every worker's reply, so it sees a consistent
snapshot. :class:`WorkerPool` is that harness side and :class:`Worker` the worker's
loop, each shared by both generators; :func:`worker_main` starts a worker.
"""

from __future__ import annotations

import argparse
import multiprocessing.connection
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

from benchmarks.servers.control import raise_open_files_limit

__all__ = ["Worker", "WorkerPool", "worker_main"]


class Worker:
    """One worker process's loop: one ``epoll`` for the harness's socket pair and every
    client socket, serving commands between socket events.

    A generator's worker says what its commands do (:meth:`open`, :meth:`mark`,
    :meth:`close_all`) and what a ready socket means (:meth:`ready`); the commands are
    ``("open", spec)``, ``("mark",)``, ``("close",)`` and ``("exit",)``, each answered
    with one reply.
    """

    def __init__(self, control: multiprocessing.connection.Connection) -> None:
        self.control = control
        self.epoll = select.epoll()
        self.epoll.register(control.fileno(), select.EPOLLIN)

    def open(self, spec: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def mark(self) -> dict[str, Any]:
        raise NotImplementedError

    def close_all(self) -> dict[str, Any]:
        raise NotImplementedError

    def ready(self, fd: int, events: int) -> None:
        raise NotImplementedError

    def run(self) -> None:
        control_fd = self.control.fileno()
        while True:
            for fd, events in self.epoll.poll(1.0):
                if fd == control_fd:
                    if not self.command():
                        return
                else:
                    self.ready(fd, events)

    def command(self) -> bool:
        """Serve one command; False once the worker is to end."""
        try:
            command = self.control.recv()
        except EOFError:
            self.close_all()
            return False
        match command:
            case ("open", spec):
                self.control.send(self.open(spec))
            case ("mark",):
                self.control.send(self.mark())
            case ("close",):
                self.control.send(self.close_all())
            case ("exit",):
                self.close_all()
                self.control.send(None)
                return False
        return True


def worker_main(worker: Callable[[multiprocessing.connection.Connection], Worker],
                description: str, argv: Sequence[str] | None = None) -> None:
    """A worker process: ``python -m <module> --control-fd FD`` runs ``worker`` on the
    socket pair's end FD until the harness says ``exit`` (or goes away)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    raise_open_files_limit()
    control = multiprocessing.connection.Connection(args.control_fd)
    try:
        worker(control).run()
    except KeyboardInterrupt:
        pass


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
