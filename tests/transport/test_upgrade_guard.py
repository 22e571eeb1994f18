"""UpgradeStream's receive path with a frame guard: what reaches trio-websocket, and what
never does once a client broke a frame limit.

Rules, as in ``tests/transport/test_upgrade.py``: memory streams, every test under
``trio.fail_after``, no sleeps (``trio.testing.wait_all_tasks_blocked`` orders tasks).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.helpers.rawframes import PING, TEXT, frame
from trio_things.errors import LocalProtocolError
from trio_things.protocol.frame_guard import FrameGuard
from trio_things.transport.upgrade import UpgradeStream

HEAD = b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"


def limited(burst: int) -> FrameGuard:
    return FrameGuard(max_frames_per_second=0.001, frame_burst=burst,
                      max_fragments_per_message=4)


async def read_all(stream: UpgradeStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await stream.receive_some(7)  # small reads: frames span them
    return data


async def test_the_head_passes_unread_and_the_frames_after_it_are_counted() -> None:
    """h11 may have read frames along with the head: they are frames like any others,
    and the head (which would be malformed frames) is not read as frames."""
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        frames = frame(TEXT, b"{}") + frame(PING)
        stream = UpgradeStream(server, HEAD + frames)
        guard = limited(burst=10)
        stream.guard_frames(guard)
        assert await read_all(stream, len(HEAD + frames)) == HEAD + frames
        await client.send_all(frame(PING) * 3)
        assert await read_all(stream, 3 * 6) == frame(PING) * 3
        assert guard.frames == 5
        assert stream.violation is None


async def test_after_a_violation_nothing_more_is_read() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        stream = UpgradeStream(server, HEAD)
        stream.guard_frames(limited(burst=2))
        reported: list[tuple[int, str]] = []
        stream.on_violation(lambda code, reason: reported.append((code, reason)))
        assert await stream.receive_some() == HEAD
        await client.send_all(frame(PING) * 2)
        assert await stream.receive_some() == frame(PING) * 2
        await client.send_all(frame(PING) * 2 + frame(TEXT, b"never passed"))
        returned: list[bytes | bytearray] = []
        async with trio.open_nursery() as nursery:
            async def read() -> None:
                returned.append(await stream.receive_some())
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            # The read that broke the limit is kept from the reader, which now waits
            # for good, even though more bytes could be read.
            assert returned == []
            assert reported == [(1008, "more than 0.001 frames per second")]
            received = stream.bytes_received
            await client.send_all(frame(PING))
            await trio.testing.wait_all_tasks_blocked()
            assert returned == []
            assert stream.bytes_received == received  # the socket is no longer read
            nursery.cancel_scope.cancel()
        assert stream.violation is not None and stream.violation.code == 1008
        # The connection learns of it even when it asks late, once.
        late: list[tuple[int, str]] = []
        stream.on_violation(lambda code, reason: late.append((code, reason)))
        assert late == reported
        assert reported == [(1008, "more than 0.001 frames per second")]


async def test_a_flood_in_the_replay_leaves_the_head_readable() -> None:
    """The handshake can still be answered (and the connection then closed with 1008):
    the head goes to trio-websocket, the frames after it never do."""
    with trio.fail_after(5):
        _, server = trio.testing.memory_stream_pair()
        stream = UpgradeStream(server, HEAD + frame(PING) * 3)
        stream.guard_frames(limited(burst=2))
        assert await stream.receive_some() == HEAD
        assert stream.violation is not None


async def test_the_guard_comes_before_the_first_read() -> None:
    with trio.fail_after(5):
        _, server = trio.testing.memory_stream_pair()
        stream = UpgradeStream(server, HEAD)
        assert await stream.receive_some(4) == HEAD[:4]
        with pytest.raises(LocalProtocolError):
            stream.guard_frames(limited(burst=2))


async def test_without_a_guard_every_byte_passes() -> None:
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        stream = UpgradeStream(server, b"")
        await client.send_all(frame(PING, masked=False) * 3)
        assert await stream.receive_some() == frame(PING, masked=False) * 3
        assert stream.violation is None
