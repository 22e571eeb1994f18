"""A client that reads slowly is not a client that stopped reading.

The relay's write timeout bounds how long a write makes no progress, not how long a
whole batch takes: a reader that takes each ``PROGRESS_CHUNK`` within ``write_timeout``
is served for as long as it keeps reading; one that stops is dropped within
``write_timeout``. (Once, a batch had ``write_timeout`` in all, and readers taking 50
messages a second were dropped as stalled although they never stopped reading.)
"""

from __future__ import annotations

import trio
import trio.testing
import trio_websocket
import wsproto

from trio_things.protocol.limits import WebSocketLimits
from trio_things.transport.upgrade import PROGRESS_CHUNK, UpgradeStream
from trio_things.websockets import SocketWriter

BATCH = b"x" * (4 * PROGRESS_CHUNK)


def writer_over(stream: trio.abc.Stream) -> SocketWriter:
    upgraded = UpgradeStream(stream, b"")
    websocket = trio_websocket.WebSocketConnection(
        upgraded, wsproto.WSConnection(wsproto.ConnectionType.SERVER))
    return SocketWriter(websocket=websocket, stream=upgraded,
                        limits=WebSocketLimits(write_timeout=1.0))


async def test_a_reader_that_keeps_reading_is_served_past_the_write_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    client, server = trio.testing.lockstep_stream_pair()
    writer = writer_over(server)
    received = bytearray()

    async def read_one_chunk_every_900_ms() -> None:
        while len(received) < len(BATCH):
            await trio.sleep(0.9)
            chunk = b""
            while len(chunk) < PROGRESS_CHUNK:
                chunk += await client.receive_some(PROGRESS_CHUNK - len(chunk))
            received.extend(chunk)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_one_chunk_every_900_ms)
            started = trio.current_time()
            assert await writer.write(BATCH)
    assert trio.current_time() - started > writer.limits.write_timeout  # longer in all
    assert bytes(received) == BATCH
    assert not writer.stream.broken


async def test_a_reader_that_stops_is_dropped_within_the_write_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    client, server = trio.testing.lockstep_stream_pair()
    writer = writer_over(server)

    async def read_one_chunk_then_stop() -> None:
        chunk = b""
        while len(chunk) < PROGRESS_CHUNK:
            chunk += await client.receive_some(PROGRESS_CHUNK - len(chunk))
        await trio.sleep_forever()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_one_chunk_then_stop)
            started = trio.current_time()
            assert not await writer.write(BATCH)
            nursery.cancel_scope.cancel()
    assert trio.current_time() - started < 2 * writer.limits.write_timeout
    assert writer.stream.broken  # half a frame may be on the wire: never written again
