"""The load generator: many WebSocket (or SSE) observers in a few worker processes, cheap
per frame.

Why it is built like this: at the rates we aim for (over 100k deliveries a second) any
per-message object, task or library call in the client would cost more than the server
we measure. So each worker process runs raw non-blocking sockets on one ``epoll``: it
writes the opening handshake and a masked subscribe frame itself
(:mod:`benchmarks.rawws`), then only walks frame *headers*, counting messages per
connection; it decodes the JSON of one frame in ``sample_every`` to read the publish
time it carries, for latency. It answers pings (with a masked pong) and notes close
frames and dropped connections.

Measured on a 2-core machine against ``websockets.broadcast()`` at C = 100 (~130k
frames/s): walking the headers costs ~1 us a frame; the rest is the kernel's cost per
``recv`` on loopback (~10 us, with a few frames per call). That made ~6 us a frame in
all, as much as the fastest server spends per delivery (~7 us). With ``SO_RCVLOWAT``
(4 KiB) each ``recv`` takes a dozen frames or more, and the cost falls to ~2 us a frame,
so the load generator is no longer the limit; it delays reads, so it is used only where
no latency is measured (see :meth:`LoadGenerator.open`).

Server-Sent Events (``protocol="sse"``) take the same loop: a client writes a plain
HTTP/1.1 ``GET`` with ``Accept: text/event-stream`` instead of the handshake, sends
nothing after it (the request is the subscription), checks the response head, then walks
chunk sizes and counts ``data:`` lines (:mod:`benchmarks.rawsse`). Its first message, the
property's current value, stands for the acknowledgement. A stream the server ended with
the last chunk is noted as close code 1000; one dropped without it, 1006, as for a
WebSocket. No latency is sampled on SSE clients.

A worker is one thread, so the clients can be spread over several processes; each
reports its CPU time, so the harness can say when the load generator, not the server,
was the bottleneck.

Each worker is a fresh interpreter (``python -m benchmarks.loadgen --control-fd FD``,
so nothing of the harness is imported or inherited), driven over one end of a socket
pair wrapped in a :class:`multiprocessing.connection.Connection`; each command gets
exactly one reply.

==================== ==================================================================
``("open", spec)``   connect ``spec["n"]`` more clients; reply once all are ready (their
                     first frame, the acknowledgement, arrived) or the timeout passed
``("mark",)``        reply a snapshot: per-client message counts, closes, latency samples
                     since the last mark, this process's CPU time
``("close",)``       close every client
``("exit",)``        close every client and end
==================== ==================================================================
"""

from __future__ import annotations

import errno
import math
import multiprocessing.connection
import select
import socket
import time
from collections.abc import Sequence
from typing import Any, Final, Literal

import attrs

from benchmarks import rawsse, rawws
from benchmarks.messages import PROPERTY, Kind, sent_at, subscribe_request
from benchmarks.workers import Worker, WorkerPool, worker_main

__all__ = ["SSE", "WEBSOCKET", "LoadGenerator", "Mark", "OpenError", "Protocol", "deltas",
           "open_stalled_client"]

Protocol = Literal["websocket", "sse"]
WEBSOCKET: Final = "websocket"
SSE: Final = "sse"

_RECEIVE_SIZE: Final = 256 * 1024
#: Handshakes a worker has in flight at once: listen backlogs are finite (asyncio's
#: default is 100), and a dropped SYN costs a one-second retransmit.
_MAX_PENDING: Final = 32
_CONNECTING, _HANDSHAKING, _OPEN, _CLOSED = range(4)
_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT


class OpenError(RuntimeError):
    """Some clients could not connect, complete the handshake or get acknowledged."""


class _Client:
    """One connection's state. Slotted: a worker may hold thousands."""

    __slots__ = ("buffer", "close_code", "countdown", "handshake", "key", "messages",
                 "request", "settled", "sock", "sse", "state")

    def __init__(self, sock: socket.socket, handshake: bytes, request: bytes,
                 key: bytes, *, sse: bool = False) -> None:
        self.sock = sock
        self.sse = sse
        """An SSE consumer: ``handshake`` is its GET, and there is no ``request``."""
        self.handshake = handshake
        self.request = request
        self.key = key
        self.state = _CONNECTING
        self.buffer = b""
        self.messages = 0
        self.countdown = 1
        self.close_code: int | None = None
        self.settled = False
        """Acknowledged or failed: no longer counts against ``_MAX_PENDING``."""


class _Worker(Worker):
    """The loop of one worker process (see the module docstring)."""

    def __init__(self, control: multiprocessing.connection.Connection) -> None:
        super().__init__(control)
        self.by_fd: dict[int, _Client] = {}
        self.clients: list[_Client] = []
        self.samples: list[float] = []
        self.sample_every = 0
        self.rcvlowat = 0
        self.last_frame = 0.0
        self.pending = 0

    # ------------------------------------------------------------------ opening

    def open(self, spec: dict[str, Any]) -> dict[str, Any]:
        n: int = spec["n"]
        self.sample_every = spec["sample_every"]
        self.rcvlowat = spec["rcvlowat"]
        deadline = time.monotonic() + spec["timeout"]
        new: list[_Client] = []
        failures: list[str] = []
        started = 0
        while time.monotonic() < deadline:
            while started < n and self.pending < _MAX_PENDING:
                started += 1
                client = self.connect(spec, failures)
                if client is not None:
                    new.append(client)
            if started == n and self.pending == 0:
                break
            for fd, events in self.epoll.poll(0.05):
                if fd != self.control.fileno():
                    self.ready(fd, events, failures)
        ready = sum(c.state == _OPEN and c.messages > 0 for c in new)
        if ready < n and not failures:
            failures.append(f"{n - ready} not acknowledged within {spec['timeout']} s")
        return {"ready": ready, "failures": failures[:5] + (
            [f"... and {len(failures) - 5} more"] if len(failures) > 5 else [])}

    def connect(self, spec: dict[str, Any], failures: list[str]) -> _Client | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if spec.get("rcvbuf"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, spec["rcvbuf"])
        sock.setblocking(False)
        code = sock.connect_ex((spec["host"], spec["port"]))
        if code not in (0, errno.EINPROGRESS):
            failures.append(f"connect: {errno.errorcode.get(code, code)}")
            sock.close()
            return None
        if spec["protocol"] == SSE:
            client = _Client(sock, rawsse.stream_request(spec["host"], spec["port"],
                                                         spec["path"]), b"", b"", sse=True)
        else:
            key = rawws.new_key()
            client = _Client(
                sock,
                rawws.handshake_request(spec["host"], spec["port"], spec["path"], key,
                                        spec["subprotocol"]),
                rawws.masked_frame(rawws.TEXT, subscribe_request(spec["kind"])),
                key)
        self.by_fd[sock.fileno()] = client
        self.clients.append(client)
        self.pending += 1
        self.epoll.register(sock.fileno(), _OUT)
        return client

    def ready(self, fd: int, events: int, failures: list[str] | None = None) -> None:
        client = self.by_fd.get(fd)
        if client is None:
            return
        if client.state == _OPEN:
            self.receive(client)
        elif client.state == _CONNECTING:
            error = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.fail(client, f"connect: {errno.errorcode.get(error, error)}", failures)
                return
            try:
                client.sock.send(client.handshake)  # a few hundred bytes, an empty buffer
            except OSError as send_error:
                self.fail(client, f"handshake: {send_error}", failures)
                return
            client.state = _HANDSHAKING
            self.epoll.modify(fd, _IN)
        elif client.state == _HANDSHAKING:
            self.handshake(client, failures)

    def handshake(self, client: _Client, failures: list[str] | None) -> None:
        try:
            data = client.sock.recv(_RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            self.fail(client, f"handshake: {error}", failures)
            return
        if not data:
            self.fail(client, "handshake: the server closed the connection", failures)
            return
        client.buffer += data
        try:
            start = (rawsse.check_response_head(client.buffer) if client.sse
                     else rawws.check_handshake_response(client.buffer, client.key))
        except (rawws.HandshakeError, rawsse.ResponseError) as error:
            self.fail(client, f"handshake: {error}", failures)
            return
        if start is None:
            return
        client.buffer = client.buffer[start:]
        if client.request:
            try:
                client.sock.send(client.request)
            except OSError as error:
                self.fail(client, f"subscribe: {error}", failures)
                return
        client.handshake = client.request = b""
        client.state = _OPEN
        if client.buffer:
            buffer, client.buffer = client.buffer, b""
            (self.parse_sse if client.sse else self.parse)(client, buffer, time.time())

    def fail(self, client: _Client, reason: str, failures: list[str] | None) -> None:
        if failures is not None:
            failures.append(reason)
        self.drop(client)

    def drop(self, client: _Client) -> None:
        if client.state == _CLOSED:
            return
        self.settle(client)
        client.state = _CLOSED
        fd = client.sock.fileno()
        self.by_fd.pop(fd, None)
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        client.sock.close()

    def settle(self, client: _Client) -> None:
        if not client.settled:
            client.settled = True
            self.pending -= 1

    # ------------------------------------------------------------------ the hot path

    def receive(self, client: _Client) -> bool:
        """Read and count what one client has pending; whether there was anything (and
        the client is still open: worth reading again)."""
        try:
            data = client.sock.recv(_RECEIVE_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            if client.close_code is None:
                client.close_code = 1006
            self.drop(client)
            return False
        (self.parse_sse if client.sse else self.parse)(
            client, client.buffer + data if client.buffer else data, time.time())
        return client.state == _OPEN

    def parse(self, client: _Client, buffer: bytes, now: float) -> None:
        """Count every whole frame in ``buffer``; keep the incomplete rest. Inlined header
        walk (see :func:`benchmarks.rawws.parse_header`): this loop is the load
        generator's whole per-frame cost, so it keeps its state in locals."""
        end = len(buffer)
        pos = 0
        messages = client.messages
        countdown = client.countdown
        sample_every = self.sample_every
        while end - pos >= 2:
            length = buffer[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (buffer[pos + 2] << 8) | buffer[pos + 3]
                start = pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2:pos + 10], "big")
                start = pos + 10
            stop = start + length
            if stop > end:
                break
            head = buffer[pos]
            opcode = head & 0x0F
            if opcode <= rawws.BINARY:
                if head & 0x80:  # FIN: a whole message
                    messages += 1
                    if sample_every:
                        countdown -= 1
                        if countdown <= 0:
                            countdown = sample_every
                            t = sent_at(buffer[start:stop])
                            if t is not None:
                                self.samples.append(now - t)
            elif opcode == rawws.PING:
                try:
                    client.sock.send(rawws.masked_frame(rawws.PONG, buffer[start:stop]))
                except OSError:
                    pass
            elif opcode == rawws.CLOSE:
                payload = buffer[start:stop]
                client.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
                self._count(client, messages, countdown, now)
                self.drop(client)
                return
            pos = stop
        client.buffer = buffer[pos:] if pos < end else b""
        self._count(client, messages, countdown, now)

    def parse_sse(self, client: _Client, buffer: bytes, now: float) -> None:
        """Count every message in the whole chunks of ``buffer``; keep the rest. A stream
        that sends something other than chunks is dropped (close code 1002)."""
        try:
            messages, consumed, ended = rawsse.count_messages(buffer)
        except ValueError:
            client.close_code = 1002
            self.drop(client)
            return
        client.buffer = buffer[consumed:] if consumed < len(buffer) else b""
        self._count(client, client.messages + messages, client.countdown, now)
        if ended:
            client.close_code = 1000
            self.drop(client)

    def _count(self, client: _Client, messages: int, countdown: int, now: float) -> None:
        client.countdown = countdown
        if messages != client.messages:
            client.messages = messages
            self.last_frame = now
            if not client.settled:
                self.settle(client)  # the first message is the acknowledgement: ready
                if self.rcvlowat:
                    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, self.rcvlowat)

    # ------------------------------------------------------------------ reporting

    def mark(self) -> dict[str, Any]:
        # Drain every socket first: with SO_RCVLOWAT, up to that many bytes may wait
        # unreported by epoll, and a non-blocking recv returns them all the same.
        for client in self.clients:
            if client.state == _OPEN:
                for _ in range(8):
                    if not self.receive(client):
                        break
        samples, self.samples = self.samples, []
        return {
            "time": time.time(),
            "cpu": time.process_time(),
            "counts": [c.messages for c in self.clients],
            "close_codes": [c.close_code for c in self.clients],
            "samples": samples,
            "last_frame": self.last_frame,
        }

    def close_all(self) -> dict[str, Any]:
        closed = 0
        for client in self.clients:
            if client.state != _CLOSED:
                self.drop(client)
                closed += 1
        self.clients = []
        self.by_fd = {}
        self.pending = 0
        self.samples = []
        return {"closed": closed}


def _worker_main(argv: Sequence[str] | None = None) -> None:
    """A worker process: ``python -m benchmarks.loadgen --control-fd FD``."""
    worker_main(_Worker, "A load generator worker (internal).", argv)


@attrs.frozen(kw_only=True)
class Mark:
    """A snapshot of every worker, taken at about the same moment."""

    time: float
    """Wall-clock time of the snapshot (the mean over workers)."""
    cpu: tuple[float, ...]
    """CPU seconds each worker has used so far."""
    counts: tuple[int, ...]
    """Messages received so far, per client, acknowledgement included."""
    close_codes: tuple[int | None, ...]
    """Per client: the close code the server sent (1006: dropped without one), or None."""
    samples: tuple[float, ...]
    """Latencies (receive minus publish time, seconds) sampled since the previous mark."""
    last_frame: float
    """When the latest frame arrived, on any worker."""

    @property
    def closed(self) -> int:
        return sum(code is not None for code in self.close_codes)


class LoadGenerator(WorkerPool):
    """``workers`` worker processes, for the harness to spread clients over.

    Resource handling: a context manager; leaving it ends every worker (by asking, then
    by its PID). Commands go to every worker and wait for every reply, so the harness
    sees a consistent snapshot.
    """

    module = "benchmarks.loadgen"
    what = "load generator"

    def open(self, *, host: str, port: int, path: str, kind: Kind, clients: int,
             sample_every: int = 0, rcvlowat: int = 0,
             subprotocol: str | None = "webthingprotocol", rcvbuf: int | None = None,
             protocol: Protocol = WEBSOCKET, timeout: float = 60.0) -> None:
        """Connect ``clients`` more observers, spread evenly over the workers, and wait
        until each has its acknowledgement. Raises :class:`OpenError` otherwise.

        ``sample_every``: decode one message in that many per client for its latency
        (0: none). ``rcvlowat``: once acknowledged, a client's socket reports readable
        only when that many bytes wait (``SO_RCVLOWAT``), so each ``recv`` takes many
        frames; that cuts the load generator's cost per frame about three times (the
        kernel's cost per ``recv`` dominates it) but delays reads, so use it only where
        no latency is measured. Each mark drains every socket, so counts stay exact.

        ``protocol="sse"``: the clients are Server-Sent Events consumers of the property
        at ``path`` (the first message, its current value, tells one is ready); an event
        stream sends nothing until the first event, so ``kind`` must be the property, and
        no latency is sampled.
        """
        if protocol == SSE and (kind != PROPERTY or sample_every):
            raise ValueError("SSE clients observe the property and sample no latency")
        shares = [clients // self.workers + (i < clients % self.workers)
                  for i in range(self.workers)]
        for pipe, share in zip(self._pipes, shares, strict=True):
            pipe.send(("open", {
                "host": host, "port": port, "path": path, "kind": kind, "n": share,
                "sample_every": sample_every, "rcvlowat": rcvlowat, "subprotocol": subprotocol,
                "rcvbuf": rcvbuf, "protocol": protocol, "timeout": timeout}))
        ready, failures = 0, []
        for pipe in self._pipes:
            if not pipe.poll(timeout + 10):
                raise OpenError("a load generator worker did not answer")
            reply = pipe.recv()
            ready += reply["ready"]
            failures += reply["failures"]
        if ready != clients:
            raise OpenError(f"{ready} of {clients} clients ready; {failures}")

    def mark(self) -> Mark:
        replies = self._all(("mark",))
        return Mark(
            time=math.fsum(r["time"] for r in replies) / len(replies),
            cpu=tuple(r["cpu"] for r in replies),
            counts=tuple(c for r in replies for c in r["counts"]),
            close_codes=tuple(c for r in replies for c in r["close_codes"]),
            samples=tuple(s for r in replies for s in r["samples"]),
            last_frame=max(r["last_frame"] for r in replies),
        )

    def close_clients(self) -> None:
        """Close every client (the server sees them leave)."""
        self._all(("close",))



def deltas(before: Sequence[int], after: Sequence[int]) -> list[int]:
    """Per-client messages received between two marks."""
    return [b - a for a, b in zip(before, after, strict=True)]


def open_stalled_client(*, host: str, port: int, path: str, kind: Kind,
                        subprotocol: str | None = "webthingprotocol",
                        rcvbuf: int = 4096, timeout: float = 10.0) -> socket.socket:
    """A client that completes the handshake, subscribes, and then never reads again:
    a receive buffer of ``rcvbuf`` bytes (the kernel doubles it) fills within a few
    frames, and then the server's send buffer for it. The caller owns the socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((host, port))
        key = rawws.new_key()
        sock.sendall(rawws.handshake_request(host, port, path, key, subprotocol))
        head = b""
        while rawws.check_handshake_response(head, key) is None:
            chunk = sock.recv(1)  # byte by byte: leave every frame unread
            if not chunk:
                raise OpenError("the server closed the stalled client during the handshake")
            head += chunk
        sock.sendall(rawws.masked_frame(rawws.TEXT, subscribe_request(kind)))
    except BaseException:
        sock.close()
        raise
    return sock


if __name__ == "__main__":
    _worker_main()
