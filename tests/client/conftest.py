"""The client against the real server: in-memory streams (one trio.run, no sockets)
unless a test says loopback. Rules as tests/helpers/wsclient.py: every wait under
``trio.fail_after``, no sleeps to synchronise.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Annotated

import attrs
import pytest
import trio
import trio.testing

import trio_things as tt
from trio_things.client import ClientOptions, OpenStream
from trio_things.config import ServerConfig
from trio_things.demo import Counter, Thermometer
from trio_things.server import ThingServer
from trio_things.testing import InMemoryServer

BASE = "http://testserver/"
LAB = BASE + "lab/"


@attrs.frozen
class Reading:
    """A typed payload, to check values come back as attrs instances."""

    level: int
    time: datetime.datetime


class Lab(tt.Thing):
    """A Thing whose actions are async (so the autojump clock drives them)."""

    level: int = tt.property(default=0, minimum=0, maximum=100)
    """A level actions move."""
    mode: str = tt.property(default="precise")
    label: str = tt.property(default="lab", observable=False)
    serial: int = tt.property(default=7, readonly=True)
    last: Reading = tt.property(default=Reading(
        level=0, time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)))
    tick = tt.event(int)
    alarm = tt.event(Reading)

    @tt.action
    async def climb(self, to: Annotated[int, tt.Schema(minimum=0, maximum=100)],
                    delay: float = 0.1) -> int:
        """Set ``level`` one step at a time, ``delay`` seconds apart."""
        while self.level != to:
            await trio.sleep(delay)
            self.level += 1 if to > self.level else -1
        return self.level

    @tt.action
    async def wait(self, seconds: float = 1.0) -> str:
        """Sleep, cancellably."""
        await trio.sleep(seconds)
        return "done"

    @tt.action
    async def explode(self) -> None:
        """Fail."""
        raise ZeroDivisionError("division by zero")

    @tt.action
    async def emit(self, n: int = 3) -> int:
        """Emit ``tick`` 1..n and ``alarm`` once."""
        for i in range(1, n + 1):
            self.tick.emit(i)
        self.alarm.emit(Reading(level=n, time=datetime.datetime(2026, 1, 2,
                                                                tzinfo=datetime.UTC)))
        return n


class Broken(tt.Thing):
    """A Thing whose property getter fails: the server answers 500."""

    @tt.property
    def reading(self) -> int:
        raise RuntimeError("sensor unplugged")


def make_server(config: ServerConfig | None = None) -> ThingServer:
    server = ThingServer(config or ServerConfig(invocation_retention=60.0))
    server.add_thing("lab", Lab())
    server.add_thing("broken", Broken())
    server.add_thing("counter", Counter())
    server.add_thing("thermometer", Thermometer())
    return server


class MemoryNetwork(InMemoryServer):
    """The public harness's :class:`~trio_things.testing.InMemoryServer`, under the
    names these tests know it by: an OpenStream (call it) that hands each connection to
    ``server`` over memory streams, counting them (to see connections reused and
    sockets shared)."""

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        return await self.open_stream(host, port, tls=tls)

    @property
    def opened(self) -> int:
        """How many connections were opened."""
        return self.connections_opened

    async def break_all(self) -> None:
        """Drop every connection, as a vanished server would."""
        await self.drop_connections()


@pytest.fixture
async def server() -> AsyncIterator[ThingServer]:
    server = make_server()
    async with server.running():
        yield server


@pytest.fixture
async def network(server: ThingServer) -> AsyncIterator[MemoryNetwork]:
    async with trio.open_nursery() as nursery:
        yield MemoryNetwork(server=server, nursery=nursery)
        nursery.cancel_scope.cancel()


#: Quick polls and reconnects, so tests do not wait on defaults meant for people.
FAST = ClientOptions(timeout=5.0, poll_interval=0.05, backoff_initial=0.01, backoff_max=0.1)


def opener(network: MemoryNetwork) -> OpenStream:
    return network
