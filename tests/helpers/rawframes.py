"""Client frames built by hand, well formed or not: what a misbehaving client sends.

wsproto's client builds only valid frames; the frame guard's tests and the flood tests
need every malformed one too (unmasked, reserved bits, non-minimal lengths...).
"""

from __future__ import annotations

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MASK = b"\x37\xfa\x21\x3d"


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          masked: bool = True, length_bytes: int | None = None, mask: bytes = MASK) -> bytes:
    """A client frame, malformed on request: ``rsv`` (0-7) in the reserved bits, unmasked,
    or its length in ``length_bytes`` (0, 2 or 8) more bytes than it needs."""
    n = len(payload)
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 1 << 16 else 8
    head = bytes(((0x80 if fin else 0) | rsv << 4 | opcode,))
    flag = 0x80 if masked else 0
    if length_bytes == 0:
        head += bytes((flag | n,))
    elif length_bytes == 2:
        head += bytes((flag | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((flag | 127,)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(CLOSE, code.to_bytes(2, "big") + reason)
