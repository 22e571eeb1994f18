"""Sized bodies (a download): Content-Length framing, pieces written as the source yields
them without a copy, HEAD, and a write timeout on progress, not on the whole.

Rules as tests/transport/test_http.py: memory streams, trio.fail_after, the autojump
clock for timeouts; the only sleeps are a slow reader's pacing, in virtual time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager

import h11
import pytest
import trio
import trio.testing

from tests.transport.test_http import Client, header
from trio_things.protocol.limits import HttpLimits
from trio_things.transport.http import (
    HttpRequest,
    HttpResponse,
    RequestHandler,
    SizedBody,
    serve_http_connection,
)

DATA = bytes(range(256)) * 1024  # 256 KiB: four 64 KiB pieces on the wire
LIMITS = HttpLimits(write_timeout=10)


class Recording(trio.abc.Stream):
    """A stream that remembers what it was handed to send, as handed."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent: list[bytes | bytearray | memoryview] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Source:
    """A body's source: ``DATA`` in memoryview slices; remembers whether it was called
    and closed."""

    def __init__(self, data: bytes = DATA, *, fail_after: int | None = None) -> None:
        self.data = data
        self.fail_after = fail_after
        self.calls = 0
        self.closed = False

    async def __call__(self) -> AsyncGenerator[bytes | memoryview, None]:
        self.calls += 1
        view = memoryview(self.data)
        try:
            for start in range(0, len(view), 100_000):
                if self.fail_after is not None and start >= self.fail_after:
                    raise OSError("the file went away")
                await trio.lowlevel.checkpoint()
                yield view[start:start + 100_000]
        finally:
            self.closed = True


def sized(source: Callable[[], AsyncGenerator[bytes | memoryview, None]],
          length: int = len(DATA), status: int = 200) -> RequestHandler:
    async def handle(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status=status, headers=(("content-type", "image/png"),),
                            sized=SizedBody(length=length, chunks=source))
    return handle


@asynccontextmanager
async def serving(handler: RequestHandler, *, lockstep: bool = False
                  ) -> AsyncIterator[tuple[Client, Recording, trio.Event]]:
    """The server on one end of a stream pair; yields the client, the server's recording
    stream, and an event set when the server has finished with the connection."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    recording = Recording(server_stream)
    done = trio.Event()

    async def serve() -> None:
        try:
            await serve_http_connection(recording, handle_request=handler,
                                        handle_upgrade=None, limits=LIMITS)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        yield Client(client_stream), recording, done
        await client_stream.aclose()


async def test_a_sized_body_is_framed_by_its_length_and_the_connection_stays() -> None:
    source = Source()
    with trio.fail_after(5):
        async with serving(sized(source)) as (client, _, _):
            for _ in range(2):  # kept alive: a second request on the same connection
                response, body = await client.request()
                assert response.status_code == 200
                assert header(response, b"content-length") == str(len(DATA)).encode()
                assert header(response, b"transfer-encoding") is None
                assert header(response, b"connection") is None
                assert body == DATA
    assert source.calls == 2
    assert source.closed


async def test_pieces_are_written_as_slices_of_the_source_not_copies() -> None:
    with trio.fail_after(5):
        async with serving(sized(Source())) as (client, recording, _):
            _, body = await client.request()
    assert body == DATA
    pieces = [piece for piece in recording.sent if isinstance(piece, memoryview)]
    assert sum(len(piece) for piece in pieces) == len(DATA)
    assert all(piece.obj is DATA for piece in pieces)  # views of the very bytes
    assert max(len(piece) for piece in pieces) == 64 * 1024  # the write unit


async def test_head_gets_the_length_and_no_body_and_the_source_is_never_called() -> None:
    source = Source()
    with trio.fail_after(5):
        async with serving(sized(source)) as (client, _, _):
            await client.send(h11.Request(method="HEAD", target="/",
                                          headers=[("host", "test")]), h11.EndOfMessage())
            response, body = await client.response()
            assert response.status_code == 200
            assert header(response, b"content-length") == str(len(DATA)).encode()
            assert body == b""
            response, body = await client.request()  # and the connection goes on
            assert body == DATA
    assert source.calls == 1


async def test_an_empty_sized_body(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        async with serving(sized(Source(b""), length=0)) as (client, _, _):
            response, body = await client.request()
    assert (response.status_code, header(response, b"content-length"), body) == (
        200, b"0", b"")


async def test_a_slow_reader_that_makes_progress_is_served(
        autojump_clock: trio.testing.MockClock) -> None:
    """Each 64 KiB piece must go within write_timeout (10 s); the whole may take far
    longer: this reader takes 8 s a piece, 32 s in all."""
    started = trio.current_time()
    with trio.fail_after(120):
        async with serving(sized(Source()), lockstep=True) as (client, _, _):
            await client.send(h11.Request(method="GET", target="/", headers=[("host", "t")]),
                              h11.EndOfMessage())
            body = b""
            response = None
            while True:
                event = client.h11.next_event()
                if event is h11.NEED_DATA:
                    if response is not None:
                        await trio.sleep(8)
                    client.h11.receive_data(bytes(await client.stream.receive_some()))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                else:
                    assert isinstance(event, h11.EndOfMessage)
                    break
    assert body == DATA
    assert trio.current_time() - started > 3 * LIMITS.write_timeout


async def test_a_stalled_reader_is_dropped_and_the_source_closed(
        autojump_clock: trio.testing.MockClock) -> None:
    source = Source()
    with trio.fail_after(120):
        async with serving(sized(source), lockstep=True) as (client, _, done):
            await client.send(h11.Request(method="GET", target="/", headers=[("host", "t")]),
                              h11.EndOfMessage())
            while not isinstance(client.h11.next_event(), h11.Response):
                client.h11.receive_data(bytes(await client.stream.receive_some()))
            # Read nothing more: the server's next write cannot finish.
            begun = trio.current_time()
            await done.wait()
            assert LIMITS.write_timeout <= trio.current_time() - begun < 2 * LIMITS.write_timeout
    assert source.closed


async def test_a_source_that_fails_midway_ends_the_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    source = Source(fail_after=100_000)
    with trio.fail_after(5), caplog.at_level(logging.ERROR, "trio_things.transport.http"):
        async with serving(sized(source)) as (client, _, done):
            with pytest.raises(h11.RemoteProtocolError):  # the body ends early
                await client.request()
            await done.wait()
    assert source.closed
    assert "the file went away" in caplog.text


async def test_a_source_shorter_than_its_length_ends_the_connection() -> None:
    with trio.fail_after(5):
        async with serving(sized(Source(), length=len(DATA) + 1)) as (client, _, done):
            with pytest.raises(h11.RemoteProtocolError):
                await client.request()
            await done.wait()


def test_a_response_has_one_body() -> None:
    body = SizedBody(length=1, chunks=Source())
    with pytest.raises(ValueError, match="one body"):
        HttpResponse(status=200, body=b"x", sized=body)
    with pytest.raises(ValueError, match="no body"):
        HttpResponse(status=204, sized=body)
    with pytest.raises(ValueError):
        SizedBody(length=-1, chunks=Source())
