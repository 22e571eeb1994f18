"""Live image streams (``multipart/x-mixed-replace``, served by ``trio_things/bindings/sse.py``
with the IMAGE_STREAM format) in the real server, end to end over in-memory streams: the
framing, the newest frame at once, slow, stalled and departing viewers, HEAD, refusals,
and the TD's link.

The viewer is :class:`tests.helpers.mjpeg.MjpegClient`, which reads only when told to.
No test sleeps for synchronisation: a viewer is known to be in place when the server
holds its observer (``wait_until``, which lets every task run until it blocks).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jsonschema
import pytest
import trio
import trio.testing
from PIL import Image

import trio_things as tt
from tests.helpers.mjpeg import is_jpeg, open_mjpeg
from tests.helpers.servers import observer_count
from tests.helpers.sse import wait_until
from trio_things.config import ServerConfig
from trio_things.fanout.observers import STREAM
from trio_things.protocol import multipart
from trio_things.protocol.access import AccessPolicy
from trio_things.protocol.limits import HttpLimits
from trio_things.server import ThingServer
from trio_things.testing import InMemoryServer, in_memory

TIMEOUT = 30


class Eye(tt.Thing):
    """Frames come from the test: ``eye.video.publish(...)``."""

    video = tt.frame_stream()
    """What the eye sees."""
    thermal = tt.frame_stream(media_type="image/png")
    level: int = tt.property(default=0)


def jpeg(n: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A real JPEG, different for each ``n``."""
    buffer = io.BytesIO()
    Image.new("RGB", size, ((n * 37) % 256, (n * 91) % 256, (n * 13) % 256)).save(
        buffer, "JPEG")
    return buffer.getvalue()


@asynccontextmanager
async def serving(**config: Any) -> AsyncIterator[tuple[InMemoryServer, Eye]]:
    server = ThingServer(ServerConfig(**config))
    eye = Eye()
    server.add_thing("eye", eye)
    with trio.fail_after(TIMEOUT):
        async with server.running(), in_memory(server) as served:
            yield served, eye


@pytest.fixture
async def served() -> AsyncIterator[InMemoryServer]:
    async with serving() as (served, _):
        yield served


def eye_of(served: InMemoryServer) -> Eye:
    eye = served.server.things["eye"]
    assert isinstance(eye, Eye)
    return eye


async def viewers(served: InMemoryServer, count: int) -> None:
    await wait_until(lambda: observer_count(served.server) == count)


# ------------------------------------------------------------------ the stream


async def test_each_frame_is_one_part_with_its_type_and_length_in_a_chunk_of_its_own(
        served: InMemoryServer) -> None:
    eye = eye_of(served)
    async with open_mjpeg(served, "/eye/video") as viewer:
        assert viewer.status == 200
        assert viewer.headers["content-type"] == multipart.CONTENT_TYPE
        assert viewer.headers["transfer-encoding"] == "chunked"
        assert viewer.headers["cache-control"] == "no-cache, no-store, no-transform"
        assert viewer.headers["x-accel-buffering"] == "no"
        await viewers(served, 1)
        for n in range(4):
            frame = jpeg(n)
            eye.video.publish(frame)
            part = await viewer.next_part()
            assert part.body == frame and is_jpeg(part.body)
            assert part.headers == {"content-type": "image/jpeg",
                                    "content-length": str(len(frame))}
            encoded = multipart.part("image/jpeg", frame)
            assert b"\r\n%x\r\n%b\r\n" % (len(encoded), encoded) in viewer.wire
        assert not viewer.ended


async def test_a_stream_of_another_media_type_says_so_in_each_part(
        served: InMemoryServer) -> None:
    async with open_mjpeg(served, "/eye/thermal") as viewer:
        await viewers(served, 1)
        eye_of(served).thermal.publish(b"\x89PNG\r\n\x1a\nnot really")
        part = await viewer.next_part()
        assert part.headers["content-type"] == "image/png"
        assert part.body == b"\x89PNG\r\n\x1a\nnot really"


async def test_a_new_viewer_is_sent_the_newest_frame_at_once(served: InMemoryServer) -> None:
    eye = eye_of(served)
    assert not eye.video.watched
    eye.video.publish(jpeg(1))  # nobody watches: kept as the newest, sent nowhere
    newest = jpeg(2)
    eye.video.publish(newest)
    frames = served.server._dispatcher.observers.get("eye", STREAM, "video")  # type: ignore[union-attr]
    assert frames.latest is not None and frames.latest.frame is newest  # no copy
    async with open_mjpeg(served, "/eye/video") as first:
        assert (await first.next_part()).body == newest  # nothing more was published
        assert eye.video.watched
        async with open_mjpeg(served, "/eye/video") as second:
            assert (await second.next_part()).body == newest
            eye.video.publish(jpeg(3))
            assert (await first.next_part()).body == jpeg(3)
            assert (await second.next_part()).body == jpeg(3)
    await viewers(served, 0)
    assert not eye.video.watched


async def test_a_stream_that_never_published_sends_nothing_until_it_does(
        served: InMemoryServer) -> None:
    async with open_mjpeg(served, "/eye/video") as viewer:
        await viewers(served, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert viewer.parts == []
        assert viewer.wire.endswith(b"\r\n\r\n")  # the head, and nothing after it
        eye_of(served).video.publish(jpeg(7))
        assert (await viewer.next_part()).body == jpeg(7)


async def test_a_quiet_image_stream_writes_no_heartbeat(
        autojump_clock: trio.testing.MockClock) -> None:
    """An SSE stream writes a comment every ``stream_heartbeat`` quiet seconds; in a
    multipart body a comment would corrupt it, so an image stream writes nothing."""
    async with serving(http=HttpLimits(stream_heartbeat=5.0)) as (served, eye):
        async with open_mjpeg(served, "/eye/video", timeout=60) as viewer:
            await viewers(served, 1)
            head = bytes(viewer.wire)
            await trio.sleep(20)  # quiet time on the mock clock: four heartbeats' worth
            eye.video.publish(jpeg(1))
            assert (await viewer.next_part()).body == jpeg(1)
            encoded = multipart.part("image/jpeg", jpeg(1))
            assert bytes(viewer.wire) == head + b"%x\r\n%b\r\n" % (len(encoded), encoded)


async def test_a_slow_viewer_gets_the_newest_frame_while_a_fast_one_gets_every_frame(
        served: InMemoryServer) -> None:
    """A lockstep stream has no buffer: the slow viewer's write waits until it reads.
    Frames published meanwhile replace each other in its Outbox; the fast viewer, and
    the publisher, never wait for it."""
    eye = eye_of(served)
    frames = [jpeg(n) for n in range(10)]
    async with open_mjpeg(served, "/eye/video") as fast, open_mjpeg(
            served, "/eye/video", stream_pair=trio.testing.lockstep_stream_pair) as slow:
        await viewers(served, 2)
        eye.video.publish(frames[0])
        assert (await fast.next_part()).body == frames[0]
        await trio.testing.wait_all_tasks_blocked()  # the slow relay waits in send_all
        for frame in frames[1:]:
            eye.video.publish(frame)
            assert (await fast.next_part()).body == frame
        assert [p.body for p in fast.parts] == frames
        # Now the slow viewer reads: the frame it was being sent, then the newest.
        assert (await slow.next_part()).body == frames[0]
        assert (await slow.next_part()).body == frames[-1]
        # Nothing replaced comes after: the next part is the next frame published.
        eye.video.publish(last := jpeg(99))
        assert (await slow.next_part()).body == last
        assert [p.body for p in slow.parts] == [frames[0], frames[-1], last]


async def test_a_stalled_viewer_is_dropped_after_the_write_timeout_and_others_go_on(
        autojump_clock: trio.testing.MockClock) -> None:
    async with serving(http=HttpLimits(stream_write_timeout=2.0)) as (served, eye):
        async with open_mjpeg(served, "/eye/video", timeout=60) as reader, open_mjpeg(
                served, "/eye/video", stream_pair=trio.testing.lockstep_stream_pair,
                timeout=60):
            await viewers(served, 2)
            eye.video.publish(jpeg(0))
            assert (await reader.next_part()).body == jpeg(0)
            await trio.testing.wait_all_tasks_blocked()  # the stalled one's write is stuck
            stalled_at = trio.current_time()
            n = 0
            while observer_count(served.server) == 2:
                n += 1
                await trio.sleep(0.1)  # the camera's pace, on the mock clock
                eye.video.publish(jpeg(n))
                assert (await reader.next_part()).body == jpeg(n)
                assert n < 100, "the stalled viewer was never dropped"
            assert 2.0 <= trio.current_time() - stalled_at <= 2.2
            for _ in range(5):  # the reader goes on as before
                n += 1
                eye.video.publish(jpeg(n))
                assert (await reader.next_part()).body == jpeg(n)
            assert [p.body for p in reader.parts] == [jpeg(i) for i in range(n + 1)]


@pytest.mark.parametrize("stream_pair", [trio.testing.memory_stream_pair,
                                         trio.testing.lockstep_stream_pair])
async def test_a_viewer_that_disconnects_leaves_no_observer(
        served: InMemoryServer, stream_pair: Any) -> None:
    eye = eye_of(served)
    async with open_mjpeg(served, "/eye/video", stream_pair=stream_pair) as viewer:
        await viewers(served, 1)
        eye.video.publish(jpeg(1))
        await viewer.next_part()
        eye.video.publish(jpeg(2))  # pending, or being written, when it goes
        await trio.testing.wait_all_tasks_blocked()
    await viewers(served, 0)
    await wait_until(lambda: served.open_connections == 0)
    assert not eye.video.watched
    eye.video.publish(jpeg(3))  # nobody watches: nothing is queued anywhere
    assert observer_count(served.server) == 0


# ------------------------------------------------------------------ the request


async def test_head_of_a_stream_is_its_head_alone_and_watches_nothing(
        served: InMemoryServer) -> None:
    async with open_mjpeg(served, "/eye/video", method="HEAD") as viewer:
        assert viewer.status == 200
        assert viewer.headers["content-type"] == multipart.CONTENT_TYPE
        assert viewer.body == b""
        await trio.testing.wait_all_tasks_blocked()
        assert observer_count(served.server) == 0
        assert not eye_of(served).video.watched


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/eye/nope", 404),
    ("GET", "/nobody/video", 404),
    ("POST", "/eye/video", 405),
    ("PUT", "/eye/video", 405),
])
async def test_what_is_no_stream_or_no_way_to_view_one_is_refused(
        served: InMemoryServer, method: str, path: str, status: int) -> None:
    async with served.http() as http:
        response = await http.request(method, path, json=1 if method != "GET" else None)
    assert response.status == status
    assert response.headers["content-type"] == "application/problem+json"
    assert observer_count(served.server) == 0
    if status == 405:
        assert response.headers["allow"] == "GET, HEAD"


async def test_an_event_stream_of_a_frame_stream_is_406(served: InMemoryServer) -> None:
    async with served.http() as http:
        response = await http.get("/eye/video", headers={"accept": "text/event-stream"})
    assert response.status == 406


async def test_the_td_links_each_stream_and_stays_valid(
        served: InMemoryServer, td_validator: jsonschema.Draft7Validator) -> None:
    async with served.http() as http:
        td = (await http.get("/eye/")).json()
    td_validator.validate(td)
    assert td["links"] == [
        {"rel": "alternate", "href": "eye/video", "type": "multipart/x-mixed-replace"},
        {"rel": "alternate", "href": "eye/thermal", "type": "multipart/x-mixed-replace"}]
    assert "video" not in td["properties"] and "video" not in td["events"]
    async with open_mjpeg(served, "/" + td["links"][0]["href"]) as viewer:
        assert viewer.is_stream


async def test_a_protected_stream_takes_its_token_from_the_query_as_an_img_must() -> None:
    """``<img src>`` can send no header: a frame stream, like an event stream, takes
    ``?access_token=``; other resources still refuse a token in the query."""
    token = "t" * 32
    async with serving(access=AccessPolicy(tokens=[token])) as (served, eye):
        eye.video.publish(jpeg(1))
        async with open_mjpeg(served, f"/eye/video?access_token={token}") as viewer:
            assert viewer.is_stream
            assert (await viewer.next_part()).body == jpeg(1)
        async with open_mjpeg(served, "/eye/video?access_token=wrong" + "x" * 30) as refused:
            assert refused.status == 401
        async with served.http() as client:
            response = await client.get(f"/eye/level?access_token={token}")
            assert response.status == 401
            assert "Authorization header" in response.json()["detail"]
