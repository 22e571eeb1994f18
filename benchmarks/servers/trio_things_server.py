"""trio-things under test: :class:`benchmarks.things.BenchThing` served at ``/bench/``.

Run by the harness as ``python -m benchmarks.servers.trio_things_server``; it listens on
127.0.0.1 and a free port, prints ``{"port": ...}`` and obeys
:mod:`benchmarks.servers.control`. Clients observe at ``ws://127.0.0.1:PORT/bench/ws``.

Everything is trio-things' defaults except ``--write-timeout`` (10 s by default), which
the isolation scenario shortens so a stalled client is dropped within its window.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from typing import Any

import trio

from benchmarks.messages import THING
from benchmarks.servers.control import handle, raise_open_files_limit, write_line
from benchmarks.servers.trio_control import serve_control
from benchmarks.things import BenchThing
from trio_things.config import ServerConfig
from trio_things.protocol.limits import WebSocketLimits
from trio_things.server import ThingServer


async def serve_under_control(server: ThingServer,
                              answer: Callable[[bytes], dict[str, Any]]) -> None:
    """Serve ``server`` on its port, print ``{"port": ...}``, and answer the harness's
    request lines on stdin with ``answer`` until they end; then stop. What every
    benchmark that runs a trio-things server in a child process does."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve)
        write_line({"port": listeners[0].socket.getsockname()[1]})
        await serve_control(answer)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-timeout", type=float, default=WebSocketLimits().write_timeout)
    args = parser.parse_args()
    raise_open_files_limit()
    # Warnings (a dropped client) go to stderr, which the harness keeps in a file.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    thing = BenchThing()
    server = ThingServer(ServerConfig(
        host="127.0.0.1", port=0, websocket=WebSocketLimits(write_timeout=args.write_timeout),
        # Every benchmark client connects from 127.0.0.1; the memory scenario opens 5,000,
        # beyond the default cap of all connections (4,096).
        max_connections_per_client=100_000, max_connections=100_000))
    server.add_thing(THING, thing)
    try:
        trio.run(serve_under_control, server, functools.partial(handle, thing))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
