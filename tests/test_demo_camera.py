"""The demo camera (``trio_things/demo.py``): frames drawn and encoded only while watched,
at up to 30 per second, real 640x480 JPEGs; ``exposure`` brightens the picture;
``capture`` answers a PNG; its TD. Over in-memory streams, on the mock clock."""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import jsonschema
import trio
import trio.testing
from PIL import Image, ImageStat

from tests.helpers.mjpeg import is_jpeg, open_mjpeg
from tests.helpers.servers import observer_count
from tests.helpers.sse import wait_until
from trio_things.config import DEMO_THINGS, ServerConfig
from trio_things.demo import Camera
from trio_things.model.blob import Blob, blob_id_from_href
from trio_things.server import ThingServer
from trio_things.testing import InMemoryServer, in_memory

TIMEOUT = 60


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[InMemoryServer, Camera]]:
    # The camera's exposure is a setting: kept in tmp_path, not in the current folder.
    server = ThingServer(ServerConfig(settings_folder=tmp_path))
    camera = Camera()
    server.add_thing("camera", camera)
    with trio.fail_after(TIMEOUT):
        async with server.running(), in_memory(server) as served:
            yield served, camera


def brightness(image_bytes: bytes) -> float:
    return float(sum(ImageStat.Stat(Image.open(io.BytesIO(image_bytes)).convert("L")).mean))


async def test_the_camera_is_a_demo_thing() -> None:
    assert ("camera", "trio_things.demo:Camera") in {
        (thing.name, thing.class_path) for thing in DEMO_THINGS}


def real_time(clock: trio.testing.MockClock) -> None:
    """Let ``clock`` run as the real one: while work runs in worker threads (encoding
    frames, loading settings), an autojump clock would jump to the next deadline."""
    clock.autojump_threshold, clock.rate = math.inf, 1.0


def autojump(clock: trio.testing.MockClock) -> None:
    """Let ``clock`` jump to the next deadline whenever every task waits."""
    clock.autojump_threshold, clock.rate = 0.0, 0.0


async def test_nothing_is_encoded_while_nobody_watches_and_frames_flow_while_one_does(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    real_time(autojump_clock)
    async with serving(tmp_path) as (served, camera):
        autojump(autojump_clock)
        await trio.sleep(10)  # ten seconds of the camera's loop, unwatched
        assert camera.frames_encoded == 0
        assert not camera.video.watched
        real_time(autojump_clock)
        async with open_mjpeg(served, "/camera/video", timeout=TIMEOUT) as viewer:
            first = await viewer.next_part()
            assert first.headers["content-type"] == "image/jpeg"
            assert is_jpeg(first.body)
            with Image.open(io.BytesIO(first.body)) as image:
                assert (image.format, image.size) == ("JPEG", (640, 480))
            started, encoded = trio.current_time(), camera.frames_encoded
            for _ in range(20):
                await viewer.next_part()
            # At most 30 frames a second, on the camera's clock.
            elapsed = trio.current_time() - started
            assert camera.frames_encoded - encoded <= 30 * elapsed + 1
            assert len({part.body for part in viewer.parts}) > 1  # the picture moves
        await wait_until(lambda: observer_count(served.server) == 0)
        assert not camera.video.watched
        left_at = camera.frames_encoded
        autojump(autojump_clock)
        await trio.sleep(10)
        assert camera.frames_encoded <= left_at + 1  # one may have been under way
        real_time(autojump_clock)


async def test_exposure_brightens_the_picture_and_capture_answers_a_png(
        tmp_path: Path) -> None:
    async with serving(tmp_path) as (served, _), served.http() as http:
        pictures = []
        for exposure in (2.0, 10.0, 40.0):
            assert (await http.put("/camera/exposure", exposure)).status == 204
            response = await http.post("/camera/actions/capture", {})
            assert response.status == 200, response.text
            link = response.json()
            assert link["media_type"] == "image/png"
            blob_id = blob_id_from_href(link["href"])
            assert blob_id is not None
            blob = Blob.lookup(blob_id)
            assert blob is not None and blob.content_type == "image/png"
            data = blob.read()
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
            with Image.open(io.BytesIO(data)) as image:
                assert (image.format, image.size) == ("PNG", (640, 480))
            pictures.append(data)
        dark, neutral, bright = (brightness(p) for p in pictures)
        assert dark < neutral < bright
        refused = await http.put("/camera/exposure", 1000.0)
        assert refused.status == 422


async def test_the_camera_s_td_links_its_video_and_is_valid(
        tmp_path: Path, td_validator: jsonschema.Draft7Validator) -> None:
    async with serving(tmp_path) as (served, _), served.http() as http:
        td = (await http.get("/camera/")).json()
    td_validator.validate(td)
    assert td["links"] == [{"rel": "alternate", "href": "camera/video",
                            "type": "multipart/x-mixed-replace"}]
    exposure = td["properties"]["exposure"]
    assert (exposure["minimum"], exposure["maximum"], exposure["unit"]) == (
        0.5, 100.0, "millisecond")
    assert td["actions"]["capture"]["output"]["properties"]["media_type"]["enum"] == [
        "image/png"]
