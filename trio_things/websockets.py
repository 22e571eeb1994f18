"""WebSocket connections: one nursery per connection, holding a relay and a processor.

A request with ``Upgrade: websocket`` to ``/ws`` or ``/{thing}/ws`` leaves the h11 loop
as an :class:`~trio_things.transport.upgrade.UpgradeStream` (which replays the request
bytes h11 already read) and is handed to trio-websocket. The dialect is chosen from the
client's ``Sec-WebSocket-Protocol``, which is echoed back
(:mod:`trio_things.protocol.dialects`).

Then :func:`websocket_endpoint` runs the connection in one nursery, the one that also
holds trio-websocket's reader task (DESIGN section 2)::

    serve_websocket_upgrade             the handshake, then the nursery:
      trio-websocket's reader           reads frames; answers pings and close frames
      process_messages_from_websocket   reads every message; runs its commands, which
        (the connection's own task)     edit the observer sets; queues the replies
      relay_notifications_to_websocket  waits on the Outbox's channel; writes everything
                                        pending in one send_all, under a write timeout;
                                        pings a silent peer, closes one that stays silent

When the processor ends (the client left, or the server is shutting down), a
``finally`` closes the Outbox, which removes the connection from every observer set
and ends the relay; when the relay ends first (it closed the connection, or dropped a
stalled one), it cancels the nursery, whose scope covers the processor too. Expected
endings are normal exits, logged in one line at most; nothing a client does raises out
of this module.

Close codes (RFC 6455 section 7.4.1) a client can expect:

====== ========================================================================
1000   the client closed normally (echoed)
1001   the server is shutting down
1008   the client read too slowly: its queue of events and action status overflowed;
       or it kept sending faster than ``max_requests_per_second`` after 429 answers
1009   a message above ``max_message_bytes`` (sent by trio-websocket)
1011   pinged after ``keepalive_interval`` of silence, no byte (a pong or anything
       else) within ``keepalive_timeout``
(none) a write made no progress within ``write_timeout``: the TCP connection is
       dropped, since half a frame may be on the wire
====== ========================================================================
"""

from __future__ import annotations

import base64
import functools
import itertools
import logging
import urllib.parse
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import attrs
import trio
import trio_websocket

from trio_things.dispatch import Dispatcher
from trio_things.errors import BadRequest, NotFound, RemoteProtocolError
from trio_things.fanout.observers import PROPERTY, Observer
from trio_things.fanout.outbox import Frame, Outbox
from trio_things.model.affordances import ActionSpec, Affordances, EventSpec, PropertySpec
from trio_things.model.description import Form, thing_id
from trio_things.protocol.access import WWW_AUTHENTICATE, AccessPolicy, Role, check_role
from trio_things.protocol.commands import PropertyChanged, SubscribedReply
from trio_things.protocol.dialects import SUBPROTOCOL, Dialect, MessageError, choose_subprotocol
from trio_things.protocol.frames import ping_frame, text_frame
from trio_things.protocol.keepalive import Keepalive, KeepaliveAction
from trio_things.protocol.labthings import LabThingsDialect
from trio_things.protocol.problems import PROBLEM_CONTENT_TYPE, ProblemDetails
from trio_things.protocol.routes import server_base
from trio_things.protocol.wtp import WebThingProtocol
from trio_things.transport.http import HttpRequest, refuse_http_connection
from trio_things.transport.upgrade import UpgradeStream

__all__ = [
    "SUBPROTOCOL",
    "WebSocketBinding",
    "WebSocketDialects",
    "WebSocketLimits",
    "check_handshake",
    "process_messages_from_websocket",
    "relay_notifications_to_websocket",
    "serve_websocket_upgrade",
    "websocket_endpoint",
    "websocket_route",
]

logger = logging.getLogger("trio_things.websockets")

#: RFC 6455 section 7.4.1: "1011 indicates that a server is terminating the connection
#: because it encountered an unexpected condition": here, a peer that stopped answering.
KEEPALIVE_CLOSE_CODE: Final = 1011
#: The keepalive's ping; the peer's pong echoes the payload, and trio-websocket, which
#: did not send it, ignores that pong. Any byte from the peer proves it alive.
_KEEPALIVE_PING: Final = ping_frame(b"trio-things keepalive")
#: "1001 indicates that an endpoint is 'going away', such as a server going down".
SHUTDOWN_CLOSE_CODE: Final = 1001
#: "1008 indicates that an endpoint is terminating the connection because it has
#: received a message that violates its policy": here, a flood of them.
RATE_CLOSE_CODE: Final = 1008


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


@attrs.define
class RequestRate:
    """A token bucket: ``burst`` messages at once, ``rate`` per second sustained.

    Pure (the caller passes the time), so it is tested without a clock. ``refused``
    counts the messages refused since the last one accepted: a client that keeps
    sending after being told to slow down is closed.
    """

    rate: float
    burst: int
    _tokens: float = attrs.field(init=False)
    _last: float | None = attrs.field(init=False, default=None)
    refused: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._tokens = float(self.burst)

    def allow(self, now: float) -> bool:
        """Whether a message arriving at ``now`` (seconds) may be served."""
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.refused = 0
            return True
        self.refused += 1
        return False


def websocket_route(path: str, things: Collection[str]) -> str | None:
    """The Thing a WebSocket path addresses (``""`` for the server-wide ``/ws``), or
    ``None`` when the path is no WebSocket endpoint."""
    segments = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
    match segments:
        case ["ws"]:
            return ""
        case [thing, "ws"] if thing in things:
            return thing
    return None


def check_handshake(request: HttpRequest) -> None:
    """Raise :class:`~trio_things.errors.RemoteProtocolError` unless ``request`` is an
    opening handshake RFC 6455 section 4.2.1 accepts (the transport has checked the
    method, ``Upgrade`` and ``Connection``): 400 without a valid ``Sec-WebSocket-Key``,
    426 for a ``Sec-WebSocket-Version`` other than 13 (answered with
    ``Sec-WebSocket-Version: 13``, as section 4.2.2 asks)."""
    key = request.header("sec-websocket-key")
    try:
        valid_key = key is not None and len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid_key = False
    if not valid_key:
        raise BadRequest("a WebSocket handshake needs a Sec-WebSocket-Key: the base64 of "
                         "16 random bytes (RFC 6455 section 4.1)")
    if request.header("sec-websocket-version") != "13":
        raise RemoteProtocolError("this server speaks WebSocket version 13 only "
                                  "(Sec-WebSocket-Version: 13)", status=426)


class WebSocketBinding:
    """The Thing Description forms of the WebSocket endpoints: ``ws://host/{thing}/ws``,
    speaking the Web Thing Protocol. Listed after the HTTP forms, so consumers that take
    the first form they understand (node-wot) keep using HTTP."""

    def property_forms(self, thing: str, spec: PropertySpec, base: str) -> Sequence[Form]:
        ops: tuple[str, ...] = ("readproperty",)
        if not spec.readonly:
            ops += ("writeproperty",)
        if spec.observable:
            ops += ("observeproperty", "unobserveproperty")
        return [self._form(base, thing, ops)]

    def action_forms(self, thing: str, spec: ActionSpec, base: str) -> Sequence[Form]:
        return [self._form(base, thing, ("invokeaction", "queryaction", "cancelaction"))]

    def event_forms(self, thing: str, spec: EventSpec, base: str) -> Sequence[Form]:
        return [self._form(base, thing, ("subscribeevent", "unsubscribeevent"))]

    def thing_forms(self, thing: str, affordances: Affordances, base: str) -> Sequence[Form]:
        ops: tuple[str, ...] = ("readallproperties", "readmultipleproperties")
        if any(not spec.readonly for spec in affordances.properties.values()):
            ops += ("writeallproperties", "writemultipleproperties")
        ops += ("observeallproperties", "unobserveallproperties")
        if affordances.actions:
            ops += ("queryallactions",)
        if affordances.events:
            ops += ("subscribeallevents", "unsubscribeallevents")
        return [self._form(base, thing, ops)]

    @staticmethod
    def _form(base: str, thing: str, ops: tuple[str, ...]) -> Form:
        scheme, _, rest = base.partition("://")
        ws_scheme = "wss" if scheme == "https" else "ws"
        return Form(href=f"{ws_scheme}://{rest}{thing}/ws", op=ops, subprotocol=SUBPROTOCOL)


@attrs.define
class WebSocketDialects:
    """The endpoints of one server's Things, and the dialect objects its connections use.

    A dialect object holds no per-connection state, so connections that address the
    same endpoint through the same ``Host`` share one: an idle connection's memory is
    what matters at thousands of connections. At most ``max_cached`` are kept (``Host``
    is the client's to choose); beyond that the cache starts over.
    """

    things: Mapping[str, Affordances]
    """The Things served, by name."""
    default_host: str
    """``host:port`` for a request without a usable ``Host`` header."""
    max_cached: int = attrs.field(default=64, validator=attrs.validators.gt(0))
    _cache: dict[tuple[str, str, str | None], Dialect] = attrs.field(init=False, factory=dict)

    def route(self, path: str) -> str | None:
        """See :func:`websocket_route`."""
        return websocket_route(path, self.things)

    def dialect(self, route: str, subprotocol: str | None, host: str | None) -> Dialect:
        """The dialect for ``route`` (``""``: ``/ws``), the subprotocol chosen and the
        request's ``Host``: the LabThings dialect without a subprotocol on a Thing's own
        endpoint, else the Web Thing Protocol with TD ids as that client sees them."""
        base = server_base(host, self.default_host)
        key = (route, base, subprotocol)
        dialect = self._cache.get(key)
        if dialect is None:
            if subprotocol is None and route:
                dialect = LabThingsDialect(thing=route, affordances=self.things[route])
            else:
                dialect = WebThingProtocol(
                    things=self.things,
                    thing_ids={name: thing_id(base, name) for name in self.things},
                    default_thing=route or None)
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            self._cache[key] = dialect
        return dialect


async def serve_websocket_upgrade(
    request: HttpRequest,
    stream: UpgradeStream,
    *,
    dispatcher: Dispatcher,
    dialects: WebSocketDialects,
    limits: WebSocketLimits,
    access: AccessPolicy,
) -> None:
    """Run one WebSocket connection until the client leaves or the server stops.

    The handshake is refused with problem details when the path is no endpoint (404),
    when tokens are required and none valid was given (401), or when a browser page
    from an origin that is not allowed asks (403); see :mod:`trio_things.protocol.access`.

    Resource handling:
        One nursery, owned by this call, holds trio-websocket's reader task and the
        connection's relay; both end when it returns. On cancellation (server shutdown)
        the client is sent close code 1001 (going away), waiting at most
        ``limits.close_timeout`` for its answer. ``request`` is not kept once the
        handshake is done: pass it as the only reference (see
        :func:`~trio_things.transport.http.serve_http_connection`), and a connection
        that lives for months does not hold its request head meanwhile.

    Error handling:
        A handshake that does not complete within ``limits.handshake_timeout``, an
        unknown path (404 with problem details) and a vanished peer all end the
        connection quietly; nothing the client sends can raise out of this function.
    """
    async with trio.open_nursery() as nursery:
        try:
            accepted = None
            with trio.move_on_after(limits.handshake_timeout):
                accepted = await _accept(request, stream, nursery, dialects=dialects,
                                         access=access, limits=limits)
            del request
            if accepted is None:  # refused, or the handshake timed out
                return
            websocket, dialect, role = accepted
            del accepted
            try:
                await websocket_endpoint(websocket, nursery=nursery, stream=stream,
                                         dialect=dialect, dispatcher=dispatcher,
                                         limits=limits, role=role)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(limits.close_timeout):
                    await websocket.aclose(SHUTDOWN_CLOSE_CODE, "server shutting down")
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            nursery.cancel_scope.cancel()


async def _accept(
    request: HttpRequest,
    stream: UpgradeStream,
    nursery: trio.Nursery,
    *,
    dialects: WebSocketDialects,
    access: AccessPolicy,
    limits: WebSocketLimits,
) -> tuple[trio_websocket.WebSocketConnection, Dialect, Role] | None:
    """The opening handshake: the open connection, its dialect and the client's role;
    None when it was refused (with problem details)."""
    try:
        check_handshake(request)
    except RemoteProtocolError as error:  # trio-websocket would answer a bare 400
        await refuse_http_connection(
            stream, error, headers=[("sec-websocket-version", "13")] if error.status == 426 else [])
        return None
    route = dialects.route(request.path)
    ws_request = await trio_websocket.wrap_server_stream(
        nursery, stream, message_queue_size=1, max_message_size=limits.max_message_bytes)
    try:
        if route is None:
            raise NotFound(f"no WebSocket endpoint at {request.path!r}")
        access.check_websocket_origin(origin=request.header("origin"),
                                      host=request.header("host"))
        role = access.authenticate(
            authorization=request.header("authorization"), query=request.query)
    except RemoteProtocolError as error:
        problem = ProblemDetails.from_error(error)
        # The connection ends with the refusal (RFC 9112 section 9.6: say so).
        headers = [(b"content-type", PROBLEM_CONTENT_TYPE.encode()), (b"connection", b"close")]
        if error.status == 401:
            headers.append((b"www-authenticate", WWW_AUTHENTICATE.encode()))
        await ws_request.reject(error.status, body=problem.to_bytes(), extra_headers=headers)
        return None
    subprotocol = choose_subprotocol(ws_request.proposed_subprotocols)
    dialect = dialects.dialect(route, subprotocol, request.header("host"))
    return await ws_request.accept(subprotocol=subprotocol), dialect, role


async def websocket_endpoint(
    websocket: trio_websocket.WebSocketConnection,
    *,
    nursery: trio.Nursery,
    stream: UpgradeStream,
    dialect: Dialect,
    dispatcher: Dispatcher,
    limits: WebSocketLimits,
    role: Role = Role.FULL,
) -> None:
    """Serve one open WebSocket until the client leaves, misbehaves or stalls, or the
    server stops; then leave every observer set. ``role`` is what the client's token
    allows.

    The processor runs in the calling task, the relay in ``nursery``: the nursery that
    holds trio-websocket's reader, so a connection costs one nursery and three tasks.

    Returns:
        When the processor ends (the connection closed), or when the relay ends (it
        closed the connection, or dropped it) and cancels ``nursery``, whose scope
        covers the caller's task, and with it the processor.

    Resource handling:
        Owns the connection's Outbox. Closing it on the way out leaves every observer
        set and ends the relay, which never outlives ``nursery``. The caller owns
        ``websocket``, ``stream`` and ``nursery``, and closes them.
    """
    outbox = Outbox(max_queued=limits.outbox_size)
    try:
        nursery.start_soon(functools.partial(
            relay_notifications_to_websocket, websocket, outbox, stream, limits,
            done=nursery.cancel_scope), name="trio_things websocket relay")
        await process_messages_from_websocket(websocket, outbox, dialect, dispatcher,
                                              limits, role)
    finally:
        outbox.close()


async def process_messages_from_websocket(
    websocket: trio_websocket.WebSocketConnection,
    outbox: Outbox,
    dialect: Dialect,
    dispatcher: Dispatcher,
    limits: WebSocketLimits,
    role: Role = Role.FULL,
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
    too_many = ProblemDetails.from_status(
        429, f"more than {limits.max_requests_per_second:g} messages per second; slow down")
    while True:
        try:
            message = await websocket.get_message()
        except trio_websocket.ConnectionClosed:
            return
        if outbox.close_request is not None:
            continue  # closing: keep reading (for the close handshake), serve nothing
        if not rate.allow(trio.current_time()):
            if rate.refused > limits.request_burst:
                outbox.request_close(RATE_CLOSE_CODE, "request rate limit exceeded")
            else:
                _put(outbox, dialect.encode_error(_context(dialect, message), too_many))
            continue
        try:
            requests = dialect.decode(message)
        except MessageError as error:
            _put(outbox, dialect.encode_error(error.context, ProblemDetails.from_error(error)))
            continue
        for request in requests:
            observer = Observer(outbox=outbox, encoder=dialect.encode_notification,
                                tail=request.tail)
            try:
                check_role(role, request.command)
                reply = await dispatcher.run(request.command, observer)
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
            if body is not None:
                _put(outbox, body)


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
    websocket: trio_websocket.WebSocketConnection,
    outbox: Outbox,
    stream: UpgradeStream,
    limits: WebSocketLimits,
    *,
    done: trio.CancelScope | None = None,
) -> None:
    """Write what ``outbox`` holds to the socket, everything pending in one ``send_all``;
    and keep the connection alive.

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
    While it runs, it installs the Outbox's fast path (``write_now``): a frame put
    into an empty Outbox is written at once if the socket is idle and takes it
    (:meth:`~trio_things.transport.upgrade.UpgradeStream.write_nowait`), and the relay
    is woken only for what is left: a backlog, or a queue that built up.
    """
    try:
        outbox.claim_relay()
        keepalive = Keepalive(interval=limits.keepalive_interval,
                              timeout=limits.keepalive_timeout, start=trio.current_time())
        writer = _RelayWriter(websocket=websocket, stream=stream, limits=limits)
        outbox.write_now = writer.write_now
        stream.on_unfinished_write = outbox.wake
        try:
            while True:
                with trio.move_on_at(keepalive.deadline()):
                    try:
                        await outbox.receive_channel.receive()
                    except trio.EndOfChannel:
                        return
                due = keepalive.due(now=trio.current_time(),
                                    received_at=stream.received_at,
                                    received_bytes=stream.bytes_received)
                if due is KeepaliveAction.GIVE_UP:
                    logger.info("closing a WebSocket client that sent nothing for %.1f s "
                                "after a ping", limits.keepalive_timeout)
                    await writer.close(KEEPALIVE_CLOSE_CODE, "keepalive ping timeout")
                    return
                # Read before taking: every frame queued before a close request is in
                # this take (the Outbox accepts none after it), so it precedes the close.
                closing = outbox.close_request
                data = b"".join(itertools.chain.from_iterable(outbox.take()))
                if due is KeepaliveAction.PING:
                    data += _KEEPALIVE_PING
                if ((data or stream.needs_flush or stream.broken)
                        and not await writer.write(data)):
                    return
                if closing is not None:
                    logger.warning("closing a WebSocket client (%d): %s", closing.code,
                                   closing.reason)
                    await writer.close(closing.code, closing.reason)
                    return
        finally:
            outbox.write_now = None
            stream.on_unfinished_write = None
    finally:
        if done is not None:
            done.cancel()


@attrs.define
class _RelayWriter:
    """How the relay writes to one connection, and closes it.

    A class rather than closures in the relay: an idle connection's memory is mostly
    what its waiting tasks hold, and four closures cost more than one small object.
    """

    websocket: trio_websocket.WebSocketConnection
    stream: UpgradeStream
    limits: WebSocketLimits

    def still_open(self) -> bool:
        return self.websocket.closed is None

    def write_now(self, frame: Frame) -> bool:
        """The Outbox's fast path (see :attr:`Outbox.write_now`); what it leaves
        unfinished wakes the relay (:attr:`UpgradeStream.on_unfinished_write`).

        Run once per delivery: no call here that can be saved (hence no ``still_open``).
        """
        if self.websocket.closed is not None:
            return True  # closing: dropped, as the relay drops it
        return self.stream.write_nowait(b"".join(frame))

    async def write(self, data: bytes) -> bool:
        """Write ``data`` (after any backlog); False when the connection is to end.

        First without waiting, as the fast path writes: a ``send_all`` yields to the
        scheduler while it holds the write lock, a publisher that finds the lock held
        queues its frame and wakes the relay again, and so a producer at full speed
        would keep every frame on the relay's slow path (one wake-up each) for good.
        """
        if data and self.still_open() and self.stream.write_nowait(data):
            if self.stream.broken:
                return False
            if not self.stream.needs_flush:
                return True
            data = b""  # the rest is the backlog, which a send_all writes first
        try:
            with trio.fail_after(self.limits.write_timeout):
                # Not written once the connection is closing: dropped, as it must be.
                await self.stream.send_all_while(data, self.still_open)
        except trio.TooSlowError:
            logger.warning("dropping a WebSocket client whose writes stalled "
                           "for %.1f s", self.limits.write_timeout)
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def close(self, code: int, reason: str) -> None:
        with trio.move_on_after(self.limits.close_timeout):
            await self.websocket.aclose(code, reason)
