"""The MQTT binding against a real Mosquitto broker: what the server publishes, the
commands it takes, and the faults it survives (``docs/scaling-out.md``)."""

from __future__ import annotations

import functools
import itertools
import logging
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import orjson
import pytest
import trio
import trio.testing
import trustme

import trio_things as tt
from benchmarks.broker import Mosquitto, free_port
from trio_things.bindings.mqtt import MqttBridge
from trio_things.config import ServerConfig
from trio_things.protocol import commands as c
from trio_things.protocol.mqtt import PROBLEM_JSON, MqttConfig
from trio_things.protocol.problems import NOTIFICATIONS_MISSED_TYPE
from trio_things.server import ThingServer
from trio_things.testing import in_memory
from trio_things.transport.mqtt import (
    MqttConnection,
    MqttMessage,
    open_mqtt_connection,
    publish_properties,
)

TIMEOUT = 20


class Lamp(tt.Thing):
    """A lamp whose flashes are counted, for the MQTT tests."""

    level: int = tt.property(default=0, minimum=0, maximum=100)
    """Brightness, in percent."""
    serial: str = tt.property(default="L-1", readonly=True)
    """The lamp's serial number."""
    flashed: tt.Event[int] = tt.event(int)
    """The lamp flashed this many times."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    @tt.action
    def flash(self, times: int = 1) -> int:
        """Flash ``times`` times; return how many."""
        self.runs += 1
        self.flashed.emit(times)
        return times


@asynccontextmanager
async def lamp_server(broker: str, **options: Any) -> AsyncIterator[tuple[ThingServer, Lamp]]:
    replay_size = options.pop("replay_size", 1024)
    extra = options.pop("extra", {})
    mqtt = MqttConfig(broker=broker, **({"client_id": "lamp-server", "reconnect_delay": 0.05,
                                         "max_reconnect_delay": 0.2, "connect_timeout": 1.0}
                                        | options))
    server = ThingServer(ServerConfig(port=0, mqtt=mqtt, replay_size=replay_size))
    lamp = Lamp()
    server.add_thing("lamp", lamp)
    for name, thing in extra.items():
        server.add_thing(name, thing)
    async with server.running():
        yield server, lamp


class Unplugged(tt.Thing):
    """A sensor whose getter fails."""

    @tt.property
    def reading(self) -> int:
        """Never read."""
        raise RuntimeError("sensor unplugged")


def bridge(server: ThingServer) -> MqttBridge:
    assert server.mqtt is not None
    return server.mqtt


@attrs.define
class Consumer:
    """A plain MQTT 5 client of the broker: what it received, and requests."""

    connection: MqttConnection
    received: trio.MemoryReceiveChannel[MqttMessage]
    _ids: itertools.count[int] = attrs.field(factory=itertools.count)

    async def next(self, topic: str | None = None) -> MqttMessage:
        """The next message (on ``topic``, skipping others)."""
        while True:
            message = await self.received.receive()
            if topic is None or message.topic == topic:
                return message

    def request(self, topic: str, payload: bytes) -> bytes:
        """Publish with a response topic; return the correlation data."""
        correlation = f"req-{next(self._ids)}".encode()
        self.connection.publish(topic, payload, qos=1, properties=publish_properties(
            response_topic="replies/consumer", correlation_data=correlation))
        return correlation

    async def reply(self, correlation: bytes) -> tuple[int, MqttMessage]:
        while True:
            message = await self.next("replies/consumer")
            if message.correlation_data == correlation:
                return int(message.user_property("status") or 0), message


@asynccontextmanager
async def consumer(broker: Mosquitto, *filters: str, client_id: str = "consumer"
                   ) -> AsyncIterator[Consumer]:
    send, receive = trio.open_memory_channel[MqttMessage](10_000)
    async with open_mqtt_connection("127.0.0.1", broker.port, client_id=client_id,
                                    on_message=send.send_nowait) as connection:
        await connection.subscribe(["replies/consumer", *filters], no_local=False)
        yield Consumer(connection, receive)


def json_of(message: MqttMessage) -> Any:
    return orjson.loads(message.payload)


async def test_the_td_offers_mqtt_forms_that_validate(
        mosquitto: Mosquitto, td_validator: jsonschema.Draft7Validator) -> None:
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url) as (server, _lamp):
            assert server._dispatcher is not None
            td = server._dispatcher.describe("lamp", "http://127.0.0.1:8000/")
    td_validator.validate(td)
    assert {"mqv": "https://www.w3.org/2019/wot/mqtt#"} in td["@context"]
    level = [f for f in td["properties"]["level"]["forms"] if f["href"].startswith("mqtt:")]
    assert level[0] == {
        "href": f"{mosquitto.url}/things/lamp/properties/level",
        "op": ["readproperty", "observeproperty"], "contentType": "application/json",
        "mqv:controlPacket": "subscribe", "mqv:retain": True, "mqv:qos": "1",
        "mqv:filter": "things/lamp/properties/level"}
    assert level[1]["op"] == ["unobserveproperty"]
    assert level[2]["op"] == ["writeproperty"] and level[2]["mqv:controlPacket"] == "publish"
    assert level[2]["mqv:topic"] == "things/lamp/properties/level/writeproperty"
    serial = [f for f in td["properties"]["serial"]["forms"] if f["href"].startswith("mqtt:")]
    assert [f["op"] for f in serial] == [["readproperty", "observeproperty"],
                                         ["unobserveproperty"]]  # read-only: no write form
    flash = [f for f in td["actions"]["flash"]["forms"] if f["href"].startswith("mqtt:")]
    assert flash[0]["mqv:topic"] == "things/lamp/actions/flash"
    thing_ops = [op for f in td["forms"] if f["href"].startswith("mqtt:") for op in f["op"]]
    assert thing_ops == ["observeallproperties", "unobserveallproperties",
                         "subscribeallevents", "unsubscribeallevents"]
    # First forms stay HTTP: consumers that take the first form they speak keep it.
    assert not td["properties"]["level"]["forms"][0]["href"].startswith("mqtt:")


async def test_publish_only_offers_no_command_forms(mosquitto: Mosquitto) -> None:
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url, commands=False) as (server, _lamp):
            assert server._dispatcher is not None
            td = server._dispatcher.describe("lamp", "http://127.0.0.1:8000/")
    ops = {op for affordance in ("properties", "actions")
           for spec in td[affordance].values() for f in spec["forms"]
           if f["href"].startswith("mqtt:") for op in f["op"]}
    assert "writeproperty" not in ops and "invokeaction" not in ops


async def test_values_are_retained_and_each_change_is_published(mosquitto: Mosquitto) -> None:
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url) as (server, lamp):
            await bridge(server).wait_connected()
            async with consumer(mosquitto, "things/lamp/properties/+") as sub:
                first = {(m := await sub.next()).topic: json_of(m) for _ in range(2)}
                assert first == {"things/lamp/properties/level": 0,
                                 "things/lamp/properties/serial": "L-1"}
                lamp.level = 40
                change = await sub.next("things/lamp/properties/level")
                assert json_of(change) == 40 and change.retain is False  # live, not stored
                assert change.user_property("eventID")
                assert change.content_type == "application/json"
            # A consumer that comes later is given the newest value by the broker.
            async with consumer(mosquitto, "things/lamp/properties/level",
                                client_id="late") as late:
                stored = await late.next()
                assert json_of(stored) == 40 and stored.retain


async def test_events_and_action_status_are_published(mosquitto: Mosquitto) -> None:
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url) as (server, lamp), \
                consumer(mosquitto, "things/lamp/events/+",
                         "things/lamp/actions/flash/status") as sub:
            await bridge(server).wait_connected()
            assert server._dispatcher is not None
            await server._dispatcher.run(c.InvokeAction(thing="lamp", name="flash",
                                                        input={"times": 3}))
            statuses = []
            event = None
            while not statuses or statuses[-1] != "completed":
                message = await sub.next()
                if message.topic == "things/lamp/events/flashed":
                    event = json_of(message)
                else:
                    statuses.append(json_of(message)["status"])
            assert event == 3
            assert statuses == ["pending", "running", "completed"]
            assert lamp.runs == 1


async def test_writes_over_mqtt_are_answered(mosquitto: Mosquitto) -> None:
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url) as (server, lamp), consumer(mosquitto) as sub:
            await bridge(server).wait_connected()
            status, reply = await sub.reply(sub.request(
                "things/lamp/properties/level/writeproperty", b"55"))
            assert (status, reply.payload, lamp.level) == (204, b"", 55)
            refused = {
                b"nonsense": 400,  # no JSON
                b"101": 422,  # above the maximum
                b'"bright"': 422,  # not an integer
            }
            for payload, expected in refused.items():
                status, reply = await sub.reply(sub.request(
                    "things/lamp/properties/level/writeproperty", payload))
                assert status == expected, payload
                assert reply.content_type == PROBLEM_JSON
                assert json_of(reply)["status"] == expected
            for topic, expected in (("things/lamp/properties/serial/writeproperty", 405),
                                    ("things/lamp/properties/nope/writeproperty", 404),
                                    ("things/nolamp/properties/level/writeproperty", 404),
                                    ("things/lamp/actions/nope", 404)):
                status, reply = await sub.reply(sub.request(topic, b"1"))
                assert (status, json_of(reply)["status"]) == (expected, expected), topic
            status, _ = await sub.reply(sub.request(
                "things/lamp/properties/level/writeproperty", b"x" * (1024 * 1024 + 1)))
            assert status == 413
            # The binding lives on after all that.
            status, _ = await sub.reply(sub.request(
                "things/lamp/properties/level/writeproperty", b"7"))
            assert (status, lamp.level) == (204, 7)


async def test_an_invocation_is_answered_when_accepted_and_when_ended(
        mosquitto: Mosquitto) -> None:
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url) as (server, lamp), consumer(mosquitto) as sub:
            await bridge(server).wait_connected()
            correlation = sub.request("things/lamp/actions/flash", b'{"times": 2}')
            status, accepted = await sub.reply(correlation)
            assert status == 201 and json_of(accepted)["status"] in ("pending", "running")
            status, ended = await sub.reply(correlation)
            assert status == 200
            assert json_of(ended)["status"] == "completed" and json_of(ended)["output"] == 2
            assert json_of(ended)["id"] == json_of(accepted)["id"]
            # The same request again (a QoS 1 redelivery) never runs the action twice.
            sub.connection.publish("things/lamp/actions/flash", b'{"times": 2}', qos=1,
                                   properties=publish_properties(
                                       response_topic="replies/consumer",
                                       correlation_data=correlation))
            status, again = await sub.reply(correlation)
            assert (status, json_of(again)["id"]) == (201, json_of(accepted)["id"])
            status, _ = await sub.reply(correlation)
            assert status == 200 and lamp.runs == 1
            # An invalid input is refused, and nothing runs.
            status, refused = await sub.reply(sub.request("things/lamp/actions/flash",
                                                          b'{"times": "x"}'))
            assert status == 422 and refused.content_type == PROBLEM_JSON
            assert lamp.runs == 1


async def test_an_invocation_without_a_response_topic_still_runs(mosquitto: Mosquitto) -> None:
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url) as (server, lamp), \
                consumer(mosquitto, "things/lamp/actions/flash/status") as sub:
            await bridge(server).wait_connected()
            sub.connection.publish("things/lamp/actions/flash", b"", qos=1)
            while json_of(await sub.next())["status"] != "completed":
                pass
            assert lamp.runs == 1


async def test_a_broker_restart_republishes_the_state(mosquitto: Mosquitto) -> None:
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url) as (server, lamp):
            await bridge(server).wait_connected()
            mosquitto.stop()
            lamp.level = 80  # while the broker is down
            mosquitto.start()  # no persistence: it remembers nothing
            await bridge(server).wait_connected(2)
            async with consumer(mosquitto, "things/lamp/properties/level") as sub:
                message = await sub.next()
                assert (json_of(message), message.retain) == (80, True)
                # Commands work again, and run once.
                status, _ = await sub.reply(sub.request("things/lamp/actions/flash", b""))
                assert status == 201
                status, _ = await sub.reply(sub.request(  # same request id: a fresh one
                    "things/lamp/properties/level/writeproperty", b"3"))
                assert status == 204 and lamp.level == 3
            assert lamp.runs == 1


async def test_http_serves_while_the_broker_is_unreachable(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_things.mqtt")
    port = free_port()
    with trio.fail_after(TIMEOUT):
        async with lamp_server(f"mqtt://127.0.0.1:{port}") as (server, _lamp):
            await bridge(server).wait_attempts(3)
            async with in_memory(server) as served, served.http() as http:
                response = await http.get("/lamp/level")
                assert (response.status, response.json()) == (200, 0)
            warnings = [r for r in caplog.records
                        if r.name == "trio_things.mqtt" and r.levelno >= logging.WARNING]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            assert f"127.0.0.1:{port}" in warnings[0].getMessage()
            assert "retrying" in warnings[0].getMessage()
            with Mosquitto(tmp_path, port) as broker:  # the broker comes up at last
                await bridge(server).wait_connected()
                async with consumer(broker, "things/lamp/properties/level") as sub:
                    assert json_of(await sub.next()) == 0


async def flash_while_the_broker_stalls(broker: Mosquitto, server: ThingServer, lamp: Lamp,
                                        sub: Consumer) -> None:
    """Flash once (seen, so the broker acknowledged something), stall the broker, flash
    20 times (1 to 20), which overflows a small Outbox, and let the broker go on once
    the bridge has given up its connection."""
    await bridge(server).wait_connected()
    lamp.flashed.emit(0)
    assert json_of(await sub.next()) == 0
    broker.pause()
    for n in range(1, 21):
        lamp.flashed.emit(n)
    await bridge(server).wait_attempts(1)  # overflowed: a new connection
    broker.resume()


async def test_a_backed_up_broker_costs_no_history(mosquitto: Mosquitto) -> None:
    """Events emitted while the broker stalls overflow the bridge's Outbox; it
    reconnects and publishes them from the Thing's replay ring."""
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url, outbox_size=4, in_flight=2) as (server, lamp), \
                consumer(mosquitto, "things/lamp/events/flashed", "things/lamp/missed") as sub:
            await flash_while_the_broker_stalls(mosquitto, server, lamp, sub)
            await bridge(server).wait_connected(2)
            seen: list[int] = []
            while seen[-1:] != [20]:
                message = await sub.next()
                assert message.topic != "things/lamp/missed"
                seen.append(json_of(message))
            # In order, and each once but for those the broker had and had not yet
            # acknowledged when the connection dropped (QoS 1: at least once).
            first_seen = [n for i, n in enumerate(seen) if n not in seen[:i] and n != 0]
            assert first_seen == list(range(1, 21))


async def test_a_gap_beyond_the_replay_ring_is_published(mosquitto: Mosquitto) -> None:
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url, outbox_size=4, in_flight=2,
                               replay_size=5) as (server, lamp), \
                consumer(mosquitto, "things/lamp/events/flashed", "things/lamp/missed") as sub:
            await flash_while_the_broker_stalls(mosquitto, server, lamp, sub)
            gap = await sub.next("things/lamp/missed")
            assert gap.content_type == PROBLEM_JSON
            problem = json_of(gap)
            assert problem["type"] == NOTIFICATIONS_MISSED_TYPE and problem["resumeID"]
            after = [json_of(await sub.next("things/lamp/events/flashed")) for _ in range(5)]
            assert after == [16, 17, 18, 19, 20]


async def test_a_failing_getter_costs_its_own_value_only(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url, extra={"sensor": Unplugged()}) as (server, lamp):
            await bridge(server).wait_connected()
            async with consumer(mosquitto, "things/lamp/properties/level") as sub:
                assert json_of(await sub.next()) == 0
                lamp.level = 9
                assert json_of(await sub.next()) == 9
    assert any("cannot read sensor.reading" in r.getMessage() for r in caplog.records)


async def test_mqtts_with_the_brokers_certificate_checked(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(tmp_path / "broker.pem")
    issued.private_key_pem.write_to_path(tmp_path / "broker.key")
    tls = (f"cafile {tmp_path / 'ca.pem'}\ncertfile {tmp_path / 'broker.pem'}\n"
           f"keyfile {tmp_path / 'broker.key'}\n")
    with Mosquitto(tmp_path, extra_config=tls) as broker, trio.fail_after(TIMEOUT):
        secure = f"mqtts://127.0.0.1:{broker.port}"
        async with lamp_server(secure, ca_certificates=tmp_path / "ca.pem") as (server, _):
            await bridge(server).wait_connected()
            assert server._dispatcher is not None
            td = server._dispatcher.describe("lamp", "http://127.0.0.1:8000/")
            level = td["properties"]["level"]["forms"]
            assert any(form["href"].startswith(f"{secure}/things/") for form in level)
        # Without the CA, the broker's certificate is refused, and the server says so.
        async with lamp_server(secure) as (server, _):
            await bridge(server).wait_attempts(1)
            assert not bridge(server).connected


async def test_credentials_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    passwords = tmp_path / "passwords"
    await trio.run_process(["mosquitto_passwd", "-c", "-b", str(passwords), "bench", "s3cret"],
                           capture_stdout=True, capture_stderr=True)
    passwords.chmod(0o644)
    config = f"password_file {passwords}\n"
    with Mosquitto(tmp_path, extra_config=config) as broker, trio.fail_after(TIMEOUT):
        broker.config.write_text(broker.config.read_text().replace(
            "allow_anonymous true\n", "allow_anonymous false\n"))
        broker.restart()
        monkeypatch.setenv("TRIO_THINGS_MQTT_PASSWORD", "wrong")
        async with lamp_server(broker.url, username="bench") as (server, _):
            await bridge(server).wait_attempts(1)
        assert any("refused the connection" in r.getMessage() for r in caplog.records)
        monkeypatch.setenv("TRIO_THINGS_MQTT_PASSWORD", "s3cret")
        async with lamp_server(broker.url, username="bench") as (server, _):
            await bridge(server).wait_connected()


async def test_stopping_never_waits_for_a_broker_that_does_not_answer() -> None:
    """A broker whose listening socket takes no more connections (its backlog full, as
    an overloaded or black-holed broker): the connect hangs in its worker thread until
    ``connect_timeout``; stopping the server meanwhile is prompt all the same."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the backlog: later SYNs go unanswered
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        try:
            with trio.fail_after(TIMEOUT):
                async with lamp_server(f"mqtt://127.0.0.1:{port}",
                                       connect_timeout=30.0) as (server, _lamp):
                    await trio.testing.wait_all_tasks_blocked()
                    # Still in its first connect: no attempt has ended.
                    assert (bridge(server).connected, bridge(server).attempts) == (False, 0)
                    stopping = trio.current_time()
            assert trio.current_time() - stopping < 1.0  # not the 30 s connect timeout
        finally:
            for filler in fillers:
                filler.close()


async def test_the_same_message_twice_at_once_runs_twice(mosquitto: Mosquitto) -> None:
    """Two identical messages (mosquitto_pub run twice) are two commands, whatever
    they share: neither is mistaken for the other while both wait or run (here, two
    writes of a property whose setter runs in a worker thread, so that they overlap)."""
    hardware = Hardware()
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url, extra={"hardware": hardware}) as (server, _), \
                consumer(mosquitto) as sub:
            await bridge(server).wait_connected()
            topic = "things/hardware/properties/gain/writeproperty"
            for _ in range(2):
                sub.connection.publish(topic, b"5", qos=1)
            for _ in range(2):  # a bounded wait: a thread cannot be cancelled
                assert await trio.to_thread.run_sync(hardware.written.acquire, True, 10)
            assert hardware.writes == 2 and bridge(server).connected
            status, _ = await sub.reply(sub.request(topic, b"6"))  # and it lives on
            assert (status, hardware.writes) == (204, 3)


class Hardware(tt.Thing):
    """A gain set in hardware: the setter blocks, so it runs in a worker thread."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.written = threading.Semaphore(0)
        self._gain = 1

    @tt.property
    def gain(self) -> int:
        """The gain."""
        return self._gain

    @gain.setter
    def gain(self, value: int) -> None:
        self._gain = value
        self.writes += 1
        self.written.release()


async def test_a_bug_in_the_binding_restarts_it_and_spares_the_server(
        mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    relay = MqttBridge._relay
    calls = 0

    async def failing_once(self: MqttBridge, *args: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await relay(self, *args)

    monkeypatch.setattr(MqttBridge, "_relay", failing_once)
    with trio.fail_after(TIMEOUT):
        async with lamp_server(mosquitto.url) as (server, _lamp):
            await bridge(server).wait_connected(2)  # the second connection serves
            async with consumer(mosquitto, "things/lamp/properties/level") as sub:
                assert json_of(await sub.next()) == 0
    assert any(r.getMessage() == "MQTT: the binding failed; reconnecting" and r.exc_info
               for r in caplog.records)


async def test_a_broker_that_hangs_up_at_once_is_reported_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """Something listens where the broker should be, and hangs up before any CONNACK:
    each attempt fails, backing off, and the log says so once, not at every attempt."""
    caplog.set_level(logging.DEBUG, logger="trio_things.mqtt")

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(
                trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with lamp_server(f"mqtt://127.0.0.1:{port}") as (server, _lamp):
                await bridge(server).wait_attempts(4)
            nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "trio_things.mqtt" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
