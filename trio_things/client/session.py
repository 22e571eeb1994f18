"""One shared WebSocket per endpoint, speaking the Web Thing Protocol, that reconnects.

Every observation, subscription and WebSocket request of a client to one endpoint (the
``href`` of a TD's ``webthingprotocol`` form) shares one :class:`Session`: one socket,
one reader task. Requests are correlated to responses by ``correlationID`` (we set one
on every request; the draft makes the server echo it), and notifications carry the
``correlationID`` of the request that started them, which routes each to its
observation.

Theory of operation
-------------------
The server keeps one observation per property (one subscription per event) per
connection: "Observing a property the connection already observes replaces the earlier
observation". So local observers of the same property share one server-side
observation: the first sends ``observeproperty``, later ones attach to it (and are given
the latest value at once, as the first was), the last to leave sends
``unobserveproperty``.

The session starts with its first use. Its task, in the client's nursery, owns the
connection's nursery (trio-websocket's reader, our reader, a keepalive):

======================== ===================================================
first connection fails   the caller that started the session gets the error
connection lost          pending requests raise ConnectionLost; a warning is
                         logged; then, if anything is observed, reconnect
reconnect attempt fails  wait (exponential backoff with jitter), try again,
                         until ``ClientOptions.reconnect_for`` has passed
reconnected              a warning is logged; every observation is re-sent
                         with its old correlationID, so routes stay valid;
                         an event subscription with ``lastEventID`` (below)
nothing left to restore  the task ends; the next use starts a new one
client closing           the socket is closed (1000) and the task ends
======================== ===================================================

Resuming event subscriptions
----------------------------
A trio-things server stamps every notification with an ``eventID`` (``<epoch>.<n>``,
increasing within one server run) and keeps each Thing's recent events; a
``subscribeevent`` carrying ``lastEventID`` is sent, after its response, every event
after that id it still holds, oldest first, then live ones; or first a notification
with a ``gap`` member when it no longer holds them all (its ring overflowed, or it
restarted: another epoch). So each subscription remembers the ``eventID`` of the last
notification delivered to it (a gap's is its ``resumeID``) and is restored with it: its
sinks see every event once, in order, across a lost connection, and are told of a gap
(:class:`~trio_things.client.errors.NotificationsMissed`, raised by the iterator).

A subscription that has received no event yet resumes from the ``eventID`` of its
response: the server's newest id when the subscription was made. A server that sends
no ``eventID`` (not trio-things) gets the subscription restored without
``lastEventID``, as the draft has it, and a warning says events emitted while
disconnected are not replayed to it.

Action invocations made over the socket get their status pushed as notifications
only on the connection that invoked them; after a loss their handles are told
(:meth:`InvocationSink.lost`) so they can poll instead.

Cancellation: a cancelled request leaves the socket usable (its response, if it ever
comes, is dropped). A cancelled ``detach`` skips its unobserve request: the server
then keeps sending notifications this session drops, until the socket closes.

One module, though long: the connection's life (connect, read, route, keep alive,
reconnect, restore) is one state machine, and its parts share the pending requests and
the observations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Final, Protocol, cast

import attrs
import orjson
import trio
import trio_websocket

from trio_things.client.backoff import Backoff
from trio_things.client.errors import (
    ClientError,
    ConnectionLost,
    Timeout,
    UnsupportedOperation,
    error_for_problem,
    problem_from_json,
)
from trio_things.client.forms import SUBPROTOCOL
from trio_things.client.options import ClientOptions
from trio_things.client.shared import join
from trio_things.client.streams import Endpoint, OpenStream, connect_stream
from trio_things.client.values import JsonValue
from trio_things.client.wtp import Message, new_id, parse, request

__all__ = ["InvocationSink", "Session", "Sink"]

logger = logging.getLogger("trio_things.client")

#: The operation that ends each kind of observation.
UNDO: Final = {"observeproperty": "unobserveproperty", "subscribeevent": "unsubscribeevent"}
#: How long a closing client waits for the server to answer its close frame.
CLOSE_TIMEOUT: Final = 1.0
#: The largest message accepted from the server (trio-websocket closes with 1009 above).
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024

Key = tuple[str | None, str, str]  # (thingID, operation, name)


class Sink(Protocol):
    """Where an observation's notifications go. Called on the Trio thread, never
    blocking: a sink buffers or fails, it never makes the reader wait."""

    def deliver(self, message: Message) -> None: ...
    def fail(self, error: ClientError) -> None: ...


class InvocationSink(Protocol):
    """Where an invocation's ``invokeaction`` notifications go; ``lost()`` when the
    connection that would have pushed them is gone."""

    def deliver(self, message: Message) -> None: ...
    def lost(self) -> None: ...


@attrs.define(eq=False)
class _Pending:
    """One request waiting for its response."""

    event: trio.Event = attrs.Factory(trio.Event)
    message: Message | None = None
    error: ClientError | None = None

    def resolve(self, message: Message) -> None:
        self.message = message
        self.event.set()

    def fail(self, error: ClientError) -> None:
        self.error = error
        self.event.set()

    async def wait(self) -> Message:
        await self.event.wait()
        if self.error is not None:
            raise self.error
        assert self.message is not None
        return self.message


@attrs.define(eq=False)
class _Subscription:
    """One server-side observation (or event subscription), shared by local sinks."""

    key: Key
    correlation_id: str
    sinks: set[Sink] = attrs.Factory(set)
    established: trio.Event = attrs.Factory(trio.Event)
    error: ClientError | None = None
    last: Message | None = None
    event_id: str | None = None
    """An event subscription's resume point: the ``eventID`` of the last notification
    delivered (or of its response, see the module); sent as ``lastEventID`` when
    restored."""

    @property
    def resumable(self) -> bool:
        return self.key[1] == "subscribeevent"

    def deliver(self, message: Message) -> None:
        if self.key[1] == "observeproperty":
            self.last = message  # a late local observer starts from it
        elif self.resumable and (event_id := message.event_id) is not None:
            self.event_id = event_id
        for sink in list(self.sinks):
            sink.deliver(message)

    def fail(self, error: ClientError) -> None:
        self.error = error
        self.established.set()
        for sink in list(self.sinks):
            sink.fail(error)


@attrs.define
class _Attempt:
    established: bool = False


class Session:
    """The Web Thing Protocol over one WebSocket endpoint (``url``), shared.

    Built by the client, which owns ``nursery``; the session runs its task there.
    ``headers`` go with every handshake (an ``Authorization`` header, say).
    """

    def __init__(self, url: str, *, open_stream: OpenStream, options: ClientOptions,
                 nursery: trio.Nursery, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.url = url
        self._endpoint = Endpoint.from_url(url)
        self._open_stream = open_stream
        self._options = options
        self._nursery = nursery
        self._headers = [(k.encode(), v.encode()) for k, v in headers]
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._connected = trio.Event()
        self._pending: dict[str, _Pending] = {}
        self._subscriptions: dict[Key, _Subscription] = {}
        self._routes: dict[str, _Subscription] = {}
        self._invocations: dict[str, InvocationSink] = {}
        self._unobserving: dict[Key, trio.Event] = {}
        self._running = False
        self._closing = False
        self._closed = trio.Event()
        self._start_lock = trio.Lock()
        self._close_reason = ""

    @property
    def connected(self) -> bool:
        """Whether the socket is open right now."""
        return self._ws is not None

    @property
    def observation_count(self) -> int:
        """Server-side observations and subscriptions held on this socket."""
        return len(self._subscriptions)

    # ------------------------------------------------------------------ requests

    async def request(self, operation: str, *, thing_id: str | None, name: str | None = None,
                      members: Mapping[str, JsonValue] | None = None,
                      correlation_id: str | None = None,
                      what: str | None = None) -> Message:
        """Send one request and return its response.

        Raises:
            ConnectionLost (Unreachable): no connection, or it broke before the response.
            Timeout: no response within the timeout.
            NotFound, InvalidValue, ...: the response is an error (its problem details
            attached), see :func:`~trio_things.client.errors.error_for_problem`.
        """
        limit = self._options.timeout
        cid = correlation_id or new_id()
        text = request(operation, thing_id=thing_id, correlation_id=cid, name=name,
                       members=members)
        message: Message | None = None
        with trio.move_on_after(limit):
            message = await self._exchange(cid, text)
        if message is None:
            if self._ws is None:
                raise ConnectionLost(f"{self.url}: no connection within {limit:g} s")
            raise Timeout(f"{operation}: no response from {self.url} within {limit:g} s")
        if message.error is not None:
            subject = what or (f"{name!r}" if name else self.url)
            raise error_for_problem(message.error, operation=operation, what=subject)
        return message

    async def _exchange(self, cid: str, text: str) -> Message:
        pending = _Pending()
        self._pending[cid] = pending
        try:
            ws = await self._wait_connected()
            try:
                await ws.send_message(text)
            except trio_websocket.ConnectionClosed:
                raise ConnectionLost(f"{self.url}: the connection closed") from None
            return await pending.wait()
        finally:
            if self._pending.get(cid) is pending:
                del self._pending[cid]

    async def _wait_connected(self) -> trio_websocket.WebSocketConnection:
        while self._ws is None:
            if self._closing:
                raise ConnectionLost(f"{self.url}: the client is closing")
            if not self._running:
                await self._ensure_running()
            else:
                await self._connected.wait()
        return self._ws

    async def _ensure_running(self) -> None:
        async with self._start_lock:
            if not self._running:
                await self._nursery.start(self._run)

    # ------------------------------------------------------------------ observations

    async def attach(self, operation: str, *, thing_id: str | None, name: str,
                     sink: Sink) -> None:
        """Have ``sink`` receive the notifications of ``operation`` (``observeproperty``
        or ``subscribeevent``) on ``name``; returns once the server confirmed."""
        key: Key = (thing_id, operation, name)
        while key in self._unobserving:  # an unobserve of it is on its way: let it land
            await self._unobserving[key].wait()
        subscription = self._subscriptions.get(key)
        if subscription is not None:
            limit = self._options.timeout
            await join(subscription, sink, limit=limit, no_answer=(
                f"{operation} {name!r}: no response from {self.url} within {limit:g} s"))
            return
        subscription = _Subscription(key=key, correlation_id=new_id())
        subscription.sinks.add(sink)
        self._subscriptions[key] = subscription
        self._routes[subscription.correlation_id] = subscription
        try:
            await self.request(operation, thing_id=thing_id, name=name,
                               correlation_id=subscription.correlation_id,
                               what=f"{name!r}")
        except BaseException as error:
            self._forget(subscription)
            subscription.error = (error if isinstance(error, ClientError)
                                  else ConnectionLost(f"{operation} {name!r} was abandoned"))
            subscription.established.set()
            raise
        subscription.established.set()

    async def detach(self, operation: str, *, thing_id: str | None, name: str,
                     sink: Sink) -> None:
        """Stop delivering to ``sink``; the last sink of an observation ends it on the
        server too (best effort: errors are ignored, the socket's end ends it anyway)."""
        key: Key = (thing_id, operation, name)
        subscription = self._subscriptions.get(key)
        if subscription is None or sink not in subscription.sinks:
            return
        subscription.sinks.discard(sink)
        if subscription.sinks:
            return
        self._forget(subscription)
        if self._ws is None or self._closing:
            return
        done = self._unobserving[key] = trio.Event()
        try:
            await self.request(UNDO[operation], thing_id=thing_id, name=name)
        except ClientError as error:
            logger.debug("%s %r on %s failed: %s", UNDO[operation], name, self.url, error)
        finally:
            del self._unobserving[key]
            done.set()

    def _forget(self, subscription: _Subscription) -> None:
        if self._subscriptions.get(subscription.key) is subscription:
            del self._subscriptions[subscription.key]
        self._routes.pop(subscription.correlation_id, None)

    # ------------------------------------------------------------------ invocations

    async def invoke(self, *, thing_id: str | None, name: str, members: Mapping[str, JsonValue],
                     sink: InvocationSink) -> Message:
        """Send ``invokeaction``; its status notifications go to ``sink`` until
        :meth:`release`. Returns the response (the status, ``pending`` usually)."""
        cid = new_id()
        self._invocations[cid] = sink
        try:
            return await self.request("invokeaction", thing_id=thing_id, name=name,
                                      members=members, correlation_id=cid,
                                      what=f"action {name!r}")
        except BaseException:
            self._invocations.pop(cid, None)
            raise

    def release(self, sink: InvocationSink) -> None:
        """Stop routing notifications to ``sink`` (its invocation ended)."""
        for cid, candidate in list(self._invocations.items()):
            if candidate is sink:
                del self._invocations[cid]

    # ------------------------------------------------------------------ the task

    async def aclose(self) -> None:
        """Close the socket politely (1000) and let the task end; for a normal exit
        (a cancelled client just drops the connection)."""
        self._closing = True
        ws = self._ws
        try:
            if ws is not None:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose()
        finally:
            self._closed.set()

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                   ) -> None:
        """Connect, serve, reconnect; see the module's table.

        Returns:
            When nothing is left to restore after a loss, when reconnecting gave up,
            or when the client closes. Raises only before ``task_status.started()``.
        """
        self._running = True
        try:
            await self._connect_and_reconnect(task_status)
        finally:
            self._running = False
            self._ws = None
            self._connected.set()  # wake waiters: they start a new task or give up
            self._connected = trio.Event()
            self._fail_pending(ConnectionLost(f"{self.url}: not connected"))

    async def _connect_and_reconnect(self, task_status: trio.TaskStatus[None]) -> None:
        backoff = Backoff(self._options.backoff_initial, self._options.backoff_max)
        connected_once = False
        down_since = trio.current_time()
        while True:
            attempt = _Attempt()
            status = trio.TASK_STATUS_IGNORED if connected_once else task_status
            try:
                await self._connection(attempt, status, restoring=connected_once)
                reason = self._close_reason or "the connection closed"
            except ClientError as error:
                if not (connected_once or attempt.established):
                    raise  # the first connection never came up: the caller hears why
                reason = str(error)
            if self._closing:
                return
            if attempt.established:
                connected_once = True
                down_since = trio.current_time()
                backoff.reset()
                self._lost(reason)
            else:
                logger.info("reconnecting to %s failed: %s", self.url, reason)
            if not self._subscriptions:
                return
            limit = self._options.reconnect_for
            if limit is not None and trio.current_time() - down_since >= limit:
                logger.warning("giving up on %s after %g s without a connection; %d "
                               "observation(s) end", self.url, limit, len(self._subscriptions))
                gone = ConnectionLost(f"{self.url}: no connection for {limit:g} s ({reason})")
                for subscription in list(self._subscriptions.values()):
                    self._forget(subscription)
                    subscription.fail(gone)
                return
            await trio.sleep(backoff.next())

    def _lost(self, reason: str) -> None:
        logger.warning("lost the WebSocket connection to %s (%s); reconnecting%s",
                       self.url, reason, f" to restore {len(self._subscriptions)} "
                       "observation(s)" if self._subscriptions else "")
        self._fail_pending(ConnectionLost(f"{self.url}: {reason}"))
        invocations, self._invocations = self._invocations, {}
        for sink in invocations.values():
            sink.lost()

    def _fail_pending(self, error: ClientError) -> None:
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            entry.fail(error)

    async def _connection(self, attempt: _Attempt, task_status: trio.TaskStatus[None], *,
                          restoring: bool) -> None:
        """One connection, from handshake to close. Raises a ClientError when it cannot
        be made, or when it ends other than by a close from either side."""
        stream: trio.abc.Stream | None = None
        self._close_reason = ""
        try:
            async with trio.open_nursery() as nursery:
                ws: trio_websocket.WebSocketConnection | None = None
                with trio.move_on_after(self._options.timeout):
                    stream = await connect_stream(self._open_stream, self._endpoint)
                    ws = await trio_websocket.wrap_client_stream(
                        nursery, cast(trio.SocketStream, stream), self._endpoint.host_header,
                        self._endpoint.target, subprotocols=[SUBPROTOCOL],
                        extra_headers=self._headers, max_message_size=MAX_MESSAGE_BYTES)
                if ws is None:
                    raise Timeout(f"{self.url}: no WebSocket handshake within "
                                  f"{self._options.timeout:g} s")
                if ws.subprotocol != SUBPROTOCOL:
                    raise UnsupportedOperation(
                        f"{self.url} did not accept the {SUBPROTOCOL!r} subprotocol")
                attempt.established = True
                self._ws = ws
                self._connected.set()
                task_status.started()
                if restoring:
                    logger.warning("reconnected to %s; restoring %d observation(s)",
                                   self.url, len(self._subscriptions))
                    unanchored = [s.key[2] for s in self._subscriptions.values()
                                  if s.resumable and s.event_id is None and s.established.is_set()]
                    if unanchored:
                        logger.warning(
                            "no event id to resume %s from (no event had reached them): "
                            "events emitted while disconnected are not replayed to them",
                            ", ".join(repr(name) for name in unanchored))
                    for subscription in list(self._subscriptions.values()):
                        nursery.start_soon(self._restore, subscription)
                nursery.start_soon(self._keepalive, ws)
                await self._read(ws)
                if self._closing:  # trio-websocket's reader must see the close through
                    await self._closed.wait()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            collapsed = _collapse(group, self.url)
            if collapsed is group:
                raise
            raise collapsed from None
        finally:
            self._ws = None
            if self._connected.is_set():
                self._connected = trio.Event()
            if stream is not None:
                await trio.aclose_forcefully(stream)

    async def _read(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            try:
                text = await ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                reason = closed.reason
                if reason is not None:
                    self._close_reason = (f"closed with {reason.code}"
                                          + (f" {reason.reason}" if reason.reason else ""))
                return
            try:
                message = parse(text)
            except ValueError as error:
                logger.debug("ignoring a message from %s: %s", self.url, error)
                continue
            self._route(message)

    def _route(self, message: Message) -> None:
        cid = message.correlation_id
        if cid is None:
            return
        if message.message_type == "response":
            subscription = self._routes.get(cid)
            if subscription is not None and subscription.resumable and message.error is None:
                if subscription.event_id is None:
                    subscription.event_id = message.event_id
            pending = self._pending.get(cid)
            if pending is not None:
                pending.resolve(message)
        elif message.message_type == "notification":
            subscription = self._routes.get(cid)
            if subscription is not None:
                subscription.deliver(message)
            elif (invocation := self._invocations.get(cid)) is not None:
                invocation.deliver(message)

    async def _restore(self, subscription: _Subscription) -> None:
        if (self._subscriptions.get(subscription.key) is not subscription
                or not subscription.established.is_set()):
            return  # ended meanwhile, or its own first request is still on its way
        thing_id, operation, name = subscription.key
        members: dict[str, JsonValue] = {}
        if subscription.event_id is not None:
            members["lastEventID"] = subscription.event_id
        try:
            await self.request(operation, thing_id=thing_id, name=name, members=members,
                               correlation_id=subscription.correlation_id, what=f"{name!r}")
        except ConnectionLost:
            return  # this connection is gone too; the next one tries again
        except ClientError as error:
            logger.warning("could not restore the observation of %r on %s: %s",
                           name, self.url, error)
            self._forget(subscription)
            subscription.fail(error)

    async def _keepalive(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            await trio.sleep(self._options.keepalive_interval)
            with trio.move_on_after(self._options.timeout) as waiting:
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
            if waiting.cancelled_caught:
                raise ConnectionLost(f"no answer to a ping within {self._options.timeout:g} s")


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _collapse(group: BaseExceptionGroup[BaseException], url: str) -> BaseException:
    """The one error a failed connection's nursery means, or ``group`` itself when it
    holds a cancellation (which must propagate as it is) or something unexpected (a bug,
    never hidden)."""
    leaves = _leaves(group)
    if any(not isinstance(leaf, Exception) for leaf in leaves):
        return group
    for leaf in leaves:
        if isinstance(leaf, ClientError):
            return leaf
        if isinstance(leaf, trio_websocket.ConnectionRejected):
            problem = problem_from_json(_json_body(leaf.body), leaf.status_code)
            return error_for_problem(problem, operation="connect",
                                     what=f"the WebSocket handshake with {url}")
        if isinstance(leaf, (trio_websocket.HandshakeError, trio.BrokenResourceError,
                             trio.ClosedResourceError, OSError)):
            return ConnectionLost(f"{url}: {leaf or type(leaf).__name__}")
    return group


def _json_body(body: bytes | None) -> JsonValue:
    if not body:
        return None
    try:
        value: JsonValue = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")
    return value
