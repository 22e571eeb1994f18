"""HTTP long-poll, sans-IO: what a request waiting for the next change is handed.

A long-poll request observes through the fan-out path like any connection
(``docs/design.md``, "Observing over HTTP"): for the time it waits, it is an observer
with an Outbox of its own, and the first message it is handed is its answer. That
message is :func:`encode_poll`'s: the notification's id, a line feed, and the bare JSON
value (a property's value, an event's data); :func:`split_poll` takes it apart into the
``Last-Event-ID`` response header and the body. JSON never holds a raw line feed, so the
first one ends the id.
"""

from __future__ import annotations

from typing import Any, Final, assert_never

import orjson

from trio_things.protocol import commands as c
from trio_things.protocol.invocation_json import invocation_json

__all__ = ["ID_HEADER", "bare", "encode_poll", "split_poll"]

#: The response header that names the id of the notification answered, and the request
#: header a client sends it back in, to be answered with what came after: the same
#: header SSE consumers send when they reconnect.
ID_HEADER: Final = "last-event-id"


def encode_poll(notification: c.Notification) -> bytes:
    """``id`` LF ``value``: what a waiting long-poll request is handed."""
    value: Any
    match notification:
        case c.PropertyChanged(value=value, id=event_id):
            pass
        case c.EventEmitted(data=value, id=event_id):
            pass
        case c.ActionStatusChanged(invocation=invocation, id=event_id):
            value = invocation_json(invocation)
        case c.NotificationsMissed(resume_id=event_id):
            value = None
        case c.FramePublished():
            c.frame_for_no_dialect(notification)
        case _:
            assert_never(notification)
    return b"%b\n%b" % (event_id.encode(), orjson.dumps(value, option=orjson.OPT_UTC_Z))


def bare(message: bytes) -> bytes:
    """The :data:`~trio_things.fanout.observers.Framer` of long-poll observers: none."""
    return message


def split_poll(message: bytes) -> tuple[str, bytes]:
    """The id and the JSON body of an :func:`encode_poll` message."""
    event_id, _, body = message.partition(b"\n")
    return event_id.decode(), body
