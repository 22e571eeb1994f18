"""The WebSocket hand-off on the real server: handshake, subprotocol, a message round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from trio_things.server import ThingServer
from trio_things.websockets import SUBPROTOCOL, websocket_route


@asynccontextmanager
async def open_ws(server: ThingServer, path: str, subprotocols: list[str]
                  ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_connection, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery, client_stream, "testserver", path, subprotocols=subprotocols)
        try:
            yield ws
        finally:
            await ws.aclose()


@pytest.mark.parametrize(("path", "offered", "chosen"), [
    ("/counter/ws", [SUBPROTOCOL], SUBPROTOCOL),
    ("/ws", ["other", SUBPROTOCOL], SUBPROTOCOL),
    ("/counter/ws", [], None),
])
async def test_round_trip_on_the_websocket_route(
        demo_server: ThingServer, path: str, offered: list[str], chosen: str | None) -> None:
    with trio.fail_after(5):
        async with open_ws(demo_server, path, offered) as ws:
            assert ws.subprotocol == chosen
            await ws.send_message('{"messageType": "request"}')
            reply = orjson.loads(await ws.get_message())
            assert reply["status"] == 501
            await ws.send_message("not even json")  # the connection lives on
            assert orjson.loads(await ws.get_message())["status"] == 501


async def test_unknown_websocket_path_is_rejected_with_404(demo_server: ThingServer) -> None:
    with trio.fail_after(5), pytest.RaisesGroup(
            trio_websocket.ConnectionRejected, flatten_subgroups=True) as info:
        async with open_ws(demo_server, "/nothing/ws", [SUBPROTOCOL]):
            pass
    [rejection] = info.value.exceptions
    assert isinstance(rejection, trio_websocket.ConnectionRejected)
    assert rejection.status_code == 404
    assert rejection.body is not None
    assert orjson.loads(rejection.body)["status"] == 404


async def test_server_shutdown_closes_websockets_with_1001() -> None:
    server = ThingServer()
    with trio.fail_after(5):
        async with trio.open_nursery() as outer:
            done = trio.Event()

            async def run_server() -> None:
                async with server.running():
                    await done.wait()

            outer.start_soon(run_server)
            await trio.testing.wait_all_tasks_blocked()
            client_stream, server_stream = trio.testing.memory_stream_pair()
            async with trio.open_nursery() as nursery:
                connection_scope = trio.CancelScope()

                async def serve() -> None:
                    with connection_scope:
                        await server.handle_connection(server_stream)

                nursery.start_soon(serve)
                ws = await trio_websocket.wrap_client_stream(
                    nursery, client_stream, "testserver", "/ws")
                connection_scope.cancel()  # what serve_listeners does at shutdown
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason is not None
                assert info.value.reason.code == 1001
            done.set()


def test_websocket_route() -> None:
    things = {"counter"}
    assert websocket_route("/ws", things) == ""
    assert websocket_route("/counter/ws", things) == "counter"
    assert websocket_route("/counter/ws/", things) == "counter"
    assert websocket_route("/nothing/ws", things) is None
    assert websocket_route("/counter/count", things) is None
