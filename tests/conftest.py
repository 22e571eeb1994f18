from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from tests.httpclient import HttpClient, connect
from trio_things.config import ServerConfig
from trio_things.demo import Counter, Thermometer
from trio_things.server import ThingServer


@pytest.fixture
async def demo_server() -> AsyncIterator[ThingServer]:
    server = ThingServer(ServerConfig(invocation_retention=10.0, long_poll_timeout=5.0))
    server.add_thing("thermometer", Thermometer())
    server.add_thing("counter", Counter())
    async with server.running():
        yield server


@pytest.fixture
async def client(demo_server: ThingServer) -> AsyncIterator[HttpClient]:
    with trio.fail_after(30):
        async with connect(demo_server) as client:
            yield client
