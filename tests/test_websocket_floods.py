"""Frame floods and framing errors, end to end: the real server, raw wsproto clients.

What ``docs/security.md`` promises: a client that sends too many frames (empty
fragments, pings, pongs: frames that are no messages, or never finish one) is closed
with 1008 and a reason, and nothing it sent after the read that broke the limit is
processed; a client that breaks the framing (unmasked, reserved bits, an unknown opcode,
invalid UTF-8, a close code no client may send) gets a close frame with 1002 or 1007
before the connection ends, rather than a bare TCP close; and other clients notice
nothing.

Rules, as in ``tests/test_websockets.py``: in-memory streams, every wait under
``trio.fail_after``, no sleeps to synchronise. The autojump clock lets the server's
``close_timeout`` elapse; the frame rate is made independent of the clock where it
matters (a rate of 0.001 frames per second: the burst is all a client gets).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
import wsproto.events
from wsproto.events import CloseConnection, Event, Ping, Pong, TextMessage

from benchmarks import floods
from tests.helpers.rawframes import (
    BINARY,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    close_frame,
    frame,
)
from tests.helpers.wsclient import RawWebSocket, request
from trio_things.config import ServerConfig
from trio_things.demo import Counter
from trio_things.protocol.limits import WebSocketLimits
from trio_things.server import ThingServer
from trio_things.testing import InMemoryServer, in_memory

WTP = ["webthingprotocol"]
READ = b'{"operation": "readproperty", "name": "count", "messageID": "read"}'


def make_server(**limits: float) -> ThingServer:
    server = ThingServer(ServerConfig(websocket=WebSocketLimits(**limits)))  # type: ignore[arg-type]
    server.add_thing("counter", Counter())
    return server


async def connect(served: InMemoryServer) -> RawWebSocket:
    raw = RawWebSocket(await served.open_raw_stream())
    await raw.handshake("/counter/ws", WTP)
    return raw


def closed(events: list[Event]) -> bool:
    return any(isinstance(e, CloseConnection) for e in events)


def count(events: list[Event], kind: type[Event]) -> int:
    return sum(isinstance(e, kind) for e in events)


async def close_of(raw: RawWebSocket) -> CloseConnection:
    """The close the server sends: its close frame's code and reason (code 1006 if the
    stream ended without one). Then reads on to the end of the stream: the server ends
    the connection."""
    await raw.read_until(closed)
    close = next(e for e in raw.events if isinstance(e, CloseConnection))
    while await raw.read():
        pass
    return close


async def assert_no_connection_left(served: InMemoryServer) -> None:
    await trio.testing.wait_all_tasks_blocked()
    assert served.open_connections == 0


# --------------------------------------------------------------------------- frame floods


async def test_a_message_of_empty_fragments_is_closed_with_1008(
        autojump_clock: trio.testing.MockClock) -> None:
    """trio-websocket keeps a list entry per fragment, and empty ones never reach
    max_message_bytes: 10,000 of them were kept, until the client left."""
    server = make_server()
    async with server.running(), in_memory(server) as served:
        with trio.fail_after(60):
            raw = await connect(served)
            await raw.stream.send_all(frame(TEXT, b"{", fin=False)
                                      + frame(CONTINUATION, fin=False) * 10_000)
            close = await close_of(raw)
            assert (close.code, close.reason) == (1008, "a message in more than 128 fragments")
            await assert_no_connection_left(served)


async def test_a_message_in_as_many_fragments_as_allowed_is_served(
        autojump_clock: trio.testing.MockClock) -> None:
    server = make_server(max_fragments_per_message=len(READ))
    async with server.running(), in_memory(server) as served:
        with trio.fail_after(60):
            raw = await connect(served)
            await raw.stream.send_all(b"".join(
                frame(TEXT if i == 0 else CONTINUATION, READ[i:i + 1], fin=i == len(READ) - 1)
                for i in range(len(READ))))
            reply = await raw.receive()
            assert (reply["correlationID"], reply["value"]) == ("read", 0)
            assert not closed(raw.events)


async def test_a_ping_flood_is_closed_and_no_more_of_it_is_answered(
        autojump_clock: trio.testing.MockClock) -> None:
    """Pings are no messages: the message rate never saw them, and each was answered,
    from the socket's buffer, long after the flooder left."""
    server = make_server(frame_burst=50, max_frames_per_second=0.001)
    async with server.running(), in_memory(server) as served:
        with trio.fail_after(60):
            raw = await connect(served)
            await raw.stream.send_all(frame(PING) * 40)
            await raw.read_until(lambda events: count(events, Pong) == 40)
            await raw.stream.send_all(frame(PING) * 200)
            close = await close_of(raw)
            assert (close.code, close.reason) == (1008, "more than 0.001 frames per second")
            assert count(raw.events, Pong) == 40  # none of the 200
            await assert_no_connection_left(served)


async def test_a_flood_sent_with_the_handshake_is_stopped_too(
        autojump_clock: trio.testing.MockClock) -> None:
    """Bytes that follow the request head in h11's read are frames like any others."""
    server = make_server(frame_burst=50, max_frames_per_second=0.001)
    async with server.running(), in_memory(server) as served:
        with trio.fail_after(60):
            raw = RawWebSocket(await served.open_raw_stream())
            await raw.stream.send_all(raw.ws.send(wsproto.events.Request(
                host="testserver", target="/counter/ws", subprotocols=WTP))
                + frame(PING) * 100)
            close = await close_of(raw)
            assert isinstance(raw.events[0], wsproto.events.AcceptConnection)
            assert (close.code, close.reason) == (1008, "more than 0.001 frames per second")
            assert count(raw.events, Pong) == 0


FLOODS: dict[str, bytes] = {
    "pings": frame(PING) * 5_000,
    "pongs": frame(PONG, b"unasked") * 5_000,
    "empty fragments": frame(TEXT, b"", fin=False) + frame(CONTINUATION, fin=False) * 5_000,
    "empty binary fragments": (frame(BINARY, b"", fin=False)
                               + frame(CONTINUATION, fin=False) * 5_000),
    "empty messages": frame(TEXT, b"") * 5_000,
}


async def test_ten_flooders_are_closed_while_a_well_behaved_client_keeps_receiving(
        autojump_clock: trio.testing.MockClock) -> None:
    """The deterministic half of the flood benchmark (``python -m benchmarks.floods``
    measures the latency): with default limits, ten connections flooding five kinds of
    frames are each closed with 1008, and a client beside them is served throughout."""
    server = make_server()
    closes: list[CloseConnection] = []

    async def flood(served: InMemoryServer, data: bytes) -> None:
        raw = await connect(served)
        await raw.stream.send_all(data)
        closes.append(await close_of(raw))

    async with server.running(), in_memory(server) as served:
        with trio.fail_after(120):
            async with served.websocket("/counter/ws", WTP) as ws:
                async with trio.open_nursery() as nursery:
                    for n in range(10):
                        nursery.start_soon(flood, served, list(FLOODS.values())[n % 5])
                    for value in range(1, 21):
                        written = await request(ws, "writeproperty", thing=None, name="count",
                                                value=value)
                        assert "error" not in written
                        assert (await request(ws, "readproperty", thing=None,
                                              name="count"))["value"] == value
                assert ws.closed is None
                assert (await request(ws, "readproperty", thing=None, name="count"))[
                    "value"] == 20
            assert [c.code for c in closes] == [1008] * 10
            # Empty messages are messages: the message rate may close that one first.
            assert {c.reason for c in closes} <= {
                "more than 1000 frames per second", "a message in more than 128 fragments",
                "request rate limit exceeded"}
            await assert_no_connection_left(served)


# --------------------------------------------------------------------------- framing errors

FRAMING_ERRORS: dict[str, tuple[bytes, int, str]] = {
    "unmasked": (frame(TEXT, READ, masked=False), 1002, "an unmasked client frame"),
    "RSV1": (frame(TEXT, READ, rsv=4), 1002,
             "reserved bits set, and no extension was negotiated"),
    "opcode 0x3": (frame(0x3, READ), 1002, "unknown opcode 0x3"),
    "close code 999": (close_frame(999), 1002, "close code 999, which a client may not send"),
    "invalid UTF-8": (frame(TEXT, b'{"name": "caf\xe9"}'), 1007,
                      "a text message that is not UTF-8"),
    "lonely continuation": (frame(CONTINUATION, READ), 1002,
                            "a continuation frame with no message to continue"),
}


@pytest.mark.parametrize("name", FRAMING_ERRORS)
async def test_a_framing_error_gets_a_close_frame_before_the_connection_ends(
        name: str, autojump_clock: trio.testing.MockClock) -> None:
    """RFC 6455 section 7.1.7: the server SHOULD send a close frame with the code first.
    wsproto finds these too, but trio-websocket then closes the TCP connection bare
    (the client saw 1006, no reason)."""
    data, code, reason = FRAMING_ERRORS[name]
    server = make_server()
    async with server.running(), in_memory(server) as served:
        with trio.fail_after(60):
            raw = await connect(served)
            await raw.stream.send_all(frame(TEXT, READ))
            assert (await raw.receive())["value"] == 0  # served until then
            await raw.stream.send_all(data)
            close = await close_of(raw)
            assert (close.code, close.reason) == (code, reason)
            await assert_no_connection_left(served)


async def test_a_valid_close_is_echoed_as_before(
        autojump_clock: trio.testing.MockClock) -> None:
    server = make_server()
    async with server.running(), in_memory(server) as served:
        with trio.fail_after(60):
            raw = await connect(served)
            await raw.stream.send_all(close_frame(4000, b"done"))
            close = await close_of(raw)
            assert (close.code, close.reason) == (4000, "done")


async def test_pings_within_the_limits_are_answered(
        autojump_clock: trio.testing.MockClock) -> None:
    """A client that pings now and then, between requests, never notices the guard."""
    server = make_server()
    async with server.running(), in_memory(server) as served:
        with trio.fail_after(60):
            raw = await connect(served)
            for n in range(30):
                await raw.stream.send_all(frame(PING, b"%d" % n) + frame(TEXT, READ))
                assert (await raw.receive())["value"] == 0
            assert count(raw.events, Pong) == 30
            assert not closed(raw.events)
            assert not any(isinstance(e, Ping) for e in raw.events)  # it talks: no keepalive
            assert count(raw.events, TextMessage) == 30


# --------------------------------------------------------------------------- over loopback


def test_the_flood_benchmark_sees_every_flooder_closed_over_loopback() -> None:
    """``python -m benchmarks.floods`` works (not how fast anything is: the figures are
    for the report), and over real TCP, where the server stops reading a flooder whose
    bytes fill its socket buffers, each flooder still receives its close frame: 1008,
    not a reset. Loopback only, a few seconds."""
    report = floods.run(flooders=3, rate=20.0, seconds=0.5, paced=0.0)
    # 20 a second for 0.5 s: 10 or 11 each, fewer only if round trips took ~50 ms.
    assert all(len(phase.round_trips) >= 5 for phase in report.phases), report.phases
    assert report.outcomes.get("close 1008", 0) >= 3
    assert set(report.outcomes) <= {"close 1008", "stopped"}, report.outcomes
    assert report.tracebacks == 0
