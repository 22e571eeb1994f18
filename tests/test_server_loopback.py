"""The real server on a real loopback socket (port 0), in one trio.run."""

from __future__ import annotations

import trio

from tests.httpclient import HttpClient
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
