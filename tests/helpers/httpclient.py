"""The tests' HTTP client: :class:`trio_things.testing.HttpConnection`, the one users get.

It speaks h11 over an in-memory stream (or a loopback socket), so tests run the real
server end to end without a network. Here under the names the tests know it by.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from trio_things.server import ThingServer
from trio_things.testing import HttpConnection, Response, in_memory

__all__ = ["HttpClient", "Response", "connect"]

#: One keep-alive HTTP connection over any stream: ``HttpClient(stream)``.
HttpClient = HttpConnection


@asynccontextmanager
async def connect(server: ThingServer) -> AsyncIterator[HttpClient]:
    """A client connected to ``server`` (already running) over an in-memory stream."""
    async with in_memory(server) as served, served.http() as client:
        yield client
