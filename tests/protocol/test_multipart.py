"""Live image stream parts, sans-IO (protocol/multipart.py), and the image stream's format
(bindings/sse.py's IMAGE_STREAM) beside SSE's."""

from __future__ import annotations

import datetime
import re

import orjson
import pytest

from tests.helpers.mjpeg import PartParser
from trio_things.bindings.sse import EVENT_STREAM, IMAGE_STREAM
from trio_things.errors import LocalProtocolError
from trio_things.protocol import commands as c
from trio_things.protocol import multipart, sse

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"
FRAME = c.FramePublished(thing="cam", name="video", frame=JPEG)


def test_a_frame_is_one_part_with_its_type_and_length() -> None:
    encoded = multipart.encoder_for("image/jpeg")(FRAME)
    assert encoded == (b"--" + multipart.BOUNDARY.encode() + b"\r\n"
                       b"Content-Type: image/jpeg\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(JPEG) + JPEG + b"\r\n")
    assert encoded == multipart.part("image/jpeg", JPEG)
    parser = PartParser(multipart.BOUNDARY)
    for cut in (1, 10, len(encoded) - 3, len(encoded) - 1):  # split anywhere
        parser = PartParser(multipart.BOUNDARY)
        parts = parser.feed(encoded[:cut]) + parser.feed(encoded[cut:])
        assert [(p.headers["content-type"], p.body) for p in parts] == [("image/jpeg", JPEG)]


def test_the_content_type_names_the_boundary_which_a_browser_can_parse() -> None:
    assert multipart.CONTENT_TYPE == f"multipart/x-mixed-replace; boundary={multipart.BOUNDARY}"
    # RFC 2046 section 5.1.1: 1 to 70 characters, of bcharsnospace here (no quoting).
    assert re.fullmatch(r"[0-9A-Za-z'()+_,./:=?-]{1,70}", multipart.BOUNDARY)


def test_every_viewer_of_a_media_type_shares_one_encoder() -> None:
    """Observer sets group their observers by encoder: one encoding per frame needs
    one encoder object per media type."""
    assert multipart.encoder_for("image/jpeg") is multipart.encoder_for("image/jpeg")
    assert multipart.encoder_for("image/png") is not multipart.encoder_for("image/jpeg")
    png = multipart.encoder_for("image/png")(FRAME)
    assert b"\r\nContent-Type: image/png\r\n" in png


def test_the_frame_is_not_copied_before_it_is_encoded() -> None:
    frame = bytes(1000)
    assert c.FramePublished(thing="t", name="v", frame=frame).frame is frame


def test_an_image_encoder_refuses_anything_but_a_frame() -> None:
    changed = c.PropertyChanged(thing="t", name="p", value=1, id="e.1",
                                timestamp=datetime.datetime.now(datetime.UTC))
    with pytest.raises(LocalProtocolError, match="PropertyChanged"):
        multipart.encoder_for("image/jpeg")(changed)
    with pytest.raises(LocalProtocolError, match="header value"):
        multipart.encoder_for("image/jpeg\r\nX-Evil: 1")


def test_the_close_delimiter_ends_the_body() -> None:
    parser = PartParser(multipart.BOUNDARY)
    assert parser.feed(multipart.part("image/jpeg", JPEG) + multipart.CLOSE)[0].body == JPEG
    assert parser.closed


def test_an_error_after_the_head_is_a_part_of_problem_details() -> None:
    problem = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "gone"}
    chunk = IMAGE_STREAM.error(problem)
    size, _, rest = chunk.partition(b"\r\n")
    assert int(size, 16) == len(rest) - 2 and rest.endswith(b"\r\n")  # one chunk
    (part,) = PartParser(multipart.BOUNDARY).feed(rest[:-2])
    assert part.headers["content-type"] == "application/problem+json"
    assert orjson.loads(part.body) == problem


def test_an_image_stream_closes_with_the_delimiter_and_has_no_heartbeat() -> None:
    assert IMAGE_STREAM.heartbeat is None  # a comment would corrupt the body
    assert IMAGE_STREAM.closing("too slow") == sse.chunk(multipart.CLOSE) + sse.END
    assert b"too slow" not in IMAGE_STREAM.closing("too slow")


def test_the_event_stream_format_is_what_sse_always_wrote() -> None:
    assert EVENT_STREAM.heartbeat == sse.HEARTBEAT
    assert EVENT_STREAM.closing("too slow") == sse.closing_comment("too slow") + sse.END
    assert EVENT_STREAM.error({"status": 404}) == sse.chunk(sse.error_message({"status": 404}))
