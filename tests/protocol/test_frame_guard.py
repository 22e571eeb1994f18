"""The frame guard: frame limits and framing errors, read from the client's bytes alone.

Sans-IO: bytes and times in, verdicts out; no socket, no clock. Its framing checks are
wsproto's (the guard stops what wsproto would refuse, so that the server can send a close
frame first), so the property test below holds it to wsproto on generated frames.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, ParseFailed

from tests.helpers.rawframes import (
    BINARY,
    CLOSE,
    CONTINUATION,
    MASK,
    PING,
    PONG,
    TEXT,
    close_frame,
    frame,
)
from trio_things.protocol.frame_guard import (
    INVALID_PAYLOAD_CLOSE_CODE,
    POLICY_CLOSE_CODE,
    FrameGuard,
    Violation,
)
from trio_things.protocol.limits import WebSocketLimits


def guard(*, rate: float = 1e9, burst: int = 10**9, fragments: int = 10**9) -> FrameGuard:
    return FrameGuard(max_frames_per_second=rate, frame_burst=burst,
                      max_fragments_per_message=fragments)


def feed_bytewise(g: FrameGuard, data: bytes, now: float = 0.0) -> bool:
    return all(g.feed(data[i:i + 1], now) for i in range(len(data)))


# Frames of every kind and length encoding, as a client may send them.
OPEN = (
    frame(TEXT, "héllo, wörld ✓".encode())
    + frame(TEXT, "é".encode()[:1], fin=False)  # a character split across fragments
    + frame(PING, b"are you there")  # control frames may come between fragments
    + frame(CONTINUATION, "é".encode()[1:] + b"x" * 200, fin=False)
    + frame(CONTINUATION, b"", fin=True)
    + frame(BINARY, bytes(range(256)) * 300)  # 76,800 bytes: a 64-bit length
    + frame(PONG)
    + frame(TEXT, b"")
)
VALID = OPEN + close_frame(1000, "bye ✓".encode())
VALID_FRAMES = 9


@pytest.mark.parametrize("bytewise", [False, True])
def test_valid_frames_pass_however_they_are_split(bytewise: bool) -> None:
    g = guard()
    assert (feed_bytewise(g, VALID) if bytewise else g.feed(VALID, 0.0))
    assert g.violation is None
    assert g.frames == VALID_FRAMES


def test_the_defaults_come_from_websocket_limits() -> None:
    limits = WebSocketLimits(max_frames_per_second=5.0, frame_burst=2,
                             max_fragments_per_message=3)
    g = FrameGuard.from_limits(limits)
    assert (g.max_frames_per_second, g.max_fragments_per_message) == (5.0, 3)
    assert WebSocketLimits().max_frames_per_second > WebSocketLimits().max_requests_per_second


def test_frames_per_second_is_a_token_bucket() -> None:
    """Empty pings cost nothing by size and are no messages: they count as frames."""
    g = guard(rate=10.0, burst=3)
    assert g.feed(frame(PING) * 3, 0.0)
    assert g.feed(frame(PING), 0.1)  # one token back
    assert not g.feed(frame(PING), 0.1)
    assert g.violation == Violation(POLICY_CLOSE_CODE, "more than 10 frames per second")
    assert not g.feed(frame(PING), 100.0)  # once violated, nothing more is passed
    assert g.frames == 5


def test_every_kind_of_frame_counts() -> None:
    g = guard(rate=0.001, burst=5)
    assert g.feed(frame(TEXT, b"x", fin=False) + frame(CONTINUATION, fin=False)
                  + frame(PONG) + frame(PING) + frame(CONTINUATION), 0.0)
    assert not g.feed(frame(BINARY), 0.0)
    assert g.violation is not None and g.violation.code == POLICY_CLOSE_CODE


def test_a_flood_in_one_read_is_refused_whole() -> None:
    """The frames before the one over the limit are not passed either: the library must
    be idle when the server closes."""
    g = guard(rate=0.001, burst=10)
    assert not g.feed(frame(PING) * 11, 0.0)
    assert g.frames == 11


def test_empty_continuation_frames_are_bounded_per_message() -> None:
    g = guard(fragments=4)
    message = frame(TEXT, b"{", fin=False) + frame(CONTINUATION, fin=False) * 2
    # Four fragments are allowed, control frames between them are no fragments, and the
    # count starts over with each message.
    assert g.feed(message + frame(PING) + frame(CONTINUATION, b"}"), 0.0)
    assert g.feed(message + frame(CONTINUATION, fin=False), 0.0)
    assert not g.feed(frame(CONTINUATION), 0.0)  # the fifth
    assert g.violation == Violation(POLICY_CLOSE_CODE, "a message in more than 4 fragments")


def test_a_text_message_is_checked_as_it_arrives() -> None:
    """Invalid UTF-8 is found in the frame that holds it, before the message ends; a
    character split across reads or fragments is not invalid."""
    g = guard()
    assert feed_bytewise(g, frame(TEXT, "€uro".encode()))
    assert g.feed(frame(TEXT, b"ok ", fin=False), 0.0)
    assert not g.feed(frame(CONTINUATION, b"\xff", fin=False), 0.0)
    assert g.violation == Violation(INVALID_PAYLOAD_CLOSE_CODE,
                                    "a text message that is not UTF-8")


def test_a_text_message_may_not_end_mid_character() -> None:
    g = guard()
    assert g.feed(frame(TEXT, "€".encode()[:2], fin=False), 0.0)
    assert not g.feed(frame(CONTINUATION), 0.0)
    assert g.violation is not None and g.violation.code == INVALID_PAYLOAD_CLOSE_CODE


def test_binary_payloads_are_not_checked() -> None:
    assert guard().feed(frame(BINARY, b"\xff\xfe"), 0.0)


PROTOCOL_ERRORS = {
    "unmasked": (frame(TEXT, b"{}", masked=False), 1002, "an unmasked client frame"),
    "rsv1": (frame(TEXT, b"{}", rsv=4), 1002,
             "reserved bits set, and no extension was negotiated"),
    "rsv3": (frame(PING, rsv=1), 1002, "reserved bits set, and no extension was negotiated"),
    "opcode 3": (frame(0x3), 1002, "unknown opcode 0x3"),
    "opcode 0xb": (frame(0xB), 1002, "unknown opcode 0xb"),
    "fragmented ping": (frame(PING, fin=False), 1002, "a fragmented control frame"),
    "long ping": (frame(PING, b"x" * 126), 1002, "a control frame longer than 125 bytes"),
    "lonely continuation": (frame(CONTINUATION, b"x"), 1002,
                            "a continuation frame with no message to continue"),
    "interleaved messages": (frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"), 1002,
                             "a new message began before the last one ended"),
    "16-bit length for 5 bytes": (frame(TEXT, b"hello", length_bytes=2), 1002,
                                  "a payload length not in the fewest bytes"),
    "64-bit length for 200 bytes": (frame(BINARY, b"x" * 200, length_bytes=8), 1002,
                                    "a payload length not in the fewest bytes"),
    "64-bit length, high bit": (b"\x82\xff" + (1 << 63).to_bytes(8, "big") + MASK, 1002,
                                "a 64-bit payload length with the high bit set"),
    "close code 999": (close_frame(999), 1002, "close code 999, which a client may not send"),
    "close code 1005": (close_frame(1005), 1002,
                        "close code 1005, which a client may not send"),
    "close code 2000": (close_frame(2000), 1002,
                        "close code 2000, which a client may not send"),
    "close code 5000": (close_frame(5000), 1002,
                        "close code 5000, which a client may not send"),
    "close body of 1 byte": (frame(CLOSE, b"\x03"), 1002, "a close frame with a 1-byte body"),
    "close reason": (close_frame(1000, b"\xc3"), 1007, "a close reason that is not UTF-8"),
    "text": (frame(TEXT, b"caf\xe9"), 1007, "a text message that is not UTF-8"),
    "surrogate": (frame(TEXT, b"\xed\xa0\x80"), 1007, "a text message that is not UTF-8"),
}


def wsproto_verdict(data: bytes) -> int | None:
    """The close code wsproto's parser fails ``data`` with (a server's, so client frames
    must be masked), or None if it parses all of it."""
    protocol = FrameProtocol(client=False, extensions=[])
    protocol.receive_bytes(data)
    try:
        for _ in protocol.received_frames():
            pass
    except ParseFailed as failed:
        return int(failed.code)
    return None


@pytest.mark.parametrize("name", PROTOCOL_ERRORS)
def test_protocol_errors_are_found_with_the_close_code_wsproto_gives(name: str) -> None:
    data, code, reason = PROTOCOL_ERRORS[name]
    g = guard()
    assert g.feed(OPEN, 0.0)  # the stream is in good order until then
    assert not g.feed(data, 0.0)
    assert g.violation == Violation(code, reason)
    assert wsproto_verdict(OPEN + data) == code
    assert len(reason.encode()) <= 123  # fits a close frame, after the code


@pytest.mark.parametrize("name", PROTOCOL_ERRORS)
def test_protocol_errors_are_found_however_the_bytes_are_split(name: str) -> None:
    data, code, _ = PROTOCOL_ERRORS[name]
    g = guard()
    assert not feed_bytewise(g, data)
    assert g.violation is not None and g.violation.code == code


def test_after_a_valid_close_frame_nothing_is_read() -> None:
    """As wsproto: the close is the client's last frame, and trio-websocket answers it
    and ends the connection, so what follows costs nothing and is not judged."""
    g = guard(burst=2)
    assert g.feed(close_frame(1000) + frame(0x3) + frame(PING) * 10, 0.0)
    assert g.feed(frame(TEXT, b"\xff", masked=False), 0.0)
    assert g.violation is None and g.frames == 1


def test_every_close_code_is_judged_as_wsproto_judges_it() -> None:
    for code in range(0, 6000):
        g = guard()
        passed = g.feed(close_frame(code), 0.0)
        assert passed == (wsproto_verdict(close_frame(code)) is None), code


# --------------------------------------------------------------------------- against wsproto


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A client frame, well formed most of the time, and malformed in every way a header
    or a payload can be some of the time."""
    opcode = draw(st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE])
                  | st.integers(0, 15))
    payload = draw(st.one_of(
        st.text(max_size=8).map(str.encode),
        st.binary(max_size=8),
        st.builds(lambda code, reason: code.to_bytes(2, "big") + reason,
                  st.sampled_from([1000, 1001, 1004, 1005, 1014, 2999, 3000, 4999])
                  | st.integers(0, 65535),
                  st.text(max_size=4).map(str.encode) | st.binary(max_size=4)),
        st.integers(120, 300).map(lambda n: b"x" * n),
    ))
    n = len(payload)
    needed = 0 if n < 126 else 2
    length_bytes = draw(st.sampled_from([needed] * 8 + [2, 8]))
    return frame(opcode, payload, fin=draw(st.sampled_from([True] * 3 + [False])),
                 rsv=draw(st.sampled_from([0] * 12 + [1, 2, 4])),
                 masked=draw(st.sampled_from([True] * 15 + [False])),
                 length_bytes=max(length_bytes, needed),
                 mask=draw(st.binary(min_size=4, max_size=4)))


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A text message, split into fragments at any byte (mid-character included), with
    control frames between them; well formed but for its UTF-8 some of the time."""
    text = draw(st.text(max_size=12).map(str.encode) | st.binary(max_size=6))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=3)))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    out = b""
    for index, part in enumerate(parts):
        out += frame(TEXT if index == 0 else CONTINUATION, part,
                     fin=index == len(parts) - 1)
        if draw(st.booleans()):
            out += frame(PING, b"p")
    return out


@settings(max_examples=400, deadline=None)
@given(stream=st.lists(messages() | frames(), max_size=6).map(b"".join),
       cuts=st.lists(st.integers(0, 4000), max_size=4))
def test_the_guard_passes_exactly_what_wsproto_accepts(stream: bytes, cuts: list[int]) -> None:
    """Whatever the bytes and however they are split into reads, the guard refuses
    them exactly when wsproto would, with wsproto's close code."""
    g = guard()
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    passed = all(g.feed(stream[a:b], float(a))
                 for a, b in itertools.pairwise(bounds))
    expected = wsproto_verdict(stream)
    assert passed == (expected is None)
    assert (g.violation.code if g.violation else None) == expected
