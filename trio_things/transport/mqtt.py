"""One MQTT connection to a broker, driven from the Trio thread through paho-mqtt.

Both the server's MQTT binding (:mod:`trio_things.bindings.mqtt`) and the client
(:mod:`trio_things.client.mqtt`) are MQTT *clients* of a broker; this module is the
connection they share. The MQTT codec is paho-mqtt's (2.x): we write none of our own.

paho is driven through its socket-level loop API (``loop_read``, ``loop_write``,
``loop_misc``), not a thread of its own, so every paho callback runs on the Trio
thread, inside this module's tasks, and a paho call made by a Trio task never races
another thread::

    open_mqtt_connection()        nursery, owned by the caller's ``async with``
      the connect                 paho's blocking ``connect()`` (TCP, TLS, CONNECT) in
                                  a worker thread, then CONNACK awaited, both bounded
      reader                      wait_readable -> loop_read -> callbacks: CONNACK,
                                  SUBACK, PUBACK, messages (handed to ``on_message``)
      writer                      rung when paho has bytes queued: wait_writable ->
                                  loop_write, as much as the socket takes
      keepalive                   loop_misc every second: PINGREQ, and a dead broker
                                  noticed after 1.5 keepalives

A lost connection (the broker closed it, a read or write failed, no PINGRESP) raises
:class:`BrokerConnectionLost` out of the ``async with``; what to do next (back off,
reconnect, subscribe again) is the caller's business: each connection is one paho
client, used once. Leaving the block sends DISCONNECT if the socket takes it at once
and closes the socket; it never waits for the broker.

:meth:`MqttConnection.publish` never blocks: paho queues the packet and the writer
sends it. Memory is the caller's to bound: :attr:`MqttConnection.unacknowledged` counts
publications the broker has not yet acknowledged (QoS 1 and 2) or that are not yet
written (QoS 0), and :meth:`MqttConnection.wait_unacknowledged_below` waits for it to
fall.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import paho.mqtt.client as paho
import trio
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from trio_things.errors import ThingsError

__all__ = [
    "BrokerConnectionLost",
    "BrokerUnavailable",
    "MqttConnection",
    "MqttMessage",
    "open_mqtt_connection",
]

logger = logging.getLogger("trio_things.mqtt")

#: How often paho's housekeeping runs (keepalive pings, a missing PINGRESP noticed).
_MISC_INTERVAL: Final = 1.0
#: Seconds a SUBACK may take.
_SUBACK_TIMEOUT: Final = 10.0
_NO_CONNECTION: Final = frozenset({MQTTErrorCode.MQTT_ERR_NO_CONN,
                                   MQTTErrorCode.MQTT_ERR_CONN_LOST})


class BrokerUnavailable(ThingsError):
    """The broker could not be reached, or refused the connection (CONNACK with a
    failure reason: bad credentials, client id taken...). The message says which."""


class BrokerConnectionLost(ThingsError):
    """The connection to the broker ended without our asking: the broker closed it,
    the network failed, or the broker stopped answering pings."""


@attrs.frozen(kw_only=True)
class MqttMessage:
    """A PUBLISH received from the broker, with the MQTT 5 properties we use."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    response_topic: str | None = None
    correlation_data: bytes | None = None
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()

    def user_property(self, name: str) -> str | None:
        """The first user property called ``name``, if any."""
        for key, value in self.user_properties:
            if key == name:
                return value
        return None


def publish_properties(*, content_type: str | None = None, response_topic: str | None = None,
                       correlation_data: bytes | None = None,
                       user_properties: Sequence[tuple[str, str]] = ()) -> Properties | None:
    """MQTT 5 PUBLISH properties (None when there are none to send)."""
    if content_type is None and response_topic is None and correlation_data is None \
            and not user_properties:
        return None
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if content_type is not None:
        properties.ContentType = content_type
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation_data is not None:
        properties.CorrelationData = correlation_data
    if user_properties:
        properties.UserProperty = list(user_properties)
    return properties


class MqttConnection:
    """A connected MQTT 5 session; made by :func:`open_mqtt_connection`. Every method
    is called from the Trio thread."""

    def __init__(self, client: paho.Client, on_message: Callable[[MqttMessage], object],
                 on_acknowledged: Callable[[int], object] | None = None) -> None:
        self._client = client
        self._on_message = on_message
        self._on_acknowledged = on_acknowledged
        self._unacknowledged = 0
        self._acknowledged = trio.Event()
        self._subscribed: dict[int, trio.Event] = {}
        self._suback: dict[int, list[ReasonCode]] = {}
        self._lost: str | None = None
        self._lost_event = trio.Event()
        self._connack: ReasonCode | None = None
        self._connack_event = trio.Event()
        self._closing = False
        self._write_doorbell, self._write_wanted = trio.open_memory_channel[None](1)

    @property
    def unacknowledged(self) -> int:
        """Publications handed to paho that the broker has not acknowledged yet (QoS 0:
        not yet written to the socket)."""
        return self._unacknowledged

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> int | None:
        """Queue a PUBLISH; never blocks. Returns its message id (what
        ``on_acknowledged`` is called with once the broker has it), or None if the
        connection is already gone (the ``async with`` is about to raise
        :class:`BrokerConnectionLost`). :exc:`ValueError` for a topic that cannot be
        published to (empty, a wildcard, too long)."""
        if self._lost is not None or self._closing:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain,
                                    properties=properties)
        if info.rc in _NO_CONNECTION:
            return None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ValueError(f"paho refused to publish on {topic!r}: "
                             f"{paho.error_string(info.rc)}")
        self._unacknowledged += 1
        self._write_now()
        return info.mid

    def _write_now(self) -> None:
        """Write what paho has queued, as far as the socket takes it now, without
        waiting: an idle socket takes a publication at once, and no task need wake for
        it (the writer task is for what the socket would not take)."""
        client = self._client
        if client.want_write() and client.socket() is not None:
            rc = client.loop_write()  # non-blocking; paho keeps what is not written
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._note_lost(f"writing to the broker failed: {paho.error_string(rc)}")
        if not client.want_write():
            try:  # un-ring the writer: there is nothing left for it
                self._write_wanted.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                pass

    async def wait_unacknowledged_below(self, limit: int) -> None:
        """Return once fewer than ``limit`` publications are unacknowledged (at once if
        they are). Raises :class:`BrokerConnectionLost` if the connection ends first."""
        while self._unacknowledged >= limit:
            if self._lost is not None:
                raise BrokerConnectionLost(self._lost)
            await _first_of(self._acknowledged, self._lost_event)

    async def subscribe(self, filters: Sequence[str], *, qos: int = 1,
                        no_local: bool = True) -> None:
        """Subscribe to ``filters`` and wait for the broker's SUBACK (within
        ``_SUBACK_TIMEOUT`` seconds, else :class:`BrokerConnectionLost`: a broker that
        does not answer is as good as gone); :class:`BrokerUnavailable` if it refuses
        one."""
        if not filters:
            return
        rc, mid = self._client.subscribe(
            [(topic, SubscribeOptions(qos=qos, noLocal=no_local)) for topic in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerConnectionLost(f"cannot subscribe: {paho.error_string(rc)}")
        done = self._subscribed[mid] = trio.Event()
        with trio.move_on_after(_SUBACK_TIMEOUT):
            await self._wait_or_lost(done)
        self._subscribed.pop(mid, None)
        if not done.is_set():
            raise BrokerConnectionLost(f"the broker sent no SUBACK within "
                                       f"{_SUBACK_TIMEOUT:g} s")
        codes = self._suback.pop(mid, [])
        refused = [topic for topic, code in zip(filters, codes, strict=False) if code.is_failure]
        if refused:
            raise BrokerUnavailable(f"the broker refused the subscription(s) {refused}: "
                                    f"{', '.join(str(code) for code in codes if code.is_failure)}")

    def unsubscribe(self, filters: Sequence[str]) -> None:
        """Unsubscribe from ``filters`` (not waiting for the UNSUBACK)."""
        if filters and self._lost is None and not self._closing:
            self._client.unsubscribe(list(filters))

    # ---------------------------------------------------------------- paho callbacks

    def _install_callbacks(self) -> None:
        client = self._client
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        client.on_socket_register_write = self._handle_register_write
        client.on_socket_close = self._handle_socket_close

    def _handle_connect(self, _client: paho.Client, _userdata: Any, _flags: Any,
                        reason_code: ReasonCode, _properties: Any) -> None:
        self._connack = reason_code
        self._connack_event.set()

    def _handle_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any,
                           reason_code: ReasonCode, _properties: Any) -> None:
        self._note_lost(f"the broker connection ended ({reason_code})")

    def _handle_message(self, _client: paho.Client, _userdata: Any,
                        message: paho.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)
        try:
            topic = message.topic
        except UnicodeDecodeError:  # MQTT topics are UTF-8; a broker that lets one by
            logger.info("dropped a message whose topic is not UTF-8: %r", message._topic)
            return
        self._on_message(MqttMessage(
            topic=topic, payload=bytes(message.payload), qos=message.qos,
            retain=bool(message.retain),
            response_topic=getattr(properties, "ResponseTopic", None),
            correlation_data=getattr(properties, "CorrelationData", None),
            content_type=getattr(properties, "ContentType", None),
            user_properties=tuple(getattr(properties, "UserProperty", ()))))

    def _handle_publish(self, _client: paho.Client, _userdata: Any, mid: int,
                        _reason_code: ReasonCode, _properties: Any) -> None:
        self._unacknowledged = max(0, self._unacknowledged - 1)
        self._acknowledged.set()  # wakes every waiter; the next wait is on a new one
        self._acknowledged = trio.Event()
        if self._on_acknowledged is not None:
            self._on_acknowledged(mid)

    def _handle_subscribe(self, _client: paho.Client, _userdata: Any, mid: int,
                          reason_codes: list[ReasonCode], _properties: Any) -> None:
        self._suback[mid] = list(reason_codes)
        done = self._subscribed.pop(mid, None)
        if done is not None:
            done.set()

    def _handle_register_write(self, _client: paho.Client, _userdata: Any, _sock: Any) -> None:
        try:
            self._write_doorbell.send_nowait(None)
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass  # the writer is rung already, or gone

    def _handle_socket_close(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        # Before paho closes it: wake any task waiting on the socket, which would
        # otherwise wait on a closed (and perhaps reused) descriptor.
        trio.lowlevel.notify_closing(sock)

    def _note_lost(self, why: str) -> None:
        if self._lost is None and not self._closing:
            self._lost = why
        self._lost_event.set()

    async def _wait_or_lost(self, event: trio.Event) -> None:
        await _first_of(event, self._lost_event)
        if not event.is_set():
            raise BrokerConnectionLost(self._lost or "the broker connection ended")

    # ---------------------------------------------------------------- the tasks

    async def _read(self, sock: Any) -> None:
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except (trio.ClosedResourceError, OSError, ValueError):  # closed (fd -1)
                self._note_lost("the broker connection was closed")
                return
            while True:
                rc = self._client.loop_read()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._note_lost(f"reading from the broker failed: {paho.error_string(rc)}")
                    return
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    break  # TLS may hold decrypted bytes the descriptor no longer shows

    async def _write(self, sock: Any) -> None:
        while True:
            if not self._client.want_write():
                await self._write_wanted.receive()
                continue
            if self._client.socket() is None:  # paho closed it (each client connects once)
                self._note_lost("the broker connection was closed")
                return
            try:
                await trio.lowlevel.wait_writable(sock)
            except (trio.ClosedResourceError, OSError, ValueError):  # closed (fd -1)
                self._note_lost("the broker connection was closed")
                return
            rc = self._client.loop_write()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._note_lost(f"writing to the broker failed: {paho.error_string(rc)}")
                return

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(_MISC_INTERVAL)
            if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._note_lost("the broker stopped answering (no PINGRESP)")
                return

    def _close(self) -> None:
        """Say DISCONNECT if the socket takes it now, and close the socket."""
        self._closing = True
        self._write_doorbell.close()
        client = self._client
        if client.socket() is None:
            return
        client.disconnect()
        client.loop_write()  # writes DISCONNECT, then paho closes the socket, if it can
        sock = client.socket()
        if sock is not None:  # the socket would not take it: close without a word
            trio.lowlevel.notify_closing(sock)
            sock.close()


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


@asynccontextmanager
async def _unwrapped() -> AsyncIterator[None]:
    """Raise a nursery's lone exception as itself, not in an exception group: the
    caller's own errors, and ours, stay catchable by type (``except
    BrokerConnectionLost``), as trio-websocket's ``open_websocket`` does for its own."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


async def _first_of(*events: trio.Event) -> None:
    """Wait until any of ``events`` is set."""
    async with trio.open_nursery() as nursery:
        for event in events:
            nursery.start_soon(_cancel_when, event, nursery.cancel_scope)


@asynccontextmanager
async def open_mqtt_connection(
    host: str, port: int, *, client_id: str,
    on_message: Callable[[MqttMessage], object],
    on_acknowledged: Callable[[int], object] | None = None,
    tls: ssl.SSLContext | None = None,
    username: str | None = None, password: str | None = None,
    keepalive: int = 30, connect_timeout: float = 5.0,
) -> AsyncIterator[MqttConnection]:
    """Connect to the broker at ``host:port`` (MQTT 5, a clean start) and serve the
    connection while the block runs.

    ``on_message`` is called on the Trio thread for each PUBLISH received, and
    ``on_acknowledged`` with the message id of each publication the broker
    acknowledged (QoS 0: that was written); neither may block or raise (hand the
    message to a task). Raises :class:`BrokerUnavailable` if
    the broker cannot be reached within ``connect_timeout`` seconds or refuses us, and
    :class:`BrokerConnectionLost` out of the block when the connection ends unasked.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5, reconnect_on_failure=False)
    client.connect_timeout = connect_timeout
    if tls is not None:
        client.tls_set_context(tls)
    if username is not None:
        client.username_pw_set(username, password)
    connection = MqttConnection(client, on_message, on_acknowledged)
    sock = await _connect(client, host, port, keepalive, connect_timeout)
    connection._install_callbacks()
    try:
        async with _unwrapped(), trio.open_nursery() as nursery:
            nursery.start_soon(connection._read, sock, name="mqtt reader")
            nursery.start_soon(connection._write, sock, name="mqtt writer")
            nursery.start_soon(connection._keepalive, name="mqtt keepalive")
            if client.want_write():
                connection._handle_register_write(client, None, sock)
            with trio.move_on_after(connect_timeout):
                await connection._wait_or_lost(connection._connack_event)
            connack = connection._connack
            if connack is None:
                raise BrokerUnavailable(f"the broker at {host}:{port} sent no CONNACK "
                                        f"within {connect_timeout:g} s")
            if connack.is_failure:
                raise BrokerUnavailable(f"the broker at {host}:{port} refused the "
                                        f"connection: {connack}")
            serving = trio.CancelScope()
            nursery.start_soon(_cancel_when, connection._lost_event, serving)
            with serving:
                yield connection
            if connection._lost is not None:
                raise BrokerConnectionLost(connection._lost)
            nursery.cancel_scope.cancel()
    finally:
        connection._close()


async def _connect(client: paho.Client, host: str, port: int, keepalive: int,
                   connect_timeout: float) -> Any:
    """paho's ``connect()`` (a blocking TCP connect, TLS handshake and CONNECT) in a
    worker thread; the socket, non-blocking. If we are cancelled meanwhile, the thread
    is abandoned, and closes what it opened when it finishes (within
    ``connect_timeout``)."""
    abandoned = threading.Event()
    lock = threading.Lock()

    def connect() -> Any:
        try:
            client.connect(host, port, keepalive=keepalive, clean_start=True)
        except (OSError, ValueError) as error:
            return error
        with lock:
            if abandoned.is_set():
                sock = client.socket()
                if sock is not None:
                    sock.close()
        return client.socket()

    try:
        result = await trio.to_thread.run_sync(connect, abandon_on_cancel=True)
    except BaseException:
        with lock:
            abandoned.set()
            sock = client.socket()
            if sock is not None:
                sock.close()
        raise
    if isinstance(result, BaseException):
        why = getattr(result, "strerror", None) or str(result) or type(result).__name__
        if isinstance(result, TimeoutError):
            why = f"no answer within {connect_timeout:g} s"
        raise BrokerUnavailable(f"cannot reach the broker at {host}:{port}: {why}")
    if result is None:
        raise BrokerUnavailable(f"cannot reach the broker at {host}:{port}")
    return result

