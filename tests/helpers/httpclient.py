"""A minimal HTTP/1.1 client over any trio stream, for integration tests.

It speaks h11 over an in-memory stream pair (or a loopback socket), so tests run the
real server end to end without a network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import orjson
import trio
import trio.testing

from trio_things.server import ThingServer


@attrs.frozen
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class HttpClient:
    """One keep-alive HTTP connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def request(self, method: str, path: str, *, json: Any = None,
                      body: bytes | None = None, headers: dict[str, str] | None = None
                      ) -> Response:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        all_headers = {"host": "testserver"} | (headers or {})
        if json is not None:
            body = orjson.dumps(json)
            all_headers.setdefault("content-type", "application/json")
        body = body or b""
        all_headers["content-length"] = str(len(body))
        request = h11.Request(method=method, target=path, headers=list(all_headers.items()))
        await self.stream.send_all(self.h11.send(request)
                                   + self.h11.send(h11.Data(data=body))
                                   + self.h11.send(h11.EndOfMessage()))
        response: h11.Response | None = None
        chunks = []
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection")
        assert response is not None
        return Response(
            status=response.status_code,
            headers={k.decode().lower(): v.decode() for k, v in response.headers},
            body=b"".join(chunks),
        )

    async def get(self, path: str) -> Response:
        return await self.request("GET", path)

    async def put(self, path: str, json: Any) -> Response:
        return await self.request("PUT", path, json=json)

    async def post(self, path: str, json: Any = None) -> Response:
        return await self.request("POST", path, json=json)

    async def delete(self, path: str) -> Response:
        return await self.request("DELETE", path)


@asynccontextmanager
async def connect(server: ThingServer) -> AsyncIterator[HttpClient]:
    """A client connected to ``server`` (already running) over an in-memory stream."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_connection, server_stream)
        try:
            yield HttpClient(client_stream)
        finally:
            await client_stream.aclose()
