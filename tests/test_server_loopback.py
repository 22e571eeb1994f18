"""The real server on a real loopback socket (port 0), in one trio.run."""

from __future__ import annotations

import trio

from tests.helpers.httpclient import HttpClient
from trio_things.config import ServerConfig
from trio_things.demo import Counter
from trio_things.model.thing import _SILENT
from trio_things.server import ThingServer


async def test_serve_on_loopback_then_cancel_cleanly() -> None:
    server = ThingServer(ServerConfig(port=0))
    counter = Counter()
    server.add_thing("counter", counter)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            host, port = listeners[0].socket.getsockname()[:2]
            assert host == "127.0.0.1"
            stream = await trio.open_tcp_stream(host, port)
            client = HttpClient(stream)
            assert (await client.post("/counter/actions/increment", {"by": 4})).json() == 4
            assert (await client.get("/counter/count")).json() == 4
            td = (await client.get("/counter/")).json()
            assert td["title"] == "Counter"
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert counter.count == 4
    assert counter._tt_state.notifier is _SILENT  # the server detached itself on shutdown


async def test_a_client_over_its_connection_limit_gets_429_and_the_others_are_served() -> None:
    """The third connection from 127.0.0.1 (limit 2) is answered 429 problem details and
    closed, unserved; once one of the two closes, the address may connect again."""
    server = ThingServer(ServerConfig(port=0, max_connections_per_client=2))
    server.add_thing("counter", Counter())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            host, port = listeners[0].socket.getsockname()[:2]
            first, second = [HttpClient(await trio.open_tcp_stream(host, port))
                             for _ in range(2)]
            assert (await first.get("/counter/count")).status == 200
            assert (await second.get("/counter/count")).status == 200

            third = HttpClient(await trio.open_tcp_stream(host, port))
            refused = await third.get("/counter/count")
            assert refused.status == 429
            assert refused.headers["connection"] == "close"
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["status"] == 429
            assert "2 connections" in refused.json()["detail"]
            assert await third.stream.receive_some(1) == b""  # and closed by the server
            await third.stream.aclose()

            await first.stream.aclose()
            # The server learns of the close asynchronously; until it has, the address
            # still has two open and a new connection may be refused: retry (bounded by
            # fail_after) rather than sleep.
            while True:
                fourth = HttpClient(await trio.open_tcp_stream(host, port))
                response = await fourth.get("/counter/count")
                if response.status != 429:
                    break
                await fourth.stream.aclose()
                await trio.lowlevel.checkpoint()
            assert response.status == 200
            assert (await second.get("/counter/count")).status == 200
            await second.stream.aclose()
            await fourth.stream.aclose()
            nursery.cancel_scope.cancel()
