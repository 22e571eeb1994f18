"""Just enough of the client side of RFC 6455 for a load generator, with no library.

Why by hand: the load generator must cost much less per message than any server under
test, so it never builds message objects. It writes the opening handshake and one masked
request frame, then walks frame *headers* only; it decodes the JSON of a small sample of
frames to read the send time they carry. Everything here is pure (bytes in, values out);
:mod:`benchmarks.loadgen` owns the sockets.

RFC 6455 section 5.2 (base framing)::

     0                   1                   2                   3
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |

"If 126, the following 2 bytes interpreted as a 16-bit unsigned integer are the payload
length. If 127, the following 8 bytes interpreted as a 64-bit unsigned integer ... are
the payload length."
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterator
from typing import Final, NamedTuple

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "PING",
    "PONG",
    "TEXT",
    "FrameHeader",
    "HandshakeError",
    "accept_key",
    "check_handshake_response",
    "handshake_request",
    "iter_payloads",
    "masked_frame",
    "new_key",
    "parse_header",
    "split_frames",
]

#: Opcodes (RFC 6455 section 5.2).
CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA

#: RFC 6455 section 1.3: the GUID the server appends to the key before hashing.
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_END_OF_HEAD: Final = b"\r\n\r\n"


class HandshakeError(Exception):
    """The server refused or garbled the opening handshake."""


class FrameHeader(NamedTuple):
    """Where a frame's payload lies in a buffer, and what kind of frame it is."""

    fin: bool
    opcode: int
    start: int
    """Offset of the first payload byte."""
    stop: int
    """Offset one past the last payload byte: where the next frame begins."""


def handshake_request(host: str, port: int, path: str, key: bytes,
                      subprotocol: str | None) -> bytes:
    """The client's opening handshake (RFC 6455 section 4.1); ``key`` is the base64 of
    16 random bytes. No extension is offered, so server frames come uncompressed."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def new_key() -> bytes:
    """A fresh ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16))


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def check_handshake_response(buffer: bytes, key: bytes) -> int | None:
    """Where the frames begin in ``buffer`` once it holds the whole response head, or
    ``None`` while it does not yet.

    Raises :class:`HandshakeError` unless the status is 101 with the right
    ``Sec-WebSocket-Accept`` (RFC 6455 section 4.2.2).
    """
    end = buffer.find(_END_OF_HEAD)
    if end < 0:
        if len(buffer) > 16384:
            raise HandshakeError("no end of the response head within 16 KiB")
        return None
    head = buffer[:end].decode("latin-1").split("\r\n")
    status = head[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise HandshakeError(f"the server answered {head[0]!r}, not 101")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept", "").encode() != accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept")
    return end + len(_END_OF_HEAD)


def masked_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """A final client frame: RFC 6455 section 5.3, "The masking key is a 32-bit value
    chosen at random by the client", and "a client MUST mask all frames that it sends"."""
    mask = os.urandom(4) if mask is None else mask
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    # XOR the payload with the key repeated: one big-int operation, not a loop per byte.
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big")
    return header + mask + masked


def parse_header(buffer: bytes, pos: int) -> FrameHeader | None:
    """The frame starting at ``buffer[pos]``, or ``None`` if it is not all there yet.

    Server frames are never masked (RFC 6455 section 5.1: "A server MUST NOT mask any
    frames that it sends to the client"); a masked one raises :exc:`ValueError`.
    """
    available = len(buffer) - pos
    if available < 2:
        return None
    first, second = buffer[pos], buffer[pos + 1]
    if second & 0x80:
        raise ValueError("a server frame is masked")
    length = second & 0x7F
    start = pos + 2
    if length == 126:
        if available < 4:
            return None
        length = (buffer[pos + 2] << 8) | buffer[pos + 3]
        start = pos + 4
    elif length == 127:
        if available < 10:
            return None
        length = int.from_bytes(buffer[pos + 2:pos + 10], "big")
        start = pos + 10
    stop = start + length
    if stop > len(buffer):
        return None
    return FrameHeader(bool(first & 0x80), first & 0x0F, start, stop)


def split_frames(buffer: bytes) -> tuple[list[FrameHeader], int]:
    """Every whole frame in ``buffer`` and where the unparsed rest begins (for tests and
    the slow paths; the load generator inlines this loop)."""
    frames = []
    pos = 0
    while (header := parse_header(buffer, pos)) is not None:
        frames.append(header)
        pos = header.stop
    return frames, pos


def iter_payloads(buffer: bytes) -> Iterator[tuple[int, bytes]]:
    """``(opcode, payload)`` of every whole frame in ``buffer``."""
    frames, _ = split_frames(buffer)
    for frame in frames:
        yield frame.opcode, buffer[frame.start:frame.stop]
