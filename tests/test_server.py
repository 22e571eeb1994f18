"""ThingServer lifecycle: entering and exiting Things, background tasks, shutdown."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

import trio_things as tt
from tests.helpers.httpclient import connect
from trio_things.errors import LocalProtocolError
from trio_things.server import ThingServer


class Lifecycle(tt.Thing):
    def __init__(self, name: str, journal: list[str]) -> None:
        self.name = name
        self.journal = journal

    async def __aenter__(self) -> Lifecycle:
        self.journal.append(f"enter {self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.journal.append(f"exit {self.name}")

    async def background_task(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self.journal.append(f"stop {self.name}")

    @tt.action
    async def wait_forever(self) -> None:
        await trio.sleep_forever()


class Crashing(tt.Thing):
    level: int = tt.property(default=1)

    async def background_task(self) -> None:
        raise RuntimeError("driver lost")


async def test_things_enter_in_order_and_exit_in_reverse() -> None:
    journal: list[str] = []
    server = ThingServer()
    server.add_thing("a", Lifecycle("a", journal))
    server.add_thing("b", Lifecycle("b", journal))
    with trio.fail_after(5):
        async with server.running():
            await trio.testing.wait_all_tasks_blocked()
            assert journal == ["enter a", "enter b"]
    # Background tasks stop together (in either order), before any Thing is exited.
    assert set(journal[2:4]) == {"stop a", "stop b"}
    assert journal[4:] == ["exit b", "exit a"]


async def test_failing_background_task_is_logged_and_serving_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    server = ThingServer()
    server.add_thing("crashing", Crashing())
    with trio.fail_after(5):
        async with server.running(), connect(server) as client:
            await trio.testing.wait_all_tasks_blocked()
            assert (await client.get("/crashing/level")).json() == 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "background task of Thing 'crashing' failed" in record.getMessage()
    assert record.exc_info is not None


async def test_shutdown_cancels_running_actions() -> None:
    server = ThingServer()
    server.add_thing("a", Lifecycle("a", []))
    invocation: dict[str, Any] = {}
    with trio.fail_after(5):
        async with server.running(), connect(server) as client:
            invocation = (await client.post("/a/wait_forever")).json()
            await trio.testing.wait_all_tasks_blocked()
            assert (await client.get(invocation["href"])).json()["status"] == "running"
            dispatcher = server._dispatcher
            assert dispatcher is not None
            record = dispatcher._invocations.get(invocation["id"])
    assert record.status.value == "cancelled"


def test_add_thing_checks() -> None:
    server = ThingServer()
    server.add_thing("a", Crashing())
    with pytest.raises(tt.ConfigError, match="already taken"):
        server.add_thing("a", Crashing())
    with pytest.raises(tt.ConfigError, match="taken by the server"):
        server.add_thing("thing_descriptions", Crashing())
    with pytest.raises(TypeError):
        server.add_thing("b", object())  # type: ignore[arg-type]


async def test_things_cannot_be_added_while_running() -> None:
    server = ThingServer()
    async with server.running():
        with pytest.raises(LocalProtocolError):
            server.add_thing("late", Crashing())
