"""The WebSocket binding: the opening handshake, the dialect, and the TD forms.

A request with ``Upgrade: websocket`` to ``/ws`` or ``/{thing}/ws`` leaves the h11 loop
as an :class:`~trio_things.transport.upgrade.UpgradeStream` (which replays the request
bytes h11 already read) and arrives at :func:`serve_websocket_upgrade`. It checks the
handshake, routes the path, checks the Origin and the token, chooses the dialect from the
client's ``Sec-WebSocket-Protocol`` (echoed back, :mod:`trio_things.protocol.dialects`),
and hands the open connection to :func:`trio_things.websockets.websocket_endpoint`, which
serves it until it ends (``docs/design.md``, "One connection, one nursery")::

    serve_websocket_upgrade             the handshake, then the connection's nursery:
      trio-websocket's reader           reads frames; answers pings and close frames
      websocket_endpoint                the processor (this task) and the relay

Close codes (RFC 6455 section 7.4.1) a client can expect:

====== ========================================================================
1000   the client closed normally (echoed)
1001   the server is shutting down
1002   a malformed frame (found by the frame guard before trio-websocket parses it)
1007   a text message or a close reason that is not UTF-8
1008   the client read too slowly: its queue of events and action status overflowed;
       or it kept sending faster than ``max_requests_per_second`` after 429 answers;
       or it sent too many frames, or a message in too many fragments; or it confirmed
       reading nothing (no pong to the credit pings) for ``write_timeout``
1009   a message above ``max_message_bytes`` (sent by trio-websocket)
1011   pinged after ``keepalive_interval`` of silence, no byte (a pong or anything
       else) within ``keepalive_timeout``
(none) a write made no progress within ``write_timeout``: the TCP connection is
       dropped, since half a frame may be on the wire
====== ========================================================================
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Final

import attrs
import trio
import trio_websocket
import wsproto
import wsproto.handshake

from trio_things.errors import BadRequest, NotFound, RemoteProtocolError
from trio_things.model.affordances import ActionSpec, Affordances, EventSpec, PropertySpec
from trio_things.model.description import Form, thing_id
from trio_things.protocol.access import WWW_AUTHENTICATE, AccessPolicy, Caller
from trio_things.protocol.dialects import SUBPROTOCOL, Dialect, choose_subprotocol
from trio_things.protocol.frame_guard import FrameGuard
from trio_things.protocol.labthings import LabThingsDialect
from trio_things.protocol.limits import WebSocketLimits
from trio_things.protocol.problems import PROBLEM_CONTENT_TYPE, ProblemDetails
from trio_things.protocol.routes import server_base, websocket_route
from trio_things.protocol.wtp import WebThingProtocol
from trio_things.runtime.dispatcher import Dispatcher
from trio_things.transport.http import HttpRequest, refuse_http_connection
from trio_things.transport.upgrade import UpgradeStream
from trio_things.websockets import websocket_endpoint

__all__ = [
    "SHUTDOWN_CLOSE_CODE",
    "WebSocketBinding",
    "WebSocketDialects",
    "check_handshake",
    "serve_websocket_upgrade",
]

#: "1001 indicates that an endpoint is 'going away', such as a server going down".
SHUTDOWN_CLOSE_CODE: Final = 1001


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

    @property
    def context(self) -> Mapping[str, str]:
        return {}  # the TD context defines the terms it uses

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
    scheme: str = "http"
    """``https`` when the server speaks TLS: the TD ids the Web Thing Protocol names
    derive from the base URL, scheme included."""
    max_cached: int = attrs.field(default=64, validator=attrs.validators.gt(0))
    _cache: dict[tuple[str, str, str | None], Dialect] = attrs.field(init=False, factory=dict)

    def route(self, path: str) -> str | None:
        """See :func:`websocket_route`."""
        return websocket_route(path, self.things)

    def dialect(self, route: str, subprotocol: str | None, host: str | None) -> Dialect:
        """The dialect for ``route`` (``""``: ``/ws``), the subprotocol chosen and the
        request's ``Host``: the LabThings dialect without a subprotocol on a Thing's own
        endpoint, else the Web Thing Protocol with TD ids as that client sees them."""
        base = server_base(host, self.default_host, self.scheme)
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
            websocket, dialect, caller = accepted
            del accepted
            try:
                await websocket_endpoint(websocket, nursery=nursery, stream=stream,
                                         dialect=dialect, dispatcher=dispatcher,
                                         limits=limits, caller=caller)
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
) -> tuple[trio_websocket.WebSocketConnection, Dialect, Caller] | None:
    """The opening handshake: the open connection, its dialect and who the client is;
    None when it was refused (with problem details).

    Refused with 403 when the ``Host`` is not a name of this server (DNS rebinding) or
    the ``Origin`` another site's; 401 without a valid token (here, and only here, the
    ``access_token`` query parameter counts: browsers cannot set headers on a
    WebSocket). The processor runs every command as this caller, so that only the
    token that invoked an action may cancel it."""
    try:
        check_handshake(request)
    except RemoteProtocolError as error:  # trio-websocket would answer a bare 400
        await refuse_http_connection(
            stream, error, headers=[("sec-websocket-version", "13")] if error.status == 426 else [])
        return None
    route = dialects.route(request.path)
    # Before trio-websocket reads a byte: every frame after the request head is counted
    # and checked before it parses or buffers it (protocol/frame_guard.py).
    stream.guard_frames(FrameGuard.from_limits(limits))
    if stream.over_socket:  # what credit bounds is the kernels' buffering
        stream.enable_credit(limits.backlog_seconds)
    ws_request = await trio_websocket.wrap_server_stream(
        nursery, stream, message_queue_size=1, max_message_size=limits.max_message_bytes)
    try:
        if route is None:
            raise NotFound(f"no WebSocket endpoint at {request.path!r}")
        access.check_host(request.header("host"), bound=dialects.default_host)
        access.check_websocket_origin(origin=request.header("origin"),
                                      host=request.header("host"))
        caller = access.caller(authorization=request.header("authorization"),
                               query=request.query, query_token=True)
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
    websocket = await ws_request.accept(subprotocol=subprotocol)
    _forget_handshake(websocket)
    return websocket, dialect, caller


#: What an open connection's wsproto keeps of its opening handshake once it is over: a
#: handshake that took no part in any (see :func:`_forget_handshake`). One for all.
_SPENT_HANDSHAKE: Final = wsproto.handshake.H11Handshake(wsproto.ConnectionType.SERVER)


def _forget_handshake(websocket: trio_websocket.WebSocketConnection) -> None:
    """Let go of the opening handshake's state: wsproto keeps, for the connection's
    life, the h11 connection that parsed the request, the request, and a queue of the
    handshake's events, about 3 KiB that an idle connection would hold for nothing.

    Once the connection is established, wsproto's ``WSConnection`` asks its
    ``handshake`` for nothing but its events (none are left: trio-websocket took the
    request before it could accept it), so a shared handshake that never saw a byte
    stands in. trio-websocket keeps its wsproto connection in ``_wsproto``, the one
    private attribute read here (trio-websocket is pinned to 0.12.x; the test
    ``test_an_open_connection_keeps_no_handshake_state`` fails if it moves): without
    it, nothing changes."""
    protocol = getattr(websocket, "_wsproto", None)
    if isinstance(protocol, wsproto.WSConnection) and protocol.connection is not None:
        protocol.handshake = _SPENT_HANDSHAKE
