"""What an idle WebSocket observer costs the server in memory: at most 25 KiB of Python
objects (issue 17: 10,000 observing connections in one process). Measured with
tracemalloc in this process, the clients in another (the benchmark's load generator),
so that only the server's allocations count.

A failure here means something new is held for every connection's life: see
``python -m benchmarks.idle_memory`` for what an idle connection holds, by part.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from benchmarks.loadgen import LoadGenerator
from benchmarks.messages import PROPERTY, THING
from benchmarks.things import BenchThing
from trio_things.config import ServerConfig
from trio_things.server import ThingServer

CONNECTIONS = 300
#: Python objects per idle observer, at most (RSS adds the allocator's own overhead).
BUDGET = 25 * 1024


@pytest.fixture(scope="module")
def loadgen() -> Iterator[LoadGenerator]:
    with LoadGenerator(1) as generator:
        yield generator


async def test_an_idle_observer_holds_at_most_25_kib(loadgen: LoadGenerator) -> None:
    server = ThingServer(ServerConfig(host="127.0.0.1", port=0,
                                      max_connections_per_client=CONNECTIONS + 50))
    server.add_thing(THING, BenchThing())

    def observe(port: int, clients: int) -> None:
        loadgen.open(host="127.0.0.1", port=port, path="/bench/ws", kind=PROPERTY,
                     clients=clients, timeout=60)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            # A first round warms every cache (dialects, code paths, free lists).
            await trio.to_thread.run_sync(observe, port, 50)
            await trio.to_thread.run_sync(loadgen.close_clients)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                await trio.to_thread.run_sync(observe, port, CONNECTIONS)
                await trio.testing.wait_all_tasks_blocked()
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            await trio.to_thread.run_sync(loadgen.close_clients)
            nursery.cancel_scope.cancel()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    per_connection = held / CONNECTIONS
    assert per_connection <= BUDGET, (
        f"an idle observer holds {per_connection / 1024:.1f} KiB of Python objects, more "
        f"than {BUDGET / 1024:.0f} KiB")
