"""UpgradeStream, and WebSocket connections handed over by serve_http_connection.

Rules: no sockets (memory and lockstep stream pairs), every test under trio.fail_after,
no sleeps to synchronise (trio.testing.wait_all_tasks_blocked orders tasks instead).

The server side shows the intended use: ``wrap_server_stream`` on the UpgradeStream, then
``accept`` echoing the client's first subprotocol.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
import trio_websocket
from wsproto.frame_protocol import FrameProtocol

from trio_things.fanout.outbox import Written
from trio_things.transport.http import HttpRequest, HttpResponse, serve_http_connection
from trio_things.transport.upgrade import UpgradeStream, UpgradeStreamStatistics, socket_receive

SUBPROTOCOLS = ["webthingprotocol", "labthings"]


async def not_found(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=404)


def text_frame(text: str) -> bytes:
    """A whole unmasked server text frame, as the relay writes them."""
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(text))


async def connect(
    client_stream: trio.abc.Stream,
    server_stream: trio.abc.Stream,
    handle_upgrade: Callable[[HttpRequest, UpgradeStream], Awaitable[None]],
    nursery: trio.Nursery,
) -> trio_websocket.WebSocketConnection:
    nursery.start_soon(lambda: serve_http_connection(
        server_stream, handle_request=not_found, handle_upgrade=handle_upgrade))
    return await trio_websocket.wrap_client_stream(
        nursery, client_stream, "localhost", "/things/ws", subprotocols=SUBPROTOCOLS)  # type: ignore[arg-type]


async def test_websocket_round_trip_echoes_the_subprotocol() -> None:
    async def echo_one(request: HttpRequest, stream: UpgradeStream) -> None:
        assert request.path == "/things/ws"
        async with trio.open_nursery() as nursery:
            ws_request = await trio_websocket.wrap_server_stream(nursery, stream)
            ws = await ws_request.accept(subprotocol=ws_request.proposed_subprotocols[0])
            await ws.send_message(await ws.get_message())
            with pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()

    with trio.fail_after(5):
        client_stream, server_stream = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            ws = await connect(client_stream, server_stream, echo_one, nursery)
            assert ws.subprotocol == "webthingprotocol"
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            await ws.aclose()


async def test_pings_relay_frames_messages_and_close_never_interleave() -> None:
    """trio-websocket's own frames and frames written through UpgradeStream.send_all take
    turns whole. The lockstep pair hands a 4 KiB-reading client one piece of a big frame
    at a time, so a writer without the lock would be caught mid-frame (and the pair's
    conflict detector would fail two concurrent writers outright)."""
    count, pad = 20, "x" * 10_000
    statistics: list[UpgradeStreamStatistics] = []

    async def three_writers(request: HttpRequest, stream: UpgradeStream) -> None:
        async with trio.open_nursery() as nursery:
            ws_request = await trio_websocket.wrap_server_stream(nursery, stream)
            ws = await ws_request.accept(subprotocol=ws_request.proposed_subprotocols[0])

            async def pings() -> None:
                for i in range(count):
                    await ws.ping(b"ping %d" % i)  # returns once the client's pong came

            async def relay() -> None:
                for i in range(count):
                    await stream.send_all(text_frame(f"relay {i} {pad}"))

            async def messages() -> None:
                for i in range(count):
                    await ws.send_message(f"api {i} {pad}")

            async with trio.open_nursery() as writers:
                writers.start_soon(pings)
                writers.start_soon(relay)
                writers.start_soon(messages)
            await ws.aclose()
            statistics.append(stream.statistics())

    with trio.fail_after(10):
        client_stream, server_stream = trio.testing.lockstep_stream_pair()
        async with trio.open_nursery() as nursery:
            ws = await connect(client_stream, server_stream, three_writers, nursery)
            received: list[str | bytes] = []
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    received.append(await ws.get_message())
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1000

    assert [m for m in received if str(m).startswith("relay")] == [
        f"relay {i} {pad}" for i in range(count)]
    assert [m for m in received if str(m).startswith("api")] == [
        f"api {i} {pad}" for i in range(count)]
    assert len(received) == 2 * count
    sources = [str(m).split()[0] for m in received]
    assert sources != sorted(sources), "the writers never took turns"
    [stats] = statistics
    assert not stats.broken
    assert stats.writes > 3 * count  # + the 101 response and the close frame


async def test_receive_replays_before_reading_the_stream() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        stream = UpgradeStream(server, b"abcdef")
        await client.send_all(b"xyz")
        assert await stream.receive_some(4) == b"abcd"
        assert await stream.receive_some() == b"ef"
        assert await stream.receive_some() == b"xyz"
        with pytest.raises(ValueError):
            await stream.receive_some(0)


async def test_cancelled_write_breaks_the_stream_for_every_later_writer() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.lockstep_stream_pair()
        stream = UpgradeStream(server, b"")
        first = trio.CancelScope()

        async def first_writer() -> None:
            with first:
                await stream.send_all(b"first")  # blocks: nobody reads

        async def queued_writer() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await stream.send_all(b"second")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_writer)
            await trio.testing.wait_all_tasks_blocked()  # "first" holds the lock
            nursery.start_soon(queued_writer)
            await trio.testing.wait_all_tasks_blocked()  # "second" waits for it
            first.cancel()
        assert first.cancelled_caught
        assert stream.broken
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"third")
        with pytest.raises(trio.BrokenResourceError):
            await stream.wait_send_all_might_not_block()

        received = b""
        async with trio.open_nursery() as nursery:
            async def read() -> None:
                nonlocal received
                while True:
                    received += await client.receive_some()

            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert b"second" not in received and b"third" not in received
        assert stream.statistics() == UpgradeStreamStatistics(bytes_sent=0, writes=0, broken=True)


# --------------------------------------------------------------------------- fast path


async def socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def read_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive_some(size - len(data))
    return data


async def test_write_nowait_writes_at_once_on_an_idle_socket() -> None:
    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    with trio.fail_after(5):
        assert stream.write_nowait(b"frame") is Written.WHOLE  # nothing left: nobody is woken
        assert not stream.needs_flush
        assert await read_exactly(peer, 5) == b"frame"
        assert stream.statistics() == UpgradeStreamStatistics(bytes_sent=5, writes=0,
                                                              broken=False)


async def test_write_nowait_keeps_the_rest_and_send_all_writes_it_first() -> None:
    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    big = bytes(range(256)) * 40_000  # ~10 MB: more than any socket buffer takes at once
    with trio.fail_after(10):
        # Taken in part: the rest waits, in order, and the caller must wake a writer.
        assert stream.write_nowait(big) is Written.PART
        assert stream.needs_flush
        assert stream.write_nowait(b"later") is Written.NOTHING  # a backlog: queue it
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, b"tail")
            received = await read_exactly(peer, len(big) + 4)
        assert received == big + b"tail"
        assert not stream.needs_flush


async def test_write_nowait_refuses_while_a_send_all_writes() -> None:
    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    big = b"x" * 10_000_000
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, big)
            await trio.testing.wait_all_tasks_blocked()  # stuck: nobody reads yet
            assert stream.write_nowait(b"frame") is Written.NOTHING
            assert await read_exactly(peer, len(big)) == big
        assert stream.write_nowait(b"frame") is Written.WHOLE
        assert await read_exactly(peer, 5) == b"frame"


async def test_write_nowait_refuses_while_a_send_all_waits_for_the_lock() -> None:
    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    big = b"x" * 10_000_000
    waiting = trio.CancelScope()

    async def send_second() -> None:
        with waiting:
            await stream.send_all(b"second")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, big)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send_second)
            await trio.testing.wait_all_tasks_blocked()  # queued for the lock
            assert stream.write_nowait(b"frame") is Written.NOTHING  # would overtake "second"
            waiting.cancel()  # cancelled while waiting: nothing written, still usable
            await trio.testing.wait_all_tasks_blocked()
            assert stream.write_nowait(b"frame") is Written.NOTHING  # the first still writes
            assert await read_exactly(peer, len(big)) == big
        assert stream.write_nowait(b"frame") is Written.WHOLE  # no writer holds the fast path
        assert await read_exactly(peer, 5) == b"frame"


async def test_no_fast_path_without_a_socket_or_after_close() -> None:
    _client, server = trio.testing.memory_stream_pair()
    assert UpgradeStream(server, b"").write_nowait(b"frame") is Written.NOTHING
    ours, _peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    await stream.aclose()
    assert stream.write_nowait(b"frame") is Written.NOTHING  # never a reused descriptor


async def test_write_now_joins_the_parts_of_a_frame() -> None:
    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    with trio.fail_after(5):
        assert stream.write_now((b"head", b"body", b"tail")) is Written.WHOLE
        assert await read_exactly(peer, 12) == b"headbodytail"


async def test_no_fast_write_follows_a_close_frame() -> None:
    """RFC 6455 section 5.5.1: no data frame after a close frame. trio-websocket writes
    its close frame through send_all; from then on the fast path writes nothing, even
    once the write lock is free again."""
    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    close = bytes(FrameProtocol(client=False, extensions=[]).close(1000, "bye"))
    with trio.fail_after(5):
        await stream.send_all(text_frame("last"))
        assert stream.write_now((text_frame("fast"),)) is Written.WHOLE
        await stream.send_all(close)
        assert stream.write_now((text_frame("late"),)) is Written.NOTHING
        assert stream.write_nowait(text_frame("late")) is Written.NOTHING
        expected = text_frame("last") + text_frame("fast") + close
        assert await read_exactly(peer, len(expected)) == expected


async def test_the_connection_closes_the_upgrade_stream_it_handed_over() -> None:
    """serve_http_connection closes the UpgradeStream itself, not only the socket under
    it, when the handler returns: the stream forgets its descriptor, so a fast write
    that came late could never reach a number the kernel gave another connection."""
    handed: list[UpgradeStream] = []

    async def keep(request: HttpRequest, stream: UpgradeStream) -> None:
        handed.append(stream)

    ours, peer = await socket_pair()
    with trio.fail_after(5):
        await peer.send_all(b"GET /things/ws HTTP/1.1\r\nHost: localhost\r\n"
                            b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        await serve_http_connection(ours, handle_request=not_found, handle_upgrade=keep)
    [stream] = handed
    assert ours.socket.fileno() == -1
    assert stream.write_now((b"frame",)) is Written.NOTHING


async def test_reads_of_nothing_but_credit_pongs_stay_in_the_stream() -> None:
    """A client answers credit pings a few times a second: those pongs are the stream's
    business (flow credit), so a read holding only them does not reach the reader; any
    other frame, or a pong of someone else's, does, and the credit is taken either way."""
    from tests.helpers.rawframes import frame
    from trio_things.protocol.credit import PING_PAYLOAD_SIZE, PING_PREFIX
    from trio_things.protocol.frame_guard import FrameGuard

    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    stream.guard_frames(FrameGuard(max_frames_per_second=1000, frame_burst=100,
                                   max_fragments_per_message=8))
    stream.enable_credit(1.0)
    with trio.fail_after(5):
        # Write until a credit ping is due, and past it: the credit then runs out.
        while stream.has_credit:
            assert stream.write_now((b"x" * 1000,))
        written = await read_exactly(peer, stream.statistics().bytes_sent)
        at = written.rindex(PING_PREFIX)  # the last credit ping: its position
        credit_pong = frame(0xA, written[at:at + PING_PAYLOAD_SIZE])
        text = frame(0x1, b'{"a":1}')
        received: list[bytes | bytearray] = []

        async def read_one() -> None:
            received.append(await stream.receive_some())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_one)
            await peer.send_all(credit_pong + credit_pong)
            await trio.testing.wait_all_tasks_blocked()
            assert received == []  # the pongs alone were not passed on...
            assert stream.has_credit  # ...but taken: the client read everything
            await peer.send_all(text)
        assert received == [text]
        other = frame(0xA, b"someone else's")
        await peer.send_all(credit_pong + other)
        assert await stream.receive_some() == credit_pong + other
        assert stream.bytes_received == 2 * len(credit_pong) + len(text) + len(
            credit_pong + other)


async def test_write_nowait_to_a_vanished_peer_breaks_the_stream() -> None:
    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    await peer.aclose()
    answers: list[Written] = []
    with trio.fail_after(5):
        while not stream.broken:  # the first writes may still land in a buffer
            answers.append(stream.write_nowait(b"x" * 65536))
            assert answers[-1]  # taken care of, never refused
        assert answers[-1] is Written.PART  # the relay is woken to notice
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"more")


# --------------------------------------------------------------------------- the socket, read
# and written without a task switch where it can be


class Steps(trio.abc.Instrument):
    """Counts the scheduler steps of one task: a step more means it yielded."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


def frames_of(task: trio.lowlevel.Task) -> list[str]:
    """The qualified names of the coroutines (and generators) ``task`` waits in."""
    names = []
    awaited: object = task.coro
    while awaited is not None:
        code = getattr(awaited, "cr_code", None) or getattr(awaited, "gi_code", None)
        if code is None:
            break
        names.append(code.co_qualname)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return names


async def test_a_socket_is_read_directly_and_an_idle_reader_waits_on_it_alone() -> None:
    """Over a socket, UpgradeStream reads the descriptor itself: an idle reader (every
    idle WebSocket connection has one) waits in receive_some and Trio's wait for a
    readable socket, not in five more coroutines of SocketStream's (about 1 KiB)."""
    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    received: list[bytes] = []

    async def read() -> None:
        while data := await stream.receive_some(4096):
            received.append(data)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            [reader] = nursery.child_tasks
            waiting = frames_of(reader)
            assert waiting[1] == "UpgradeStream.receive_some"
            assert not [name for name in waiting if "SocketStream" in name]
            await peer.send_all(b"hello")
            await trio.testing.wait_all_tasks_blocked()
            assert received == [b"hello"]
            assert stream.bytes_received == 5
            await peer.aclose()  # end of stream: b"", and the reader returns
    assert received == [b"hello"]


async def test_a_socket_read_raises_what_a_socket_stream_raises() -> None:
    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            async def read_until_closed() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await stream.receive_some()

            nursery.start_soon(read_until_closed)
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()  # closed while a reader waits
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()
    await peer.aclose()

    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    client = await trio.open_tcp_stream("127.0.0.1", listener.socket.getsockname()[1])
    accepted = await listener.accept()
    stream = UpgradeStream(accepted, b"")
    client.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER,
                      struct.pack("ii", 1, 0))
    await client.aclose()  # a reset, not an end of stream
    with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
        await stream.receive_some()
    await stream.aclose()
    await listener.aclose()


async def test_the_replay_and_writes_the_socket_takes_at_once_take_no_task_switch() -> None:
    """A handshake's steps each waited a scheduler round, which a producer at full speed
    fills with a fan-out to every observer: the replayed request is read, the write lock
    taken when free and the answer written when the socket takes it, without one."""
    ours, peer = await socket_pair()
    stream = UpgradeStream(ours, b"GET / HTTP/1.1\r\n\r\n")
    steps = Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        assert await stream.receive_some() == b"GET / HTTP/1.1\r\n\r\n"
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        assert steps.steps == 0
    finally:
        trio.lowlevel.remove_instrument(steps)
    with trio.fail_after(5):
        assert await read_exactly(peer, 36) == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    assert stream.statistics().writes == 1
    with trio.CancelScope() as cancelled:  # still where cancellation is delivered
        cancelled.cancel()
        await stream.send_all(b"never")
    assert cancelled.cancelled_caught and stream.statistics().writes == 1


def test_an_upgrade_stream_has_no_instance_dictionary() -> None:
    """Every idle WebSocket connection holds one: slots, not a dict of over 800 bytes."""
    _client, server = trio.testing.memory_stream_pair()
    assert not hasattr(UpgradeStream(server, b""), "__dict__")


async def test_socket_receive_returns_what_is_there_at_once_and_waits_for_the_rest() -> None:
    """What the HTTP loop reads a request with: bytes already there come without a task
    switch; none there, it waits for them (cancellably, consuming nothing)."""
    ours, peer = await socket_pair()
    fileno = ours.socket.fileno
    await peer.send_all(b"GET / HTTP/1.1\r\n\r\n")
    steps = Steps(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        assert await socket_receive(fileno, 1024) == b"GET / HTTP/1.1\r\n\r\n"
        assert steps.steps == 0
    finally:
        trio.lowlevel.remove_instrument(steps)
    with trio.move_on_after(0) as nothing:
        await socket_receive(fileno, 1024)
    assert nothing.cancelled_caught
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.send_all, b"later")
            assert await socket_receive(fileno, 1024) == b"later"
        await peer.aclose()
        assert await socket_receive(fileno, 1024) == b""
    await ours.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await socket_receive(fileno, 1024)
