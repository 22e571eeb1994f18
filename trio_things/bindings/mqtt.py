r"""The MQTT binding: the server publishes its Things through a broker, which fans out.

One trio-things process serves about a thousand WebSocket observers per core; a site
with many more consumers lets a broker built for it do the fan-out
(``docs/scaling-out.md``). The server connects to the broker as one more observer on
the fan-out path, not beside it (``docs/design.md``, "The MQTT binding")::

    ObserverSet.publish --(encode once: protocol/mqtt.py)--> the bridge's Outbox
       -> relay -> MqttConnection.publish (paho, transport/mqtt.py) -> broker -> N consumers

:class:`MqttBridge` owns that observer. While connected it observes every observable
property of every Thing, every event and every action's status, so each change is
published **once**, whatever the number of subscribers: values retained (a subscriber
arriving later gets the current one at once), events and status changes not. Its
Outbox has the policy of a WebSocket client's, and a fast path like a WebSocket's: a
change is handed to the connection at once while fewer than ``in_flight`` publications
are unacknowledged; while the broker is backed up (that many unacknowledged), property
values coalesce to the newest and events and status changes queue, up to
``outbox_size``. At the bound the Outbox
overflows: the bridge logs one line, drops the connection, and reconnects at once,
resuming like any consumer that comes back (below).

**Resuming.** The bridge remembers the id of the newest event or status change the
broker acknowledged. After a reconnect (the broker restarted, the network failed, the
Outbox overflowed) it publishes the current value of every property again (retained:
a restarted broker without persistence has lost them), then what the Things' replay
rings hold after that id (:mod:`trio_things.fanout.history`), then live changes. If the
rings no longer reach back, a problem ``notifications-missed`` is published on
``{prefix}/{thing}/missed`` first: a consumer is never left to guess. Publications the
broker had not acknowledged when the connection broke may arrive twice (QoS 1 is "at
least once").

**Commands.** Writes and invocations arrive on their topics (the TD's forms). A
message that carries an MQTT 5 response topic is answered there, with its correlation
data: a write with an empty payload (user property ``status`` 204) or problem details
(``application/problem+json``, ``status`` 4xx/5xx); an invocation twice, once accepted
(201, the invocation with its id) and once ended (200, its final status with output or
error). A requester's duplicate (the same response topic and correlation data, as QoS 1
may redeliver after a reconnect) is answered with the invocation it already started,
and never runs the action again. At most ``_COMMANDS_WAITING`` commands wait to run; one
more is answered 503. Nothing a message carries can raise out of this module.

The connection and its reconnect loop, owned by :func:`serve_mqtt`, run in the server's
nursery; HTTP and WebSocket serve while the broker is unreachable, and the log says so
once, not at every retry. A bug here is logged with its traceback and the binding starts
over with a new connection, never taking the server down.
"""

from __future__ import annotations

import collections
import functools
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any, Final

import trio

from trio_things.errors import PayloadTooLarge, RemoteProtocolError
from trio_things.fanout.history import event_id_sequence
from trio_things.fanout.observers import PROPERTY, Observer
from trio_things.fanout.outbox import Frame, Outbox, Written
from trio_things.model.affordances import ActionSpec, Affordances, EventSpec, PropertySpec
from trio_things.model.description import Form
from trio_things.protocol import commands as c
from trio_things.protocol.mqtt import (
    JSON,
    MQTT_CONTEXT,
    PROBLEM_JSON,
    MqttConfig,
    Publication,
    decode_command,
    encode,
    invocation_payload,
    unpack,
)
from trio_things.protocol.problems import ProblemDetails
from trio_things.runtime.dispatcher import Dispatcher
from trio_things.transport.mqtt import (
    BrokerConnectionLost,
    BrokerUnavailable,
    MqttConnection,
    MqttMessage,
    open_mqtt_connection,
    publish_properties,
)

__all__ = ["MqttBinding", "MqttBridge", "serve_mqtt"]

logger = logging.getLogger("trio_things.mqtt")

# Bound once: an enum member looked up through its class costs ~70 ns per delivery.
_NOTHING: Final = Written.NOTHING
_WHOLE: Final = Written.WHOLE
#: Commands received and not yet running; one more is answered 503.
_COMMANDS_WAITING: Final = 64
#: Commands running at once (a functional property's setter, an invocation's start).
_COMMANDS_RUNNING: Final = 16
#: Requesters' (response topic, correlation data) remembered, to answer a duplicate
#: invocation with the one it already started.
_REMEMBERED_INVOCATIONS: Final = 4096


def _unframed(message: bytes) -> bytes:
    return message  # an MQTT publication is its packed bytes (protocol/mqtt.py: pack)


class MqttBinding:
    """The TD forms of the MQTT binding (the WoT MQTT Binding Template): each topic in
    the ``href`` (node-wot reads it there) and in ``mqv:topic`` / ``mqv:filter``, with
    the control packet, retain flag and QoS. Listed after the HTTP and WebSocket forms,
    so consumers that take the first form they speak keep their choice."""

    def __init__(self, config: MqttConfig) -> None:
        self._topics = config.topics
        self._broker = str(config.advertised_url)
        self._qos = str(config.qos)
        self._commands = config.commands

    @property
    def context(self) -> Mapping[str, str]:
        return MQTT_CONTEXT

    def property_forms(self, thing: str, spec: PropertySpec, base: str) -> Sequence[Form]:
        forms = []
        if spec.observable:
            topic = self._topics.property(thing, spec.name)
            forms += [self._subscribe(topic, ("readproperty", "observeproperty"), retain=True),
                      self._unsubscribe(topic, ("unobserveproperty",))]
        if not spec.readonly and self._commands:
            forms.append(self._publish(self._topics.write(thing, spec.name), "writeproperty"))
        return forms

    def action_forms(self, thing: str, spec: ActionSpec, base: str) -> Sequence[Form]:
        if not self._commands:
            return []
        return [self._publish(self._topics.action(thing, spec.name), "invokeaction")]

    def event_forms(self, thing: str, spec: EventSpec, base: str) -> Sequence[Form]:
        topic = self._topics.event(thing, spec.name)
        return [self._subscribe(topic, ("subscribeevent",)),
                self._unsubscribe(topic, ("unsubscribeevent",))]

    def thing_forms(self, thing: str, affordances: Affordances, base: str) -> Sequence[Form]:
        forms = []
        if any(spec.observable for spec in affordances.properties.values()):
            topic = self._topics.all_properties(thing)
            forms += [self._subscribe(topic, ("observeallproperties",), retain=True),
                      self._unsubscribe(topic, ("unobserveallproperties",))]
        if affordances.events:
            topic = self._topics.all_events(thing)
            forms += [self._subscribe(topic, ("subscribeallevents",)),
                      self._unsubscribe(topic, ("unsubscribeallevents",))]
        return forms

    def _subscribe(self, topic: str, ops: tuple[str, ...], *, retain: bool = False) -> Form:
        terms: tuple[tuple[str, Any], ...] = (("mqv:controlPacket", "subscribe"),)
        if retain:
            terms += (("mqv:retain", True),)
        terms += (("mqv:qos", self._qos), ("mqv:filter", topic))
        return Form(href=f"{self._broker}/{topic}", op=ops, content_type=JSON, terms=terms)

    def _unsubscribe(self, topic: str, ops: tuple[str, ...]) -> Form:
        return Form(href=f"{self._broker}/{topic}", op=ops, content_type=JSON,
                    terms=(("mqv:controlPacket", "unsubscribe"), ("mqv:filter", topic)))

    def _publish(self, topic: str, op: str) -> Form:
        return Form(href=f"{self._broker}/{topic}", op=(op,), content_type=JSON,
                    terms=(("mqv:controlPacket", "publish"), ("mqv:qos", self._qos),
                           ("mqv:topic", topic)))


class _BrokerWriter:
    """The bridge Outbox's fast path (:class:`~trio_things.fanout.outbox.FrameWriter`):
    a publication goes to the connection at once while fewer than ``in_flight`` are
    unacknowledged, and the replay is done; otherwise it waits in the Outbox, where
    property values coalesce, for the relay."""

    def __init__(self, bridge: MqttBridge, connection: MqttConnection) -> None:
        self._bridge = bridge
        self._connection = connection
        self._limit = bridge.config.in_flight
        self.open = False
        """Set by the relay once the replay is published: nothing overtakes it."""

    def write_now(self, frame: Frame) -> Written:
        if not self.open or self._connection.unacknowledged >= self._limit:
            return _NOTHING
        self._bridge._publish(self._connection, frame[0])
        return _WHOLE


class _Overflowed(Exception):
    """The bridge's Outbox overflowed: start a new connection and resume."""


class _Acknowledgements:
    """Which event and status publications the broker has acknowledged: the id to
    resume from after a reconnect is that of the newest publication before the oldest
    one still unacknowledged."""

    def __init__(self) -> None:
        self.resume_from: str | None = None
        self._pending: collections.OrderedDict[int, tuple[str, bool]] = \
            collections.OrderedDict()

    def sent(self, mid: int, event_id: str) -> None:
        self._pending[mid] = (event_id, False)

    def acknowledged(self, mid: int) -> None:
        entry = self._pending.get(mid)
        if entry is None:
            return  # a property value or a reply: not part of the history
        self._pending[mid] = (entry[0], True)
        while self._pending:
            first = next(iter(self._pending))
            event_id, done = self._pending[first]
            if not done:
                break
            del self._pending[first]
            self.resume_from = event_id

    def connection_ended(self) -> None:
        """What was not acknowledged is lost with the connection: resume before it."""
        self._pending.clear()


class MqttBridge:
    """The server's MQTT side: one broker connection at a time, reconnected with
    backoff, observing every Thing (see the module docstring)."""

    def __init__(self, config: MqttConfig, dispatcher: Dispatcher,
                 things: Mapping[str, Affordances]) -> None:
        self.config = config
        self._dispatcher = dispatcher
        self._things = things
        self._topics = config.topics
        self._encoder = functools.partial(encode, self._topics)
        self._acknowledgements = _Acknowledgements()
        self._invocations: collections.OrderedDict[tuple[str, bytes], str] = \
            collections.OrderedDict()
        self.connected = False
        """Whether a connection is up and the current state is being published."""
        self.connections = 0
        """Connections made so far."""
        self.attempts = 0
        """Connection attempts that failed (or ended) so far."""
        self._changed = trio.Event()

    async def wait_connected(self, connections: int = 1) -> None:
        """Return once ``connections`` connections have been made and the state of
        the newest is published, or queued to be."""
        while self.connections < connections:
            await self._changed.wait()

    async def wait_attempts(self, attempts: int) -> None:
        """Return once ``attempts`` connections have failed or ended."""
        while self.attempts < attempts:
            await self._changed.wait()

    def _note_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> None:
        """Connect, serve, and reconnect, until cancelled."""
        delay = self.config.reconnect_delay
        failures = 0
        while True:
            why: str
            try:
                await self._serve_connection()
            except BrokerUnavailable as error:
                why = str(error)
            except BrokerConnectionLost as error:
                why = f"lost the connection to the broker: {error}"
                if self.connected:  # it had served: a new outage, said once, backed off anew
                    delay = self.config.reconnect_delay
                    failures = 0
            except _Overflowed:
                why = (f"the broker fell more than {self.config.outbox_size} events or "
                       "status changes behind; reconnecting to resume")
                delay = self.config.reconnect_delay
                failures = 0
            except Exception:
                # A bug of ours: said in full, and the binding starts over, rather than
                # taking the whole server (HTTP, WebSocket, the Things) down with it.
                logger.exception("MQTT: the binding failed; reconnecting")
                why = "the binding failed (see the traceback above)"
            finally:
                self.connected = False
                self._acknowledgements.connection_ended()
            failures += 1
            self.attempts += 1
            self._note_change()
            if failures == 1:
                logger.warning("MQTT: %s; retrying (with backoff up to %g s) while HTTP "
                               "and WebSocket serve on", why, self.config.max_reconnect_delay)
            else:
                logger.debug("MQTT: %s (attempt %d)", why, failures)
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.config.max_reconnect_delay)

    async def _serve_connection(self) -> None:
        config = self.config
        broker = config.broker_url
        commands_send, commands_receive = trio.open_memory_channel[MqttMessage](
            _COMMANDS_WAITING)
        connection_holder: list[MqttConnection] = []

        def on_message(message: MqttMessage) -> None:
            try:
                commands_send.send_nowait(message)
            except trio.WouldBlock:
                if connection_holder:
                    self._reply_problem(connection_holder[0], message, RemoteProtocolError(
                        f"the server has {_COMMANDS_WAITING} MQTT commands waiting; try "
                        "again later", status=503))

        async with open_mqtt_connection(
                broker.host, broker.port, client_id=config.client_id,
                on_message=on_message, on_acknowledged=self._acknowledgements.acknowledged,
                tls=config.tls_context(), username=config.username,
                password=config.password, keepalive=config.keepalive,
                connect_timeout=config.connect_timeout) as connection:
            connection_holder.append(connection)
            if config.commands:
                await connection.subscribe(self._topics.command_filters(), qos=config.qos)
            writer = _BrokerWriter(self, connection)
            outbox = Outbox(config.outbox_size, writer=writer)
            observer = Observer(outbox=outbox, encoder=self._encoder, framer=_unframed)
            overflowed = False
            try:
                replay = await self._observe(observer)
                self.connected = True
                self.connections += 1
                self._note_change()
                logger.info("MQTT: publishing %d Thing(s) through %s under %s/",
                            len(self._things), broker, config.topic_prefix)
                async with trio.open_nursery() as nursery:
                    if config.commands:
                        nursery.start_soon(self._take_commands, connection,
                                           commands_receive, name="mqtt commands")
                    overflowed = await self._relay(connection, outbox, writer, replay)
                    nursery.cancel_scope.cancel()
            finally:
                self._dispatcher.observers.leave_all(outbox)
                outbox.close()
        if overflowed:
            raise _Overflowed

    async def _observe(self, observer: Observer) -> list[bytes]:
        """Join every observer set, queue each property's current value, and return
        what the broker missed since the last acknowledged id, oldest first."""
        resume = self._acknowledgements.resume_from
        missed: list[c.Notification] = []
        run = self._dispatcher.run
        for thing, affordances in self._things.items():
            for spec in affordances.properties.values():
                if not spec.observable:
                    continue
                try:
                    reply = await run(c.ObserveProperty(thing=thing, name=spec.name), observer)
                except Exception:
                    # A getter that fails (hardware away) costs its own value only: the
                    # property stays observed, and its next change is published.
                    logger.exception("MQTT: cannot read %s.%s to publish it", thing, spec.name)
                    continue
                assert isinstance(reply, c.SubscribedReply)
                for value in reply.initial:
                    self._dispatcher.observers.get(thing, PROPERTY, value.name
                                                   ).deliver_to(observer, value)
            gap = False
            for command in [c.SubscribeAllEvents(thing=thing, after=resume)] + [
                    c.ObserveAction(thing=thing, name=action, after=resume)
                    for action in affordances.actions]:
                reply = await run(command, observer)
                assert isinstance(reply, c.SubscribedReply)
                if self._acknowledgements.resume_from is None:
                    # The first connection: history starts here. Were nothing
                    # acknowledged before it drops, the next resumes from here.
                    self._acknowledgements.resume_from = reply.event_id
                # Each reply holds its own affordances' notifications (events, one
                # action's status changes): no two replies hold the same one, only
                # each its own notice of the same gap.
                for notification in reply.missed:
                    if not isinstance(notification, c.NotificationsMissed):
                        missed.append(notification)
                    elif not gap:  # one notice a Thing, however many affordances
                        gap = True
                        missed.append(notification)
        missed.sort(key=_sequence)
        return [self._encoder(notification) for notification in missed]

    async def _relay(self, connection: MqttConnection, outbox: Outbox,
                     writer: _BrokerWriter, replay: list[bytes]) -> bool:
        """Publish the replay, then open the fast path (:class:`_BrokerWriter`) and
        publish whatever waits in the Outbox, never more than ``in_flight``
        unacknowledged. Returns True if the Outbox overflowed; runs until the connection
        ends (the ``async with`` then raises) or is cancelled."""
        outbox.claim_relay()
        limit = self.config.in_flight
        try:
            for missed in replay:
                await connection.wait_unacknowledged_below(limit)
                self._publish(connection, missed)
            writer.open = True
            while True:
                await connection.wait_unacknowledged_below(limit)
                await outbox.receive_channel.receive()
                if outbox.close_request is not None:
                    return True
                for frame in outbox.take():
                    self._publish(connection, frame[0])
        except (BrokerConnectionLost, trio.EndOfChannel):
            await trio.sleep_forever()  # open_mqtt_connection is ending this connection
            raise AssertionError("unreachable") from None

    def _publish(self, connection: MqttConnection, frame: bytes) -> None:
        publication: Publication = unpack(frame)
        mid = connection.publish(
            publication.topic, publication.payload, qos=self.config.qos,
            retain=publication.retain, properties=publish_properties(
                content_type=publication.content_type,
                user_properties=[("eventID", publication.event_id)]))
        if mid is not None and not publication.retain:
            self._acknowledgements.sent(mid, publication.event_id)

    async def _take_commands(self, connection: MqttConnection,
                             messages: trio.MemoryReceiveChannel[MqttMessage]) -> None:
        running = trio.CapacityLimiter(_COMMANDS_RUNNING)
        async with trio.open_nursery() as nursery:
            async for message in messages:
                # A token of its own: two identical messages (mosquitto_pub run twice)
                # are equal, and a limiter refuses a borrower that already holds one.
                token = object()
                await running.acquire_on_behalf_of(token)
                nursery.start_soon(self._command, connection, message, running, token)

    async def _command(self, connection: MqttConnection, message: MqttMessage,
                       running: trio.CapacityLimiter, token: object) -> None:
        """Run one command and answer it (if it asks for an answer)."""
        ended: c.QueryAction | None = None
        try:
            try:
                ended = await self._run_command(connection, message)
            finally:
                running.release_on_behalf_of(token)
            if ended is not None:
                reply = await self._dispatcher.run(ended)
                assert isinstance(reply, c.InvocationReply)
                self._reply(connection, message, 200, invocation_payload(reply.invocation))
        except RemoteProtocolError as error:
            self._reply_problem(connection, message, error)
        except Exception:
            logger.exception("MQTT: a command on %r failed", message.topic)
            self._reply(connection, message, 500, ProblemDetails.internal_error().to_bytes(),
                        PROBLEM_JSON)

    async def _run_command(self, connection: MqttConnection, message: MqttMessage
                           ) -> c.QueryAction | None:
        """Run the command ``message`` carries and send its first answer; return the
        query that waits for an invocation's end, if there is one to answer."""
        topic = self._topics.parse_command(message.topic)
        if topic is None:
            return None  # not one of ours (a broker may deliver overlapping filters)
        if len(message.payload) > self.config.max_command_bytes:
            raise PayloadTooLarge(f"a command's payload may have at most "
                                  f"{self.config.max_command_bytes} bytes")
        command = decode_command(topic, message.payload)
        if isinstance(command, c.WriteProperty):
            await self._dispatcher.run(command)
            self._reply(connection, message, 204, b"")
            return None
        key = None
        if message.response_topic is not None and message.correlation_data is not None:
            key = (message.response_topic, message.correlation_data)
            seen = self._invocations.get(key)
            if seen is not None:  # a redelivery: answer with the invocation it started
                reply = await self._dispatcher.run(c.QueryAction(invocation_id=seen))
                assert isinstance(reply, c.InvocationReply)
                self._reply(connection, message, 201, invocation_payload(reply.invocation))
                return c.QueryAction(invocation_id=seen, wait=True)
        reply = await self._dispatcher.run(command)
        assert isinstance(reply, c.InvocationReply)
        invocation_id = reply.invocation.id
        if key is not None:
            self._invocations[key] = invocation_id
            if len(self._invocations) > _REMEMBERED_INVOCATIONS:
                self._invocations.popitem(last=False)
        self._reply(connection, message, 201, invocation_payload(reply.invocation))
        return c.QueryAction(invocation_id=invocation_id, wait=True)

    def _reply_problem(self, connection: MqttConnection, message: MqttMessage,
                       error: RemoteProtocolError) -> None:
        logger.info("MQTT: refused a message on %r: %s", message.topic, error.detail)
        self._reply(connection, message, error.status,
                    ProblemDetails.from_error(error).to_bytes(), PROBLEM_JSON)

    def _reply(self, connection: MqttConnection, message: MqttMessage, status: int,
               payload: bytes, content_type: str = JSON) -> None:
        """Answer ``message`` on its response topic, if it named one."""
        if message.response_topic is None:
            return
        try:
            connection.publish(message.response_topic, payload, qos=self.config.qos,
                               properties=publish_properties(
                                   content_type=content_type,
                                   correlation_data=message.correlation_data,
                                   user_properties=[("status", str(status))]))
        except ValueError as error:  # a response topic no one can publish to
            logger.info("MQTT: cannot answer on %r: %s", message.response_topic, error)


def _sequence(notification: c.Notification) -> int:
    if isinstance(notification, c.NotificationsMissed):
        return -1  # a gap notice goes first
    event_id = getattr(notification, "id", "")
    sequence = event_id_sequence(event_id, event_id.partition(".")[0])
    return sequence if sequence is not None else 0


async def serve_mqtt(config: MqttConfig, dispatcher: Dispatcher,
                     things: Mapping[str, Affordances], *,
                     task_status: trio.TaskStatus[MqttBridge] = trio.TASK_STATUS_IGNORED
                     ) -> None:
    """Run the MQTT binding until cancelled; ``task_status`` receives the bridge at once
    (before it is connected: :meth:`MqttBridge.wait_connected`)."""
    bridge = MqttBridge(config, dispatcher, things)
    task_status.started(bridge)
    await bridge.run()
