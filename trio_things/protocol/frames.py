"""Server WebSocket text frames, built once and written by the relay as they are.

Why not ``send_message``: the cost of a WebSocket server is per write and per task
switch, not per JSON encode (``docs/design.md``, "Measured costs": at C = 100, a server
that encodes each update once but calls ``send_message`` for each client in turn spends
25.3 us of CPU per delivery, trio-things 6.6 us; ``make bench``). So a notification is
encoded once, framed once, and the same bytes are queued for every observer.

RFC 6455 section 5.1: "A server MUST NOT mask any frames that it sends to the client."
With no extension negotiated (RSV1-3 zero), a server frame's bytes depend on nothing
but its payload, so every client can receive byte-identical frames.

RFC 6455 section 5.2 (base framing)::

     0                   1                   2                   3
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |

"Payload length: 7 bits, 7+16 bits, or 7+64 bits ... If 0-125, that is the payload
length. If 126, the following 2 bytes interpreted as a 16-bit unsigned integer are the
payload length. If 127, the following 8 bytes interpreted as a 64-bit unsigned integer
(the most significant bit MUST be 0) are the payload length. Multibyte length
quantities are expressed in network byte order." And "the minimal number of bytes MUST
be used to encode the length".
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = ["CLOSE_FRAME_START", "MAX_PAYLOAD", "ping_frame", "text_frame", "text_frame_header"]

#: FIN set, RSV1-3 clear, opcode 0x1 (text frame).
_FIN_TEXT: Final = 0x81
#: FIN set, RSV1-3 clear, opcode 0x9 (ping).
_FIN_PING: Final = 0x89
#: The first byte of every close frame with no extension negotiated: FIN set (control
#: frames are never fragmented), RSV1-3 clear, opcode 0x8.
CLOSE_FRAME_START: Final = bytes((0x88,))
#: RFC 6455 section 5.5: "All control frames MUST have a payload length of 125 bytes or
#: less and MUST NOT be fragmented."
MAX_CONTROL_PAYLOAD: Final = 125
#: RFC 6455 section 5.2: "the most significant bit MUST be 0".
MAX_PAYLOAD: Final = (1 << 63) - 1

_SHORT: Final = struct.Struct("!BBH")
_LONG: Final = struct.Struct("!BBQ")
#: Headers of payloads shorter than 126 bytes: precomputed, they are most frames.
_SMALL_HEADERS: Final = tuple(bytes((_FIN_TEXT, n)) for n in range(126))


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, final text frame whose UTF-8 payload is ``length`` bytes.

    Raises :exc:`ValueError` for a negative length or one beyond :data:`MAX_PAYLOAD`.
    """
    if length < 126:
        if length < 0:
            raise ValueError(f"a frame's length cannot be negative: {length}")
        return _SMALL_HEADERS[length]
    if length < 1 << 16:
        return _SHORT.pack(_FIN_TEXT, 126, length)
    if length > MAX_PAYLOAD:
        raise ValueError(f"a frame's payload cannot exceed {MAX_PAYLOAD} bytes")
    return _LONG.pack(_FIN_TEXT, 127, length)


def text_frame(payload: bytes) -> bytes:
    """A whole unmasked, final text frame carrying ``payload`` (UTF-8 JSON)."""
    return text_frame_header(len(payload)) + payload


def ping_frame(payload: bytes = b"") -> bytes:
    """A whole unmasked ping frame (RFC 6455 section 5.5.2); the peer answers it with a
    pong carrying the same ``payload``, at most 125 bytes (:exc:`ValueError` beyond)."""
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(f"a control frame's payload cannot exceed {MAX_CONTROL_PAYLOAD} bytes")
    return bytes((_FIN_PING, len(payload))) + payload
