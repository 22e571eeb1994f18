"""Flow credit over real loopback sockets: a client that does not read is held to what
it may have unread, and gets the latest value, not a backlog, once it reads on.

Sockets, because what credit bounds is the kernel's buffering (memory streams have
none to speak of, so credit is off there). The client is wsproto, reading only when
told and answering pings only when told: so each step is the test's to decide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import trio
import trio.lowlevel
import wsproto
import wsproto.events

from tests.helpers.servers import LoopbackServer, demo_server, serve_on_loopback
from tests.helpers.wsclient import RawWebSocket
from trio_things.demo import Counter
from trio_things.protocol.credit import PING_PREFIX
from trio_things.protocol.dialects import SUBPROTOCOL
from trio_things.protocol.limits import WebSocketLimits

UPDATES = 5000


@pytest.fixture
async def served() -> AsyncIterator[tuple[LoopbackServer, Counter]]:
    server = demo_server(port=0, websocket=WebSocketLimits(write_timeout=2.0))
    with trio.fail_after(30):
        async with serve_on_loopback(server) as loopback:
            counter = server.things["counter"]
            assert isinstance(counter, Counter)
            yield loopback, counter


async def observing_client(port: int) -> RawWebSocket:
    client = RawWebSocket(await trio.open_tcp_stream("127.0.0.1", port))
    await client.handshake("/counter/ws", [SUBPROTOCOL])
    await client.send({"messageID": "1", "messageType": "request",
                       "operation": "observeproperty", "name": "count"})
    assert (await client.receive())["messageType"] == "response"
    assert (await client.receive())["value"] == 0
    return client


async def test_a_client_that_does_not_read_gets_the_latest_value_not_a_backlog(
        served: tuple[LoopbackServer, Counter]) -> None:
    loopback, counter = served
    with trio.fail_after(30):
        client = await observing_client(loopback.port)
        for n in range(1, UPDATES + 1):  # the client reads nothing meanwhile
            counter.count = n
            if n % 100 == 0:
                await trio.lowlevel.checkpoint()  # let the relay run, as a real producer would
        values: list[int] = []
        pings = 0
        text = ""
        while not values or values[-1] != UPDATES:
            event = await client.next_event()
            if isinstance(event, wsproto.events.Ping):
                assert event.payload.startswith(PING_PREFIX)
                pings += 1
                await client.stream.send_all(client.ws.send(event.response()))
            elif isinstance(event, wsproto.events.TextMessage):
                text += event.data  # a frame split across reads comes in pieces
                if event.message_finished:
                    values.append(orjson.loads(text)["value"])
                    text = ""
    # What was written before the first pong: about the starting credit, 16 KiB, of
    # ~250-byte notifications (62 when measured). Without credit, whatever the kernel's
    # buffers held waited there (466 when measured), each older than the last.
    assert len(values) < 16 * 1024 // 200 + 10, len(values)
    assert values == sorted(values)  # never an older value after a newer one
    assert pings >= 1


async def test_a_client_that_confirms_nothing_is_closed_after_the_write_timeout(
        served: tuple[LoopbackServer, Counter]) -> None:
    loopback, counter = served
    with trio.fail_after(30):
        client = await observing_client(loopback.port)
        for n in range(1, UPDATES + 1):
            counter.count = n
            if n % 100 == 0:
                await trio.lowlevel.checkpoint()
        # It reads everything but never answers a ping: no pong, no credit.
        await client.read_until(lambda events: any(
            isinstance(e, wsproto.events.CloseConnection) for e in events))
    close = client.events[-1]
    assert isinstance(close, wsproto.events.CloseConnection)
    assert close.code == 1008
    assert close.reason == "read nothing for 2 s"
