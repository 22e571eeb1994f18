"""A WebSocket client for tests: the real server, over in-memory streams, one trio.run.

Rules (as trio-websocket's own tests): no sockets unless a test says loopback, every
wait under ``trio.fail_after``, no sleeps to synchronise.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events

from trio_things.server import ThingServer

StreamPair = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]


@asynccontextmanager
async def open_ws(
    server: ThingServer,
    path: str,
    subprotocols: list[str] | None = None,
    *,
    stream_pair: StreamPair = trio.testing.memory_stream_pair,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A client connected to ``server`` at ``path``; the server side runs in a nursery
    of this block and ends with it."""
    client_stream, server_stream = stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_connection, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery, client_stream, "testserver", path, subprotocols=subprotocols or [],
            extra_headers=[(k.encode(), v.encode()) for k, v in (headers or {}).items()])
        try:
            yield ws
        finally:
            with trio.move_on_after(1):
                await ws.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_raw_ws(server: ThingServer, path: str, subprotocols: list[str]
                      ) -> AsyncIterator[tuple[wsproto.WSConnection, trio.abc.Stream]]:
    """A bare wsproto client whose handshake request has been sent to ``server`` at
    ``path``, and its stream: it answers nothing by itself (no pongs), so tests can
    play a client that misbehaves. The server side runs in a nursery of this block."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_connection, server_stream)
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        await client_stream.send_all(client.send(wsproto.events.Request(
            host="testserver", target=path, subprotocols=subprotocols)))
        yield client, client_stream
        nursery.cancel_scope.cancel()


async def receive(ws: trio_websocket.WebSocketConnection) -> Any:
    """The next message, parsed."""
    return orjson.loads(await ws.get_message())


async def send(ws: trio_websocket.WebSocketConnection, message: Any) -> None:
    await ws.send_message(orjson.dumps(message).decode())


async def request(ws: trio_websocket.WebSocketConnection, operation: str, *,
                  thing: str | None = "counter", **members: Any) -> dict[str, Any]:
    """Send a Web Thing Protocol request with a fresh correlationID; return the response
    (skipping notifications that arrive first)."""
    correlation_id = str(uuid.uuid4())
    message: dict[str, Any] = {"messageID": str(uuid.uuid4()), "messageType": "request",
                               "operation": operation, "correlationID": correlation_id}
    if thing is not None:
        message["thingID"] = thing
    await send(ws, message | members)
    while True:
        reply = await receive(ws)
        if reply.get("messageType") == "response":
            assert reply["correlationID"] == correlation_id
            return dict(reply)
