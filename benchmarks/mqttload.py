"""The MQTT subscriber load generator: thousands of subscriptions in a few worker
processes, each counting the PUBLISH packets the broker delivers to it.

A load generator is not the product, and at the rates measured (tens of thousands of
deliveries a second) a client library's per-message objects and callbacks would cost
more than the broker we load. So, as :mod:`benchmarks.loadgen` does for WebSocket, each
worker process is one thread with raw non-blocking sockets on one ``epoll``, and speaks
just enough MQTT 3.1.1 itself (the packets are a few bytes each, built and parsed here):

* a client connects, then writes CONNECT (clean session, keepalive 0: the broker
  expects no PINGREQ) and SUBSCRIBE (one topic, QoS 0 or 1) in one ``send``, without
  waiting for the CONNACK (MQTT 3.1.1, 3.1.4: a client may send packets right after
  CONNECT);
* it checks the CONNACK (return code 0) and the SUBACK (the QoS granted, not 0x80);
* after that it only walks fixed headers and remaining lengths (:func:`scan`), counting
  PUBLISH packets, and answers a QoS 1 delivery with its PUBACK. Payloads are not read.

A client is *ready* once it has its SUBACK and its first PUBLISH: the property's
retained value, which the broker sends on subscribing. It then reads whatever arrives
as it arrives, as a real subscriber does (no ``SO_RCVLOWAT``: batching reads would move
the cost of waking the reader off the broker's writes, and make the two paths of the
benchmark differ), and every mark drains every socket first, so counts are exact.

Each worker is a fresh interpreter (``python -m benchmarks.mqttload --control-fd FD``)
driven over one end of a socket pair, as :class:`benchmarks.loadgen.LoadGenerator`'s are;
each command gets exactly one reply:

==================== ==================================================================
``("open", spec)``   connect ``spec["n"]`` more subscribers; reply once every one is
                     ready or the timeout passed
``("mark",)``        reply a snapshot: per-subscriber PUBLISH counts, closed ones, CPU
``("close",)``       DISCONNECT and close every subscriber
``("exit",)``        close every subscriber and end
==================== ==================================================================

Resource handling: :class:`MqttSubscribers` is a context manager that ends every worker
it started, by its PID (ask, then SIGTERM, then SIGKILL, each bounded). Everything
connects to the address it is given (127.0.0.1 in the benchmark).
"""

from __future__ import annotations

import errno
import math
import multiprocessing.connection
import os
import select
import socket
import time
from collections.abc import Sequence
from typing import Any, Final

import attrs

from benchmarks.workers import Worker, WorkerPool, worker_main

__all__ = ["MqttOpenError", "MqttSubscribers", "Scan", "SubscribersMark", "connect_packet",
           "scan", "subscribe_packet"]

# Control packet types (the high nibble of the first byte).
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBACK: Final = 9
#: DISCONNECT, whole.
DISCONNECT: Final = b"\xe0\x00"
_SUBSCRIBE_ID: Final = 1
_RECEIVE_SIZE: Final = 256 * 1024
#: Connections a worker has in flight at once (a listen backlog is finite; a dropped
#: SYN costs a one-second retransmit).
_MAX_PENDING: Final = 64
_CONNECTING, _WAITING, _OPEN, _CLOSED = range(4)
_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT


class MqttOpenError(RuntimeError):
    """Some subscribers could not connect, subscribe or get their first message."""


# --------------------------------------------------------------------------- packets


def _remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer (1 to 4 bytes)."""
    if not 0 <= n < 1 << 28:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def connect_packet(client_id: str, keepalive: int = 0) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session, no will, no credentials."""
    body = _string("MQTT") + bytes((4, 0x02)) + keepalive.to_bytes(2, "big") + _string(
        client_id)
    return bytes((0x10,)) + _remaining_length(len(body)) + body


def subscribe_packet(topic: str, qos: int = 0, packet_id: int = _SUBSCRIBE_ID) -> bytes:
    """SUBSCRIBE to one topic filter at ``qos`` (0 or 1)."""
    if qos not in (0, 1):
        raise ValueError("the load generator subscribes at QoS 0 or 1")
    body = packet_id.to_bytes(2, "big") + _string(topic) + bytes((qos,))
    return bytes((0x82,)) + _remaining_length(len(body)) + body


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


@attrs.frozen
class Scan:
    """What :func:`scan` found in a buffer: whole packets only."""

    publishes: int
    """PUBLISH packets."""
    acknowledge: list[int]
    """Packet ids of QoS 1 PUBLISH packets, in order: each needs a PUBACK."""
    control: list[tuple[int, bytes]]
    """Every other packet: (its first byte, its body)."""
    consumed: int
    """Bytes of whole packets; the rest begins an incomplete one."""


def scan(buffer: bytes) -> Scan:
    """Walk the packets of ``buffer`` by their fixed headers (``ValueError`` for a
    malformed remaining length or a QoS 2 delivery, which nobody asked for)."""
    publishes = 0
    acknowledge: list[int] = []
    control: list[tuple[int, bytes]] = []
    end = len(buffer)
    pos = 0
    while pos + 2 <= end:
        head = buffer[pos]
        length = 0
        shift = 0
        index = pos + 1
        while True:
            if index >= end:
                return Scan(publishes, acknowledge, control, pos)
            byte = buffer[index]
            index += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ValueError("malformed remaining length")
        stop = index + length
        if stop > end:
            break
        if head >> 4 == PUBLISH:
            publishes += 1
            qos = (head >> 1) & 3
            if qos == 1:
                at = index + 2 + ((buffer[index] << 8) | buffer[index + 1])
                acknowledge.append((buffer[at] << 8) | buffer[at + 1])
            elif qos:
                raise ValueError(f"a QoS {qos} delivery; the subscription asked for 0 or 1")
        else:
            control.append((head, buffer[index:stop]))
        pos = stop
    return Scan(publishes, acknowledge, control, pos)


# --------------------------------------------------------------------------- the worker


class _Subscriber:
    """One connection's state. Slotted: a worker may hold thousands."""

    __slots__ = ("buffer", "closed", "greeting", "publishes", "settled", "sock", "state",
                 "subscribed")

    def __init__(self, sock: socket.socket, greeting: bytes) -> None:
        self.sock = sock
        self.greeting = greeting
        """CONNECT and SUBSCRIBE, written once connected."""
        self.state = _CONNECTING
        self.buffer = b""
        self.publishes = 0
        self.subscribed = False
        self.settled = False
        """Ready or failed: no longer counts against ``_MAX_PENDING``."""
        self.closed = False


class _Worker(Worker):
    """The loop of one worker process (see the module docstring)."""

    def __init__(self, control: multiprocessing.connection.Connection) -> None:
        super().__init__(control)
        self.by_fd: dict[int, _Subscriber] = {}
        self.subscribers: list[_Subscriber] = []
        self.pending = 0
        self.failures: list[str] = []
        self.serial = 0
        self.last_arrival = 0.0

    def open(self, spec: dict[str, Any]) -> dict[str, Any]:
        n: int = spec["n"]
        self.failures = []
        deadline = time.monotonic() + spec["timeout"]
        new: list[_Subscriber] = []
        started = 0
        greeting_tail = subscribe_packet(spec["topic"], spec["qos"])
        while time.monotonic() < deadline:
            while started < n and self.pending < _MAX_PENDING:
                started += 1
                self.serial += 1
                client_id = f"{spec['client_id']}-{os.getpid()}-{self.serial}"
                subscriber = self.connect(spec["host"], spec["port"],
                                          connect_packet(client_id) + greeting_tail)
                if subscriber is not None:
                    new.append(subscriber)
            if started == n and self.pending == 0:
                break
            for fd, _events in self.epoll.poll(0.05):
                if fd != self.control.fileno():
                    self.ready(fd)
        ready = sum(s.state == _OPEN and s.publishes > 0 for s in new)
        failures = self.failures
        if ready < n and not failures:
            failures.append(f"{n - ready} got no message within {spec['timeout']} s")
        return {"ready": ready, "failures": failures[:5] + (
            [f"... and {len(failures) - 5} more"] if len(failures) > 5 else [])}

    def connect(self, host: str, port: int, greeting: bytes) -> _Subscriber | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            self.failures.append(f"connect: {errno.errorcode.get(code, code)}")
            sock.close()
            return None
        subscriber = _Subscriber(sock, greeting)
        self.by_fd[sock.fileno()] = subscriber
        self.subscribers.append(subscriber)
        self.pending += 1
        self.epoll.register(sock.fileno(), _OUT)
        return subscriber

    def ready(self, fd: int, events: int = 0) -> None:
        subscriber = self.by_fd.get(fd)
        if subscriber is None:
            return
        if subscriber.state == _CONNECTING:
            error = subscriber.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.fail(subscriber, f"connect: {errno.errorcode.get(error, error)}")
                return
            try:
                subscriber.sock.send(subscriber.greeting)  # ~80 bytes, an empty buffer
            except OSError as send_error:
                self.fail(subscriber, f"CONNECT: {send_error}")
                return
            subscriber.greeting = b""
            subscriber.state = _WAITING
            self.epoll.modify(fd, _IN)
        else:
            self.receive(subscriber)

    def receive(self, subscriber: _Subscriber) -> bool:
        """Read and count what one subscriber has pending; whether there was anything
        (and it is still open: worth reading again)."""
        try:
            data = subscriber.sock.recv(_RECEIVE_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.fail(subscriber, "the broker closed the connection")
            return False
        buffer = subscriber.buffer + data if subscriber.buffer else data
        try:
            found = scan(buffer)
        except ValueError as error:
            self.fail(subscriber, str(error))
            return False
        subscriber.buffer = buffer[found.consumed:] if found.consumed < len(buffer) else b""
        for head, body in found.control:
            if not self.control_packet(subscriber, head, body):
                return False
        if found.acknowledge:
            try:
                subscriber.sock.send(b"".join(puback_packet(i) for i in found.acknowledge))
            except OSError as error:
                self.fail(subscriber, f"PUBACK: {error}")
                return False
        if found.publishes:
            subscriber.publishes += found.publishes
            self.last_arrival = time.time()
            if not subscriber.settled and subscriber.subscribed:
                self.settle(subscriber)
        return True

    def control_packet(self, subscriber: _Subscriber, head: int, body: bytes) -> bool:
        kind = head >> 4
        if kind == CONNACK:
            if len(body) < 2 or body[1] != 0:
                self.fail(subscriber, f"CONNACK refused: {body.hex()}")
                return False
            subscriber.state = _OPEN
        elif kind == SUBACK:
            if len(body) < 3 or body[2] == 0x80:
                self.fail(subscriber, f"SUBACK refused: {body.hex()}")
                return False
            subscriber.subscribed = True
            if subscriber.publishes and not subscriber.settled:
                self.settle(subscriber)
        return True

    def settle(self, subscriber: _Subscriber) -> None:
        """Ready (or failed): another may start connecting."""
        if not subscriber.settled:
            subscriber.settled = True
            self.pending -= 1

    def fail(self, subscriber: _Subscriber, reason: str) -> None:
        if not subscriber.settled:
            self.failures.append(reason)
        self.drop(subscriber)

    def drop(self, subscriber: _Subscriber) -> None:
        if subscriber.closed:
            return
        subscriber.closed = True
        self.settle(subscriber)
        subscriber.state = _CLOSED
        fd = subscriber.sock.fileno()
        self.by_fd.pop(fd, None)
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        subscriber.sock.close()

    def mark(self) -> dict[str, Any]:
        # Drain every socket first: what arrived since the last poll counts too.
        for subscriber in self.subscribers:
            if subscriber.state in (_WAITING, _OPEN):
                for _ in range(8):
                    if not self.receive(subscriber):
                        break
        return {"time": time.time(), "cpu": time.process_time(),
                "counts": [s.publishes for s in self.subscribers],
                "closed": sum(s.closed for s in self.subscribers),
                "last_arrival": self.last_arrival}

    def close_all(self) -> dict[str, Any]:
        closed = 0
        for subscriber in self.subscribers:
            if not subscriber.closed:
                try:
                    subscriber.sock.send(DISCONNECT)
                except OSError:
                    pass
                self.drop(subscriber)
                closed += 1
        self.subscribers = []
        self.by_fd = {}
        self.pending = 0
        return {"closed": closed}


def _worker_main(argv: Sequence[str] | None = None) -> None:
    """A worker process: ``python -m benchmarks.mqttload --control-fd FD``."""
    worker_main(_Worker, "An MQTT subscriber worker (internal).", argv)


# --------------------------------------------------------------------------- the harness


@attrs.frozen(kw_only=True)
class SubscribersMark:
    """A snapshot of every worker, taken at about the same moment."""

    time: float
    """Wall-clock time of the snapshot (the mean over workers)."""
    cpu: tuple[float, ...]
    """CPU seconds each worker has used so far."""
    counts: tuple[int, ...]
    """PUBLISH packets received so far, per subscriber, the retained one included."""
    closed: int
    """Subscribers whose connection ended (the broker closed it, or it failed)."""
    last_arrival: float
    """When the latest PUBLISH arrived, on any worker (wall clock; 0: none yet)."""


class MqttSubscribers(WorkerPool):
    """``workers`` worker processes, for the harness to spread subscribers over.

    Resource handling: a context manager; leaving it ends every worker (by asking, then
    by its PID). Commands go to every worker and wait for every reply."""

    module = "benchmarks.mqttload"
    what = "MQTT load generator"

    def open(self, *, host: str, port: int, topic: str, subscribers: int, qos: int = 0,
             client_id: str = "bench-sub", timeout: float = 60.0) -> None:
        """Connect ``subscribers`` more subscribers of ``topic``, spread evenly over the
        workers, and wait until each has its SUBACK and a first message (the retained
        value: publish one before). Raises :class:`MqttOpenError` otherwise."""
        shares = [subscribers // self.workers + (i < subscribers % self.workers)
                  for i in range(self.workers)]
        for pipe, share in zip(self._pipes, shares, strict=True):
            pipe.send(("open", {"host": host, "port": port, "topic": topic, "n": share,
                                "qos": qos, "client_id": client_id,
                                "timeout": timeout}))
        ready, failures = 0, []
        for pipe in self._pipes:
            if not pipe.poll(timeout + 10):
                raise MqttOpenError("an MQTT load generator worker did not answer")
            reply = pipe.recv()
            ready += reply["ready"]
            failures += reply["failures"]
        if ready != subscribers:
            raise MqttOpenError(f"{ready} of {subscribers} subscribers ready; {failures}")

    def mark(self) -> SubscribersMark:
        replies = self._all(("mark",))
        return SubscribersMark(
            time=math.fsum(r["time"] for r in replies) / len(replies),
            cpu=tuple(r["cpu"] for r in replies),
            counts=tuple(c for r in replies for c in r["counts"]),
            closed=sum(r["closed"] for r in replies),
            last_arrival=max(r["last_arrival"] for r in replies))

    def close_clients(self) -> None:
        """DISCONNECT and close every subscriber."""
        self._all(("close",))



if __name__ == "__main__":
    _worker_main()
