"""The client over MQTT: a real Mosquitto broker (the ``mosquitto`` fixture) between
the client and a real ThingServer publishing its Things through it.

The TDs are fetched over memory streams (tests/client/conftest.py); every MQTT packet
goes through the broker on a loopback port, so these tests run in real time (no
autojump clock). A :class:`Gate` in front of the memory network shuts HTTP and
WebSocket once the TD is fetched, so that an operation that works after it can only
have gone through the broker. Every wait is under ``trio.fail_after``; nothing sleeps
to synchronise.
"""

from __future__ import annotations

import errno
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio

import trio_things.client as ttc
from benchmarks.broker import Mosquitto
from tests.client.conftest import FAST, Lab, MemoryNetwork
from trio_things.client.forms import (
    Form,
    affordance_forms,
    choose_binding,
    form_for,
)
from trio_things.client.mqtt import broker_url, missed_topic, topic_matches
from trio_things.config import ServerConfig
from trio_things.demo import Counter, Reading, Thermometer
from trio_things.protocol.mqtt import PROBLEM_JSON, MqttConfig
from trio_things.protocol.problems import notifications_missed
from trio_things.server import ThingServer
from trio_things.transport.mqtt import MqttMessage, open_mqtt_connection, publish_properties

#: Fast reconnection, and everything through the broker where the TD allows.
OVER_MQTT = attrs.evolve(FAST, prefer=("mqtt",))
BASE = "http://testserver/"


class Gate:
    """An OpenStream in front of the memory network that can be shut: then every new
    HTTP or WebSocket connection is refused, and :meth:`shut` drops the open ones."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network
        self.open = True

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        if not self.open:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused (gate shut)")
        return await self.network(host, port, tls=tls)

    async def shut(self) -> None:
        self.open = False
        await self.network.break_all()


@attrs.define
class Served:
    server: ThingServer
    network: MemoryNetwork
    broker: Mosquitto

    def gate(self) -> Gate:
        return Gate(self.network)

    def thing(self, name: str) -> Any:
        return self.server.things[name]


@pytest.fixture
async def served(mosquitto: Mosquitto) -> AsyncIterator[Served]:
    """A server with the client tests' lab and the demo's counter and thermometer,
    publishing through the broker and taking writes and invocations from it. (Not the
    conftest's ``broken``, whose failing getter the MQTT bridge does not survive.)"""
    config = ServerConfig(invocation_retention=60.0, mqtt=MqttConfig(
        broker=mosquitto.url, client_id=f"test-server-{uuid.uuid4().hex[:8]}",
        reconnect_delay=0.05, max_reconnect_delay=0.2))
    server = ThingServer(config)
    server.add_thing("lab", Lab())
    server.add_thing("counter", Counter())
    server.add_thing("thermometer", Thermometer())
    async with server.running():
        assert server.mqtt is not None
        with trio.fail_after(10):
            await server.mqtt.wait_connected()
        async with trio.open_nursery() as nursery:
            yield Served(server=server, network=MemoryNetwork(server=server, nursery=nursery),
                         broker=mosquitto)
            nursery.cancel_scope.cancel()


def only_mqtt_forms(td: dict[str, Any]) -> None:
    """Drop every form but the MQTT ones: the TD of a Thing reached through its broker
    only (its URL stays the HTTP one it was fetched from)."""
    for kind in ("properties", "actions", "events"):
        for affordance in td.get(kind, {}).values():
            affordance["forms"] = [f for f in affordance["forms"]
                                   if f["href"].startswith("mqtt")]
    td["forms"] = [f for f in td.get("forms", []) if f["href"].startswith("mqtt")]


async def publish_raw(broker: Mosquitto, topic: str, payload: bytes, **properties: Any
                      ) -> None:
    """Publish one message as another MQTT client would, and return once the broker
    has it (QoS 1: acknowledged)."""
    async with open_mqtt_connection("127.0.0.1", broker.port,
                                    client_id=f"tester-{uuid.uuid4().hex[:8]}",
                                    on_message=lambda _message: None) as connection:
        connection.publish(topic, payload, qos=1,
                           properties=publish_properties(**properties))
        await connection.wait_unacknowledged_below(1)


# --------------------------------------------------------------------------- forms, sans-IO

MQTT_TD: dict[str, Any] = {
    "title": "T",
    "properties": {
        "a": {"forms": [
            {"href": "a", "op": ["readproperty", "writeproperty"]},
            {"href": "ws://h/ws", "op": ["readproperty", "observeproperty"],
             "subprotocol": "webthingprotocol"},
            {"href": "mqtt://broker:1884/t/a", "op": ["readproperty", "observeproperty"],
             "mqv:controlPacket": "subscribe", "mqv:qos": "1", "mqv:filter": "x/a"},
            {"href": "mqtt://broker/t/a%2Fb/writeproperty", "op": ["writeproperty"],
             "mqv:controlPacket": "publish"},
        ]},
        "first": {"forms": [
            {"href": "mqtts://broker/t/first", "op": ["readproperty"]},
            {"href": "first", "op": ["readproperty"]},
        ]},
        "wrong": {"forms": [
            {"href": "mqtt://broker/t/wrong", "op": ["readproperty"],
             "mqv:controlPacket": "publish"},
            {"href": "wrong", "op": ["readproperty"]},
        ]},
    },
    "actions": {"go": {"forms": [
        {"href": "go", "op": ["invokeaction"]},
        {"href": "ws://h/ws", "op": ["invokeaction"], "subprotocol": "webthingprotocol"},
        {"href": "mqtt://broker/t/go", "op": ["invokeaction"], "mqv:topic": "x/go",
         "mqv:qos": 2},
    ]}},
}
ALL: set[ttc.forms.Binding] = {"http", "websocket", "mqtt"}


def forms(kind: str, name: str) -> list[Form]:
    found = affordance_forms(MQTT_TD, BASE, kind, name)  # type: ignore[arg-type]
    assert found is not None
    return found


def test_mqtt_forms_carry_topic_qos_and_control_packet() -> None:
    """mqv:filter / mqv:topic first, else the href's path (percent-decoded)."""
    observe, write = forms("properties", "a")[2:]
    assert (observe.topic, observe.qos, observe.control_packet) == ("x/a", 1, "subscribe")
    assert (write.topic, write.qos, write.control_packet) == (
        "t/a/b/writeproperty", None, "publish")
    assert observe.binding == "mqtt" and forms("properties", "a")[0].binding == "http"
    go = forms("actions", "go")[2]
    assert (go.topic, go.qos) == ("x/go", 2)
    assert str(broker_url(observe.href)) == "mqtt://broker:1884"
    assert str(broker_url(write.href)) == "mqtt://broker:1883"
    assert str(broker_url(forms("properties", "first")[0].href)) == "mqtts://broker:8883"
    with pytest.raises(ValueError, match="names no MQTT broker"):
        broker_url("http://broker/t")


def test_the_binding_is_the_preferred_one_else_the_tds_order() -> None:
    a = forms("properties", "a")
    # TD order: HTTP first; between HTTP and WebSocket, the established order decides.
    assert choose_binding(a, "readproperty", speaks=ALL,
                          established=("http", "websocket")) == "http"
    assert choose_binding(a, "observeproperty", speaks=ALL - {"http"},
                          established=("websocket",)) == "websocket"
    assert choose_binding(a, "readproperty", speaks=ALL, prefer=("mqtt",),
                          established=("http", "websocket")) == "mqtt"
    assert choose_binding(a, "writeproperty", speaks=ALL, prefer=("mqtt",)) == "mqtt"
    # A preference without a form falls back to the default.
    assert choose_binding(a, "writeproperty", speaks=ALL, prefer=("websocket",),
                          established=("http", "websocket")) == "http"
    # Not spoken (websocket=False, say): skipped.
    assert choose_binding(a, "observeproperty", speaks={"mqtt"},
                          established=("websocket",)) == "mqtt"
    # An MQTT form listed first wins by TD order.
    assert choose_binding(forms("properties", "first"), "readproperty", speaks=ALL,
                          established=("http", "websocket")) == "mqtt"
    # A form whose control packet cannot perform the operation is no form for it.
    wrong = forms("properties", "wrong")
    assert choose_binding(wrong, "readproperty", speaks=ALL, prefer=("mqtt",)) == "http"
    assert form_for(wrong, "readproperty", "mqtt") is None
    go = forms("actions", "go")
    assert choose_binding(go, "invokeaction", speaks=ALL,
                          established=("websocket", "http")) == "websocket"
    assert choose_binding(go, "invokeaction", speaks=ALL, prefer=("mqtt", "http"),
                          established=("websocket", "http")) == "mqtt"
    assert choose_binding(go, "queryaction", speaks=ALL) is None


def test_prefer_takes_a_name_or_names_and_refuses_others() -> None:
    assert ttc.ClientOptions(prefer="mqtt").prefer == ("mqtt",)
    assert ttc.ClientOptions(prefer=["websocket", "mqtt"]).prefer == ("websocket", "mqtt")
    assert ttc.ClientOptions().prefer == ()
    with pytest.raises(ValueError, match=r"unknown binding.*'coap'"):
        ttc.ClientOptions(prefer=("coap",))  # type: ignore[arg-type]


def test_topic_filters_match_as_mqtt_says() -> None:
    assert topic_matches("things/+/properties/+", "things/counter/properties/count")
    assert not topic_matches("things/+/properties/+", "things/counter/properties/count/x")
    assert topic_matches("things/#", "things") and topic_matches("things/#", "things/a/b")
    assert not topic_matches("+/x", "$SYS/x") and not topic_matches("a/b", "a/c")
    assert missed_topic("site/lab/things/counter/events/ping") == "site/lab/things/counter/missed"
    assert missed_topic("things/counter/events/+") is None
    assert missed_topic("counter/properties/count") is None


# --------------------------------------------------------------------------- against the broker


async def test_observe_over_mqtt(served: Served) -> None:
    """The retained value first, then each change, with its eventID; no WebSocket."""
    gate = served.gate()
    counter = served.thing("counter")
    assert isinstance(counter, Counter)
    counter.count = 3
    with trio.fail_after(10):
        async with ttc.open_client(open_stream=gate, options=OVER_MQTT) as client:
            thing = await client.consume(BASE + "counter/")
            await gate.shut()
            async with thing.observe("count", int) as values:
                changes = values.changes()
                while (change := await anext(changes)).value != 3:
                    pass  # the server may still be publishing 0, before 3
                assert change.name == "count" and change.event_id
                counter.count = 4
                change = await anext(changes)
                assert change.value == 4 and change.event_id and change.timestamp is None


async def test_subscribe_over_mqtt_and_the_servers_gap_notice(served: Served) -> None:
    """Each emission, typed; a problem on the Thing's ``missed`` topic raises
    NotificationsMissed once, and the subscription goes on."""
    gate = served.gate()
    thermometer = served.thing("thermometer")
    assert isinstance(thermometer, Thermometer)
    with trio.fail_after(20):
        async with ttc.open_client(open_stream=gate, options=OVER_MQTT) as client:
            thermo = await client.consume(BASE + "thermometer/")
            await gate.shut()
            async with thermo.subscribe("overheated", Reading) as alarms:
                await publish_raw(served.broker, "things/thermometer/missed", orjson.dumps(
                    notifications_missed("the broker was gone", last_event_id="e.1",
                                         resume_id="e.9")), content_type=PROBLEM_JSON)
                with pytest.raises(ttc.NotificationsMissed) as gap:
                    await anext(alarms)
                assert gap.value.problem is not None
                assert gap.value.problem.detail == "the broker was gone"
                assert (gap.value.last_event_id, gap.value.resume_id) == ("e.1", "e.9")
                thermometer.threshold = thermometer.temperature + 0.5
                thermometer.setpoint = thermometer.threshold + 10
                reading = await anext(alarms)
                assert isinstance(reading, Reading)
                assert reading.temperature > thermometer.threshold


async def test_an_event_delivered_twice_is_given_once(served: Served) -> None:
    """QoS 1 is "at least once": a second delivery of an eventID is dropped."""
    payload = b'{"temperature": 101.5, "time": "2026-01-01T00:00:00Z"}'
    with trio.fail_after(10):
        async with ttc.open_client(open_stream=served.network, options=OVER_MQTT) as client:
            thermo = await client.consume(BASE + "thermometer/")
            async with thermo.subscribe("overheated", Reading) as alarms:
                async with open_mqtt_connection(
                        "127.0.0.1", served.broker.port, client_id="tester-twice",
                        on_message=lambda _message: None) as connection:
                    for event_id in ("x.1", "x.1", "x.2"):
                        connection.publish(
                            "things/thermometer/events/overheated", payload, qos=1,
                            properties=publish_properties(
                                content_type="application/json",
                                user_properties=[("eventID", event_id)]))
                    await connection.wait_unacknowledged_below(1)
                changes = alarms.changes()
                first, second = await anext(changes), await anext(changes)
                assert (first.event_id, second.event_id) == ("x.1", "x.2")
                assert first.value.temperature == 101.5


async def test_read_over_mqtt_takes_the_retained_value(served: Served) -> None:
    gate = served.gate()
    with trio.fail_after(10):
        async with ttc.open_client(open_stream=gate, options=OVER_MQTT) as client:
            counter = await client.consume(BASE + "counter/")
            await gate.shut()
            await counter.write("count", 21)
            async with counter.observe("count") as values:
                async for value in values:
                    if value == 21:
                        break  # the broker retains 21 now
            assert await counter.read("count", int) == 21  # a subscription of its own
            async with counter.observe("count") as values:
                assert await counter.read("count") == 21  # the observation's latest


async def test_read_with_nothing_retained_times_out_saying_why(served: Served) -> None:
    options = attrs.evolve(OVER_MQTT, timeout=0.5)
    with trio.fail_after(10):
        async with ttc.open_client(open_stream=served.network, options=options) as client:
            counter = await client.consume(BASE + "counter/")
            for form in counter.td["properties"]["count"]["forms"]:
                if form.get("mqv:filter"):
                    form["mqv:filter"] = "nobody/publishes/here"
            with pytest.raises(ttc.Timeout, match="retains none on 'nobody/publishes/here'"):
                await counter.read("count")


async def test_write_over_mqtt(served: Served) -> None:
    """204 is done (the server has the value); a problem reply is the HTTP error."""
    gate = served.gate()
    counter, lab = served.thing("counter"), served.thing("lab")
    with trio.fail_after(10):
        async with ttc.open_client(open_stream=gate, options=OVER_MQTT) as client:
            counter_thing = await client.consume(BASE + "counter/")
            lab_thing = await client.consume(BASE + "lab/")
            await gate.shut()
            await counter_thing.write("count", 11)
            assert counter.count == 11
            await lab_thing.write("level", 42)
            assert lab.level == 42
            with pytest.raises(ttc.InvalidValue, match="greater than the maximum") as refused:
                await lab_thing.write("level", 101)
            assert refused.value.status == 422 and lab.level == 42
            with pytest.raises(ttc.InvalidValue):
                await counter_thing.write("count", "eleven")
            assert counter.count == 11
            with pytest.raises(ttc.NotWritable):  # read-only: the TD has no form to write
                await lab_thing.write("serial", 8)


async def test_invoke_over_mqtt(served: Served) -> None:
    """201 then 200: the output, as over the other bindings; refused input, failure and
    cancellation raise what they raise over HTTP and WebSocket."""
    gate = served.gate()
    with trio.fail_after(20):
        async with ttc.open_client(open_stream=gate, options=OVER_MQTT) as client:
            counter = await client.consume(BASE + "counter/")
            lab = await client.consume(BASE + "lab/")
            thermo = await client.consume(BASE + "thermometer/")
            await gate.shut()
            invocation = await counter.invoke("increment", by=3)
            assert invocation.id and invocation.status.href == (
                f"{BASE}action_invocations/{invocation.id}")
            assert await invocation.result(int) == 3
            assert invocation.status.state is ttc.State.COMPLETED
            assert await (await counter.invoke("increment")).result() == 4  # {} input

            with pytest.raises(ttc.InvalidValue, match="to") as refused:
                await thermo.invoke("ramp", to=500)
            assert refused.value.status == 422

            exploded = await lab.invoke("explode")  # no input: an empty payload
            with pytest.raises(ttc.ActionFailed) as failed:
                await exploded.result()
            assert failed.value.problem is not None
            assert failed.value.problem.title == "ZeroDivisionError"


async def test_an_invocation_over_mqtt_cancelled_over_http(served: Served) -> None:
    """Cancelling goes through the invocation's href (MQTT has no cancel form); the
    final reply says cancelled, and result() raises ActionCancelled."""
    with trio.fail_after(20):
        async with ttc.open_client(open_stream=served.network, options=OVER_MQTT) as client:
            lab = await client.consume(BASE + "lab/")
            waiting = await lab.invoke("wait", seconds=100)
            # Only two replies: accepted (201) and ended (200); no "running" between.
            assert waiting.status.state is ttc.State.PENDING
            assert await waiting.cancel() is True
            with pytest.raises(ttc.ActionCancelled):
                await waiting.result()
            assert [status.state async for status in waiting.updates()] == [
                ttc.State.CANCELLED]


async def test_a_td_with_only_mqtt_forms(served: Served) -> None:
    """No preference needed: the only forms there are, are MQTT's."""
    gate = served.gate()
    with trio.fail_after(20):
        async with ttc.open_client(open_stream=gate, options=FAST) as client:
            counter = await client.consume(BASE + "counter/")
            only_mqtt_forms(counter.td)  # type: ignore[arg-type]
            await gate.shut()
            await counter.write("count", 5)
            async with counter.observe("count", int) as values:
                async for value in values:
                    if value == 5:
                        break
            assert await counter.read("count") == 5
            assert await counter.read_all() == {"count": 5}  # one read per property
            assert await (await counter.invoke("increment", by=2)).result() == 7


async def test_without_a_preference_http_and_websocket_stay_first(served: Served) -> None:
    """The TD lists MQTT last: by default nothing goes through the broker, so with HTTP
    shut a read fails; preferring MQTT, the same read works."""
    for options, works in ((FAST, False), (OVER_MQTT, True)):
        gate = served.gate()
        with trio.fail_after(10):
            async with ttc.open_client(open_stream=gate, options=options) as client:
                counter = await client.consume(BASE + "counter/")
                await gate.shut()
                if works:
                    assert await counter.read("count") == 0
                    await counter.write("count", 1)
                else:
                    with pytest.raises(ttc.Unreachable):
                        await counter.read("count")
                    with pytest.raises(ttc.Unreachable):
                        await counter.write("count", 1)
                    with pytest.raises(ttc.Unreachable):
                        async with counter.observe("count"):
                            pass
    assert served.thing("counter").count == 1


async def test_an_observation_goes_on_after_the_broker_restarts(served: Served) -> None:
    """The broker restarts (forgetting every retained value and session): the client
    reconnects and subscribes again, the server publishes again, values flow on."""
    counter = served.thing("counter")
    assert served.server.mqtt is not None
    with trio.fail_after(30):
        async with ttc.open_client(open_stream=served.network, options=OVER_MQTT) as client:
            thing = await client.consume(BASE + "counter/")
            async with thing.observe("count", int) as values:
                counter.count = 1
                async for value in values:
                    if value == 1:
                        break
                await trio.to_thread.run_sync(served.broker.restart)
                await served.server.mqtt.wait_connected(2)
                counter.count = 2
                async for value in values:
                    if value == 2:
                        break
            await thing.write("count", 4)  # other operations use the new connection too
            assert counter.count == 4


async def test_an_invocation_followed_across_a_broker_restart_ends(served: Served) -> None:
    """The final reply may be published while the client is away: the handle polls the
    invocation over HTTP from the loss on, and learns its end either way."""
    assert served.server.mqtt is not None
    with trio.fail_after(30):
        async with ttc.open_client(open_stream=served.network, options=OVER_MQTT) as client:
            lab = await client.consume(BASE + "lab/")
            waiting = await lab.invoke("wait", seconds=1.0)
            await trio.to_thread.run_sync(served.broker.restart)
            assert await waiting.result() == "done"
            assert waiting.status.state is ttc.State.COMPLETED


async def test_an_unreachable_broker_is_unreachable(served: Served) -> None:
    with trio.fail_after(20):
        async with ttc.open_client(open_stream=served.network, options=OVER_MQTT) as client:
            counter = await client.consume(BASE + "counter/")
            await trio.to_thread.run_sync(served.broker.stop)
            with pytest.raises(ttc.Unreachable, match=r"MQTT broker mqtt://127\.0\.0\.1"):
                await counter.read("count")


async def test_credentials_for_a_broker_that_wants_them(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords"
    await trio.run_process(["mosquitto_passwd", "-c", "-b", str(passwords), "lab", "s3cret"],
                           capture_stdout=True, capture_stderr=True)
    passwords.chmod(0o644)
    with Mosquitto(tmp_path, extra_config=f"password_file {passwords}\n") as broker:
        broker.config.write_text(broker.config.read_text().replace(
            "allow_anonymous true\n", "allow_anonymous false\n"))
        broker.restart()
        config = ServerConfig(mqtt=MqttConfig(broker=broker.url, client_id="server",
                                              username="lab", password="s3cret"))
        server = ThingServer(config)
        server.add_thing("counter", Counter(start=3))
        with trio.fail_after(10):
            async with server.running(), trio.open_nursery() as nursery:
                assert server.mqtt is not None
                await server.mqtt.wait_connected()
                gate = Gate(MemoryNetwork(server=server, nursery=nursery))
                anonymous = attrs.evolve(OVER_MQTT, timeout=1.0)
                async with ttc.open_client(open_stream=gate, options=anonymous) as client:
                    counter = await client.consume(BASE + "counter/")
                    with pytest.raises(ttc.Unreachable, match=r"refused|authori"):
                        await counter.read("count")
                logged_in = attrs.evolve(anonymous, mqtt_username="lab", mqtt_password="s3cret")
                async with ttc.open_client(open_stream=gate, options=logged_in) as client:
                    counter = await client.consume(BASE + "counter/")
                    await gate.shut()
                    assert await counter.read("count") == 3
                nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- odd replies


def redirect(td: dict[str, Any], kind: str, name: str, topic: str) -> None:
    """Point the MQTT forms that publish for ``name`` at ``topic``, where a
    :func:`responder` answers instead of the server."""
    for form in td[kind][name]["forms"]:
        if form["href"].startswith("mqtt") and form.get("mqv:controlPacket") != "subscribe":
            form["mqv:topic"] = topic


@asynccontextmanager
async def responder(broker: Mosquitto, topic: str,
                    replies: list[tuple[str | None, bytes]]) -> AsyncIterator[None]:
    """Another MQTT client answering each request on ``topic`` with ``replies``: (the
    ``status`` user property, or None for none; the payload), on the request's response
    topic with its correlation data."""
    send, receive = trio.open_memory_channel[MqttMessage](10)
    async with open_mqtt_connection("127.0.0.1", broker.port,
                                    client_id=f"responder-{uuid.uuid4().hex[:8]}",
                                    on_message=send.send_nowait) as connection:
        await connection.subscribe([topic], qos=1)

        async def answer() -> None:
            async for request in receive:
                assert request.response_topic is not None
                for status, payload in replies:
                    connection.publish(request.response_topic, payload, qos=1,
                                       properties=publish_properties(
                                           correlation_data=request.correlation_data,
                                           user_properties=[] if status is None
                                           else [("status", status)]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            yield
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("status", ["²", "1" * 5000, "ok"])
async def test_a_reply_whose_status_is_no_number_is_a_server_error(
        served: Served, status: str) -> None:
    """A status that is no HTTP status ("²" is a digit to str.isdigit, but no int; 5,000
    digits are too many for int()) is the server's error, not a ValueError, nor a
    success; the connection serves on."""
    with trio.fail_after(10):
        async with ttc.open_client(open_stream=served.network, options=OVER_MQTT) as client:
            counter = await client.consume(BASE + "counter/")
            redirect(counter.td, "properties", "count", "fake/write")  # type: ignore[arg-type]
            async with responder(served.broker, "fake/write", [(status, b"")]):
                with pytest.raises(ttc.ServerError, match="no HTTP status"):
                    await counter.write("count", 1)
            async with responder(served.broker, "fake/write", [("204", b"")]):
                await counter.write("count", 2)


@pytest.mark.parametrize("final", [
    ("²", b'{"status": "completed", "output": 1}'),
    ("200", b'{"status": "completed", "href": "http://[oops"}'),
    ("200", b"not json"),
])
async def test_an_odd_final_reply_ends_the_invocation_with_a_server_error(
        served: Served, final: tuple[str, bytes]) -> None:
    """Instead of leaving result() waiting for ever (the error lost in a log)."""
    accepted = b'{"id": "a1", "status": "pending"}'
    with trio.fail_after(10):
        async with ttc.open_client(open_stream=served.network, options=OVER_MQTT) as client:
            counter = await client.consume(BASE + "counter/")
            redirect(counter.td, "actions", "increment", "fake/invoke")  # type: ignore[arg-type]
            async with responder(served.broker, "fake/invoke", [("201", accepted), final]):
                invocation = await counter.invoke("increment")
                with pytest.raises(ttc.ServerError):
                    await invocation.result()


@pytest.mark.parametrize("accepted", [b'{"id": "a1", "href": "http://[oops"}', b"[1, 2]"])
async def test_an_odd_first_reply_refuses_the_invocation_with_a_server_error(
        served: Served, accepted: bytes) -> None:
    with trio.fail_after(10):
        async with ttc.open_client(open_stream=served.network, options=OVER_MQTT) as client:
            counter = await client.consume(BASE + "counter/")
            redirect(counter.td, "actions", "increment", "fake/invoke")  # type: ignore[arg-type]
            async with responder(served.broker, "fake/invoke", [("201", accepted)]):
                with pytest.raises(ttc.ServerError, match="action 'increment'"):
                    await counter.invoke("increment")


async def test_a_deleted_retained_value_is_not_read_from_an_observation(served: Served) -> None:
    """An empty retained message deletes the value: a read made by an observer then
    finds none (as a fresh subscription would), not the deleted one."""
    options = attrs.evolve(OVER_MQTT, timeout=0.5)
    with trio.fail_after(10):
        async with ttc.open_client(open_stream=served.network, options=options) as client:
            counter = await client.consume(BASE + "counter/")
            lab = await client.consume(BASE + "lab/")
            async with counter.observe("count") as values, lab.observe("level") as levels:
                assert await anext(values) == 0
                async with open_mqtt_connection(
                        "127.0.0.1", served.broker.port, client_id="tester-delete",
                        on_message=lambda _message: None) as connection:
                    connection.publish("things/counter/properties/count", b"", qos=1,
                                       retain=True)
                    # After the deletion, on the same connection: once seen, the
                    # deletion has been routed too.
                    connection.publish("things/lab/properties/level", b"12345", qos=1)
                    await connection.wait_unacknowledged_below(1)
                async for level in levels:
                    if level == 12345:
                        break
                with pytest.raises(ttc.Timeout, match="retains none"):
                    await counter.read("count")
