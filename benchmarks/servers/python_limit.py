"""Reference (c): the fastest fan-out pure Python can do, as a limit to read figures against.

No framework, no task, no backpressure, no per-client state on the hot path: one
``selectors`` loop (epoll) and raw non-blocking sockets. For each update the producer
encodes the notification once (:func:`benchmarks.messages.reference_notification`, as the
other references do), prepends the frame header once, and then calls the bound
``sock.send`` of every client in turn with those same bytes. That loop is the whole cost
of a delivery here: a Python call and a ``sendto`` system call.

What it does *not* do, so that nothing stands between the frame and the kernel:

* a client whose socket buffer is full when the update comes (``EAGAIN``) simply misses
  it (it is counted as missed, like a coalesced value);
* a client whose socket took only part of a frame is taken off the hot list until the
  selector reports it writable and the rest of the frame is written (a WebSocket stream
  must never carry half a frame followed by another frame); it misses the updates
  meanwhile;
* a client that leaves is noticed by a failed ``send`` or by the read that returns
  nothing, and dropped.

It speaks just enough WebSocket for the load generator (:mod:`benchmarks.loadgen`): the
opening handshake with ``Sec-WebSocket-Accept`` (and the subprotocol echoed), one masked
request frame answered with :func:`benchmarks.messages.reference_ack`, then unmasked text
frames. A close frame a client sends is echoed and the connection ended; anything else
it sends after its request is read and ignored. Used by the
``max-rate`` scenario only (see :mod:`benchmarks.targets`).

Run by the harness as ``python -m benchmarks.servers.python_limit``; prints
``{"port": ...}`` and obeys :mod:`benchmarks.servers.control` on stdin and stdout.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import selectors
import socket
import sys
import time
from collections.abc import Callable
from typing import Final

from benchmarks.messages import reference_ack, reference_notification
from benchmarks.servers.control import Plan, handle, raise_open_files_limit, write_line

__all__ = ["LimitServer", "accept_key", "text_frame_header", "unmask_frame"]

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SUBPROTOCOL: Final = b"webthingprotocol"
_READ: Final = selectors.EVENT_READ
_WRITE: Final = selectors.EVENT_WRITE
_HANDSHAKING, _SUBSCRIBING, _OPEN = range(3)
_CLOSE_FRAME: Final = b"\x88\x02\x03\xe8"  # 1000, no reason


def accept_key(key: bytes) -> bytes:
    """RFC 6455 section 4.2.2: base64 of the SHA-1 of the key and the GUID."""
    return base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())


def text_frame_header(length: int) -> bytes:
    """The header of a final, unmasked text frame of ``length`` payload bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


def unmask_frame(buffer: bytes) -> tuple[int, bytes, int] | None:
    """``(opcode, payload, end)`` of the masked client frame at the start of ``buffer``,
    or ``None`` while it is incomplete."""
    if len(buffer) < 2:
        return None
    length = buffer[1] & 0x7F
    start = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, start = int.from_bytes(buffer[2:4], "big"), 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, start = int.from_bytes(buffer[2:10], "big"), 10
    masked = bool(buffer[1] & 0x80)
    mask = buffer[start:start + 4] if masked else b"\0\0\0\0"
    start += 4 if masked else 0
    end = start + length
    if len(buffer) < end:
        return None
    repeated = (mask * (length // 4 + 1))[:length]
    payload = (int.from_bytes(buffer[start:end], "big")
               ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
    return buffer[0] & 0x0F, payload, end


class _Client:
    __slots__ = ("buffer", "rest", "send", "sock", "state")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send: Callable[[bytes], int] = sock.send
        self.state = _HANDSHAKING
        self.buffer = b""
        self.rest = b""
        """The unwritten end of a frame the socket took only part of."""


class LimitServer:
    """The listener, the clients, and the producer (see the module docstring)."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4096)
        self.listener.setblocking(False)
        self.selector.register(self.listener, _READ, None)
        self.clients: dict[socket.socket, _Client] = {}
        self.sends: list[Callable[[bytes], int]] = []
        """The bound ``send`` of every open client with nothing left to write: the hot list."""
        self.owners: dict[Callable[[bytes], int], _Client] = {}
        self.updates = 0
        self.plan: Plan | None = None
        self._index = 0
        self._start = 0.0
        self._control = b""

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    # ------------------------------------------------------------------ control

    @property
    def producing(self) -> bool:
        return self.plan is not None

    def start(self, plan: Plan) -> None:
        self.plan, self._index, self._start = plan, 0, time.monotonic()

    def stop(self) -> None:
        self.plan = None

    def _on_control(self, fd: int) -> bool:
        """Answer every whole request line; False at end of input."""
        chunk = os.read(fd, 4096)
        if not chunk:
            return False
        self._control += chunk
        while b"\n" in self._control:
            line, self._control = self._control.split(b"\n", 1)
            if line.strip():
                write_line(handle(self, line))
        return True

    # ------------------------------------------------------------------ the hot path

    def publish(self) -> None:
        """One update: one frame, one ``send`` per client, nothing else."""
        assert self.plan is not None
        self.updates += 1
        payload = reference_notification(self.plan.kind, self.updates, time.time()).encode()
        frame = text_frame_header(len(payload)) + payload
        size = len(frame)
        troubled: list[tuple[Callable[[bytes], int], int]] = []
        for send in self.sends:
            try:
                sent = send(frame)
            except BlockingIOError:
                continue  # its buffer is full: it misses this update
            except OSError:
                troubled.append((send, -1))
                continue
            if sent != size:
                troubled.append((send, sent))
        if troubled:
            self._trouble(troubled, frame)

    def _trouble(self, troubled: list[tuple[Callable[[bytes], int], int]],
                 frame: bytes) -> None:
        for send, sent in troubled:
            client = self.owners[send]
            if sent < 0:
                self._drop(client)
            else:
                client.rest = frame[sent:]
                self.selector.modify(client.sock, _READ | _WRITE, client)
        self.sends = [c.send for c in self.clients.values()
                      if c.state == _OPEN and not c.rest]

    # ------------------------------------------------------------------ connections

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _address = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            # As asyncio and Trio do (so every other server here): no Nagle delay.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(sock)
            self.clients[sock] = client
            self.selector.register(sock, _READ, client)

    def _drop(self, client: _Client) -> None:
        if self.clients.pop(client.sock, None) is None:
            return
        self.selector.unregister(client.sock)
        client.sock.close()
        if self.owners.pop(client.send, None) is not None:
            with contextlib.suppress(ValueError):
                self.sends.remove(client.send)

    def _on_client(self, client: _Client, events: int) -> None:
        if events & _WRITE and client.rest:
            try:
                sent = client.sock.send(client.rest)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop(client)
                return
            client.rest = client.rest[sent:]
            if not client.rest:
                self.selector.modify(client.sock, _READ, client)
                self.sends.append(client.send)
        if not events & _READ:
            return
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
        elif client.state != _OPEN:
            client.buffer += data
            self._negotiate(client)
        elif data[0] & 0x0F == 0x8:  # a close frame (at the start of a read): echo, end
            with contextlib.suppress(OSError):
                client.sock.send(_CLOSE_FRAME)
            self._drop(client)
        # Any other frame of an open client (a pong) is read and ignored.

    def _negotiate(self, client: _Client) -> None:
        if client.state == _HANDSHAKING:
            end = client.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, client.buffer = client.buffer[:end], client.buffer[end + 4:]
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            key = headers.get(b"sec-websocket-key")
            if key is None:
                client.sock.send(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                self._drop(client)
                return
            protocols = [p.strip() for p in headers.get(b"sec-websocket-protocol", b"").split(b",")]
            response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key)
                        + b"\r\n")
            if _SUBPROTOCOL in protocols:
                response += b"Sec-WebSocket-Protocol: " + _SUBPROTOCOL + b"\r\n"
            client.sock.send(response + b"\r\n")  # a few hundred bytes, an empty buffer
            client.state = _SUBSCRIBING
        if client.state == _SUBSCRIBING:
            parsed = unmask_frame(client.buffer)
            if parsed is None:
                return
            _opcode, payload, end = parsed
            client.buffer = client.buffer[end:]
            ack = reference_ack(payload).encode()
            client.sock.send(text_frame_header(len(ack)) + ack)
            client.state = _OPEN
            client.buffer = b""
            self.owners[client.send] = client
            self.sends.append(client.send)

    # ------------------------------------------------------------------ the loop

    def serve(self, control_fd: int) -> None:
        """Until the control input ends: select, then publish when an update is due."""
        self.selector.register(control_fd, _READ, control_fd)
        while True:
            plan = self.plan
            timeout: float | None = None
            if plan is not None:
                deadline = plan.deadline(self._start, self._index)
                timeout = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
            for key, events in self.selector.select(timeout):
                data = key.data
                if data is None:
                    self._accept()
                elif isinstance(data, int):  # the control pipe
                    if not self._on_control(control_fd):
                        return
                else:
                    self._on_client(data, events)
            plan = self.plan
            if plan is not None:
                deadline = plan.deadline(self._start, self._index)
                if deadline is None or time.monotonic() >= deadline:
                    self._index += 1
                    self.publish()
                    if plan.count is not None and self._index >= plan.count:
                        self.plan = None

    def close(self) -> None:
        for client in list(self.clients.values()):
            self._drop(client)
        self.selector.close()
        self.listener.close()


def main() -> None:
    raise_open_files_limit()
    server = LimitServer()
    write_line({"port": server.port})
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve(sys.stdin.fileno())
    finally:
        server.close()


if __name__ == "__main__":
    main()
