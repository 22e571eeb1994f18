r"""One pushed stream: a consumer observing over plain HTTP, as Server-Sent Events
(``text/event-stream``) or as a live image stream (``multipart/x-mixed-replace``).

A stream is served like a WebSocket connection (``docs/design.md``, "Observing over
HTTP"), on the same fan-out path, in a nursery of its own::

    EventStream (the response's stream body)   owns the stream's Outbox
      the processor (the calling task)         subscribes (the dispatcher edits the
                                               observer sets), pushes what the consumer
                                               missed, then reads until it leaves
      relay_event_stream                       waits on the Outbox; writes everything
                                               pending in one send_all, under a progress
                                               timeout; a heartbeat when quiet (SSE)

    ObserverSet.publish -> Outbox.put_latest / put -> StreamWriter.write_now -> socket
                                                \-> (queued) -> relay -> send_all -> socket

The two kinds differ only in what a :class:`StreamFormat` says: what a quiet stream
writes (SSE: a comment; an image stream: nothing, as a multipart body has no room for
one), how an error after the head is told, and what ends a stream the server closes.
Everything else, the Outbox, the fast path, the relay, the progress timeout, is one
piece of code.

Messages are encoded once per stream kind (:mod:`trio_things.protocol.sse`,
:mod:`trio_things.protocol.multipart`) and framed once as a chunk of the response, so
every stream of a property, and every viewer of a camera, receives the same bytes. The
Outbox's policy is the WebSocket's: property values and frames coalesce (a viewer that
reads slower than the camera publishes gets the newest frame, at a lower rate, never a
backlog), events and action status are kept in order up to ``stream_outbox_size``.
Beyond it, and for a consumer that stops reading for ``stream_write_timeout``, the
stream is ended (saying why, when it can still be written): an SSE consumer reconnects
with its ``Last-Event-ID`` and is sent what it missed from the Thing's replay ring, or
told of a gap.

What a consumer coming back missed is queued as one frame, whatever its length: it is
bounded by the Thing's replay ring, not by the Outbox, and queued message by message it
could overflow the Outbox at once, ending the stream, and the consumer, coming back with
the same id, would be ended again, for ever. A new viewer of a frame stream is sent the
stream's newest frame at once (:attr:`~trio_things.fanout.observers.ObserverSet.latest`,
kept by the notifier), not after the camera's next one.

When the processor ends (the consumer left, or the server is stopping), the nursery is
cancelled; when the relay ends first (it ended the stream, or the consumer is gone), it
cancels the nursery too. Either way a ``finally`` leaves every observer set and closes
the Outbox. Nothing a consumer does raises out of this module.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

from trio_things.errors import RemoteProtocolError
from trio_things.fanout.observers import PROPERTY, STREAM, Encoder, Observer
from trio_things.fanout.outbox import Outbox, Written
from trio_things.protocol import commands as c
from trio_things.protocol import multipart, sse
from trio_things.protocol.access import Caller
from trio_things.protocol.limits import HttpLimits
from trio_things.protocol.problems import ProblemDetails
from trio_things.runtime.dispatcher import Dispatcher
from trio_things.transport.upgrade import UpgradeStream

__all__ = [
    "EVENT_STREAM",
    "IMAGE_STREAM",
    "EventStream",
    "StreamCommand",
    "StreamFormat",
    "StreamWriter",
    "relay_event_stream",
]

logger = logging.getLogger("trio_things.sse")

#: What a stream subscribes with.
StreamCommand = (c.ObserveProperty | c.ObserveAllProperties | c.SubscribeEvent
                 | c.SubscribeAllEvents | c.ObserveAction | c.WatchStream)

#: Bytes a consumer may send after its request (it has nothing to say; a pipelined
#: request is never answered): beyond them, the stream is ended.
_MAX_RECEIVED: Final = 64 * 1024
_RECEIVE_BYTES: Final = 16 * 1024
# Bound once: an enum member looked up through its class costs ~70 ns per delivery.
_WHOLE: Final = Written.WHOLE
_PART: Final = Written.PART


@attrs.frozen(kw_only=True)
class StreamFormat:
    """What one kind of pushed stream writes besides its messages; the rest (the Outbox,
    the fast path, the relay, the progress timeout) is the same for every kind.

    Each value is whole chunks of the chunked response body, ready to be written.
    """

    kind: str
    """What the logs call it: "event stream", "image stream"."""
    heartbeat: bytes | None
    """Written after ``stream_heartbeat`` quiet seconds, so that proxies and NATs keep
    the stream open and a consumer that is gone is noticed; None: nothing is (where
    anything but a message would corrupt the body)."""
    error: Callable[[dict[str, Any]], bytes]
    """RFC 9457 problem details in the stream's own terms: why a stream whose head
    was sent (200) cannot be served after all."""
    closing: Callable[[str], bytes]
    """What ends a stream the server closes on purpose, given why: the last chunk,
    after whatever says why where the format has room for it."""


def _sse_error(problem: dict[str, Any]) -> bytes:
    return sse.chunk(sse.error_message(problem))


def _sse_closing(reason: str) -> bytes:
    return sse.closing_comment(reason) + sse.END


def _image_error(problem: dict[str, Any]) -> bytes:
    return sse.chunk(multipart.problem_part(problem))


def _image_closing(reason: str) -> bytes:
    # The close delimiter: no part may say why (an <img> would try to show it); the
    # server's log does.
    return sse.chunk(multipart.CLOSE) + sse.END


#: Server-Sent Events (:mod:`trio_things.protocol.sse`): a comment when quiet, a
#: ``stream-error`` message, a comment saying why before the end.
EVENT_STREAM: Final = StreamFormat(kind="event stream", heartbeat=sse.HEARTBEAT,
                                   error=_sse_error, closing=_sse_closing)
#: A live image stream (:mod:`trio_things.protocol.multipart`): no heartbeat, a part of
#: problem details, the close delimiter before the end.
IMAGE_STREAM: Final = StreamFormat(kind="image stream", heartbeat=None,
                                   error=_image_error, closing=_image_closing)


@attrs.define
class StreamWriter:
    """How the relay writes one stream's chunks to its socket. (The Outbox's fast path
    is the stream's own :meth:`~trio_things.transport.upgrade.UpgradeStream.write_now`.)"""

    stream: UpgradeStream
    write_timeout: float
    kind: str = attrs.field(default=EVENT_STREAM.kind, kw_only=True)
    """What the logs call the stream (:attr:`StreamFormat.kind`)."""

    async def write(self, data: bytes) -> bool:
        """Write ``data`` after any backlog; False when the stream is to end: the
        consumer is gone, or made no progress reading for ``write_timeout``."""
        if data:
            written = self.stream.write_nowait(data)
            if written is _WHOLE:
                return True
            if written is _PART:
                if self.stream.broken:
                    return False
                data = b""  # the rest is the backlog, which send_all writes first
        try:
            await self.stream.send_all_while(data, _open, progress_timeout=self.write_timeout)
        except trio.TooSlowError:
            logger.warning("dropping an %s whose writes made no progress for %.1f s",
                           self.kind, self.write_timeout)
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True


def _open() -> bool:
    return True


@attrs.frozen(kw_only=True)
class EventStream:
    """The body of one pushed response (a :data:`~trio_things.transport.http.StreamBody`):
    subscribe with ``command`` on ``caller``'s behalf, encode with ``encoder``, write as
    ``format`` says, serve until the consumer leaves.

    For Server-Sent Events (``format`` :data:`EVENT_STREAM`, the default), ``encoder`` is
    :func:`~trio_things.protocol.sse.encode_value` for one affordance,
    :func:`~trio_things.protocol.sse.encode_named` for a whole Thing; for a frame stream
    (:class:`~trio_things.protocol.commands.WatchStream`, ``format``
    :data:`IMAGE_STREAM`), :func:`~trio_things.protocol.multipart.encoder_for` its media
    type.

    Made by the HTTP binding once the request is checked (the affordance exists, the
    caller may observe it), so that what can be refused is refused with a status; the
    subscription itself is made here, by the task that owns the stream, so that it can
    never outlive it.
    """

    command: StreamCommand
    encoder: Encoder
    caller: Caller
    dispatcher: Dispatcher
    limits: HttpLimits
    format: StreamFormat = EVENT_STREAM

    async def __call__(self, stream: UpgradeStream) -> None:
        writer = StreamWriter(stream, self.limits.stream_write_timeout, kind=self.format.kind)
        outbox = Outbox(self.limits.stream_outbox_size, writer=stream)
        observer = Observer(outbox=outbox, encoder=self.encoder, framer=sse.chunk)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay_event_stream, writer, outbox,
                                   self.limits.stream_heartbeat, nursery.cancel_scope,
                                   self.format,
                                   name=f"trio_things {self.format.kind} relay")
                await self._subscribe(observer)
                await _read_until_gone(stream, self.format.kind)
                nursery.cancel_scope.cancel()
        finally:
            self.dispatcher.observers.leave_all(outbox)
            outbox.close()

    async def _subscribe(self, observer: Observer) -> None:
        """Subscribe; queue the current values (a frame stream's newest frame), then
        what the consumer missed and where it now is."""
        try:
            reply = await self.dispatcher.run(self.command, observer, caller=self.caller)
        except RemoteProtocolError as error:
            # Checked before the head was sent; this is a race (a Thing removed?) or a
            # bug. The status is sent already: say it in the stream's terms, and end.
            problem = ProblemDetails.from_error(error).to_json()
            observer.outbox.put((self.format.error(problem),))
            observer.outbox.request_close(error.status, error.detail)
            return
        assert isinstance(reply, c.SubscribedReply)
        observers = self.dispatcher.observers
        for notification in reply.initial:
            observers.get(notification.thing, PROPERTY,
                          notification.name).deliver_to(observer, notification)
        if isinstance(self.command, c.WatchStream):
            # Read after the viewer joined the set (the notifier stores it before it
            # looks at the set): a frame published meanwhile is this one, or comes next.
            frames = observers.get(self.command.thing, STREAM, self.command.name)
            if frames.latest is not None:
                frames.deliver_to(observer, frames.latest)
        replay = [part for missed in reply.missed for part in observer.frame(missed)]
        if reply.event_id is not None:
            # A message with an id and no data sets the consumer's last id (EventSource's
            # lastEventId) without an event: a stream that is quiet until it drops still
            # resumes from here.
            replay.append(sse.chunk(sse.position(reply.event_id)))
        if replay:
            observer.outbox.put((b"".join(replay),))


async def relay_event_stream(writer: StreamWriter, outbox: Outbox, heartbeat: float,
                             done: trio.CancelScope,
                             format: StreamFormat = EVENT_STREAM) -> None:
    """Write what ``outbox`` holds through ``writer``, everything pending in one
    ``send_all``; ``format``'s heartbeat, if it has one, after ``heartbeat`` quiet
    seconds.

    Returns when the Outbox is closed, when the consumer is gone or stalled, or after
    ending the stream as the Outbox asked (it overflowed): what was queued before,
    ``format``'s closing (for SSE, a comment saying why), and the last chunk. However it
    returns, it cancels ``done``, the stream's nursery, and with it the processor.
    """
    try:
        outbox.claim_relay()
        stream = writer.stream
        if format.heartbeat is None:
            heartbeat = math.inf
        while True:
            with trio.move_on_after(heartbeat) as quiet:
                try:
                    await outbox.receive_channel.receive()
                except trio.EndOfChannel:
                    return
            closing = outbox.close_request  # read before taking (see websockets.py)
            data = b"".join(itertools.chain.from_iterable(outbox.take()))
            if quiet.cancelled_caught and not data and format.heartbeat is not None:
                data = format.heartbeat
            if closing is not None:
                logger.warning("ending an %s: %s", format.kind, closing.reason)
                data += format.closing(closing.reason)
            if (data or stream.needs_flush or stream.broken) and not await writer.write(data):
                return
            if closing is not None:
                return
    finally:
        done.cancel()


async def _read_until_gone(stream: UpgradeStream, kind: str) -> None:
    """Read (and drop) what the consumer sends until it closes the connection, or sends
    more than a consumer has any reason to."""
    received = 0
    while received <= _MAX_RECEIVED:
        try:
            data = await stream.receive_some(_RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        received += len(data)
    logger.info("ending an %s whose consumer sent over %d bytes", kind, _MAX_RECEIVED)
