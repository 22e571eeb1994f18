"""Pre-built server text frames, checked against wsproto's own encoder and decoder."""

from __future__ import annotations

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from trio_things.protocol.frames import MAX_PAYLOAD, ping_frame, text_frame, text_frame_header

#: Each side of the 7-bit, 16-bit and 64-bit length encodings (RFC 6455 section 5.2).
LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def wsproto_frame(text: str) -> bytes:
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(text))


def text_of(length: int) -> str:
    return "".join(chr(ord("a") + i % 26) for i in range(length))


@pytest.mark.parametrize("length", LENGTHS)
def test_text_frame_matches_wsproto(length: int) -> None:
    text = text_of(length)
    assert text_frame(text.encode()) == wsproto_frame(text)


@pytest.mark.parametrize("length", LENGTHS)
def test_header_is_wsproto_frame_without_payload(length: int) -> None:
    text = text_of(length)
    header = text_frame_header(length)
    assert header == wsproto_frame(text)[:-length or None]
    assert len(header) == (2 if length < 126 else 4 if length < 65536 else 10)


@pytest.mark.parametrize("length", LENGTHS)
def test_client_parses_frame_back(length: int) -> None:
    text = text_of(length)
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(text_frame(text.encode()))
    frames = list(client.received_frames())
    assert len(frames) == 1
    frame = frames[0]
    assert frame.opcode is Opcode.TEXT
    assert frame.frame_finished
    assert frame.message_finished
    assert frame.payload == text


def test_utf8_payload_length_counts_bytes() -> None:
    text = "é" * 100  # 200 bytes: needs the 16-bit length although 100 characters
    assert text_frame(text.encode()) == wsproto_frame(text)


@pytest.mark.parametrize("length", [-1, -126, MAX_PAYLOAD + 1])
def test_impossible_lengths_raise(length: int) -> None:
    with pytest.raises(ValueError):
        text_frame_header(length)


def test_largest_length_has_top_bit_clear() -> None:
    header = text_frame_header(MAX_PAYLOAD)
    assert header[:2] == b"\x81\x7f"
    assert header[2] & 0x80 == 0


@pytest.mark.parametrize("payload", [b"", b"trio-things keepalive", b"x" * 125])
def test_ping_frame_is_what_wsproto_parses_as_a_ping(payload: bytes) -> None:
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(ping_frame(payload))
    (frame,) = list(client.received_frames())
    assert frame.opcode is Opcode.PING
    assert frame.payload == payload


def test_a_ping_payload_over_125_bytes_is_refused() -> None:
    with pytest.raises(ValueError):
        ping_frame(b"x" * 126)
