"""Servers for tests: the demo server, a server on a loopback port, and what a running
server holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from trio_things.config import ServerConfig
from trio_things.demo import Counter, Thermometer
from trio_things.server import ThingServer


def demo_server(**config: Any) -> ThingServer:
    """A server (not yet running) with the demo Things, ``thermometer`` and ``counter``,
    configured by ``ServerConfig(**config)``."""
    server = ThingServer(ServerConfig(**config))
    server.add_thing("thermometer", Thermometer())
    server.add_thing("counter", Counter())
    return server


def observer_count(server: ThingServer) -> int:
    """How many (connection, affordance) memberships all observer sets hold."""
    assert server._dispatcher is not None
    return sum(len(s) for s in server._dispatcher.observers)


@attrs.define
class LoopbackServer:
    """A server running on a port, that can be stopped and waited for."""

    port: int
    scope: trio.CancelScope
    """Cancelling it stops the server, as Ctrl-C does to ``trio-things serve``."""
    stopped: trio.Event

    async def stop(self) -> None:
        """Cancel the server and wait until it has stopped (its listener closed, so
        the port can be bound again at once)."""
        self.scope.cancel()
        await self.stopped.wait()


async def _serve(server: ThingServer, stopped: trio.Event, *,
                 task_status: trio.TaskStatus[tuple[trio.CancelScope, int]]) -> None:
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(server.serve)
                task_status.started((scope, listeners[0].socket.getsockname()[1]))
    finally:
        stopped.set()


@asynccontextmanager
async def serve_on_loopback(server: ThingServer) -> AsyncIterator[LoopbackServer]:
    """``server.serve`` for the block, or until stopped; the block's end stops it and
    waits. Configure the server with ``port=0`` for a free port (the host defaults to
    127.0.0.1); the port taken is the ``port`` of what this yields."""
    async with trio.open_nursery() as nursery:
        stopped = trio.Event()
        scope, port = await nursery.start(_serve, server, stopped)
        served = LoopbackServer(port=port, scope=scope, stopped=stopped)
        try:
            yield served
        finally:
            await served.stop()
