"""trio_things.testing, the public in-memory harness: HTTP, the client, both WebSocket
dialects, shutdown (no task, observer or connection left), the autojump clock, lockstep
streams; and docs/testing.md's example, run as its reader would run it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
import trio
import trio.testing
import trio_websocket
from trio.testing import MockClock

import trio_things as tt
import trio_things.client as ttc
from tests.helpers.servers import observer_count
from trio_things.config import ConfigError, ServerConfig
from trio_things.demo import Counter
from trio_things.server import ThingServer
from trio_things.testing import HttpConnection, InMemoryServer, in_memory, serve_in_memory

ROOT = Path(__file__).resolve().parents[1]
WTP = ["webthingprotocol"]


class Pump(tt.Thing):
    """A pump: a speed to set, and priming, which takes a while."""

    speed: int = tt.property(default=0, minimum=0, maximum=10)
    """Revolutions per second."""
    primed = tt.event(float)
    """Priming finished; the payload is how long it took."""

    @tt.action
    async def prime(self, seconds: Annotated[float, tt.Schema(minimum=0)] = 2.0) -> str:
        """Run slowly for ``seconds``, then announce it."""
        await trio.sleep(seconds)
        self.primed.emit(seconds)
        return "primed"


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task of this trio.run."""
    found: set[trio.lowlevel.Task] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is not None:
            found.add(task)
            pending.extend(t for nursery in task.child_nurseries for t in nursery.child_tasks)
    return found


STREAM_PAIRS = pytest.mark.parametrize("stream_pair", [
    trio.testing.memory_stream_pair, trio.testing.lockstep_stream_pair],
    ids=["memory", "lockstep"])


# --------------------------------------------------------------------------- what it serves


async def test_one_thing_is_served_under_its_class_name() -> None:
    with trio.fail_after(10):
        async with serve_in_memory(Pump()) as served:
            assert isinstance(served.server, ThingServer)
            assert list(served.server.things) == ["pump"]
            assert served.url == "http://testserver/"
            assert served.thing_url() == served.thing_url("pump") == "http://testserver/pump/"
            with pytest.raises(ValueError, match="no Thing 'valve' is served; there are: pump"):
                served.thing_url("valve")


async def test_a_name_a_mapping_a_config_or_a_server() -> None:
    with trio.fail_after(10):
        async with serve_in_memory(Pump(), name="p1", host="lab.local") as served:
            assert served.thing_url() == "http://lab.local/p1/"
            async with served.connect() as pump:
                assert pump.title == "Pump"
        config = ServerConfig(invocation_retention=1.0)
        async with serve_in_memory({"a": Pump(), "b": Counter()}, config=config) as served:
            assert served.server.config is config
            with pytest.raises(ValueError, match="name one of the 2 Things served: a, b"):
                served.thing_url()
            async with served.connect("b") as counter:
                assert await counter.read("count") == 0
        server = ThingServer()
        server.add_thing("pump", Pump())
        async with serve_in_memory(server) as served:
            assert served.server is server
    with pytest.raises(TypeError, match="not both"):
        async with serve_in_memory(server, name="x"):
            pass
    with pytest.raises(TypeError, match="name is for one Thing"):
        async with serve_in_memory({"a": Pump()}, name="x"):
            pass
    with pytest.raises(ConfigError, match="names must start with a letter"):
        async with serve_in_memory(Pump(), name="9"):
            pass


# ----------------------------------------------------------------------- HTTP, client, WebSocket


@STREAM_PAIRS
async def test_http_reads_and_writes(stream_pair: Callable[[], Any]) -> None:
    with trio.fail_after(10):
        async with serve_in_memory(Pump(), stream_pair=stream_pair) as served, \
                served.http() as http:
            assert isinstance(http, HttpConnection)
            td = await http.get("/pump/")
            assert td.status == 200 and td.json()["title"] == "Pump"
            assert (await http.get("/pump/speed")).json() == 0
            written = await http.put("/pump/speed", 3)
            assert (written.status, written.body) == (204, b"")
            assert served.server.things["pump"].speed == 3  # type: ignore[attr-defined]
            refused = await http.put("/pump/speed", 11)
            assert refused.status == 422
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["detail"] == "speed: 11 is greater than the maximum 10"
            raw = await http.request("PUT", "/pump/speed", body=b"4",
                                     headers={"Content-Type": "application/json"})
            assert raw.status == 204
            assert (await http.get("/pump/speed")).text == "4"
            assert served.connections_opened == served.open_connections == 1


@STREAM_PAIRS
async def test_an_action_over_http_and_through_the_client(
        autojump_clock: MockClock, stream_pair: Callable[[], Any]) -> None:
    with trio.fail_after(30):
        async with serve_in_memory(Pump(), stream_pair=stream_pair) as served:
            async with served.http() as http:
                posted = await http.post("/pump/prime", {"seconds": 1})
                assert posted.status == 201
                assert posted.headers["location"].endswith(posted.json()["href"])
                started = trio.current_time()
                assert (await http.post("/pump/actions/prime", {"seconds": 5})).json() \
                    == "primed"
                assert trio.current_time() - started == pytest.approx(5)
            async with served.connect() as pump:
                invocation = await pump.invoke("prime", seconds=2)
                assert await invocation.result(str) == "primed"
                assert invocation.status.state is ttc.State.COMPLETED
                with pytest.raises(ttc.InvalidValue, match="less than the minimum"):
                    await pump.invoke("prime", seconds=-1)


@STREAM_PAIRS
async def test_observing_a_property_through_the_client(
        autojump_clock: MockClock, stream_pair: Callable[[], Any]) -> None:
    pump = Pump()
    with trio.fail_after(30):
        async with serve_in_memory(pump, stream_pair=stream_pair) as served, \
                served.connect() as consumed:
            async with consumed.observe("speed", int) as speeds, \
                    consumed.subscribe("primed", float) as primed:
                assert await anext(speeds) == 0
                assert observer_count(served.server) == 2
                pump.speed = 4  # the Thing's own code changes it
                assert await anext(speeds) == 4
                async with served.http() as http:  # another client writes
                    assert (await http.put("/pump/speed", 7)).status == 204
                assert await anext(speeds) == 7
                await (await consumed.invoke("prime", seconds=0.5)).result()
                assert await anext(primed) == 0.5
            await trio.testing.wait_all_tasks_blocked()  # the unobserve reaches the server
            assert observer_count(served.server) == 0


@STREAM_PAIRS
async def test_the_web_thing_protocol(stream_pair: Callable[[], Any]) -> None:
    with trio.fail_after(10):
        async with serve_in_memory(Pump(), stream_pair=stream_pair) as served, \
                served.websocket("/pump/ws", WTP) as ws:
            assert ws.subprotocol == "webthingprotocol"
            await ws.send_message(json.dumps({
                "messageID": "m-1", "messageType": "request", "operation": "writeproperty",
                "name": "speed", "value": 2}))
            written = json.loads(await ws.get_message())
            assert (written["correlationID"], written["value"]) == ("m-1", 2)
            assert served.server.things["pump"].speed == 2  # type: ignore[attr-defined]


@STREAM_PAIRS
async def test_the_labthings_dialect(stream_pair: Callable[[], Any]) -> None:
    pump = Pump()
    with trio.fail_after(10):
        async with serve_in_memory(pump, stream_pair=stream_pair) as served, \
                served.websocket("/pump/ws") as ws:
            assert ws.subprotocol is None
            await ws.send_message(json.dumps(
                {"messageType": "addPropertyObservation", "data": {"speed": True}}))
            assert json.loads(await ws.get_message()) == {
                "messageType": "propertyStatus", "data": {"speed": 0}}
            pump.speed = 9
            assert json.loads(await ws.get_message()) == {
                "messageType": "propertyStatus", "data": {"speed": 9}}


async def test_a_refused_handshake_is_connection_rejected() -> None:
    with trio.fail_after(10):
        async with serve_in_memory(Pump()) as served:
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with served.websocket("/valve/ws", WTP):
                    pass  # pragma: no cover
            assert info.value.status_code == 404
            assert info.value.body is not None
            assert json.loads(info.value.body)["status"] == 404
            await trio.testing.wait_all_tasks_blocked()
            assert served.open_connections == 0  # the server ended the connection


async def test_the_open_stream_seam_reaches_only_the_served_host() -> None:
    with trio.fail_after(10):
        async with serve_in_memory(Pump()) as served:
            async with ttc.connect("http://testserver:8080/pump/",
                                   open_stream=served.open_stream) as pump:
                assert await pump.read("speed") == 0
            with pytest.raises(ttc.Unreachable, match="cannot reach elsewhere: Connection "
                                                      "refused"):
                async with ttc.connect("http://elsewhere/pump/",
                                       open_stream=served.open_stream):
                    pass  # pragma: no cover
            async with served.open_client() as client:
                consumed = await client.consume(served.thing_url())
                await consumed.write("speed", 1)
                assert await consumed.read("speed") == 1


async def test_a_dropped_connection_is_reconnected_by_the_client(
        autojump_clock: MockClock) -> None:
    pump = Pump()
    options = ttc.ClientOptions(timeout=5.0, backoff_initial=0.01, backoff_max=0.1)
    with trio.fail_after(30):
        async with serve_in_memory(pump) as served, \
                served.connect(options=options) as consumed:
            async with consumed.observe("speed", int) as speeds:
                assert await anext(speeds) == 0
                opened = served.connections_opened
                assert served.open_connections == 2  # the TD's HTTP, and the WebSocket
                await served.drop_connections()
                pump.speed = 5  # while no connection is open
                assert await anext(speeds) == 5  # restored: the current value
                assert served.connections_opened == opened + 1


# --------------------------------------------------------------------------- shutdown


async def test_leaving_the_block_leaves_no_task_observer_or_connection_behind(
        autojump_clock: MockClock) -> None:
    """The server stops with clients still connected: an action running, a WebSocket
    observing (its client in a nursery of the test, outside the block) and a raw
    connection left open."""
    before = all_tasks()
    with trio.fail_after(30):
        async with trio.open_nursery() as outside:
            async with serve_in_memory(Pump()) as served:
                server = served.server
                async with served.connect() as consumed:
                    running = await consumed.invoke("prime", seconds=3600)
                ws = await trio_websocket.wrap_client_stream(
                    outside, await served.open_raw_stream(),  # type: ignore[arg-type]
                    "testserver", "/pump/ws")
                await ws.send_message(json.dumps(
                    {"messageType": "addPropertyObservation", "data": {"speed": True}}))
                await ws.get_message()
                raw = await served.open_raw_stream()
                assert served.open_connections == 2
                assert observer_count(server) == 1
                assert len(all_tasks()) > len(before)
            assert server._dispatcher is None  # the server stopped
            assert running.status.state is ttc.State.RUNNING  # last known: it never ended
            assert await raw.receive_some() == b""  # the server closed its end
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code in (1001, 1006)  # going away, or just gone
            with pytest.raises(ConnectionRefusedError, match="stopped"):
                await served.open_raw_stream()
    assert all_tasks() == before


async def test_leaving_in_memory_ends_its_connections_and_observers(
        autojump_clock: MockClock) -> None:
    """The server runs on; what the block opened is gone."""
    server = ThingServer()
    server.add_thing("pump", Pump())
    with trio.fail_after(10):
        async with server.running(), trio.open_nursery() as outside:
            await trio.testing.wait_all_tasks_blocked()  # the Thing's background task ended
            before = all_tasks()
            async with in_memory(server) as served:
                ws = await trio_websocket.wrap_client_stream(
                    outside, await served.open_raw_stream(),  # type: ignore[arg-type]
                    "testserver", "/pump/ws")
                await ws.send_message(json.dumps(
                    {"messageType": "addPropertyObservation", "data": {"speed": True}}))
                await ws.get_message()
                assert observer_count(server) == 1
            assert observer_count(server) == 0
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
            await trio.testing.wait_all_tasks_blocked()
            assert all_tasks() == before
            with pytest.raises(ConnectionRefusedError):
                await served.open_stream("testserver", 80, tls=False)


async def test_an_exception_in_the_block_comes_out_as_itself() -> None:
    with trio.fail_after(10):
        with pytest.raises(ZeroDivisionError):
            async with serve_in_memory(Pump()) as served, served.connect():
                1 / 0  # noqa: B018
        with pytest.raises(KeyError):
            async with serve_in_memory(Pump()) as served, served.websocket("/pump/ws"):
                raise KeyError("x")


async def test_a_request_without_an_answer_times_out(autojump_clock: MockClock) -> None:
    config = ServerConfig(long_poll_timeout=3600.0)
    with trio.fail_after(120):
        async with serve_in_memory(Pump(), config=config, timeout=5) as served, \
                served.http() as http:
            started = trio.current_time()
            with pytest.raises(trio.TooSlowError,
                               match="no answer to GET /pump/events/primed within 5 s"):
                await http.get("/pump/events/primed")  # a long-poll: no event comes
            assert trio.current_time() - started == pytest.approx(5)


async def test_the_autojump_clock_runs_an_hour_long_action_at_once(
        autojump_clock: MockClock) -> None:
    started, wall = trio.current_time(), time.monotonic()
    with trio.fail_after(7200):
        async with serve_in_memory(Pump()) as served, served.connect() as pump:
            assert await (await pump.invoke("prime", seconds=3600)).result() == "primed"
    assert trio.current_time() - started == pytest.approx(3600, abs=1)
    assert time.monotonic() - wall < 10


async def test_an_in_memory_server_of_your_own_nursery() -> None:
    server = ThingServer()
    server.add_thing("pump", Pump())
    with trio.fail_after(10):
        async with server.running(), trio.open_nursery() as nursery:
            served = InMemoryServer(server, nursery)
            async with served.http() as http:
                assert (await http.get("/pump/speed")).json() == 0
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- docs/testing.md


def code_blocks(page: str, language: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text()
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_the_docs_example_runs(tmp_path: Path) -> None:
    """docs/testing.md's Python blocks, in order, are ``test_mydevices.py``; its TOML
    block is ``pyproject.toml``; the quick start's first Thing is ``mydevices.py``.
    pytest runs them as a reader would (a project of their own, pytest-trio)."""
    [first_thing] = [b for b in code_blocks("quickstart.md", "python")
                     if "class Thermometer" in b]
    (tmp_path / "mydevices.py").write_text(first_thing)
    (tmp_path / "test_mydevices.py").write_text("\n\n".join(code_blocks("testing.md",
                                                                         "python")))
    [pyproject] = code_blocks("testing.md", "toml")
    (tmp_path / "pyproject.toml").write_text(pyproject)
    tests = len(re.findall(r"^async def test_", (tmp_path / "test_mydevices.py").read_text(),
                           flags=re.MULTILINE))
    assert tests >= 5
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "no:randomly", "test_mydevices.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{tests} passed" in result.stdout, result.stdout
