r"""One Server-Sent Events stream: a consumer observing over plain HTTP.

An SSE stream is served like a WebSocket connection (``docs/design.md``, "Observing over
HTTP"), on the same fan-out path, in a nursery of its own::

    EventStream (the response's stream body)   owns the stream's Outbox
      the processor (the calling task)         subscribes (the dispatcher edits the
                                               observer sets), pushes what the consumer
                                               missed, then reads until it leaves
      relay_event_stream                       waits on the Outbox; writes everything
                                               pending in one send_all, under a progress
                                               timeout; a comment when quiet

    ObserverSet.publish -> Outbox.put_latest / put -> StreamWriter.write_now -> socket
                                                \-> (queued) -> relay -> send_all -> socket

Messages are encoded once per stream kind (:mod:`trio_things.protocol.sse`) and framed
once as a chunk of the response, so every stream of a property receives the same bytes.
The Outbox's policy is the WebSocket's: property values coalesce, events and action
status are kept in order up to ``stream_outbox_size``. Beyond it, and for a consumer
that stops reading for ``stream_write_timeout``, the stream is ended (with a comment
saying why, when it can still be written): the consumer reconnects with its
``Last-Event-ID`` and is sent what it missed from the Thing's replay ring, or told of a
gap.

What a consumer coming back missed is queued as one frame, whatever its length: it is
bounded by the Thing's replay ring, not by the Outbox, and queued message by message it
could overflow the Outbox at once, ending the stream, and the consumer, coming back with
the same id, would be ended again, for ever.

When the processor ends (the consumer left, or the server is stopping), the nursery is
cancelled; when the relay ends first (it ended the stream, or the consumer is gone), it
cancels the nursery too. Either way a ``finally`` leaves every observer set and closes
the Outbox. Nothing a consumer does raises out of this module.
"""

from __future__ import annotations

import itertools
import logging
from typing import Final

import attrs
import trio

from trio_things.errors import RemoteProtocolError
from trio_things.fanout.observers import PROPERTY, Encoder, Observer
from trio_things.fanout.outbox import Frame, Outbox, Written
from trio_things.protocol import commands as c
from trio_things.protocol import sse
from trio_things.protocol.access import Caller
from trio_things.protocol.limits import HttpLimits
from trio_things.protocol.problems import ProblemDetails
from trio_things.runtime.dispatcher import Dispatcher
from trio_things.transport.upgrade import UpgradeStream

__all__ = ["EventStream", "StreamCommand", "StreamWriter", "relay_event_stream"]

logger = logging.getLogger("trio_things.sse")

#: What a stream subscribes with.
StreamCommand = (c.ObserveProperty | c.ObserveAllProperties | c.SubscribeEvent
                 | c.SubscribeAllEvents | c.ObserveAction)

#: Bytes a consumer may send after its request (it has nothing to say; a pipelined
#: request is never answered): beyond them, the stream is ended.
_MAX_RECEIVED: Final = 64 * 1024
_RECEIVE_BYTES: Final = 16 * 1024
# Bound once: an enum member looked up through its class costs ~70 ns per delivery.
_WHOLE: Final = Written.WHOLE
_PART: Final = Written.PART


@attrs.define
class StreamWriter:
    """How one stream's chunks reach its socket: the Outbox's fast path
    (:meth:`write_now`) and the relay's writes."""

    stream: UpgradeStream
    write_timeout: float

    def write_now(self, frame: Frame) -> Written:
        """Write ``frame`` at once if the socket is idle and takes it
        (:meth:`~trio_things.transport.upgrade.UpgradeStream.write_nowait`)."""
        return self.stream.write_nowait(b"".join(frame))

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
            logger.warning("dropping an event stream whose writes made no progress for "
                           "%.1f s", self.write_timeout)
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True


def _open() -> bool:
    return True


@attrs.frozen(kw_only=True)
class EventStream:
    """The body of one SSE response (a :data:`~trio_things.transport.http.StreamBody`):
    subscribe with ``command`` on ``caller``'s behalf, encode with ``encoder``
    (:func:`~trio_things.protocol.sse.encode_value` for one affordance,
    :func:`~trio_things.protocol.sse.encode_named` for a whole Thing), serve until the
    consumer leaves.

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

    async def __call__(self, stream: UpgradeStream) -> None:
        writer = StreamWriter(stream, self.limits.stream_write_timeout)
        outbox = Outbox(self.limits.stream_outbox_size, writer=writer)
        observer = Observer(outbox=outbox, encoder=self.encoder, framer=sse.chunk)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay_event_stream, writer, outbox,
                                   self.limits.stream_heartbeat, nursery.cancel_scope,
                                   name="trio_things event stream relay")
                await self._subscribe(observer)
                await _read_until_gone(stream)
                nursery.cancel_scope.cancel()
        finally:
            self.dispatcher.observers.leave_all(outbox)
            outbox.close()

    async def _subscribe(self, observer: Observer) -> None:
        """Subscribe; queue the current values, then what the consumer missed and where
        it now is."""
        try:
            reply = await self.dispatcher.run(self.command, observer, caller=self.caller)
        except RemoteProtocolError as error:
            # Checked before the head was sent; this is a race (a Thing removed?) or a
            # bug. The status is sent already: say it as a message, and end.
            problem = ProblemDetails.from_error(error).to_json()
            observer.outbox.put((sse.chunk(sse.error_message(problem)),))
            observer.outbox.request_close(error.status, error.detail)
            return
        assert isinstance(reply, c.SubscribedReply)
        for notification in reply.initial:
            self.dispatcher.observers.get(notification.thing, PROPERTY,
                                          notification.name).deliver_to(observer, notification)
        replay = [part for missed in reply.missed for part in observer.frame(missed)]
        if reply.event_id is not None:
            # A message with an id and no data sets the consumer's last id (EventSource's
            # lastEventId) without an event: a stream that is quiet until it drops still
            # resumes from here.
            replay.append(sse.chunk(sse.position(reply.event_id)))
        if replay:
            observer.outbox.put((b"".join(replay),))


async def relay_event_stream(writer: StreamWriter, outbox: Outbox, heartbeat: float,
                             done: trio.CancelScope) -> None:
    """Write what ``outbox`` holds through ``writer``, everything pending in one
    ``send_all``; a comment after ``heartbeat`` quiet seconds.

    Returns when the Outbox is closed, when the consumer is gone or stalled, or after
    ending the stream as the Outbox asked (it overflowed): what was queued before, a
    comment saying why, and the last chunk. However it returns, it cancels ``done``,
    the stream's nursery, and with it the processor.
    """
    try:
        outbox.claim_relay()
        stream = writer.stream
        while True:
            with trio.move_on_after(heartbeat) as quiet:
                try:
                    await outbox.receive_channel.receive()
                except trio.EndOfChannel:
                    return
            closing = outbox.close_request  # read before taking (see websockets.py)
            data = b"".join(itertools.chain.from_iterable(outbox.take()))
            if quiet.cancelled_caught and not data:
                data = sse.HEARTBEAT
            if closing is not None:
                logger.warning("ending an event stream: %s", closing.reason)
                data += sse.closing_comment(closing.reason) + sse.END
            if (data or stream.needs_flush or stream.broken) and not await writer.write(data):
                return
            if closing is not None:
                return
    finally:
        done.cancel()


async def _read_until_gone(stream: UpgradeStream) -> None:
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
    logger.info("ending an event stream whose consumer sent over %d bytes", _MAX_RECEIVED)
