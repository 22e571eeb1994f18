"""WebSocket clients for tests: trio-websocket's (:func:`open_ws`, which is
:meth:`trio_things.testing.InMemoryServer.websocket`) and a bare wsproto one
(:class:`RawWebSocket`), against the real server over in-memory streams, one trio.run.

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
from trio_things.testing import StreamPair, in_memory


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
    of this block and ends with it.

    A refused handshake raises ``ConnectionRejected`` in an exception group, as
    trio-websocket's nursery raised it before the harness unwrapped it (the tests that
    expect it say ``pytest.RaisesGroup``)."""
    try:
        async with (in_memory(server, stream_pair=stream_pair) as served,
                    served.websocket(path, subprotocols or [], headers=headers) as ws):
            yield ws
    except trio_websocket.ConnectionRejected as rejected:
        raise BaseExceptionGroup("the WebSocket handshake was refused", [rejected]) from None


class RawWebSocket:
    """A WebSocket client on wsproto over ``stream``, reading only when told to and
    answering nothing by itself (no pongs): trio-websocket's client reads all the time,
    so it can neither leave a server write hanging nor play a client that misbehaves."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.events: list[wsproto.events.Event] = []
        """Every event received so far, in order."""
        self._unread = 0  # the index in ``events`` of the next one for ``next_event``
        self._text = ""

    async def send_request(self, path: str, subprotocols: list[str]) -> None:
        """Send the handshake request (not waiting for the answer)."""
        await self.stream.send_all(self.ws.send(wsproto.events.Request(
            host="testserver", target=path, subprotocols=subprotocols)))

    async def handshake(self, path: str, subprotocols: list[str]) -> None:
        """Send the handshake request and check that the server accepts it."""
        await self.send_request(path, subprotocols)
        assert isinstance(await self.next_event(), wsproto.events.AcceptConnection)

    async def read(self) -> bool:
        """Read from the stream once and add what came to :attr:`events`; False at the
        end of the stream (which wsproto reports as a ``CloseConnection``, code 1006)."""
        data = await self.stream.receive_some()
        self.ws.receive_data(bytes(data) or None)
        self.events.extend(self.ws.events())
        return bool(data)

    async def read_until(self, done: Callable[[list[wsproto.events.Event]], bool]) -> None:
        """Read until ``done(events)`` or the end of the stream."""
        while not done(self.events):
            if not await self.read():
                return

    async def next_event(self) -> wsproto.events.Event:
        """The next event not yet returned, reading if there is none."""
        while self._unread == len(self.events):
            assert await self.read(), "the server closed the connection"
        self._unread += 1
        return self.events[self._unread - 1]

    async def send(self, message: Any) -> None:
        """Send ``message`` as JSON in a text frame."""
        await self.stream.send_all(self.ws.send(wsproto.events.TextMessage(
            data=orjson.dumps(message).decode())))

    async def receive(self) -> dict[str, Any]:
        """The next text message, parsed (other events are passed over)."""
        while True:
            event = await self.next_event()
            if isinstance(event, wsproto.events.TextMessage):
                self._text += event.data
                if event.message_finished:
                    text, self._text = self._text, ""
                    return dict(orjson.loads(text))


@asynccontextmanager
async def open_raw_ws(server: ThingServer, path: str, subprotocols: list[str]
                      ) -> AsyncIterator[RawWebSocket]:
    """A :class:`RawWebSocket` whose handshake request has been sent to ``server`` at
    ``path`` (over in-memory streams). The server side runs in a nursery of this block."""
    async with in_memory(server) as served:
        raw = RawWebSocket(await served.open_raw_stream())
        await raw.send_request(path, subprotocols)
        yield raw


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
