"""Limits on the frames a WebSocket client sends, checked before any library buffers them.

Why frames and not only messages: trio-websocket keeps one list entry per fragment of a
message, and counts a message's size in payload bytes only, so a client that sends empty
continuation frames grows the server (4 connections x 400,000 of them: 18 MB and 44 s of
CPU) and never reaches ``max_message_bytes``; the message rate limit counts messages,
so a flood of empty frames or pings was limited by nothing and held the server at 100%
CPU, long after the flooders left (on frames already buffered). So the connection's
:class:`~trio_things.transport.upgrade.UpgradeStream`, which sees every byte first, feeds
them to a :class:`FrameGuard`: it reads frame *headers* as the bytes arrive (the payload
is skipped, never kept), counts frames per second (a token bucket,
:class:`~trio_things.protocol.rate.RequestRate`) and fragments per message, and says
whether each read may go on to trio-websocket. A flooder is stopped in the read that
breaks a limit; nothing from it on is parsed.

Why protocol errors too: wsproto finds them as well, but trio-websocket then drops the
TCP connection without a close frame. Found here first, the offending frame never
reaches wsproto, and the server can close the connection as RFC 6455 section 7.1.7 asks
("SHOULD send a Close frame with an appropriate status code"): 1002 for a malformed
frame, 1007 for text that is not UTF-8 (section 7.4.1). The checks are wsproto's, so
the two agree: what this guard passes, wsproto accepts (``tests/protocol/
test_frame_guard.py`` checks it against wsproto on generated frames).

RFC 6455 section 5.2 (base framing; client frames are always masked, section 5.3)::

     0                   1                   2                   3
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               |Masking-key, if MASK set to 1  |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |

Pure: bytes and the time in, a count out; no socket, no clock, no Trio.
"""

from __future__ import annotations

import codecs
from typing import Final

import attrs

from trio_things.protocol.limits import WebSocketLimits
from trio_things.protocol.rate import RequestRate

__all__ = [
    "INVALID_PAYLOAD_CLOSE_CODE",
    "POLICY_CLOSE_CODE",
    "PROTOCOL_ERROR_CLOSE_CODE",
    "FrameGuard",
    "Violation",
]

#: "1002 indicates that an endpoint is terminating the connection due to a protocol error."
PROTOCOL_ERROR_CLOSE_CODE: Final = 1002
#: "1007 indicates that an endpoint is terminating the connection because it has
#: received data within a message that was not consistent with the type of the message
#: (e.g., non-UTF-8 [RFC3629] data within a text message)."
INVALID_PAYLOAD_CLOSE_CODE: Final = 1007
#: "1008 indicates that an endpoint is terminating the connection because it has
#: received a message that violates its policy": here, too many frames or fragments.
POLICY_CLOSE_CODE: Final = 1008

_CONTINUATION: Final = 0x0
_TEXT: Final = 0x1
_CLOSE: Final = 0x8
_OPCODES: Final = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})
#: RFC 6455 section 5.5: "All control frames MUST have a payload length of 125 bytes or
#: less and MUST NOT be fragmented."
_MAX_CONTROL_PAYLOAD: Final = 125
#: Close codes a peer may send, as wsproto accepts them (so that a close frame this guard
#: passes is one wsproto accepts): 1000-1003 and 1007-1011 (RFC 6455 section 7.4.1;
#: 1004 is reserved, and 1005, 1006 and 1015 "MUST NOT be set as a status code in a
#: Close control frame"), 1012 and 1013 (registered with IANA since), and 3000-4999
#: (section 7.4.2: libraries, frameworks, applications). 1014 is registered too, but
#: wsproto refuses it, and so do we.
_PEER_CLOSE_CODES: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                      1011, 1012, 1013}) | frozenset(range(3000, 5000))

#: ``_XOR[k]`` maps each byte to itself XOR ``k``: a ``bytes.translate`` table.
_XOR: Final = tuple(bytes(b ^ k for b in range(256)) for k in range(256))

# What the payload bytes of the current frame are checked for.
_SKIP: Final = 0
_UTF8: Final = 1  # a text message's payload, as it arrives
_CLOSE_PAYLOAD: Final = 2  # a close frame's code and reason (at most 125 bytes, kept)
_PONG_PAYLOAD: Final = 3  # a pong's payload (at most 125 bytes, kept for the reader)
_PONG: Final = 0xA


@attrs.frozen
class Violation:
    """Why a client is to be closed: the close code and a short reason for the close frame."""

    code: int
    reason: str


class FrameGuard:
    """Reads the frame headers of one client's byte stream and enforces the frame limits.

    Feed it every byte the client sends after the opening handshake, in order
    (:meth:`feed`); it answers whether they may be passed on to the WebSocket library.
    Once it finds a :class:`Violation` (:attr:`violation`), it passes nothing more: the
    caller closes the connection with that code and stops reading.

    The limits (each a :class:`~trio_things.protocol.limits.WebSocketLimits` field):

    - ``max_frames_per_second`` sustained, after a burst of ``frame_burst``: every frame
      counts (data, continuation, ping, pong, close), empty or not; one more closes
      with 1008.
    - ``max_fragments_per_message``: the frames of one message, its first included; one
      more closes with 1008.

    Memory: a few fields, the header being read (at most 14 bytes), a close frame's
    payload (at most 125 bytes) and, within a text message, a UTF-8 decoder's state
    (at most 3 bytes). Payloads are never kept: a text message's bytes are unmasked and
    checked as they pass, and forgotten.
    """

    def __init__(self, *, max_frames_per_second: float, frame_burst: int,
                 max_fragments_per_message: int) -> None:
        self.max_frames_per_second = max_frames_per_second
        self.max_fragments_per_message = max_fragments_per_message
        self._rate = RequestRate(rate=max_frames_per_second, burst=frame_burst)
        self.violation: Violation | None = None
        """Why the client is to be closed, once it is; then nothing more is passed."""
        self.frames = 0
        """Frame headers read so far (the frame that broke a limit included)."""
        self._closed = False  # a valid close frame was read: the rest is not read
        self._head = bytearray()  # the header being read, while it spans reads
        self._left = 0  # payload bytes of the current frame still to come
        self._opcode = 0
        self._final = False
        self._mask = b""
        self._mask_at = 0  # where in the masking key the next payload byte falls
        self._check = _SKIP
        self._close_payload = bytearray()  # a close frame's or a pong's payload
        self.pongs: list[bytes] = []
        """The payloads of the pongs read by the last :meth:`feed`s, unmasked, for the
        caller to take (and clear): they say how far the client has read
        (:mod:`trio_things.protocol.credit`). At most one per frame the rate allows."""
        self._message: int | None = None  # the opcode of the message in progress
        self._fragments = 0
        self._utf8: codecs.IncrementalDecoder | None = None

    @classmethod
    def from_limits(cls, limits: WebSocketLimits) -> FrameGuard:
        """A guard enforcing ``limits``' frame limits."""
        return cls(max_frames_per_second=limits.max_frames_per_second,
                   frame_burst=limits.frame_burst,
                   max_fragments_per_message=limits.max_fragments_per_message)

    def feed(self, data: bytes | bytearray | memoryview, now: float) -> bool:
        """Read ``data``, the next bytes from the client, which arrived at ``now``
        (seconds, any monotonic clock); return whether they may be passed on.

        False when a frame in ``data`` breaks a limit (:attr:`violation` says why), and
        from then on. None of ``data`` is to be passed then, not even the frames before
        the offending one: the WebSocket library must be idle when the server closes
        (trio-websocket answering a ping after our close frame is an error in its
        reader), and RFC 6455 section 7.1.7 asks an endpoint that fails a connection to
        process nothing more of it anyway.
        """
        if self.violation is not None:
            return False
        if self._closed:
            return True
        n = len(data)
        i = 0
        head = self._head
        while i < n:
            if self._left:
                take = min(self._left, n - i)
                if self._check and not self._check_payload(data[i:i + take]):
                    return False
                self._left -= take
                i += take
                if not self._left and not self._end_frame():
                    return False
            else:
                if len(head) < 2:
                    take = min(2 - len(head), n - i)
                    head += data[i:i + take]
                    i += take
                    if len(head) < 2:
                        break
                    if not self._check_first_bytes(head[0], head[1]):
                        return False
                short = head[1] & 0x7F
                size = 6 if short < 126 else 8 if short == 126 else 14
                if len(head) < size:
                    take = min(size - len(head), n - i)
                    head += data[i:i + take]
                    i += take
                    if len(head) < size:
                        break
                if not self._begin_frame(head, size, now):
                    return False
                head.clear()
                if not self._left and not self._end_frame():
                    return False
            if self._closed:
                break
        return True

    @property
    def between_frames(self) -> bool:
        """Whether the bytes fed so far end where a frame ends: no header or payload is
        half read."""
        return not self._head and not self._left

    def _fail(self, code: int, reason: str) -> bool:
        self.violation = Violation(code=code, reason=reason)
        return False

    def _check_first_bytes(self, first: int, second: int) -> bool:
        """What the first two bytes of a header say; False (and :attr:`violation`) if
        the frame is malformed (the checks wsproto makes on a header)."""
        opcode = first & 0x0F
        if opcode not in _OPCODES:
            return self._fail(PROTOCOL_ERROR_CLOSE_CODE, f"unknown opcode {opcode:#x}")
        if opcode >= 0x8:
            if not first & 0x80:
                return self._fail(PROTOCOL_ERROR_CLOSE_CODE, "a fragmented control frame")
            if second & 0x7F > _MAX_CONTROL_PAYLOAD:
                return self._fail(PROTOCOL_ERROR_CLOSE_CODE,
                                  "a control frame longer than 125 bytes")
        if first & 0x70:
            return self._fail(PROTOCOL_ERROR_CLOSE_CODE,
                              "reserved bits set, and no extension was negotiated")
        if not second & 0x80:
            return self._fail(PROTOCOL_ERROR_CLOSE_CODE, "an unmasked client frame")
        return True

    def _begin_frame(self, head: bytearray, size: int, now: float) -> bool:
        """A whole header (``size`` bytes of ``head``): count the frame, check where it
        stands in its message, and prepare for its payload."""
        short = head[1] & 0x7F
        if short < 126:
            length = short
        else:
            length = int.from_bytes(head[2:size - 4], "big")
            if length < 126 or (short == 127 and length < 1 << 16):
                return self._fail(PROTOCOL_ERROR_CLOSE_CODE,
                                  "a payload length not in the fewest bytes")
            if length >> 63:
                return self._fail(PROTOCOL_ERROR_CLOSE_CODE,
                                  "a 64-bit payload length with the high bit set")
        self.frames += 1
        opcode = head[0] & 0x0F
        data_frame = opcode < 0x8
        if data_frame:
            if opcode == _CONTINUATION:
                if self._message is None:
                    return self._fail(PROTOCOL_ERROR_CLOSE_CODE,
                                      "a continuation frame with no message to continue")
            elif self._message is not None:
                return self._fail(PROTOCOL_ERROR_CLOSE_CODE,
                                  "a new message began before the last one ended")
        if not self._rate.allow(now):
            return self._fail(POLICY_CLOSE_CODE,
                              f"more than {self.max_frames_per_second:g} frames per second")
        if data_frame:
            if opcode == _CONTINUATION:
                self._fragments += 1
                if self._fragments > self.max_fragments_per_message:
                    return self._fail(
                        POLICY_CLOSE_CODE,
                        f"a message in more than {self.max_fragments_per_message} fragments")
            else:
                self._message = opcode
                self._fragments = 1
                self._utf8 = _utf8_decoder() if opcode == _TEXT else None
            self._final = bool(head[0] & 0x80)
            self._check = _UTF8 if self._utf8 is not None else _SKIP
        elif opcode == _CLOSE or opcode == _PONG:
            self._check = _CLOSE_PAYLOAD if opcode == _CLOSE else _PONG_PAYLOAD
            self._close_payload.clear()
        else:
            self._check = _SKIP
        self._opcode = opcode
        self._mask = bytes(head[size - 4:size])
        self._mask_at = 0
        self._left = length
        return True

    def _check_payload(self, chunk: bytes | bytearray | memoryview) -> bool:
        """Check the next ``chunk`` of the current frame's payload."""
        plain = self._unmask(chunk)
        if self._check == _CLOSE_PAYLOAD or self._check == _PONG_PAYLOAD:
            self._close_payload += plain
            return True
        assert self._utf8 is not None
        try:
            self._utf8.decode(plain, False)
        except UnicodeDecodeError:
            return self._fail(INVALID_PAYLOAD_CLOSE_CODE, "a text message that is not UTF-8")
        return True

    def _end_frame(self) -> bool:
        """The current frame's payload is complete: end the message if it was the last
        fragment, check a close frame."""
        check, self._check = self._check, _SKIP
        if self._opcode == _CLOSE:
            return self._check_close(bytes(self._close_payload))
        if self._opcode == _PONG:
            self.pongs.append(bytes(self._close_payload))
            return True
        if self._opcode < 0x8 and self._final:
            utf8, self._utf8 = self._utf8, None
            self._message = None
            self._fragments = 0
            if check == _UTF8 and utf8 is not None:
                try:
                    utf8.decode(b"", True)
                except UnicodeDecodeError:
                    return self._fail(INVALID_PAYLOAD_CLOSE_CODE,
                                      "a text message that is not UTF-8")
        return True

    def _check_close(self, payload: bytes) -> bool:
        """RFC 6455 section 5.5.1: a close frame's body, if any, is a 2-byte code and a
        UTF-8 reason. Valid, it is the client's last frame: as wsproto does, what
        follows it is not read (trio-websocket answers it and ends the connection)."""
        if len(payload) == 1:
            return self._fail(PROTOCOL_ERROR_CLOSE_CODE, "a close frame with a 1-byte body")
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if code not in _PEER_CLOSE_CODES:
                return self._fail(PROTOCOL_ERROR_CLOSE_CODE,
                                  f"close code {code}, which a client may not send")
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                return self._fail(INVALID_PAYLOAD_CLOSE_CODE,
                                  "a close reason that is not UTF-8")
        self._closed = True
        return True

    def _unmask(self, chunk: bytes | bytearray | memoryview) -> bytearray:
        """RFC 6455 section 5.3: byte i of the payload is XORed with byte i mod 4 of the
        masking key. Four ``bytes.translate`` calls over strided slices, as wsproto
        unmasks: C speed, not a Python loop per byte."""
        plain = bytearray(chunk)
        at = self._mask_at
        self._mask_at = (at + len(plain)) % 4
        for i in range(4):
            plain[i::4] = plain[i::4].translate(_XOR[self._mask[(at + i) % 4]])
        return plain


def _utf8_decoder() -> codecs.IncrementalDecoder:
    """A strict incremental UTF-8 decoder: what wsproto checks text messages with, so a
    message this guard passes is one wsproto decodes."""
    return codecs.getincrementaldecoder("utf-8")()
