"""WebSocket notifications end to end: the real server, a real trio-websocket client,
in-memory streams (lockstep for a client that reads slowly), every wait under fail_after.
"""

from __future__ import annotations

import datetime
import gc
from collections.abc import AsyncIterator

import h11
import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_things as tt
from tests.helpers.servers import observer_count, serve_on_loopback
from tests.helpers.wsclient import open_raw_ws, open_ws, receive, request, send
from trio_things.bindings.websocket import _SPENT_HANDSHAKE
from trio_things.config import ServerConfig
from trio_things.demo import Counter, Reading, Thermometer
from trio_things.model.description import thing_id
from trio_things.protocol.dialects import SUBPROTOCOL
from trio_things.protocol.limits import WebSocketLimits
from trio_things.server import ThingServer

WTP = [SUBPROTOCOL]
BASE = "http://testserver/"


class Sensor(tt.Thing):
    """A Thing whose blocking driver changes state from a worker thread."""

    level: int = tt.property(default=0)
    tick = tt.event(int)

    @tt.action
    def sweep(self, n: int = 100) -> int:
        """Set ``level`` to 1..n and emit ``tick`` 1..n, from a worker thread."""
        for i in range(1, n + 1):
            self.level = i
            self.tick.emit(i)
        return n


def make_server(**limits: object) -> ThingServer:
    server = ThingServer(ServerConfig(websocket=WebSocketLimits(**limits),  # type: ignore[arg-type]
                                      invocation_retention=60.0))
    server.add_thing("counter", Counter())
    server.add_thing("thermometer", Thermometer())
    server.add_thing("sensor", Sensor())
    return server


@pytest.fixture
async def server() -> AsyncIterator[ThingServer]:
    server = make_server()
    async with server.running():
        yield server


# --------------------------------------------------------------------------- Web Thing Protocol


async def test_wtp_properties(server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws", WTP) as ws:
            read = await request(ws, "readproperty", name="count")
            assert read["value"] == 0
            assert read["thingID"] == thing_id(BASE, "counter")
            assert read["operation"] == "readproperty"
            assert read["timestamp"].endswith("Z")
            written = await request(ws, "writeproperty", name="count", value=7)
            assert written["value"] == 7 and "error" not in written
            assert server.things["counter"].count == 7  # type: ignore[attr-defined]
            assert (await request(ws, "readallproperties"))["values"] == {"count": 7}
            assert (await request(ws, "readmultipleproperties", names=["count"]))["values"] == {
                "count": 7}
            await request(ws, "writemultipleproperties", values={"count": 3})
            await request(ws, "writeallproperties", values={"count": 4})
            assert (await request(ws, "readproperty", name="count"))["value"] == 4


async def test_wtp_correlation_id_defaults_to_the_message_id(server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws", WTP) as ws:
            await send(ws, {"messageID": "m-1", "messageType": "request",
                            "operation": "readproperty", "name": "count"})
            reply = await receive(ws)
            assert reply["correlationID"] == "m-1"
            assert reply["messageID"] != "m-1"


async def test_wtp_server_wide_endpoint_needs_a_thing_id(server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/ws", WTP) as ws:
            by_id = await request(ws, "readproperty", thing=thing_id(BASE, "thermometer"),
                                  name="setpoint")
            assert by_id["value"] == 20.0
            by_name = await request(ws, "readproperty", thing="counter", name="count")
            assert by_name["thingID"] == thing_id(BASE, "counter")
            missing = await request(ws, "readproperty", thing=None, name="count")
            assert missing["error"]["status"] == 400


async def test_wtp_observe_sends_the_current_value_then_every_change(
        server: ThingServer) -> None:
    counter = server.things["counter"]
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws", WTP) as ws:
            response = await request(ws, "observeproperty", name="count")
            assert response["name"] == "count" and "error" not in response
            correlation_id = response["correlationID"]
            current = await receive(ws)
            assert current["messageType"] == "notification"
            assert current["operation"] == "observeproperty"
            assert (current["name"], current["value"]) == ("count", 0)
            assert current["correlationID"] == correlation_id
            assert current["thingID"] == thing_id(BASE, "counter")
            for value in (1, 2, 3):
                counter.count = value  # type: ignore[attr-defined]
                notification = await receive(ws)
                assert notification["value"] == value
                assert notification["correlationID"] == correlation_id
            await request(ws, "unobserveproperty", name="count")
            assert observer_count(server) == 0
            counter.count = 99  # type: ignore[attr-defined]
            # Nothing for the change: the next message is the next response.
            assert (await request(ws, "readproperty", name="count"))["value"] == 99


async def test_wtp_observe_all_properties(server: ThingServer) -> None:
    thermometer = server.things["thermometer"]
    with trio.fail_after(5):
        async with open_ws(server, "/thermometer/ws", WTP) as ws:
            await request(ws, "observeallproperties", thing=None)
            initial = {(await receive(ws))["name"] for _ in range(3)}
            assert initial == {"temperature", "setpoint", "threshold"}
            thermometer.threshold = 90.0  # type: ignore[attr-defined]
            notification = await receive(ws)
            assert (notification["name"], notification["value"]) == ("threshold", 90.0)
            assert notification["operation"] == "observeallproperties"
            await request(ws, "unobserveallproperties", thing=None)
            assert observer_count(server) == 0


async def test_wtp_invoke_pushes_status_to_the_invoker(server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws", WTP) as ws:
            response = await request(ws, "invokeaction", name="increment", input={"by": 5})
            status = response["status"]
            assert status["state"] == "pending"
            action_id = status["actionID"]
            states = []
            while not states or states[-1] not in ("completed", "failed"):
                notification = await receive(ws)
                assert notification["operation"] == "invokeaction"
                assert notification["correlationID"] == response["correlationID"]
                assert notification["status"]["actionID"] == action_id
                states.append(notification["status"]["state"])
            assert states == ["running", "completed"]
            assert notification["status"]["output"] == 5
            query = await request(ws, "queryaction", actionID=action_id)
            assert query["name"] == "increment"
            assert query["status"]["state"] == "completed"
            everything = await request(ws, "queryallactions")
            assert [s["actionID"] for s in everything["statuses"]["increment"]] == [action_id]
            assert everything["statuses"]["count_slowly"] == []
            assert observer_count(server) == 0  # the invocation's set is gone


async def test_wtp_cancel_action(server: ThingServer) -> None:
    with trio.fail_after(10):
        async with open_ws(server, "/counter/ws", WTP) as ws:
            response = await request(ws, "invokeaction", name="count_slowly",
                                     input={"n": 100, "delay": 5})
            action_id = response["status"]["actionID"]
            assert (await receive(ws))["status"]["state"] == "running"
            cancelled = await request(ws, "cancelaction", actionID=action_id)
            assert cancelled["actionID"] == action_id and "error" not in cancelled
            final = await receive(ws)
            assert final["status"]["state"] == "cancelled"
            again = await request(ws, "cancelaction", actionID=action_id)
            assert again["error"]["status"] == 409


async def test_wtp_subscribe_events(server: ThingServer) -> None:
    sensor = server.things["sensor"]
    with trio.fail_after(5):
        async with open_ws(server, "/sensor/ws", WTP) as ws:
            response = await request(ws, "subscribeevent", thing=None, name="tick")
            assert response["name"] == "tick"
            sensor.tick.emit(1)  # type: ignore[attr-defined]
            sensor.tick.emit(2)  # type: ignore[attr-defined]
            for expected in (1, 2):
                notification = await receive(ws)
                assert notification["operation"] == "subscribeevent"
                assert (notification["name"], notification["data"]) == ("tick", expected)
                assert notification["correlationID"] == response["correlationID"]
            await request(ws, "unsubscribeevent", thing=None, name="tick")
            assert observer_count(server) == 0
            await request(ws, "subscribeallevents", thing=None)
            sensor.tick.emit(3)  # type: ignore[attr-defined]
            notification = await receive(ws)
            assert (notification["operation"], notification["data"]) == ("subscribeallevents", 3)
            await request(ws, "unsubscribeallevents", thing=None)
            assert observer_count(server) == 0


@pytest.mark.parametrize(("message", "status"), [
    ("not json", 400),
    ("[1, 2]", 400),
    ('{"operation": "readproperty", "name": "count", "messageType": "response"}', 400),
    ('{"operation": "dance"}', 400),
    ('{"operation": "readproperty"}', 400),
    ('{"operation": "readproperty", "name": 5}', 400),
    ('{"operation": "readproperty", "name": "nothing"}', 404),
    ('{"operation": "readproperty", "name": "count", "thingID": "urn:x"}', 404),
    ('{"operation": "writeproperty", "name": "count", "value": "many"}', 422),
    ('{"operation": "invokeaction", "name": "increment", "input": {"by": "x"}}', 422),
    ('{"operation": "invokeaction", "name": "increment", "input": [1]}', 400),
    ('{"operation": "queryaction", "actionID": "unknown"}', 404),
    ('{"operation": "observeproperty", "name": "nothing"}', 404),
    ('{"operation": "subscribeevent", "name": "nothing"}', 404),
    ('{"operation": "readmultipleproperties", "names": []}', 400),
    ('{"operation": "writeallproperties", "values": {"nothing": 1}}', 400),
])
async def test_wtp_bad_requests_get_problem_details_and_the_connection_lives_on(
        server: ThingServer, message: str, status: int) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws", WTP) as ws:
            await ws.send_message(message)
            reply = await receive(ws)
            assert reply["messageType"] == "response"
            assert reply["error"]["status"] == status
            assert isinstance(reply["error"]["detail"], str)
            assert (await request(ws, "readproperty", name="count"))["value"] == 0


async def test_wtp_write_to_a_read_only_property_is_405(server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/thermometer/ws", WTP) as ws:
            reply = await request(ws, "writeproperty", thing=None, name="temperature", value=1)
            assert reply["error"]["status"] == 405


async def test_binary_frames_get_an_error_reply(server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws", WTP) as ws:
            await ws.send_message(b'{"operation": "readproperty", "name": "count"}')
            assert (await receive(ws))["error"]["status"] == 400
            assert (await request(ws, "readproperty", name="count"))["value"] == 0


async def test_an_oversized_message_closes_with_1009() -> None:
    server = make_server(max_message_bytes=1000)
    async with server.running():
        with trio.fail_after(5):
            async with open_ws(server, "/counter/ws", WTP) as ws:
                await ws.send_message("x" * 2000)
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason.code == 1009
            assert observer_count(server) == 0


# --------------------------------------------------------------------------- LabThings dialect


async def test_labthings_property_observation(server: ThingServer) -> None:
    counter = server.things["counter"]
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws") as ws:
            await send(ws, {"messageType": "addPropertyObservation", "data": {"count": True}})
            assert await receive(ws) == {"messageType": "propertyStatus", "data": {"count": 0}}
            counter.count = 81  # type: ignore[attr-defined]
            assert await receive(ws) == {"messageType": "propertyStatus", "data": {"count": 81}}
            await send(ws, {"messageType": "removePropertyObservation", "data": {"count": True}})
            await send(ws, {"messageType": "nonsense"})  # answered only after the removal
            assert (await receive(ws))["messageType"] == "error"
            assert observer_count(server) == 0


async def test_labthings_action_observation_carries_id_and_href(server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws") as ws:
            await send(ws, {"messageType": "addActionObservation", "data": {"increment": True}})
            await send(ws, {"messageType": "nonsense"})  # a round trip: the observation is on
            assert (await receive(ws))["messageType"] == "error"
            async with open_ws(server, "/counter/ws", WTP) as other:
                await request(other, "invokeaction", name="increment", input={})
            states = []
            while not states or states[-1] != "completed":
                message = await receive(ws)
                assert message["messageType"] == "actionStatus"
                invocation = message["data"]
                assert invocation["href"] == f"/action_invocations/{invocation['id']}"
                states.append(invocation["status"])
            assert states[-2:] == ["running", "completed"]


async def test_labthings_events(server: ThingServer) -> None:
    sensor = server.things["sensor"]
    with trio.fail_after(5):
        async with open_ws(server, "/sensor/ws") as ws:
            await send(ws, {"messageType": "addEventObservation", "data": {"tick": True}})
            await send(ws, {"messageType": "nonsense"})
            assert (await receive(ws))["messageType"] == "error"
            sensor.tick.emit(5)  # type: ignore[attr-defined]
            assert await receive(ws) == {"messageType": "event", "data": {"tick": 5}}


@pytest.mark.parametrize("message", [
    "not json",
    '{"messageType": "addPropertyObservation"}',
    '{"messageType": "addPropertyObservation", "data": {"nothing": true}}',
    '{"data": {"count": true}}',
])
async def test_labthings_bad_messages_get_an_error_and_the_connection_lives_on(
        server: ThingServer, message: str) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws") as ws:
            await ws.send_message(message)
            error = await receive(ws)
            assert error["messageType"] == "error"
            assert error["error"]["status"] in (400, 404)
            await send(ws, {"messageType": "addPropertyObservation", "data": {"count": True}})
            assert (await receive(ws))["data"] == {"count": 0}


# --------------------------------------------------------------------------- fan-out


async def test_every_observer_gets_every_change_in_order(server: ThingServer) -> None:
    counter = server.things["counter"]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            received: list[list[int]] = []

            async def observe(ready: trio.Event, index: int) -> None:
                async with open_ws(server, "/counter/ws", WTP) as ws:
                    await request(ws, "observeproperty", name="count")
                    values = [(await receive(ws))["value"]]
                    ready.set()
                    while values[-1] != 50:
                        values.append((await receive(ws))["value"])
                    received.append(values)

            for index in range(10):
                ready = trio.Event()
                nursery.start_soon(observe, ready, index)
                await ready.wait()
            for value in range(1, 51):
                counter.count = value  # type: ignore[attr-defined]
                await trio.testing.wait_all_tasks_blocked()  # each client reads each change
        assert len(received) == 10
        assert all(values == list(range(51)) for values in received)


async def test_a_slow_reader_gets_the_latest_value_not_a_backlog(server: ThingServer) -> None:
    counter = server.things["counter"]
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws", WTP,
                           stream_pair=trio.testing.lockstep_stream_pair) as ws:
            await request(ws, "observeproperty", name="count")
            assert (await receive(ws))["value"] == 0
            for value in range(1, 1001):  # the client reads nothing meanwhile
                counter.count = value  # type: ignore[attr-defined]
            values = []
            while not values or values[-1] != 1000:
                values.append((await receive(ws))["value"])
            assert values == sorted(values)
            assert len(values) <= 3  # at most: one being written, one pending, the latest


async def test_events_overflowing_the_outbox_close_the_client_with_1008() -> None:
    server = make_server(outbox_size=8)
    async with server.running():
        sensor = server.things["sensor"]
        with trio.fail_after(5):
            async with open_ws(server, "/sensor/ws", WTP,
                               stream_pair=trio.testing.lockstep_stream_pair) as ws:
                await request(ws, "subscribeevent", thing=None, name="tick")
                for i in range(100):  # the client reads nothing meanwhile
                    sensor.tick.emit(i)  # type: ignore[attr-defined]
                received = []
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    while True:
                        received.append((await receive(ws))["data"])
                assert info.value.reason.code == 1008
                assert received == list(range(len(received)))  # in order, no gap
                assert len(received) < 100
            assert observer_count(server) == 0


async def test_a_stalled_client_is_dropped_and_the_others_get_everything(
        autojump_clock: trio.testing.MockClock) -> None:
    server = make_server(write_timeout=2.0)
    async with server.running():
        sensor = server.things["sensor"]
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                client_stream, server_stream = trio.testing.lockstep_stream_pair()
                dropped = trio.Event()

                async def serve_stalled() -> None:
                    await server.handle_connection(server_stream)
                    dropped.set()

                nursery.start_soon(serve_stalled)
                stalled = await trio_websocket.wrap_client_stream(
                    nursery, client_stream, "testserver", "/sensor/ws", subprotocols=WTP)
                await request(stalled, "subscribeevent", thing=None, name="tick")
                # From here on the stalled client reads nothing: not even its reader task.
                await client_stream.receive_stream.aclose()  # type: ignore[attr-defined]

                async with open_ws(server, "/sensor/ws", WTP) as reader:
                    await request(reader, "subscribeevent", thing=None, name="tick")
                    for i in range(200):
                        sensor.tick.emit(i)  # type: ignore[attr-defined]
                        assert (await receive(reader))["data"] == i
                    start = trio.current_time()
                    await dropped.wait()  # virtual time: the autojump clock
                    assert trio.current_time() - start <= 2.0 + 0.25  # write + close timeout
                    assert observer_count(server) == 1
                    sensor.tick.emit(200)  # type: ignore[attr-defined]
                    assert (await receive(reader))["data"] == 200
                nursery.cancel_scope.cancel()


async def test_changes_from_worker_threads_arrive_in_order(server: ThingServer) -> None:
    with trio.fail_after(10):
        async with open_ws(server, "/sensor/ws", WTP) as ws:
            await request(ws, "observeproperty", thing=None, name="level")
            assert (await receive(ws))["value"] == 0
            await request(ws, "subscribeevent", thing=None, name="tick")
            await request(ws, "invokeaction", thing=None, name="sweep", input={"n": 500})
            levels, ticks = [], []
            while not levels or levels[-1] != 500 or len(ticks) < 500:
                message = await receive(ws)
                if message["operation"] == "observeproperty":
                    levels.append(message["value"])
                elif message["operation"] == "subscribeevent":
                    ticks.append(message["data"])
            assert ticks == list(range(1, 501))  # events are lossless and in order
            assert levels == sorted(levels)  # properties may coalesce, never reorder


# --------------------------------------------------------------------------- teardown


async def test_observer_sets_are_empty_after_a_clean_close(server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws", WTP) as ws:
            await request(ws, "observeproperty", name="count")
            await request(ws, "subscribeallevents", thing="thermometer")
            assert observer_count(server) == 2
            await ws.aclose()
        assert observer_count(server) == 0


async def test_observer_sets_are_empty_after_an_abrupt_drop(server: ThingServer) -> None:
    with trio.fail_after(5):
        client_stream, server_stream = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_connection, server_stream)
            ws = await trio_websocket.wrap_client_stream(
                nursery, client_stream, "testserver", "/counter/ws", subprotocols=WTP)
            await request(ws, "observeproperty", name="count")
            assert observer_count(server) == 1
            await client_stream.aclose()  # no close frame: the TCP connection just goes
            nursery.cancel_scope.cancel()
        while observer_count(server):
            await trio.testing.wait_all_tasks_blocked()
        assert observer_count(server) == 0


async def test_observer_sets_are_empty_after_cancellation(server: ThingServer) -> None:
    with trio.fail_after(5):
        client_stream, server_stream = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            connection = trio.CancelScope()

            async def serve() -> None:
                with connection:
                    await server.handle_connection(server_stream)

            nursery.start_soon(serve)
            ws = await trio_websocket.wrap_client_stream(
                nursery, client_stream, "testserver", "/counter/ws", subprotocols=WTP)
            await request(ws, "observeproperty", name="count")
            connection.cancel()  # what serve_listeners does at shutdown
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                while True:
                    await ws.get_message()
            assert info.value.reason.code == 1001
            assert observer_count(server) == 0
            nursery.cancel_scope.cancel()


async def test_server_shutdown_closes_websockets_with_1001_over_loopback() -> None:
    server = ThingServer(ServerConfig(host="127.0.0.1", port=0))
    server.add_thing("counter", Counter())
    with trio.fail_after(5):
        async with serve_on_loopback(server) as served:
            port = served.port
            async with trio_websocket.open_websocket_url(
                    f"ws://127.0.0.1:{port}/counter/ws", subprotocols=WTP) as ws:
                response = await request(ws, "observeproperty", name="count")
                assert response["thingID"] == thing_id(f"http://127.0.0.1:{port}/", "counter")
                assert (await receive(ws))["value"] == 0
                server.things["counter"].count = 1  # type: ignore[attr-defined]
                assert (await receive(ws))["value"] == 1
                served.scope.cancel()  # Ctrl-C does this in `trio-things serve`
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    while True:
                        await ws.get_message()
                assert info.value.reason.code == 1001


async def test_many_connect_disconnect_cycles_leave_nothing_behind(
        server: ThingServer) -> None:
    with trio.fail_after(30):
        for _ in range(100):
            async with open_ws(server, "/counter/ws", WTP) as ws:
                await request(ws, "observeproperty", name="count")
                await request(ws, "subscribeallevents", thing="thermometer")
        assert observer_count(server) == 0


# --------------------------------------------------------------------------- liveness


async def test_pings_notifications_and_replies_interleave_without_a_corrupted_frame(
        server: ThingServer) -> None:
    """The server's pongs (written by trio-websocket) and the relay's frames share one
    socket; a lockstep client reads in small pieces, so a torn frame would be caught."""
    sensor = server.things["sensor"]
    with trio.fail_after(10):
        async with open_ws(server, "/sensor/ws", WTP,
                           stream_pair=trio.testing.lockstep_stream_pair) as ws:
            await request(ws, "subscribeevent", thing=None, name="tick")
            async with trio.open_nursery() as nursery:

                async def ping_often() -> None:
                    for _ in range(50):
                        await ws.ping()

                nursery.start_soon(ping_often)
                for i in range(300):
                    sensor.tick.emit(i)  # type: ignore[attr-defined]
                received = [(await receive(ws))["data"] for _ in range(300)]
            assert received == list(range(300))
            assert (await request(ws, "readproperty", thing=None, name="level"))["value"] == 0


async def test_a_client_that_never_answers_pings_is_closed_with_1011(
        autojump_clock: trio.testing.MockClock) -> None:
    server = make_server(keepalive_interval=5.0, keepalive_timeout=3.0)
    async with server.running():
        async with open_raw_ws(server, "/counter/ws", WTP) as client:
            events = client.events
            start = trio.current_time()
            with trio.fail_after(60):
                await client.read_until(  # and never answer a ping
                    lambda events: any(isinstance(e, wsproto.events.CloseConnection)
                                       for e in events))
            assert isinstance(events[0], wsproto.events.AcceptConnection)
            assert any(isinstance(e, wsproto.events.Ping) for e in events)
            close = events[-1]
            assert isinstance(close, wsproto.events.CloseConnection)
            assert close.code == 1011
            assert trio.current_time() - start == pytest.approx(5.0 + 3.0)
        assert observer_count(server) == 0


async def test_a_client_that_answers_pings_stays_connected(
        autojump_clock: trio.testing.MockClock) -> None:
    """trio-websocket's client answers pings by itself: across twenty keepalive periods
    of silence it is pinged and answers, and the connection still serves."""
    server = make_server(keepalive_interval=5.0, keepalive_timeout=3.0)
    async with server.running(), open_ws(server, "/counter/ws", WTP) as ws:
        await trio.sleep(100)  # virtual time: twenty silent intervals
        assert ws.closed is None
        with trio.fail_after(1):
            reply = await request(ws, "readproperty", thing=None, name="count")
        assert reply["value"] == 0


async def test_a_client_that_talks_is_never_pinged(
        autojump_clock: trio.testing.MockClock) -> None:
    """Any byte proves the client alive: one that sends a request every 4 s (interval 5)
    gets no ping, though it would never answer one, and is never closed."""
    server = make_server(keepalive_interval=5.0, keepalive_timeout=3.0)
    async with server.running():
        async with open_raw_ws(server, "/counter/ws", WTP) as client:
            events = client.events
            with trio.fail_after(60):
                await client.read_until(lambda events: bool(events))
                for n in range(12):  # 48 s
                    await trio.sleep(4)
                    await client.send({"operation": "readproperty", "name": "count",
                                       "messageID": str(n)})
                    await client.read_until(lambda events, n=n: sum(  # the reply
                        isinstance(e, wsproto.events.TextMessage) for e in events) > n)
            assert isinstance(events[0], wsproto.events.AcceptConnection)
            assert not any(isinstance(e, wsproto.events.Ping | wsproto.events.CloseConnection)
                           for e in events)
            assert sum(isinstance(e, wsproto.events.TextMessage) for e in events) == 12


# --------------------------------------------------------------------------- floods


async def test_a_flood_is_answered_429_then_closed_with_1008(
        mock_clock: trio.testing.MockClock) -> None:
    server = make_server(max_requests_per_second=10.0, request_burst=5)
    async with server.running():
        with trio.fail_after(5):
            async with open_ws(server, "/counter/ws", WTP) as ws:
                for _ in range(5):
                    assert (await request(ws, "readproperty", name="count"))["value"] == 0
                refused = await request(ws, "readproperty", name="count")
                assert refused["error"]["status"] == 429
                mock_clock.jump(1.0)  # virtual time moves only here: the bucket refills
                assert (await request(ws, "readproperty", name="count"))["value"] == 0
                # 4 tokens left: 4 served, 5 refused (the burst), the 6th refusal closes.
                for _ in range(4 + 5 + 1):
                    await send(ws, {"operation": "readproperty", "name": "count"})
                statuses = []
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    while True:
                        statuses.append((await receive(ws)).get("error", {}).get("status"))
                assert info.value.reason.code == 1008
                assert statuses == [None] * 4 + [429] * 5, statuses
            assert observer_count(server) == 0


# --------------------------------------------------------------------------- property-based

OPERATIONS = st.sampled_from([
    ("observeproperty", "count"), ("unobserveproperty", "count"),
    ("observeproperty", "nothing"), ("observeallproperties", None),
    ("unobserveallproperties", None), ("subscribeevent", "tick"),
    ("unsubscribeevent", "tick"), ("subscribeallevents", None),
    ("unsubscribeallevents", None), ("readproperty", "level"), ("dance", None),
])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["counter", "sensor"]), OPERATIONS),
                      max_size=12))
def test_any_sequence_of_requests_leaves_the_observer_sets_as_asked(
        steps: list[tuple[str, tuple[str, str | None]]]) -> None:
    """Every request gets exactly one response, and the observer sets then hold exactly
    what the client asked for, by a model that knows nothing of the server."""

    async def main() -> None:
        server = make_server()
        async with server.running():
            assert server._dispatcher is not None
            observers = server._dispatcher.observers
            expected: set[tuple[str, str, str]] = set()
            with trio.fail_after(10):
                async with open_ws(server, "/ws", WTP) as ws:
                    for thing, (operation, name) in steps:
                        members = {} if name is None else {"name": name}
                        response = await request(ws, operation, thing=thing, **members)
                        properties = list(server.things[thing].affordances.properties)
                        events = list(server.things[thing].affordances.events)
                        ok = "error" not in response
                        if operation == "observeproperty" and ok:
                            expected.add((thing, "property", str(name)))
                        elif operation == "unobserveproperty" and ok:
                            expected.discard((thing, "property", str(name)))
                        elif operation == "observeallproperties":
                            expected |= {(thing, "property", p) for p in properties}
                        elif operation == "unobserveallproperties":
                            expected -= {(thing, "property", p) for p in properties}
                        elif operation == "subscribeevent" and ok:
                            expected.add((thing, "event", str(name)))
                        elif operation == "unsubscribeevent" and ok:
                            expected.discard((thing, "event", str(name)))
                        elif operation == "subscribeallevents":
                            expected |= {(thing, "event", e) for e in events}
                        elif operation == "unsubscribeallevents":
                            expected -= {(thing, "event", e) for e in events}
                        if name == "nothing" or operation == "dance":
                            assert not ok
                        observed = {s.key for s in observers if len(s)}
                        assert observed == expected
                        # One response per request: the next request's response is the
                        # next response (request() skips notifications only).
                assert {s.key for s in observers if len(s)} == set()

    trio.run(main)


# --------------------------------------------------------------------------- bad handshakes


async def test_a_client_that_vanishes_mid_handshake_leaves_nothing(
        server: ThingServer, autojump_clock: trio.testing.MockClock) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_connection, server_stream)
            await client_stream.send_all(
                b"GET /counter/ws HTTP/1.1\r\nHost: testserver\r\nUpgrade: websocket\r\n")
            await client_stream.aclose()  # half a head, then gone
    assert observer_count(server) == 0


async def test_over_loopback_every_observer_gets_every_change_by_the_fast_path() -> None:
    """Real sockets: frames go out by the fast path (written at once by the publisher)
    or, when a socket is busy, by the relay; either way in order and none lost."""
    server = ThingServer(ServerConfig(host="127.0.0.1", port=0))
    server.add_thing("sensor", Sensor())
    sensor = server.things["sensor"]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/sensor/ws"
            async with trio_websocket.open_websocket_url(url, subprotocols=WTP) as first, \
                    trio_websocket.open_websocket_url(url, subprotocols=WTP) as second:
                for ws in (first, second):
                    await request(ws, "subscribeevent", thing=None, name="tick")
                for i in range(500):
                    sensor.tick.emit(i)  # type: ignore[attr-defined]
                for ws in (first, second):
                    assert [(await receive(ws))["data"] for _ in range(500)] == list(range(500))
            nursery.cancel_scope.cancel()


class Camera(tt.Thing):
    """A Thing whose property can be larger than a socket buffer takes at once."""

    frame: str = tt.property(default="")


async def test_over_loopback_a_frame_the_socket_takes_in_part_is_finished_unprompted() -> None:
    """The fast path writes what the socket takes; the rest wakes the relay, which
    writes it though nothing else is ever published (else the client would wait)."""
    server = ThingServer(ServerConfig(host="127.0.0.1", port=0))
    server.add_thing("camera", Camera())
    camera = server.things["camera"]
    image = "x" * 16_000_000  # more than a loopback socket buffer takes in one write
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            url = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/camera/ws"
            async with trio_websocket.open_websocket_url(
                    url, subprotocols=WTP, max_message_size=32_000_000) as ws:
                await request(ws, "observeproperty", thing=None, name="frame")
                assert (await receive(ws))["value"] == ""
                camera.frame = image  # type: ignore[attr-defined]
                assert (await receive(ws))["value"] == image
            nursery.cancel_scope.cancel()


async def test_observers_are_told_the_stored_value_not_the_clients_spelling(
        server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/thermometer/ws", WTP) as ws:
            await request(ws, "observeproperty", thing=None, name="setpoint")
            assert (await receive(ws))["value"] == 20.0
            await send(ws, {"messageID": "w", "operation": "writeproperty",
                            "name": "setpoint", "value": 22})
            messages = [await receive(ws), await receive(ws)]  # in either order
            [notification] = [m for m in messages if m["messageType"] == "notification"]
            assert notification["value"] == 22.0
            assert isinstance(notification["value"], float)  # as a read returns it


TIME = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)


async def test_a_subscription_coming_back_is_sent_a_replay_larger_than_its_outbox() -> None:
    """What a client missed is bounded by the replay ring, not by the Outbox: queued
    message by message it would overflow the Outbox at once (close 1008), and the
    client, coming back with the same id, would be closed again for ever."""
    server = ThingServer(ServerConfig(websocket=WebSocketLimits(outbox_size=4),
                                      replay_size=64))
    thermometer = Thermometer()
    server.add_thing("thermometer", thermometer)
    with trio.fail_after(10):
        async with server.running():
            async with open_ws(server, "/thermometer/ws", [SUBPROTOCOL]) as ws:
                response = await request(ws, "subscribeevent", thing="thermometer",
                                         name="overheated")
                position = response["eventID"]
            for n in range(20):  # while nobody listens
                thermometer.overheated.emit(Reading(temperature=100.0 + n, time=TIME))
            async with open_ws(server, "/thermometer/ws", [SUBPROTOCOL]) as ws:
                await request(ws, "subscribeevent", thing="thermometer", name="overheated",
                              lastEventID=position)
                missed = [await receive(ws) for _ in range(20)]
                assert [m["data"]["temperature"] for m in missed] == [
                    100.0 + n for n in range(20)]
                assert not any("gap" in m for m in missed)
                thermometer.overheated.emit(Reading(temperature=150.0, time=TIME))
                assert (await receive(ws))["data"]["temperature"] == 150.0
                assert ws.closed is None


# --------------------------------------------------------------------------- an idle connection


def server_connections() -> list[trio_websocket.WebSocketConnection]:
    return [obj for obj in gc.get_objects()
            if isinstance(obj, trio_websocket.WebSocketConnection) and obj.is_server
            and obj.closed is None]


async def test_an_open_connection_keeps_no_handshake_state(server: ThingServer) -> None:
    """wsproto keeps the opening handshake's h11 connection, request and event queue
    for the connection's life (about 2 KiB); the server lets go of them once the
    connection is open, and the connection works on: messages both ways, pings, close."""
    counter = server.things["counter"]
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws", WTP) as ws:
            await request(ws, "observeproperty", name="count")
            assert (await receive(ws))["value"] == 0
            [connection] = server_connections()
            handshake = connection._wsproto.handshake
            assert handshake is _SPENT_HANDSHAKE  # shared by every connection: nothing each
            assert handshake._h11_connection.their_state is h11.IDLE  # never fed a byte
            counter.count = 5  # type: ignore[attr-defined]
            assert (await receive(ws))["value"] == 5
            await ws.ping(b"still here")
            assert (await request(ws, "readproperty", name="count"))["value"] == 5
        assert ws.closed is not None and ws.closed.code == 1000


async def test_an_idle_connection_holds_no_request_it_served(server: ThingServer) -> None:
    """Between two messages, the processor's frame holds none of the last one (the
    message, its commands, their replies): an idle connection would keep them for as
    long as it stays open."""
    with trio.fail_after(5):
        async with open_ws(server, "/counter/ws", WTP) as ws:
            await request(ws, "observeproperty", name="count")
            await receive(ws)  # the current value
            await trio.testing.wait_all_tasks_blocked()
            [processor] = [frame for obj in gc.get_objects()
                           if type(obj).__name__ == "coroutine"
                           and obj.__qualname__ == "process_messages_from_websocket"
                           and (frame := obj.cr_frame) is not None]
            assert not {"message", "requests", "request", "reply", "body",
                        "observer"} & processor.f_locals.keys()
