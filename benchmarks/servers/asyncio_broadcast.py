"""Reference (b): the asyncio ``websockets`` library's ``broadcast()``.

The fastest well-known Python fan-out: ``broadcast(clients, msg)`` frames the message for
each connection and writes it to the transport at once, without awaiting anything. There
is no backpressure at all: a client that reads slowly gets an ever-growing buffer in the
server (websockets >= 14 no longer skips it), never a coalesced value or a close.

Run by the harness as ``python -m benchmarks.servers.asyncio_broadcast``; prints
``{"port": ...}`` and obeys :mod:`benchmarks.servers.control`. Compression is off (the
load generator offers no extension anyway); pings keep the library's defaults; the
close timeout is 1 s so that shutting the server down never waits long.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from benchmarks.messages import reference_ack, reference_notification
from benchmarks.servers.control import Plan, handle, raise_open_files_limit, write_line

SUBPROTOCOL = Subprotocol("webthingprotocol")


class BroadcastServer:
    """The clients, and the producer that broadcasts each update to all of them."""

    def __init__(self) -> None:
        self.clients: set[ServerConnection] = set()
        self.updates = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def producing(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, plan: Plan) -> None:
        self.stop()
        self._task = asyncio.get_running_loop().create_task(self._produce(plan))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _produce(self, plan: Plan) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        index = 0
        while plan.count is None or index < plan.count:
            deadline = plan.deadline(start, index)
            await asyncio.sleep(0 if deadline is None else max(0.0, deadline - loop.time()))
            index += 1
            self.updates += 1
            broadcast(self.clients, reference_notification(plan.kind, self.updates, time.time()))

    async def handle(self, ws: ServerConnection) -> None:
        """Answer the one subscribe request, then read until the client leaves."""
        try:
            await ws.send(reference_ack(await ws.recv()))
            self.clients.add(ws)
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)


async def _control(server: BroadcastServer) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip():
            write_line(handle(server, line))


async def _serve() -> None:
    server = BroadcastServer()
    async with serve(server.handle, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL],
                     compression=None, backlog=4096, close_timeout=1) as listener:
        write_line({"port": next(iter(listener.sockets)).getsockname()[1]})
        await _control(server)
        server.stop()


def main() -> None:
    raise_open_files_limit()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve())


if __name__ == "__main__":
    main()
