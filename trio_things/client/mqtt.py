"""The client's MQTT side: a TD's MQTT forms (the WoT MQTT binding template) performed
through a broker.

A broker is not a server: the client never talks to the Thing, only publishes and
subscribes, and the server (its MQTT bridge, :mod:`trio_things.bindings.mqtt`) does
the same on the other side. So each operation is a pattern of publications:

================ ===============================================================
observe          subscribe to the form's filter; the retained message (the current
                 value) comes first, then each publication is a new value
subscribe        subscribe to the event's filter; each publication is one emission
read             subscribe, take the first (retained) message, unsubscribe; no
                 retained value within ``ClientOptions.timeout``: ``Timeout``
write            publish the JSON value on the form's topic with an MQTT 5 response
                 topic (``<client id>/replies``) and fresh correlation data; the
                 reply (user property ``status``) is 204, or problem details
invoke           publish the input (JSON, or empty for none) the same way; the
                 replies are 201 (the invocation: id, pending) then 200 (the final
                 invocation: output, or error as problem details)
================ ===============================================================

A problem reply raises what an HTTP answer of that status raises
(:func:`~trio_things.client.errors.error_for_problem`): ``InvalidValue`` for 422, and
so on. An invocation's final status gives ``result()`` the output, ``ActionFailed`` or
``ActionCancelled``, as over the other bindings.

Theory of operation
-------------------
One :class:`Broker` per broker (scheme, host, port) for the whole
:class:`~trio_things.client.Client`, made by :class:`MqttClient` at the first form
that needs it; its connection is opened then, in a task of the client's nursery, and
closed (DISCONNECT) when the client closes. Every observation, read and request of
the client through that broker shares the one connection
(:mod:`trio_things.transport.mqtt`, paho-mqtt driven from the Trio thread); local
observers of one filter share one MQTT subscription, made by the first and ended
(UNSUBSCRIBE) by the last. Messages are routed by topic to the subscriptions whose
filter matches, and replies (on the client's response topic) by correlation data.

======================== ===================================================
first connection fails   the caller that needed it gets ``Unreachable``
connection lost          waiting requests raise ``ConnectionLost``; a
                         warning is logged; then, if anything is subscribed
                         or an invocation is followed, reconnect
reconnect attempt fails  wait (exponential backoff with jitter), try again,
                         until ``ClientOptions.reconnect_for`` has passed;
                         then the observations end with ``ConnectionLost``
reconnected              a warning is logged; the response topic and every
                         filter are subscribed to again: an observed
                         property's retained value comes again
client closing           DISCONNECT, and the task ends
======================== ===================================================

Sessions are clean (every connection starts afresh, as the transport makes them), so
what is published while the client is disconnected is not delivered to it later: an
event subscription pauses and goes on with the events published after it is back (a
warning says so), unless the server says it lost some itself (below). Duplicates
(QoS 1 is "at least once"; the server's bridge may publish an event twice after a
reconnect of its own) are dropped by ``eventID``.

Beyond the binding template, as trio-things servers publish (``trio_things.protocol.
mqtt``): each value and event carries its ``eventID`` (a user property), kept as
``Change.event_id``; and when the server's own publications to the broker had a gap,
it publishes a problem on ``{prefix}/{thing}/missed``. An event subscription whose
filter has the trio-things layout (``.../{thing}/events/{name}``) subscribes to that
topic too, and its iterator raises
:class:`~trio_things.client.errors.NotificationsMissed` when one arrives, as it does
over WebSocket.

An invocation made over MQTT learns its end from the 200 reply. When the connection is
lost before it, the reply may be lost with it: the handle then polls the invocation
over HTTP (its ``href``, from the 201 reply, or the TD's ``queryaction`` form) until
it ends, as a WebSocket invocation does; a TD that offers no way to ask ends the
handle with :class:`~trio_things.client.errors.InvocationLost` instead of leaving it
waiting for a reply that may never come.

Credentials: ``ClientOptions.mqtt_username`` and ``mqtt_password``, for every broker
(the client's ``token`` is an HTTP bearer token, no MQTT password); without them,
anonymous. ``mqtts://`` brokers are checked against the system's certificate
authorities, as ``https`` servers are.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import ssl
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Final, Literal, Protocol

import attrs
import orjson
import trio

from trio_things.client.action_status import ActionStatus
from trio_things.client.actions import Invocation
from trio_things.client.backoff import Backoff
from trio_things.client.errors import (
    ClientError,
    ConnectionLost,
    InvocationLost,
    ServerError,
    Timeout,
    Unreachable,
    UnsupportedOperation,
    error_for_problem,
    problem_from_json,
)
from trio_things.client.forms import MQTT_SCHEMES, Form
from trio_things.client.options import ClientOptions
from trio_things.client.session import Sink
from trio_things.client.shared import join
from trio_things.client.values import JsonValue
from trio_things.client.wtp import Message
from trio_things.protocol.mqtt import DEFAULT_PORTS, JSON, PROBLEM_JSON, BrokerUrl, Topics
from trio_things.protocol.problems import ProblemDetails
from trio_things.transport.mqtt import (
    BrokerConnectionLost,
    BrokerUnavailable,
    MqttConnection,
    MqttMessage,
    open_mqtt_connection,
    publish_properties,
)

__all__ = [
    "Broker",
    "MessageSink",
    "MqttClient",
    "MqttInvocation",
    "MqttSource",
    "ReplySink",
    "broker_url",
    "missed_topic",
    "topic_matches",
]

logger = logging.getLogger("trio_things.client")

#: How long a closing client waits for its broker connections to say DISCONNECT.
CLOSE_TIMEOUT: Final = 1.0
#: Event ids remembered per subscription, to drop a duplicate delivery.
_RECENT_EVENT_IDS: Final = 256


# ---------------------------------------------------------------------------- sans-IO


def broker_url(href: str) -> BrokerUrl:
    """The broker an MQTT form's ``href`` names (its path is the topic, not ours);
    :exc:`ValueError` for an href that names none."""
    parts = urllib.parse.urlsplit(href)
    scheme = parts.scheme.lower()
    if scheme not in MQTT_SCHEMES or not parts.hostname:
        raise ValueError(f"{href!r} names no MQTT broker (mqtt://host:port/...)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{href!r} has no valid port") from None
    return BrokerUrl(scheme="mqtts" if scheme == "mqtts" else "mqtt", host=parts.hostname,
                     port=port if port is not None else DEFAULT_PORTS[scheme])


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (MQTT 5 section 4.7: ``+`` one level,
    ``#`` the rest, and wildcards never match a ``$`` topic's first level)."""
    if topic_filter == topic:
        return True
    wanted, levels = topic_filter.split("/"), topic.split("/")
    if levels[0].startswith("$") and wanted[0] in ("+", "#"):
        return False
    for index, level in enumerate(wanted):
        if level == "#":
            return True
        if index >= len(levels) or level not in ("+", levels[index]):
            return False
    return len(wanted) == len(levels)


def missed_topic(event_filter: str) -> str | None:
    """Where a trio-things server says its publications for the Thing of
    ``event_filter`` had a gap: ``{prefix}/{thing}/missed`` for an event's
    ``{prefix}/{thing}/events/{name}`` (:class:`trio_things.protocol.mqtt.Topics`);
    None for a filter of another layout (or with wildcards)."""
    levels = event_filter.split("/")
    if len(levels) < 4 or levels[-2] != "events" or any(
            level in ("+", "#") for level in levels):
        return None
    return Topics("/".join(levels[:-3])).missed(levels[-3])


def _loads(payload: bytes) -> JsonValue:
    """A payload's JSON, or its text when it is none (for an error's detail)."""
    try:
        value: JsonValue = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", "replace")
    return value


def reply_problem(message: MqttMessage) -> ProblemDetails | None:
    """The problem a reply carries (user property ``status`` 4xx/5xx, or content type
    ``application/problem+json``), or None for a success."""
    status = message.user_property("status")
    code = _http_status(status) if status is not None else None
    if status is not None and code is None:  # not int(): "²" is a digit to isdigit()
        return problem_from_json(f"a reply whose status {status:.20}{'...' * (len(status) > 20)}"
                                 " is no HTTP status", 502)
    if (code is None or code < 400) and message.content_type != PROBLEM_JSON:
        return None
    return problem_from_json(_loads(message.payload) if message.payload else None, code)


def _http_status(text: str) -> int | None:
    """A ``status`` user property as an HTTP status (three ASCII digits, 100-599)."""
    if len(text) != 3 or not text.isascii() or not text.isdigit():
        return None
    code = int(text)
    return code if 100 <= code <= 599 else None


def new_correlation() -> bytes:
    """Fresh correlation data for one request."""
    return uuid.uuid4().bytes


# ---------------------------------------------------------------------------- the broker


class MessageSink(Protocol):
    """Where a subscription's messages go; called on the Trio thread, never blocking."""

    def deliver(self, message: MqttMessage) -> None: ...
    def fail(self, error: ClientError) -> None: ...


class ReplySink(Protocol):
    """Where the replies to a request go after the first (an invocation's final one)."""

    def reply(self, message: MqttMessage) -> None: ...
    def lost(self) -> None:
        """The connection broke: replies published meanwhile are lost."""
        ...


@attrs.define(eq=False)
class _Subscription:
    """One MQTT subscription, shared by the local sinks of one filter."""

    topic_filter: str
    qos: int
    keep_last: bool
    sinks: set[MessageSink] = attrs.Factory(set)
    established: trio.Event = attrs.Factory(trio.Event)
    error: ClientError | None = None
    last: MqttMessage | None = None
    """A property's latest value: what a later local observer (or read) starts from."""

    def deliver(self, message: MqttMessage) -> None:
        if self.keep_last:  # an empty (retained) message deletes the value: none now
            self.last = message if message.payload else None
        for sink in list(self.sinks):
            sink.deliver(message)

    def fail(self, error: ClientError) -> None:
        self.error = error
        self.established.set()
        for sink in list(self.sinks):
            sink.fail(error)


@attrs.define(eq=False)
class _Exchange:
    """One request waiting for its first reply; later replies go to ``then``."""

    then: ReplySink | None = None
    answered: trio.Event = attrs.Factory(trio.Event)
    first: MqttMessage | None = None
    error: ClientError | None = None

    def reply(self, message: MqttMessage) -> None:
        if not self.answered.is_set():
            self.first = message
            self.answered.set()
        elif self.then is not None:
            self.then.reply(message)

    def lost(self, error: ClientError) -> None:
        if not self.answered.is_set():
            self.error = error
            self.answered.set()
        elif self.then is not None:
            self.then.lost()


@attrs.define(eq=False)
class _First:
    """A read's sink: the first message with a payload."""

    arrived: trio.Event = attrs.Factory(trio.Event)
    message: MqttMessage | None = None
    error: ClientError | None = None

    def deliver(self, message: MqttMessage) -> None:
        if message.payload and self.message is None:
            self.message = message
            self.arrived.set()

    def fail(self, error: ClientError) -> None:
        self.error = error
        self.arrived.set()


@attrs.define
class _Attempt:
    established: bool = False


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class Broker:
    """The client's one connection to one broker, shared (see the module).

    Built by :class:`MqttClient`, which owns ``nursery``; the connection's task runs
    there, started by the first operation that needs it.
    """

    def __init__(self, url: BrokerUrl, *, nursery: trio.Nursery, options: ClientOptions
                 ) -> None:
        self.url = url
        self.client_id = f"trio-things-client-{uuid.uuid4().hex[:12]}"
        """Unique per connection owner: a broker drops a client when another connects
        with the same id."""
        self.reply_topic = f"{self.client_id}/replies"
        """Where the server answers our writes and invocations (MQTT 5 response topic)."""
        self.connections = 0
        """Connections made so far (a test waits for a reconnection with it)."""
        self._nursery = nursery
        self._options = options
        self._connection: MqttConnection | None = None
        self._connected = trio.Event()
        self._subscriptions: dict[str, _Subscription] = {}
        self._exchanges: dict[bytes, _Exchange] = {}
        self._running = False
        self._stopped = trio.Event()
        self._closing = False
        self._closed = trio.Event()
        self._start_lock = trio.Lock()

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now."""
        return self._connection is not None

    # ------------------------------------------------------------------ subscriptions

    async def attach(self, topic_filter: str, *, qos: int, sink: MessageSink,
                     keep_last: bool) -> None:
        """Have ``sink`` receive the messages matching ``topic_filter``; returns once the
        broker confirmed the subscription (SUBACK). ``keep_last``: remember the latest
        message, and give it at once to the sinks that attach later (a property's
        value, which the broker retains)."""
        subscription = self._subscriptions.get(topic_filter)
        if subscription is not None:
            limit = self._options.timeout
            await join(subscription, sink, limit=limit, no_answer=(
                f"no SUBACK for {topic_filter!r} from the MQTT broker {self.url} within "
                f"{limit:g} s"))
            return
        subscription = _Subscription(topic_filter=topic_filter, qos=qos, keep_last=keep_last)
        subscription.sinks.add(sink)
        self._subscriptions[topic_filter] = subscription
        try:
            await self._subscribe(topic_filter, qos)
        except BaseException as error:
            self._forget(subscription)
            subscription.error = (error if isinstance(error, ClientError) else ConnectionLost(
                f"the subscription to {topic_filter!r} was abandoned"))
            subscription.established.set()
            raise
        subscription.established.set()

    def detach(self, topic_filter: str, sink: MessageSink) -> None:
        """Stop delivering to ``sink``; the last sink of a filter unsubscribes (not
        waiting for the UNSUBACK: packets keep their order, so a new SUBSCRIBE of the
        same filter lands after it)."""
        subscription = self._subscriptions.get(topic_filter)
        if subscription is None or sink not in subscription.sinks:
            return
        subscription.sinks.discard(sink)
        if subscription.sinks:
            return
        self._forget(subscription)
        if self._connection is not None and not self._closing:
            self._connection.unsubscribe([topic_filter])

    def _forget(self, subscription: _Subscription) -> None:
        if self._subscriptions.get(subscription.topic_filter) is subscription:
            del self._subscriptions[subscription.topic_filter]

    async def _subscribe(self, topic_filter: str, qos: int) -> None:
        limit = self._options.timeout
        with trio.move_on_after(limit):
            connection = await self._wait_connected()
            try:
                await connection.subscribe([topic_filter], qos=qos)
            except BrokerConnectionLost as error:
                raise ConnectionLost(f"the MQTT broker {self.url}: {error}") from None
            except BrokerUnavailable as error:
                raise ServerError(f"the MQTT broker {self.url} refused the subscription to "
                                  f"{topic_filter!r}: {error}") from None
            except ValueError as error:
                raise UnsupportedOperation(f"the TD's filter {topic_filter!r} is no MQTT "
                                           f"topic filter: {error}") from None
            return
        raise self._no_answer(f"no SUBACK for {topic_filter!r}")

    def _no_answer(self, what: str) -> ClientError:
        limit = self._options.timeout
        if self._connection is None:
            return ConnectionLost(f"no connection to the MQTT broker {self.url} within "
                                  f"{limit:g} s")
        return Timeout(f"{what} from the MQTT broker {self.url} within {limit:g} s")

    # ------------------------------------------------------------------ operations

    async def read(self, form: Form, *, what: str) -> JsonValue:
        """The value retained on the form's filter: the latest an observation of it
        holds, else the first message a subscription brings (then unsubscribed).

        Raises:
            Timeout: nothing came within the timeout: the broker retains nothing there
                (the server has not published it, or this is no retained topic).
            ServerError: the value is no JSON.
        """
        assert form.topic is not None
        subscription = self._subscriptions.get(form.topic)
        message = subscription.last if subscription is not None else None
        if message is None:
            first = _First()
            await self.attach(form.topic, qos=form.qos or 0, sink=first, keep_last=True)
            try:
                with trio.move_on_after(self._options.timeout):
                    await first.arrived.wait()
            finally:
                self.detach(form.topic, first)
            if first.error is not None:
                raise first.error
            if first.message is None:
                raise Timeout(f"{what}: no value within {self._options.timeout:g} s: the "
                              f"MQTT broker {self.url} retains none on {form.topic!r} (has "
                              "the server published it?)")
            message = first.message
        try:
            value: JsonValue = orjson.loads(message.payload)
        except orjson.JSONDecodeError as error:
            raise ServerError(f"{what}: the value on {form.topic!r} is no JSON: "
                              f"{error}") from None
        return value

    async def write(self, form: Form, value: JsonValue, *, what: str) -> None:
        """Publish ``value`` on the form's topic and wait for the reply.

        Raises:
            InvalidValue, NotWritable, ServerError, ...: a problem reply, by status.
            Timeout: no reply within the timeout (a server that does not take writes
                from the broker, or is not connected to it).
        """
        assert form.topic is not None
        reply = await self.exchange(form.topic, orjson.dumps(value), qos=form.qos or 0,
                                    what=what)
        problem = reply_problem(reply)
        if problem is not None:
            raise error_for_problem(problem, operation="writeproperty", what=what)

    async def exchange(self, topic: str, payload: bytes, *, qos: int, what: str,
                       correlation: bytes | None = None, then: ReplySink | None = None
                       ) -> MqttMessage:
        """Publish a request on ``topic`` (response topic: ours; correlation data:
        ``correlation``, fresh by default) and return its first reply, within the
        timeout. Later replies go to ``then``, until :meth:`release`."""
        correlation = correlation or new_correlation()
        exchange = self._exchanges[correlation] = _Exchange(then=then)
        keep = False
        try:
            with trio.move_on_after(self._options.timeout):
                connection = await self._wait_connected()
                try:
                    sent = connection.publish(topic, payload, qos=qos,
                                              properties=publish_properties(
                                                  content_type=JSON if payload else None,
                                                  response_topic=self.reply_topic,
                                                  correlation_data=correlation))
                except ValueError as error:
                    raise UnsupportedOperation(f"{what}: the TD's topic {topic!r} cannot be "
                                               f"published to: {error}") from None
                if sent is None:
                    raise ConnectionLost(f"the MQTT broker {self.url}: the connection closed")
                await exchange.answered.wait()
            if exchange.error is not None:
                raise exchange.error
            if exchange.first is None:
                silence = self._no_answer(f"{what}: no reply on {self.reply_topic!r}")
                if isinstance(silence, Timeout):
                    silence = Timeout(f"{silence} (is the server connected to the broker, "
                                      "and does it take commands from it?)")
                raise silence
            keep = then is not None
            return exchange.first
        finally:
            if not keep and self._exchanges.get(correlation) is exchange:
                del self._exchanges[correlation]

    def release(self, correlation: bytes) -> None:
        """Stop routing the replies with ``correlation`` (its invocation ended)."""
        self._exchanges.pop(correlation, None)

    # ------------------------------------------------------------------ the task

    async def aclose(self) -> None:
        """Disconnect politely and let the task end; for a normal exit (a cancelled
        client just drops the connection, after a DISCONNECT if the socket takes it)."""
        self._closing = True
        self._closed.set()
        if self._running:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._stopped.wait()

    async def _wait_connected(self) -> MqttConnection:
        while self._connection is None:
            if self._closing:
                raise ConnectionLost(f"the MQTT broker {self.url}: the client is closing")
            if not self._running:
                await self._ensure_running()
            else:
                await self._connected.wait()
        return self._connection

    async def _ensure_running(self) -> None:
        async with self._start_lock:
            if not self._running:
                await self._nursery.start(self._run)

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                   ) -> None:
        """Connect, serve, reconnect (the module's table). Raises only before
        ``task_status.started()`` (``Unreachable``: the first connection failed)."""
        self._running = True
        self._stopped = trio.Event()
        try:
            await self._connect_and_reconnect(task_status)
        finally:
            self._running = False
            self._connection = None
            self._connected.set()  # wake waiters: they start a new task or give up
            self._connected = trio.Event()
            gone = ConnectionLost(f"the MQTT broker {self.url}: not connected")
            for exchange in list(self._exchanges.values()):
                exchange.lost(gone)
            self._stopped.set()

    async def _connect_and_reconnect(self, task_status: trio.TaskStatus[None]) -> None:
        backoff = Backoff(self._options.backoff_initial, self._options.backoff_max)
        connected_once = False
        down_since = trio.current_time()
        while True:
            attempt = _Attempt()
            status = trio.TASK_STATUS_IGNORED if connected_once else task_status
            try:
                await self._serve_connection(attempt, status, restoring=connected_once)
                reason = "the connection closed"
            except (BrokerUnavailable, BrokerConnectionLost) as error:
                if not connected_once and not attempt.established:
                    raise Unreachable(f"cannot connect to the MQTT broker {self.url}: "
                                      f"{error}") from None
                reason = str(error)
            if self._closing:
                return
            if attempt.established:
                connected_once = True
                down_since = trio.current_time()
                backoff.reset()
                self._lost(reason)
            else:
                logger.info("reconnecting to the MQTT broker %s failed: %s", self.url, reason)
            if not self._subscriptions and not self._exchanges:
                return
            limit = self._options.reconnect_for
            if limit is not None and trio.current_time() - down_since >= limit:
                logger.warning("giving up on the MQTT broker %s after %g s without a "
                               "connection; %d subscription(s) end", self.url, limit,
                               len(self._subscriptions))
                gone = ConnectionLost(f"the MQTT broker {self.url}: no connection for "
                                      f"{limit:g} s ({reason})")
                for subscription in list(self._subscriptions.values()):
                    self._forget(subscription)
                    subscription.fail(gone)
                self._exchanges.clear()  # their invocations were told: they poll, or ended
                return
            with trio.move_on_after(backoff.next()):
                await self._closed.wait()
            if self._closing:
                return

    def _lost(self, reason: str) -> None:
        logger.warning("lost the MQTT broker %s (%s); reconnecting%s", self.url, reason,
                       f" to restore {len(self._subscriptions)} subscription(s)"
                       if self._subscriptions else "")
        error = ConnectionLost(f"the MQTT broker {self.url}: {reason}")
        for exchange in list(self._exchanges.values()):
            exchange.lost(error)

    async def _serve_connection(self, attempt: _Attempt, task_status: trio.TaskStatus[None], *,
                          restoring: bool) -> None:
        """One connection, from CONNECT to DISCONNECT; raises BrokerUnavailable when it
        cannot be made, BrokerConnectionLost when it breaks."""
        options = self._options
        async with open_mqtt_connection(
                self.url.host, self.url.port, client_id=self.client_id,
                on_message=self._on_message,
                tls=_tls_context() if self.url.scheme == "mqtts" else None,
                username=options.mqtt_username, password=options.mqtt_password,
                keepalive=max(1, math.ceil(options.keepalive_interval)),
                connect_timeout=options.timeout) as connection:
            with trio.move_on_after(options.timeout) as waiting:
                await connection.subscribe([self.reply_topic], qos=1)
            if waiting.cancelled_caught:
                raise BrokerConnectionLost(f"no SUBACK for {self.reply_topic!r} within "
                                           f"{options.timeout:g} s")
            attempt.established = True
            self.connections += 1
            self._connection = connection
            self._connected.set()
            task_status.started()
            try:
                async with trio.open_nursery() as nursery:
                    if restoring:
                        self._restoring(connection, nursery)
                    await self._closed.wait()
                    nursery.cancel_scope.cancel()
            finally:
                self._connection = None
                if self._connected.is_set():
                    self._connected = trio.Event()

    def _restoring(self, connection: MqttConnection, nursery: trio.Nursery) -> None:
        logger.warning("reconnected to the MQTT broker %s; restoring %d subscription(s)",
                       self.url, len(self._subscriptions))
        events = [s.topic_filter for s in self._subscriptions.values() if not s.keep_last]
        if events:
            logger.warning("events published on %s while disconnected from the broker are "
                           "not replayed over MQTT", ", ".join(map(repr, events)))
        for subscription in list(self._subscriptions.values()):
            nursery.start_soon(self._restore, connection, subscription)

    async def _restore(self, connection: MqttConnection, subscription: _Subscription) -> None:
        if (self._subscriptions.get(subscription.topic_filter) is not subscription
                or not subscription.established.is_set()):
            return  # ended meanwhile, or its own SUBSCRIBE is still on its way
        try:
            with trio.move_on_after(self._options.timeout):
                await connection.subscribe([subscription.topic_filter], qos=subscription.qos)
        except BrokerConnectionLost:
            return  # this connection is gone too; the next one tries again
        except (BrokerUnavailable, ValueError) as error:
            logger.warning("could not restore the subscription to %r on %s: %s",
                           subscription.topic_filter, self.url, error)
            self._forget(subscription)
            subscription.fail(ServerError(f"the MQTT broker {self.url} refused the "
                                          f"subscription to {subscription.topic_filter!r} "
                                          f"again: {error}"))

    def _on_message(self, message: MqttMessage) -> None:
        """Route one PUBLISH (on the Trio thread, inside the connection's reader)."""
        try:
            if message.topic == self.reply_topic:
                correlation = message.correlation_data
                exchange = self._exchanges.get(correlation) if correlation else None
                if exchange is not None:
                    exchange.reply(message)
                return
            for subscription in list(self._subscriptions.values()):
                if topic_matches(subscription.topic_filter, message.topic):
                    subscription.deliver(message)
        except Exception:  # a bug of ours: never let it break the connection
            logger.exception("routing a message on %r from %s failed", message.topic,
                             self.url)


class MqttClient:
    """A client's brokers: one :class:`Broker` per broker URL, made when a form first
    names it, all closed with the client."""

    def __init__(self, *, nursery: trio.Nursery, options: ClientOptions) -> None:
        self._nursery = nursery
        self._options = options
        self._brokers: dict[BrokerUrl, Broker] = {}

    @property
    def brokers(self) -> tuple[Broker, ...]:
        """The brokers used so far."""
        return tuple(self._brokers.values())

    def broker(self, form: Form) -> Broker:
        """The broker of an MQTT form; :class:`UnsupportedOperation` when its ``href``
        names none."""
        try:
            url = broker_url(form.href)
        except ValueError as error:
            raise UnsupportedOperation(str(error)) from None
        broker = self._brokers.get(url)
        if broker is None:
            broker = self._brokers[url] = Broker(url, nursery=self._nursery,
                                                 options=self._options)
        return broker

    async def aclose(self) -> None:
        """DISCONNECT from every broker."""
        for broker in self._brokers.values():
            await broker.aclose()


# ---------------------------------------------------------------------------- observations


class _ToObservation:
    """An MQTT subscription's messages as the Web Thing Protocol notifications an
    :class:`~trio_things.client.observation.Observation` takes."""

    def __init__(self, sink: Sink, *, operation: str, name: str, event: bool,
                 missed: str | None) -> None:
        self._sink = sink
        self._operation = operation
        self._name = name
        self._member = "data" if event else "value"
        self._event = event
        self._missed = missed
        self._recent: collections.deque[str] = collections.deque(maxlen=_RECENT_EVENT_IDS)

    def deliver(self, message: MqttMessage) -> None:
        if self._missed is not None and message.topic == self._missed:
            gap = _loads(message.payload)
            if isinstance(gap, dict):
                self._notify({"gap": gap})
            return
        if not message.payload:
            return  # a retained value cleared: no value to give
        try:
            value = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            logger.warning("ignoring a message on %r that is no JSON", message.topic)
            return
        body: dict[str, JsonValue] = {self._member: value}
        event_id = message.user_property("eventID")
        if event_id:
            if self._event:
                if event_id in self._recent:
                    return  # delivered twice (QoS 1 is at least once)
                self._recent.append(event_id)
            body["eventID"] = event_id
        self._notify(body)

    def _notify(self, body: dict[str, JsonValue]) -> None:
        self._sink.deliver(Message(message_type="notification", operation=self._operation,
                                   name=self._name, correlation_id=None, body=body))

    def fail(self, error: ClientError) -> None:
        self._sink.fail(error)


class MqttSource:
    """One observation's :class:`~trio_things.client.observation.Source` over MQTT: a
    subscription to the form's filter (and, for a trio-things event, to its Thing's
    ``missed`` topic)."""

    def __init__(self, broker: Broker, form: Form, *, kind: Literal["property", "event"]
                 ) -> None:
        assert form.topic is not None
        self._broker = broker
        self._filter = form.topic
        self._qos = form.qos or 0
        self._event = kind == "event"
        self._missed = missed_topic(form.topic) if self._event else None
        self._adapter: _ToObservation | None = None

    async def attach(self, operation: str, *, thing_id: str | None, name: str,
                     sink: Sink) -> None:
        adapter = self._adapter = _ToObservation(sink, operation=operation, name=name,
                                                 event=self._event, missed=self._missed)
        await self._broker.attach(self._filter, qos=self._qos, sink=adapter,
                                  keep_last=not self._event)
        if self._missed is not None:
            try:
                await self._broker.attach(self._missed, qos=self._qos, sink=adapter,
                                          keep_last=False)
            except ClientError as error:  # only a server's notice: go on without it
                logger.debug("no subscription to %r: %s", self._missed, error)
            except BaseException:
                self._broker.detach(self._filter, adapter)
                raise

    async def detach(self, operation: str, *, thing_id: str | None, name: str,
                     sink: Sink) -> None:
        adapter, self._adapter = self._adapter, None
        if adapter is None:
            return
        self._broker.detach(self._filter, adapter)
        if self._missed is not None:
            self._broker.detach(self._missed, adapter)


# ---------------------------------------------------------------------------- invocations


class MqttInvocation:
    """Follows an invocation made over MQTT: the 201 reply gives its id and status, the
    200 its end; a problem reply refuses it (or, after the 201, ends the handle).

    Made before the :class:`~trio_things.client.actions.Invocation` handle it feeds
    (whose ``on_end`` is :meth:`release`), then given it with :meth:`follow`."""

    def __init__(self, broker: Broker, *, action: str, base: str,
                 can_query: Callable[[ActionStatus], bool]) -> None:
        self.correlation = new_correlation()
        self._broker = broker
        self._action = action
        self._base = base
        self._can_query = can_query
        self._invocation: Invocation | None = None

    def follow(self, invocation: Invocation) -> None:
        self._invocation = invocation

    def release(self) -> None:
        """The invocation ended: no more replies to route."""
        self._broker.release(self.correlation)

    async def start(self, form: Form, payload: bytes, *, what: str) -> None:
        """Publish the invocation and take its first reply (201: accepted).

        Raises what the reply's problem means (``InvalidValue`` for an input the
        server refused: no invocation was made), ``Timeout`` or ``ConnectionLost``.
        """
        assert form.topic is not None
        try:
            first = await self._broker.exchange(form.topic, payload, qos=form.qos or 0,
                                                what=what, correlation=self.correlation,
                                                then=self)
            self._take(first, operation="invokeaction", what=what)
        except BaseException:
            self.release()
            raise

    def _take(self, message: MqttMessage, *, operation: str, what: str) -> None:
        assert self._invocation is not None
        problem = reply_problem(message)
        if problem is not None:
            raise error_for_problem(problem, operation=operation, what=what)
        body = _loads(message.payload)
        if not isinstance(body, dict):
            raise ServerError(f"{what}: the reply on {message.topic!r} is no JSON object "
                              f"(an invocation): {body!r:.80}")
        try:
            status = ActionStatus.from_invocation(body, action=self._action, url=self._base)
        except ValueError as error:  # an href urljoin cannot take ("http://[x")
            raise ServerError(f"{what}: the reply on {message.topic!r} is no invocation: "
                              f"{error}") from None
        self._invocation.update(status)

    def reply(self, message: MqttMessage) -> None:
        """A later reply: the final status (200), or a problem ending the handle."""
        invocation = self._invocation
        if invocation is None:
            return
        try:
            self._take(message, operation="queryaction",
                       what=f"invocation {invocation.id} of {self._action!r}")
        except ClientError as error:
            invocation._fail(error)
        except Exception:  # a bug of ours: end the handle rather than leave it waiting
            logger.exception("taking a reply for invocation %s of %r failed", invocation.id,
                             self._action)
            invocation._fail(ServerError(f"invocation {invocation.id} of {self._action!r}: "
                                         "its reply could not be taken (see the log)"))

    def lost(self) -> None:
        """The connection broke before the final reply, which may be lost with it:
        poll the invocation where it can be asked for, else give the handle up."""
        invocation = self._invocation
        if invocation is None or invocation.status.state.ended:
            return
        if self._can_query(invocation.status):
            invocation.lost()
            return
        self.release()
        href = invocation.status.href
        invocation._fail(InvocationLost(
            f"lost the MQTT broker {self._broker.url} while following invocation "
            f"{invocation.id or '(no id)'} of {self._action!r}: its final reply may be lost, "
            "and the TD offers no way to ask for it; it may still be running",
            href=href, invocation_id=invocation.id))
