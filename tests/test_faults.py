"""Thing code that fails: the server answers for it and keeps serving everything else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import pytest
import trio

import trio_things as tt
from tests.helpers.httpclient import HttpClient, connect
from tests.helpers.wsclient import open_ws, receive, request
from trio_things.demo import Counter
from trio_things.server import ThingServer

WTP = ["webthingprotocol"]


@attrs.frozen
class Payload:
    value: int


class Faulty(tt.Thing):
    """A driver whose hardware fails in every way it can."""

    fine: int = tt.property(default=1)
    happened = tt.event(Payload)

    @tt.property
    def broken(self) -> int:
        raise OSError("the sensor does not answer")

    @tt.property
    def stubborn(self) -> int:
        return 0

    @stubborn.setter
    def stubborn(self, value: int) -> None:
        raise RuntimeError("the motor is jammed")

    @tt.action
    async def explode(self) -> None:
        raise ZeroDivisionError("boom")

    @tt.action
    def emit_garbage(self) -> None:
        self.happened.emit("not a payload")  # type: ignore[arg-type]


@pytest.fixture
async def server() -> AsyncIterator[ThingServer]:
    server = ThingServer()
    server.add_thing("faulty", Faulty())
    server.add_thing("counter", Counter())
    async with server.running():
        yield server


@pytest.fixture
async def client(server: ThingServer) -> AsyncIterator[HttpClient]:
    with trio.fail_after(10):
        async with connect(server) as client:
            yield client


async def test_a_failing_getter_or_setter_is_500_and_serving_goes_on(
        client: HttpClient, caplog: pytest.LogCaptureFixture) -> None:
    broken = await client.get("/faulty/broken")
    assert broken.status == 500
    assert "sensor" not in broken.json()["detail"]  # internals stay in the log
    assert "the sensor does not answer" in caplog.text
    assert (await client.put("/faulty/stubborn", 3)).status == 500
    assert (await client.get("/faulty/fine")).json() == 1
    assert (await client.get("/counter/count")).json() == 0


async def test_a_failing_getter_over_websocket_is_a_500_reply(server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/faulty/ws", WTP) as ws:
            assert (await request(ws, "readproperty", thing=None, name="broken"))[
                "error"]["status"] == 500
            assert (await request(ws, "writeproperty", thing=None, name="stubborn",
                                  value=2))["error"]["status"] == 500
            assert (await request(ws, "readproperty", thing=None, name="fine"))["value"] == 1


async def test_a_failing_action_ends_failed_with_problem_details(server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/faulty/ws", WTP) as ws:
            await request(ws, "invokeaction", thing=None, name="explode", input={})
            while (status := (await receive(ws))["status"])["state"] == "running":
                pass
            assert status["state"] == "failed"
            assert status["error"]["status"] == 500
            assert status["error"]["title"] == "ZeroDivisionError"
            assert (await request(ws, "readproperty", thing=None, name="fine"))["value"] == 1


async def test_an_event_payload_that_does_not_fit_fails_in_the_thing_code(
        server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, "/faulty/ws", WTP) as ws:
            await request(ws, "subscribeevent", thing=None, name="happened")
            await request(ws, "invokeaction", thing=None, name="emit_garbage", input={})
            while (status := (await receive(ws))["status"])["state"] == "running":
                pass
            assert status["state"] == "failed"  # the emit raised in the action
            assert status["error"]["status"] == 422
            server.things["faulty"].happened.emit(Payload(value=7))  # type: ignore[attr-defined]
            assert (await receive(ws))["data"] == {"value": 7}  # the subscription lives on
