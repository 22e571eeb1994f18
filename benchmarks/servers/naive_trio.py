"""Reference (a): the naive trio-websocket server, ``await ws.send_message(msg)`` per client.

What a first WebSocket fan-out on Trio looks like: keep the set of connected clients,
and for each update loop over them, awaiting each send. Every message is framed per
client (wsproto) and written in its own ``send_all``; the producer waits for each client
in turn, so it is lossless and one client that stops reading stops everyone.

Run by the harness as ``python -m benchmarks.servers.naive_trio``; prints
``{"port": ...}`` and obeys :mod:`benchmarks.servers.control`.
"""

from __future__ import annotations

import functools
import time

import trio
import trio_websocket

from benchmarks.messages import reference_ack, reference_notification
from benchmarks.servers.control import Plan, handle, raise_open_files_limit, write_line
from benchmarks.servers.trio_control import serve_control, wait_for_turn

SUBPROTOCOL = "webthingprotocol"


class NaiveServer:
    """The clients, and the producer that sends each update to each of them in turn."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.clients: set[trio_websocket.WebSocketConnection] = set()
        self.updates = 0
        self._nursery = nursery
        self._scope: trio.CancelScope | None = None

    @property
    def producing(self) -> bool:
        return self._scope is not None

    def start(self, plan: Plan) -> None:
        self.stop()
        self._scope = trio.CancelScope()
        self._nursery.start_soon(self._produce, plan, self._scope)

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def _produce(self, plan: Plan, scope: trio.CancelScope) -> None:
        with scope:
            start = trio.current_time()
            index = 0
            while plan.count is None or index < plan.count:
                await wait_for_turn(plan, start, index)
                index += 1
                self.updates += 1
                message = reference_notification(plan.kind, self.updates, time.time())
                for ws in list(self.clients):
                    try:
                        await ws.send_message(message)
                    except trio_websocket.ConnectionClosed:
                        self.clients.discard(ws)
        if self._scope is scope:
            self._scope = None

    async def handle(self, request: trio_websocket.WebSocketRequest) -> None:
        """Accept, answer the one subscribe request, then read until the client leaves
        (trio-websocket answers pings and close frames only while someone reads)."""
        offered = SUBPROTOCOL if SUBPROTOCOL in request.proposed_subprotocols else None
        ws = await request.accept(subprotocol=offered)
        try:
            await ws.send_message(reference_ack(await ws.get_message()))
            self.clients.add(ws)
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)


async def _serve() -> None:
    async with trio.open_nursery() as nursery:
        server = NaiveServer(nursery)
        listener = await nursery.start(
            trio_websocket.serve_websocket, server.handle, "127.0.0.1", 0, None)
        write_line({"port": listener.port})
        await serve_control(functools.partial(handle, server))
        nursery.cancel_scope.cancel()


def main() -> None:
    raise_open_files_limit()
    try:
        trio.run(_serve)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
