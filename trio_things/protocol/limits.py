"""How much and how long one connection may take: the limits of each binding.

Plain values, validated when made, so that the configuration (:mod:`trio_things.config`)
can hold and check them without importing the code that enforces them
(:mod:`trio_things.transport.http` for HTTP, :mod:`trio_things.websockets` for WebSocket).
``docs/security.md`` lists every limit, its default, and what a client gets beyond it.
"""

from __future__ import annotations

import attrs

__all__ = ["HttpLimits", "WebSocketLimits"]


@attrs.frozen(kw_only=True)
class HttpLimits:
    """How much and how long one connection may take; every value must be positive."""

    max_header_bytes: int = attrs.field(default=16 * 1024, validator=attrs.validators.gt(0))
    """Request line plus headers, measured as h11 parsed them re-serialized (``name: value``
    lines, CRLFs, the blank line); beyond it the request is answered 431 and closed."""
    max_body_bytes: int = attrs.field(default=1024 * 1024, validator=attrs.validators.gt(0))
    """Request body after chunked decoding; beyond it 413 and close. A declared
    Content-Length is checked before any of the body is read."""
    idle_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    """Seconds to wait for the first byte of a request on a kept-alive connection; then
    close quietly."""
    request_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    """Seconds for a whole request (head and body) once its first byte came; then 408
    and close."""
    write_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    """Seconds one response write may take; then the connection is dropped unanswered."""
    stream_outbox_size: int = attrs.field(default=1024, validator=attrs.validators.gt(0))
    """Events and action status an event stream (SSE) may have pending before it is
    closed (properties are coalesced and never count); the consumer comes back with its
    last id and is sent what it missed, as the server's replay ring still holds it."""
    stream_write_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    """Seconds an event stream's writes may make no progress (a consumer that stopped
    reading) before the stream is dropped."""
    stream_heartbeat: float = attrs.field(default=15.0, validator=attrs.validators.gt(0))
    """Seconds a quiet event stream waits before it sends a comment line: proxies and
    NATs then keep it open, and a consumer that is gone is noticed."""


@attrs.frozen(kw_only=True)
class WebSocketLimits:
    """How much and how long one WebSocket connection may take; all must be positive."""

    max_message_bytes: int = attrs.field(default=64 * 1024, validator=attrs.validators.gt(0))
    """The largest message a client may send; a larger one closes the connection with
    1009. Requests are small JSON objects; 64 KiB leaves room for large writes."""
    outbox_size: int = attrs.field(default=1024, validator=attrs.validators.gt(0))
    """Events, action status and replies a client may have pending before it is closed
    with 1008 (properties are coalesced and never count). At ~200 bytes a message,
    about 200 KiB per connection at worst."""
    write_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    """Seconds one write of everything pending may take (its wait for the socket's write
    lock included) before the connection is dropped: a client that stopped reading."""
    keepalive_interval: float = attrs.field(default=20.0, validator=attrs.validators.gt(0))
    """Seconds a client may send nothing before it is pinged."""
    keepalive_timeout: float = attrs.field(default=20.0, validator=attrs.validators.gt(0))
    """Seconds after a ping with nothing from the client (a pong or anything else)
    before the connection is closed with 1011."""
    max_requests_per_second: float = attrs.field(default=200.0,
                                                 validator=attrs.validators.gt(0))
    """The sustained rate of messages a client may send. Above it (after a burst of
    ``request_burst``) each message is answered 429 without being run."""
    request_burst: int = attrs.field(default=200, validator=attrs.validators.gt(0))
    """Messages a client may send at once; also how many 429 answers in a row it gets
    before it is closed with 1008, if it keeps flooding."""
    handshake_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    """Seconds a client has to complete the opening handshake."""
    close_timeout: float = attrs.field(default=0.25, validator=attrs.validators.gt(0))
    """Seconds we wait for the peer to answer our close frame. Short on purpose: at
    shutdown trio-websocket's reader is cancelled too, so the answer is never read and
    this always elapses; Ctrl-C must still end ``serve`` within a second."""
    max_frames_per_second: float = attrs.field(default=1000.0,
                                               validator=attrs.validators.gt(0))
    """The sustained rate of frames a client may send (data, continuation, ping, pong and
    close frames alike, empty or not), counted as the bytes arrive, before they are
    parsed into messages (:mod:`trio_things.protocol.frame_guard`). Above it (after a
    burst of ``frame_burst``) the connection is closed with 1008 and no more of it is
    read. Five times ``max_requests_per_second``: a client within the message rate that
    sends each message in a frame or a few stays well below it, while a flood of empty
    frames or pings, which the message rate never sees, is stopped within a burst. Keep
    it above ``max_requests_per_second``."""
    frame_burst: int = attrs.field(default=500, validator=attrs.validators.gt(0))
    """Frames a client may send at once (the size of the token bucket that
    ``max_frames_per_second`` refills). 500: a whole ``request_burst`` of messages sent
    at once fits with room to spare, and a flooder that reconnects as soon as it is
    closed gets at most that many frames processed per connection (``python -m
    benchmarks.floods``: ten such flooders took a well-behaved client's p99 round trip
    to 28 ms with 500, to 42-68 ms with 1000)."""
    max_fragments_per_message: int = attrs.field(default=128, validator=attrs.validators.gt(0))
    """Frames one message may come in (its first frame included); one more closes the
    connection with 1008. Browsers send a message in one frame or in a few large ones;
    128 lets a client send a whole ``max_message_bytes`` message in 512-byte fragments,
    and bounds what a message of empty fragments costs (trio-websocket keeps a list
    entry per fragment). Raise it with ``max_message_bytes``."""
    backlog_seconds: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """How many seconds of reading a client may have waiting for it, written but unread:
    beyond it the server writes nothing more until the client's pongs confirm it has
    read on, and what changes meanwhile is coalesced to the latest value
    (:mod:`trio_things.protocol.credit`). What bounds how old the values a slow reader
    gets are: about this many seconds."""
