r"""The three functions LabThings users know, rebuilt on Trio: one WebSocket connection.

:func:`websocket_endpoint` serves one open connection in the nursery that also holds
trio-websocket's reader task (``docs/design.md``, "One connection, one nursery"), as
:func:`trio_things.bindings.websocket.serve_websocket_upgrade` calls it after the
handshake::

    websocket_endpoint                  owns the connection's Outbox
      process_messages_from_websocket   reads every message; runs its commands, which
        (the connection's own task)     edit the observer sets; queues the replies
      relay_notifications_to_websocket  waits on the Outbox's channel; writes everything
                                        pending in one send_all, under a write timeout;
                                        pings a silent peer, closes one that stays silent

and the fast path beside the relay: a frame put into an empty Outbox is offered to the
connection's :class:`~trio_things.transport.upgrade.UpgradeStream` first, which writes
it at once when the socket is idle and takes it; the relay is woken only for what is
left (``docs/design.md``, "The fan-out path")::

    ObserverSet.publish -> Outbox.put_latest / put -> UpgradeStream.write_now -> socket
                                                \-> (queued) -> relay -> send_all -> socket

When the processor ends (the client left, or the server is shutting down), a
``finally`` leaves every observer set and closes the Outbox, which ends the relay; when
the relay ends first (it closed the connection, or dropped a stalled one), it cancels the
nursery, whose scope covers the processor too. Expected endings are normal exits, logged
in one line at most; nothing a client does raises out of this module.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Sequence
from typing import Any, Final

import attrs
import trio
import trio_websocket

from trio_things.errors import RemoteProtocolError
from trio_things.fanout.observers import PROPERTY, Observer
from trio_things.fanout.outbox import Outbox, Written
from trio_things.protocol.access import ANONYMOUS, Caller, check_role
from trio_things.protocol.commands import PropertyChanged, SubscribedReply
from trio_things.protocol.dialects import Dialect, MessageError
from trio_things.protocol.frame_guard import POLICY_CLOSE_CODE
from trio_things.protocol.frames import ping_frame, text_frame
from trio_things.protocol.keepalive import Keepalive, KeepaliveAction
from trio_things.protocol.limits import WebSocketLimits
from trio_things.protocol.problems import ProblemDetails
from trio_things.protocol.rate import RequestRate
from trio_things.runtime.dispatcher import Dispatcher
from trio_things.transport.upgrade import UpgradeStream

__all__ = [
    "SocketWriter",
    "process_messages_from_websocket",
    "relay_notifications_to_websocket",
    "websocket_endpoint",
]

logger = logging.getLogger("trio_things.websockets")

#: RFC 6455 section 7.4.1: "1011 indicates that a server is terminating the connection
#: because it encountered an unexpected condition": here, a peer that stopped answering.
KEEPALIVE_CLOSE_CODE: Final = 1011
#: The keepalive's ping; the peer's pong echoes the payload, and trio-websocket, which
#: did not send it, ignores that pong. Any byte from the peer proves it alive.
_KEEPALIVE_PING: Final = ping_frame(b"trio-things keepalive")
# Bound once: an enum member looked up through its class costs ~70 ns per delivery.
_WHOLE: Final = Written.WHOLE
_PART: Final = Written.PART


async def websocket_endpoint(
    websocket: trio_websocket.WebSocketConnection,
    *,
    nursery: trio.Nursery,
    stream: UpgradeStream,
    dialect: Dialect,
    dispatcher: Dispatcher,
    limits: WebSocketLimits,
    caller: Caller = ANONYMOUS,
) -> None:
    """Serve one open WebSocket until the client leaves, misbehaves or stalls, or the
    server stops; then leave every observer set. ``caller`` is who the client is (its
    token's role and identity): what it may do, and whose invocations it may cancel.

    The processor runs in the calling task, the relay in ``nursery``: the nursery that
    holds trio-websocket's reader, so a connection costs one nursery and three tasks.

    Returns:
        When the processor ends (the connection closed), or when the relay ends (it
        closed the connection, or dropped it) and cancels ``nursery``, whose scope
        covers the caller's task, and with it the processor.

    Resource handling:
        Owns the connection's Outbox and its :class:`SocketWriter`, made together: the
        stream is the Outbox's fast path, the writer the relay's way to the socket. On the way
        out the connection leaves every observer set, and closing the Outbox ends the
        relay, which never outlives ``nursery``. The caller owns ``websocket``,
        ``stream`` and ``nursery``, and closes them.
    """
    writer = SocketWriter(websocket=websocket, stream=stream, limits=limits)
    outbox = Outbox(limits.outbox_size, writer=stream)
    # A client that floods frames or breaks the framing (the stream's frame guard, which
    # then stops reading it) is closed as every close the server decides on: through
    # the Outbox, so the relay, the only writer, writes the close frame after what was
    # queued before it.
    stream.on_violation(outbox.request_close)
    try:
        nursery.start_soon(functools.partial(
            relay_notifications_to_websocket, writer, outbox, done=nursery.cancel_scope),
            name="trio_things websocket relay")
        await process_messages_from_websocket(websocket, outbox, dialect, dispatcher,
                                              limits, caller)
    finally:
        dispatcher.observers.leave_all(outbox)
        outbox.close()


async def process_messages_from_websocket(
    websocket: trio_websocket.WebSocketConnection,
    outbox: Outbox,
    dialect: Dialect,
    dispatcher: Dispatcher,
    limits: WebSocketLimits,
    caller: Caller = ANONYMOUS,
) -> None:
    """Read every message until the connection closes, and answer each through ``outbox``.

    It never stops reading while the connection lives (trio-websocket answers pings and
    close frames only while someone reads): every command it runs is quick (memory, or a
    property getter in a worker thread); actions run in the server's nursery, and their
    status arrives as notifications.

    Error handling:
        A message that cannot be served is answered with an error message holding RFC
        9457 problem details, and reading goes on. A bug (in trio-things or Thing code)
        is logged with its traceback and answered with 500; reading goes on. Messages
        above ``limits.max_requests_per_second`` are answered 429 unserved; a client
        that sends ``limits.request_burst`` of them in a row is closed with 1008.
    """
    rate = RequestRate(rate=limits.max_requests_per_second, burst=limits.request_burst)
    while True:
        try:
            message = await websocket.get_message()
        except trio_websocket.ConnectionClosed:
            return
        if outbox.close_request is not None:
            continue  # closing: keep reading (for the close handshake), serve nothing
        if not rate.allow(trio.current_time()):
            if rate.refused > limits.request_burst:
                # 1008, a policy violation: a flood of messages after 429 answers.
                outbox.request_close(POLICY_CLOSE_CODE, "request rate limit exceeded")
            else:
                _put(outbox, dialect.encode_error(_context(dialect, message),
                                                  _too_many(limits)))
            continue
        await _serve_message(message, outbox, dialect, dispatcher, caller)
        # Not kept while waiting for the next one: an idle connection holds no request.
        del message


async def _serve_message(message: str | bytes, outbox: Outbox, dialect: Dialect,
                         dispatcher: Dispatcher, caller: Caller) -> None:
    """Run the commands of one message and queue their replies. A coroutine of its own,
    so that what it held (the message, its commands, their replies) is freed when it
    returns, not kept by the processor's frame for as long as the connection stays idle."""
    try:
        requests = dialect.decode(message)
    except MessageError as error:
        _put(outbox, dialect.encode_error(error.context, ProblemDetails.from_error(error)))
        return
    for request in requests:
        observer = Observer(outbox=outbox, encoder=dialect.encode_notification,
                            tail=request.tail)
        try:
            check_role(caller.role, request.command)
            reply = await dispatcher.run(request.command, observer, caller=caller)
            body = dialect.encode_reply(request, reply)
        except RemoteProtocolError as error:
            body = dialect.encode_error(request.context, ProblemDetails.from_error(error))
        except Exception:
            logger.exception("a WebSocket request (%s) failed; the connection goes on",
                             type(request.command).__name__)
            body = dialect.encode_error(request.context, ProblemDetails.internal_error())
        else:
            if isinstance(reply, SubscribedReply):
                if body is not None:
                    _put(outbox, body)
                    body = None
                _push_initial(dispatcher, observer, reply.initial)
                if reply.missed:
                    # What it missed while away, oldest first, as one frame: bounded
                    # by the replay ring, not by the Outbox, which it must not
                    # overflow (see bindings/sse.py).
                    outbox.put((b"".join(part for missed in reply.missed
                                         for part in observer.frame(missed)),))
        if body is not None:
            _put(outbox, body)


def _too_many(limits: WebSocketLimits) -> ProblemDetails:
    """The 429 a message over the rate limit gets (made when needed: rarely, and an idle
    connection need not hold one)."""
    return ProblemDetails.from_status(
        429, f"more than {limits.max_requests_per_second:g} messages per second; slow down")


def _context(dialect: Dialect, message: str | bytes) -> Any:
    """What an error reply to ``message`` should echo (its correlationID, ...)."""
    try:
        requests = dialect.decode(message)
    except MessageError as error:
        return error.context
    return requests[0].context if requests else None


def _put(outbox: Outbox, body: bytes) -> None:
    outbox.put((text_frame(body),))


def _push_initial(dispatcher: Dispatcher, observer: Observer,
                  initial: Sequence[PropertyChanged]) -> None:
    for notification in initial:
        dispatcher.observers.get(notification.thing, PROPERTY, notification.name).deliver_to(
            observer, notification)


async def relay_notifications_to_websocket(
    writer: SocketWriter,
    outbox: Outbox,
    *,
    done: trio.CancelScope | None = None,
) -> None:
    """Write what ``outbox`` holds through ``writer``, everything pending in one
    ``send_all``; and keep the connection alive.

    Returns when the Outbox is closed, when the peer is gone, after closing the
    connection as the Outbox asked (:meth:`~trio_things.fanout.outbox.Outbox.request_close`:
    1008 when it overflowed, or for a flood) once what was queued before is written,
    after dropping it when a write did not complete within ``limits.write_timeout``, or
    after closing it with 1011 when the peer fell silent: pinged after
    ``keepalive_interval`` seconds without a byte from it, it did not answer within
    ``keepalive_timeout`` (:mod:`trio_things.protocol.keepalive`). Once the connection is
    closing (whoever closed it), frames are dropped unwritten. However it returns, it
    cancels ``done`` if given: that is how the connection's processor learns it ended.

    Cancellation: a cancelled write may leave half a frame on the wire; the
    :class:`~trio_things.transport.upgrade.UpgradeStream` is then broken and the
    connection is never written to again.

    Single writer: an Outbox has at most one relay (a second raises
    :class:`~trio_things.errors.LocalProtocolError`), so frames leave in queue order.
    Beside it runs the fast path: a frame put into an empty Outbox goes to
    ``writer.stream.write_now`` first, and the relay is woken only for what that leaves: a
    backlog, a broken stream, or a queue that built up while the socket was busy.
    """
    try:
        outbox.claim_relay()
        stream, limits = writer.stream, writer.limits
        keepalive = Keepalive(interval=limits.keepalive_interval,
                              timeout=limits.keepalive_timeout, start=trio.current_time())
        while True:
            with trio.move_on_at(keepalive.deadline()):
                try:
                    await outbox.receive_channel.receive()
                except trio.EndOfChannel:
                    return
            due = keepalive.due(now=trio.current_time(), received_at=stream.received_at,
                                received_bytes=stream.bytes_received)
            if due is KeepaliveAction.GIVE_UP:
                logger.info("closing a WebSocket client that sent nothing for %.1f s "
                            "after a ping", limits.keepalive_timeout)
                await writer.close(KEEPALIVE_CLOSE_CODE, "keepalive ping timeout")
                return
            # The client has not read enough of what was written: wait for its pongs
            # before taking, so that what changes meanwhile is coalesced in the Outbox
            # (protocol/credit.py). Not for a close, nor for the rest of a frame.
            if (outbox.close_request is None and not stream.needs_flush
                    and not stream.has_credit and not await writer.wait_for_credit()):
                return
            # Read before taking: every frame queued before a close request is in this
            # take (the Outbox accepts none after it), so it precedes the close.
            closing = outbox.close_request
            data = b"".join(itertools.chain.from_iterable(outbox.take()))
            if due is KeepaliveAction.PING:
                data += _KEEPALIVE_PING
            if (data or stream.needs_flush or stream.broken) and not await writer.write(data):
                return
            if closing is not None:
                logger.warning("closing a WebSocket client (%d): %s", closing.code,
                               closing.reason)
                await writer.close(closing.code, closing.reason)
                return
    finally:
        if done is not None:
            done.cancel()


@attrs.define
class SocketWriter:
    """How the relay writes one WebSocket connection's frames to its socket, and closes
    it. (The Outbox's fast path is the stream's own
    :meth:`~trio_things.transport.upgrade.UpgradeStream.write_now`.)

    A class rather than closures in the relay: an idle connection's memory is mostly
    what its waiting tasks hold, and four closures cost more than one small object.
    """

    websocket: trio_websocket.WebSocketConnection
    stream: UpgradeStream
    limits: WebSocketLimits

    def still_open(self) -> bool:
        return self.websocket.closed is None

    async def write(self, data: bytes) -> bool:
        """Write ``data`` (after any backlog); False when the connection is to end.

        First without waiting, as the fast path writes: a ``send_all`` yields to the
        scheduler while it holds the write lock, a publisher that finds the lock held
        queues its frame and wakes the relay again, and so a producer at full speed
        would keep every frame on the relay's slow path (one wake-up each) for good.
        """
        if data and self.still_open():
            written = self.stream.write_nowait(data)
            if written is _WHOLE:
                return True
            if written is _PART:
                if self.stream.broken:
                    return False
                data = b""  # the rest is the backlog, which a send_all writes first
        try:
            # Not written once the connection is closing: dropped, as it must be. The
            # timeout is on progress, not on the whole batch: a slow reader is not a
            # stalled one.
            await self.stream.send_all_while(data, self.still_open,
                                             progress_timeout=self.limits.write_timeout,
                                             credit_ping=True)
        except trio.TooSlowError:
            logger.warning("dropping a WebSocket client whose writes made no progress "
                           "for %.1f s", self.limits.write_timeout)
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def wait_for_credit(self) -> bool:
        """Wait until the client has read enough for more to be written; False, having
        closed the connection with 1008, when it confirms nothing for ``write_timeout``:
        a client that stopped reading (or never answers pings, as RFC 6455 requires)."""
        with trio.move_on_after(self.limits.write_timeout):
            try:  # a ping alone, if no ping sent so far covers everything written
                await self.stream.send_all_while(b"", self.still_open, credit_ping=True)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            await self.stream.wait_for_credit()
            return True
        logger.warning("closing a WebSocket client that read nothing for %.1f s",
                       self.limits.write_timeout)
        # 1008, a policy violation: reading nothing it is sent (no pong confirms it).
        await self.close(POLICY_CLOSE_CODE, f"read nothing for {self.limits.write_timeout:g} s")
        return False

    async def close(self, code: int, reason: str) -> None:
        with trio.move_on_after(self.limits.close_timeout):
            await self.websocket.aclose(code, reason)
