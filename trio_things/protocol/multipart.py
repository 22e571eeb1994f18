"""Live image streams (``multipart/x-mixed-replace``, MJPEG), sans-IO: frames in, bytes out.

A frame stream (``tt.frame_stream``) is served as one long HTTP response whose body is
a sequence of parts, each one whole image that replaces the one before: what a
browser's ``<img src>`` shows live, and what programs that read "MJPEG over HTTP"
expect. Each part is::

    --<boundary>\\r\\n
    Content-Type: image/jpeg\\r\\n
    Content-Length: <n>\\r\\n
    \\r\\n
    <n bytes of the frame>\\r\\n

The boundary is named in the response's ``Content-Type`` (:data:`CONTENT_TYPE`) and is
the same for every stream: a part's bytes then depend on nothing but the frame, so the
fan-out builds them once for every viewer (the observers'
:data:`~trio_things.fanout.observers.Encoder` is :func:`encoder_for` the stream's media
type), and frames them once as a chunk of the chunked response (the SSE binding's
framer, ``protocol/sse.py``'s ``chunk``). ``Content-Length`` lets a reader skip the
frame without scanning it; readers that scan for the boundary instead (browsers) are
safe too, as the boundary is long and random enough never to occur in a frame by chance.

A stream that ends on purpose ends with the close delimiter (:data:`CLOSE`, then the
last chunk). A stream that cannot be served after its head was sent says why in a part
of RFC 9457 problem details (:func:`problem_part`), which an ``<img>`` ignores and a
program can read. There is no heartbeat: a multipart body has no room for a comment
between parts, and an ``<img>`` that is shown nothing new keeps the last frame.

RFC 2046 section 5.1 is the multipart syntax; ``x-mixed-replace`` is the WHATWG HTML
standard's (it is not registered with IANA, and browsers are what define it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final

import orjson

from trio_things.errors import LocalProtocolError
from trio_things.protocol import commands as c
from trio_things.protocol.problems import PROBLEM_CONTENT_TYPE

__all__ = [
    "BOUNDARY",
    "CLOSE",
    "CONTENT_TYPE",
    "MEDIA_TYPE",
    "encoder_for",
    "part",
    "problem_part",
]

#: The boundary between parts: a fixed, random token (RFC 2046 allows up to 70
#: characters), so that every stream's parts are the same bytes for every viewer.
BOUNDARY: Final = "trio-things-frame-4b1d7e0c9a2f4e86a5c3"
#: The media type of the stream itself, without its parameter.
MEDIA_TYPE: Final = "multipart/x-mixed-replace"
#: The response's ``Content-Type``.
CONTENT_TYPE: Final = f"{MEDIA_TYPE}; boundary={BOUNDARY}"
#: The close delimiter: no part follows (to be framed as the stream's last chunk).
CLOSE: Final = b"--%b--\r\n" % BOUNDARY.encode()

_DELIMITER: Final = b"--%b\r\n" % BOUNDARY.encode()


def part(media_type: str, body: bytes) -> bytes:
    """One part: the delimiter, ``Content-Type`` and ``Content-Length``, ``body``, and the
    CRLF that ends it. ``media_type`` must be a header value (no CR or LF)."""
    return b"%bContent-Type: %b\r\nContent-Length: %d\r\n\r\n%b\r\n" % (
        _DELIMITER, media_type.encode("latin-1"), len(body), body)


@functools.cache
def encoder_for(media_type: str) -> Callable[[c.Notification], bytes]:
    """The encoder of the frames of one media type: a :class:`~trio_things.protocol.
    commands.FramePublished` in, its part out. The same function for the same media
    type, so that every viewer of a stream shares one encoding per frame (observer sets
    group their observers by encoder)."""
    if "\r" in media_type or "\n" in media_type:
        raise LocalProtocolError(f"{media_type!r} cannot be a header value")
    header = b"%bContent-Type: %b\r\nContent-Length: " % (
        _DELIMITER, media_type.encode("latin-1"))

    def encode_frame(notification: c.Notification) -> bytes:
        if not isinstance(notification, c.FramePublished):
            raise LocalProtocolError(
                f"a frame stream's viewer was handed a {type(notification).__name__}")
        frame = notification.frame
        return b"%b%d\r\n\r\n%b\r\n" % (header, len(frame), frame)

    encode_frame.__qualname__ = f"encoder_for({media_type!r})"
    return encode_frame


def problem_part(problem: dict[str, Any]) -> bytes:
    """A part of RFC 9457 problem details: why a stream whose head was sent ends."""
    return part(PROBLEM_CONTENT_TYPE, orjson.dumps(problem))
