"""An action's output is checked against its declared type, as its input is.

An action annotated ``-> float`` that returns ``"oops"`` is a bug in the Thing: the
client must get a 500 problem that names the action, never ``"oops"`` passed on as if it
were right. Over HTTP, end to end, in memory.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import attrs
import pytest
import trio
import trio.testing

import trio_things as tt
from tests.helpers.httpclient import HttpClient, connect
from trio_things.config import ServerConfig
from trio_things.server import ThingServer


@attrs.frozen
class Reading:
    value: float


class Liar(tt.Thing):
    """Actions that return what their annotations say they do not."""

    @tt.action
    def number(self) -> float:
        return "oops"  # type: ignore[return-value]

    @tt.action
    async def bounded(self) -> list[int]:
        return [1, "two"]  # type: ignore[list-item]

    @tt.action
    def reading(self) -> Reading:
        return {"value": 1.0}  # type: ignore[return-value]  # a dict, not a Reading

    @tt.action
    def honest(self) -> float:
        return 2.5


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    server = ThingServer(ServerConfig())
    server.add_thing("liar", Liar())
    with trio.fail_after(10):
        async with server.running(), connect(server) as client:
            yield client


@pytest.mark.parametrize(("action", "why"), [
    ("number", "number output: expected a number, got a string 'oops'"),
    ("bounded", "bounded output[1]: expected an integer, got a string 'two'"),
    ("reading", "dict cannot be written as Reading"),
])
async def test_an_output_that_does_not_fit_is_the_things_error(
        client: HttpClient, action: str, why: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="trio_things.runtime.actions"):
        answer = await client.post(f"/liar/actions/{action}", {})
    assert answer.status == 500
    problem = answer.json()
    assert problem["status"] == 500
    assert f"action {action!r} failed" in problem["detail"]
    assert "does not fit its declared output type" in problem["detail"]
    assert why in problem["detail"]
    assert f"liar.{action}" in caplog.text  # logged once, for the Thing's author


async def test_the_invocation_records_the_failure(client: HttpClient) -> None:
    created = await client.post("/liar/number", {})
    assert created.status == 201
    href = created.json()["href"]
    with trio.fail_after(5):
        while (invocation := (await client.get(href)).json())["status"] in ("pending",
                                                                            "running"):
            await trio.testing.wait_all_tasks_blocked()
    assert invocation["status"] == "failed"
    assert invocation["output"] is None
    assert invocation["error"]["title"] == "InvalidOutput"
    assert invocation["error"]["status"] == 500


async def test_an_output_that_fits_is_served(client: HttpClient) -> None:
    answer = await client.post("/liar/actions/honest", {})
    assert answer.status == 200
    assert answer.json() == 2.5
