"""The WebSocket binding (``trio_things/bindings/websocket.py``): the opening handshake,
refused or accepted with the dialect the client asked for, and the shared dialect objects.

The handshake tests run the real server over in-memory streams; every wait is under
``trio.fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import h11
import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from tests.helpers import servers
from tests.helpers.wsclient import open_ws
from trio_things.bindings.websocket import WebSocketDialects
from trio_things.demo import Counter
from trio_things.protocol.dialects import SUBPROTOCOL
from trio_things.protocol.labthings import LabThingsDialect
from trio_things.protocol.limits import WebSocketLimits
from trio_things.protocol.wtp import WebThingProtocol
from trio_things.server import ThingServer

WTP = [SUBPROTOCOL]


@pytest.fixture
async def server(demo_server: ThingServer) -> AsyncIterator[ThingServer]:
    """The running demo server (``tests/conftest.py``)."""
    yield demo_server


# --------------------------------------------------------------------------- handshake


@pytest.mark.parametrize(("path", "offered", "chosen"), [
    ("/counter/ws", WTP, SUBPROTOCOL),
    ("/ws", ["other", SUBPROTOCOL], SUBPROTOCOL),
    ("/counter/ws", [], None),
    ("/ws", [], None),
])
async def test_the_subprotocol_is_echoed(server: ThingServer, path: str, offered: list[str],
                                         chosen: str | None) -> None:
    with trio.fail_after(5):
        async with open_ws(server, path, offered) as ws:
            assert ws.subprotocol == chosen


async def test_unknown_websocket_path_is_rejected_with_404(server: ThingServer) -> None:
    with trio.fail_after(5), pytest.RaisesGroup(
            trio_websocket.ConnectionRejected, flatten_subgroups=True) as info:
        async with open_ws(server, "/nothing/ws", WTP):
            pass
    [rejection] = info.value.exceptions
    assert isinstance(rejection, trio_websocket.ConnectionRejected)
    assert rejection.status_code == 404
    assert rejection.body is not None
    assert orjson.loads(rejection.body)["status"] == 404


@pytest.mark.parametrize("head", [
    # no Sec-WebSocket-Key
    b"GET /counter/ws HTTP/1.1\r\nHost: testserver\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    # an unsupported version
    b"GET /counter/ws HTTP/1.1\r\nHost: testserver\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 8\r\n\r\n",
])
async def test_a_bad_handshake_is_refused_and_the_connection_ends(
        server: ThingServer, head: bytes, autojump_clock: trio.testing.MockClock) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_connection, server_stream)
            await client_stream.send_all(head)
            received = b""
            while chunk := await client_stream.receive_some():
                received += chunk
            assert received.startswith(b"HTTP/1.1 4")  # refused, never upgraded
    # The server side ended by itself (the nursery closed), within the handshake timeout.
    assert trio.current_time() <= WebSocketLimits().handshake_timeout + 1


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 400),
    ({"sec-websocket-key": "not base64!", "sec-websocket-version": "13"}, 400),
    ({"sec-websocket-key": "c2hvcnQ=", "sec-websocket-version": "13"}, 400),  # 5 bytes
    ({"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}, 426),
    ({"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "8"}, 426),
])
async def test_a_handshake_rfc_6455_refuses_gets_problem_details_and_close(
        headers: dict[str, str], status: int) -> None:
    """Refused before trio-websocket sees it (which would answer a bare 400): problem
    details, ``Connection: close``, and for a version other than 13 the version we speak
    (RFC 6455 section 4.2.2)."""
    server = servers.demo_server()
    head = ("GET /counter/ws HTTP/1.1\r\nHost: testserver\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n").encode()
    async with server.running():
        client_stream, server_stream = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_connection, server_stream)
            await client_stream.send_all(head)
            client = h11.Connection(h11.CLIENT)
            client.send(h11.Request(method="GET", target="/counter/ws",
                                    headers=[("host", "testserver")]))
            with trio.fail_after(5):
                events: list[object] = []
                while not any(isinstance(e, h11.EndOfMessage) for e in events):
                    client.receive_data(await client_stream.receive_some())
                    while (event := client.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                        events.append(event)
                assert await client_stream.receive_some() == b""  # and closed at once
    response = events[0]
    assert isinstance(response, h11.Response)
    fields = {k.decode(): v.decode() for k, v in response.headers}
    assert response.status_code == status
    assert fields["content-type"] == "application/problem+json"
    assert fields["connection"] == "close"
    assert (fields.get("sec-websocket-version") == "13") == (status == 426)
    body = b"".join(e.data for e in events if isinstance(e, h11.Data))
    assert orjson.loads(body)["status"] == status


# --------------------------------------------------------------------------- dialects


def test_connections_through_the_same_host_share_one_dialect_object() -> None:
    """Dialects hold no per-connection state, so they are shared (an idle connection's
    memory matters at thousands); the cache is bounded, as ``Host`` is the client's."""
    dialects = WebSocketDialects(things={"counter": Counter.affordances},
                                 default_host="127.0.0.1:8000", max_cached=4)
    first = dialects.dialect("counter", SUBPROTOCOL, "lab:8000")
    assert isinstance(first, WebThingProtocol)
    assert dialects.dialect("counter", SUBPROTOCOL, "lab:8000") is first
    assert dialects.dialect("counter", SUBPROTOCOL, "other:8000") is not first
    assert isinstance(dialects.dialect("counter", None, "lab:8000"), LabThingsDialect)
    assert isinstance(dialects.dialect("", None, "lab:8000"), WebThingProtocol)
    for n in range(10):
        dialects.dialect("counter", SUBPROTOCOL, f"host{n}")
    assert len(dialects._cache) <= 4
