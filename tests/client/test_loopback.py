"""The client over real sockets: 127.0.0.1 only, port 0, real clock, every wait under
fail_after. One test restarts the server on the same port under a live observation."""

from __future__ import annotations

import logging

import pytest
import trio

import trio_things.client as ttc
from tests.client.conftest import FAST, Lab, make_server
from tests.helpers.servers import serve_on_loopback
from trio_things.client import State, connect
from trio_things.config import ServerConfig
from trio_things.server import ThingServer


def lab_of(server: ThingServer) -> Lab:
    lab = server.things["lab"]
    assert isinstance(lab, Lab)
    return lab


async def test_every_call_over_loopback() -> None:
    server = make_server(ServerConfig(port=0))
    with trio.fail_after(20):
        async with serve_on_loopback(server) as served:
            url = f"http://127.0.0.1:{served.port}/lab/"
            async with connect(url, options=FAST) as lab:
                assert lab.td["base"] == f"http://127.0.0.1:{served.port}/"
                await lab.write("level", 1)
                assert await lab.read("level") == 1
                assert (await lab.read_all())["serial"] == 7
                async with lab.observe("level", int) as levels:
                    assert await levels.__anext__() == 1
                    invocation = await lab.invoke("climb", to=3, delay=0.01)
                    assert [await levels.__anext__() for _ in range(2)] == [2, 3]
                    assert await invocation.result() == 3
                with pytest.raises(ttc.InvalidValue):
                    await lab.write("level", -1)
            async with connect(url, options=FAST, websocket=False) as lab:
                invocation = await lab.invoke("wait", seconds=30)
                assert await invocation.cancel() is True
                assert invocation.status.state is State.CANCELLED


async def test_unreachable_server() -> None:
    with trio.fail_after(10):
        # A port just freed: nothing listens there.
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await listeners[0].aclose()
        with pytest.raises(ttc.Unreachable, match=f"cannot reach 127.0.0.1:{port}"):
            async with connect(f"http://127.0.0.1:{port}/lab/", options=FAST):
                pass  # pragma: no cover


async def test_the_connection_survives_a_server_restart(
        caplog: pytest.LogCaptureFixture) -> None:
    """Observe, stop the server, start a new one on the same port: the observation
    resumes by itself (values arrive again), and warnings say what happened. An
    invocation the old server was running ends, not awaited forever."""
    caplog.set_level(logging.WARNING, logger="trio_things.client")
    first = make_server(ServerConfig(port=0))
    with trio.fail_after(30):
        async with serve_on_loopback(first) as served:
            port = served.port
            url = f"http://127.0.0.1:{port}/lab/"
            async with connect(url, options=FAST) as lab:
                async with lab.observe("level", int) as levels:
                    assert await levels.__anext__() == 0
                    lab_of(first).level = 5
                    assert await levels.__anext__() == 5
                    invocation = await lab.invoke("wait", seconds=60)
                    await served.stop()
                    second = make_server(ServerConfig(port=port))
                    lab_of(second).level = 42
                    async with serve_on_loopback(second):
                        assert await levels.__anext__() == 42  # restored: current value
                        lab_of(second).level = 43
                        assert await levels.__anext__() == 43  # and later changes
                        # The old server cancelled it as it stopped: the handle heard
                        # so, or (the socket closed first) the new server never heard of
                        # it. Either way it ends, never waits forever.
                        with pytest.raises((ttc.ActionCancelled, ttc.NotFound)) as info:
                            await invocation.result()
                        if isinstance(info.value, ttc.NotFound):
                            assert "no longer knows" in str(info.value)
                        # Requests work on the new connection.
                        assert await lab.read("level") == 43
    text = caplog.text
    assert f"lost the WebSocket connection to ws://127.0.0.1:{port}/lab/ws" in text
    assert f"reconnected to ws://127.0.0.1:{port}/lab/ws; restoring 1 observation(s)" in text

