"""Server-Sent Events (``text/event-stream``), sans-IO: notifications in, bytes out.

An SSE stream is one long HTTP response whose body is a sequence of messages (the WHATWG
HTML standard, "Server-sent events"): lines ``field: value``, a blank line ending each.
Each message here carries

* ``id:`` the notification's id (:mod:`trio_things.fanout.history`), which a browser's
  ``EventSource`` (and node-wot's) sends back as ``Last-Event-ID`` when it reconnects,
  so that it is given what it missed;
* ``event:`` on the streams of a whole Thing (all its properties, all its events), the
  affordance's name, so that a browser can ``addEventListener(name, ...)``; on the
  stream of one affordance, no ``event:`` at all: node-wot (through the npm
  ``eventsource`` package) hands its application the data of *unnamed* messages only;
* ``data:`` the bare JSON value: a property's value, an event's data, or an
  invocation (as ``GET /action_invocations/{id}`` answers it, with only the log lines
  logged since the previous message, and ``logFrom``, how many came before them).

A consumer that came back after a gap is sent a message named :data:`GAP_EVENT` (a name
no affordance can have: it is no Python identifier) whose id is where it now resumes
from, and whose data says what was lost, as RFC 9457 problem details. A stream that
cannot be served after its head was sent says why in a message named
:data:`ERROR_EVENT` (not ``error``, which ``EventSource`` fires for a lost connection).

The body is sent with ``Transfer-Encoding: chunked`` (RFC 9112 section 7.1), one chunk a
message, so that each message's bytes, chunk framing included, depend on nothing but
the notification: the fan-out builds them once for every stream (the observers'
:data:`~trio_things.fanout.observers.Framer` is :func:`chunk`). A comment line
(:data:`HEARTBEAT`) every ``heartbeat`` seconds keeps proxies and NATs from closing a
quiet stream, and tells the server early that the consumer is gone.
"""

from __future__ import annotations

from typing import Any, Final, assert_never

import orjson

from trio_things.protocol import commands as c
from trio_things.protocol.accept import names as accept_names
from trio_things.protocol.invocation_json import status_change_json
from trio_things.protocol.problems import notifications_missed

__all__ = [
    "CONTENT_TYPE",
    "END",
    "ERROR_EVENT",
    "GAP_EVENT",
    "HEARTBEAT",
    "chunk",
    "closing_comment",
    "encode_named",
    "encode_value",
    "error_message",
    "position",
    "wants_event_stream",
]

#: The media type of an SSE stream.
CONTENT_TYPE: Final = "text/event-stream"
#: The name of the message that tells a consumer of a gap.
GAP_EVENT: Final = "resume-gap"
#: The name of the message that says why a stream could not be served after all.
ERROR_EVENT: Final = "stream-error"


def chunk(message: bytes) -> bytes:
    """``message`` as one chunk of a chunked body (RFC 9112 section 7.1): its size in
    hex, CRLF, the bytes, CRLF."""
    return b"%x\r\n%b\r\n" % (len(message), message)


#: A comment (ignored by every consumer), as a chunk.
HEARTBEAT: Final = chunk(b": keep-alive\n\n")
#: The last chunk: the body ends here (the stream was closed on purpose).
END: Final = b"0\r\n\r\n"


def wants_event_stream(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for ``text/event-stream`` by name (what
    ``EventSource`` sends). A wildcard does not: ``*/*`` gets the plain resource."""
    return accept_names(accept, CONTENT_TYPE)


def error_message(problem: dict[str, Any]) -> bytes:
    """A message named :data:`ERROR_EVENT` carrying RFC 9457 problem details."""
    return b"event: %b\ndata: %b\n\n" % (ERROR_EVENT.encode(), _dumps(problem))


def position(event_id: str) -> bytes:
    """A message with an id and nothing else: it sets the consumer's last id
    (``EventSource.lastEventId``) and dispatches no event (the WHATWG parser dispatches
    nothing for an empty data buffer, but keeps the id)."""
    return b"id: %b\n\n" % event_id.encode()


def closing_comment(reason: str) -> bytes:
    """A comment saying why the server ends the stream, as a chunk."""
    line = " ".join(reason.split())  # no line break may end the comment early
    return chunk(b": closing: %b\n\n" % line.encode())


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def _message(event_id: str, data: bytes, event: str | None = None) -> bytes:
    # orjson never writes a line break (only "\n" escaped inside strings), so the data
    # is one line; ids and names are ours, without line breaks either.
    if event is None:
        return b"id: %b\ndata: %b\n\n" % (event_id.encode(), data)
    return b"id: %b\nevent: %b\ndata: %b\n\n" % (event_id.encode(), event.encode(), data)


def _gap(notification: c.NotificationsMissed) -> bytes:
    return _message(notification.resume_id, _dumps(notifications_missed(
        notification.detail, last_event_id=notification.last_event_id,
        resume_id=notification.resume_id)), GAP_EVENT)


def encode_value(notification: c.Notification) -> bytes:
    """A message for the stream of one affordance: unnamed, the bare value (a gap is
    named :data:`GAP_EVENT`), to be framed with :func:`chunk`."""
    match notification:
        case c.PropertyChanged(value=value, id=event_id):
            return _message(event_id, _dumps(value))
        case c.EventEmitted(data=data, id=event_id):
            return _message(event_id, _dumps(data))
        case c.ActionStatusChanged(id=event_id):
            return _message(event_id, _dumps(status_change_json(notification)))
        case c.NotificationsMissed():
            return _gap(notification)
        case c.FramePublished():
            c.frame_for_no_dialect(notification)
        case _:
            assert_never(notification)


def encode_named(notification: c.Notification) -> bytes:
    """A message for the stream of a whole Thing: named after the property, event or
    action, the bare value as data; to be framed with :func:`chunk`."""
    match notification:
        case c.PropertyChanged(name=name, value=value, id=event_id):
            return _message(event_id, _dumps(value), name)
        case c.EventEmitted(name=name, data=data, id=event_id):
            return _message(event_id, _dumps(data), name)
        case c.ActionStatusChanged(invocation=invocation, id=event_id):
            return _message(event_id, _dumps(status_change_json(notification)), invocation.action)
        case c.NotificationsMissed():
            return _gap(notification)
        case c.FramePublished():
            c.frame_for_no_dialect(notification)
        case _:
            assert_never(notification)
