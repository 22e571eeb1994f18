"""Live image streams on real loopback sockets: large frames through the fast path and
the kernel's buffers, a burst that coalesces, and a stalled viewer (one that never reads:
what it fills is the kernel's buffers, which memory streams have not) dropped within the
write timeout while another goes on.

The clock is the real one, so every wait is under ``trio.fail_after``; a condition the
server reaches by itself is waited for by :func:`eventually`, which lets the loop run
(and poll its sockets) between tries, never by a sleep.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.lowlevel

import trio_things as tt
from tests.helpers.mjpeg import MjpegClient, is_jpeg
from tests.helpers.servers import LoopbackServer, observer_count, serve_on_loopback
from trio_things.config import ServerConfig
from trio_things.protocol.limits import HttpLimits
from trio_things.server import ThingServer

HOST = "127.0.0.1"


class Eye(tt.Thing):
    video = tt.frame_stream()


@attrs.frozen
class Served:
    loopback: LoopbackServer
    server: ThingServer
    eye: Eye

    @property
    def port(self) -> int:
        return self.loopback.port

    def viewers(self) -> int:
        return observer_count(self.server)


@asynccontextmanager
async def loopback(**config: Any) -> AsyncIterator[Served]:
    server = ThingServer(ServerConfig(port=0, **config))
    eye = Eye()
    server.add_thing("eye", eye)
    async with serve_on_loopback(server) as served:
        yield Served(served, server, eye)


async def eventually(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds; bounded by the caller's ``fail_after``."""
    while not condition():
        await trio.lowlevel.checkpoint()


def frame(n: int, size: int) -> bytes:
    """``size`` bytes that pass for a JPEG (SOI ... EOI), numbered ``n`` up front."""
    body = b"%08d" % n + os.urandom(size - 12)
    return b"\xff\xd8" + body + b"\xff\xd9"


def number(part_body: bytes) -> int:
    return int(part_body[2:10])


async def viewer(port: int, *, receive_buffer: int | None = None,
                 read_head: bool = True) -> MjpegClient:
    """A viewer of ``/eye/video``; with ``receive_buffer``, its socket's receive buffer
    is that small; without ``read_head``, the request is sent and nothing read."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect((HOST, port))
    client = MjpegClient(trio.SocketStream(sock), host=f"{HOST}:{port}")
    if read_head:
        await client.request("/eye/video")
        assert client.is_stream, (client.status, client.body)
    else:
        await client.stream.send_all(
            f"GET /eye/video HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    return client


async def test_a_burst_of_large_frames_arrives_whole_in_order_ending_with_the_newest(
) -> None:
    """Frames published faster than the socket takes them: some are replaced, none is
    torn, none comes out of order, and the last one published is the last received."""
    async with loopback() as served:
        with trio.fail_after(30):
            client = await viewer(served.port)
            await eventually(lambda: served.viewers() == 1)
            frames = [frame(n, 1_000_000) for n in range(40)]
            for published in frames:  # all at once: no checkpoint between them
                served.eye.video.publish(published)
            while not client.parts or number(client.parts[-1].body) != 39:
                await client.next_part()
            numbers = [number(part.body) for part in client.parts]
            assert numbers == sorted(set(numbers))  # in order, none twice
            assert len(numbers) < 40  # 40 MB at once: the kernel took some, the rest coalesced
            assert all(part.body == frames[number(part.body)] and is_jpeg(part.body)
                       for part in client.parts)
            await client.stream.aclose()
            await eventually(lambda: served.viewers() == 0)
            assert not served.eye.video.watched


WRITE_TIMEOUT = 1.0


async def test_a_stalled_viewer_is_dropped_within_the_write_timeout_and_others_go_on(
) -> None:
    """One viewer never reads its socket (a small receive buffer, soon full); another
    reads every frame, each published once the one before has arrived. The stalled one
    is dropped ``stream_write_timeout`` after its writes stopped making progress; the
    other misses no frame, before, during and after."""
    async with loopback(http=HttpLimits(stream_write_timeout=WRITE_TIMEOUT)) as served:
        with trio.fail_after(30):
            reader = await viewer(served.port)
            stalled = await viewer(served.port, receive_buffer=4096, read_head=False)
            await eventually(lambda: served.viewers() == 2)
            stalled_at = dropped_at = None
            n = after_drop = 0
            while after_drop < 20:  # frames the reader gets after the drop
                n += 1
                after_drop += dropped_at is not None
                served.eye.video.publish(frame(n, 65_536))
                assert number((await reader.next_part()).body) == n
                # The reader's Outbox is empty once it has the frame; one that holds a
                # frame still is the stalled viewer's, whose write cannot finish.
                if stalled_at is None and any(o.statistics().pending_latest
                                              for o in outboxes(served.server)):
                    stalled_at = trio.current_time()
                if dropped_at is None and served.viewers() == 1:
                    dropped_at = trio.current_time()
                assert n < 100_000, "the stalled viewer was never dropped"
            assert stalled_at is not None and dropped_at is not None
            assert dropped_at - stalled_at < WRITE_TIMEOUT + 0.5
            assert [number(part.body) for part in reader.parts] == list(range(1, n + 1))
            assert len(outboxes(served.server)) == 1  # only the reader is left
            await stalled.stream.aclose()
            await reader.stream.aclose()
            await eventually(lambda: served.viewers() == 0)


def outboxes(server: ThingServer) -> set[Any]:
    """Every Outbox any observer set holds."""
    assert server._dispatcher is not None
    return {outbox for observers in server._dispatcher.observers for outbox in observers}
