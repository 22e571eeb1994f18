"""LabThings-FastAPI's own client downloads our blob outputs, over real loopback.

``labthings_fastapi.client.ThingClient`` (0.3.0, the ``test`` extra) invokes an action,
polls the invocation, and turns an output with ``href`` and ``media_type`` into a
``Blob`` whose ``content`` GETs the href; it is synchronous (httpx), so it runs in a
worker thread while the server runs in this test's ``trio.run``. The same output is
downloaded through ``trio_things.client`` and over plain HTTP with ``Range``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from labthings_fastapi.client import ThingClient as LabThingsClient

import trio_things as tt
import trio_things.client as ttc
from tests.helpers.servers import serve_on_loopback
from trio_things.config import ServerConfig
from trio_things.server import ThingServer
from trio_things.testing import HttpConnection

DATA = bytes(range(256)) * 4000  # 1024000 bytes: several pieces on the wire


class Microscope(tt.Thing):
    """Takes pictures."""

    exposure: float = tt.property(default=0.01)

    @tt.action
    def capture(self, scale: int = 1) -> tt.JPEG:
        """A picture, held only by its invocation."""
        return tt.JPEG((DATA * scale)[:len(DATA)])


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = ThingServer(ServerConfig(port=0))
    server.add_thing("microscope", Microscope())
    async with serve_on_loopback(server) as served:
        yield served.port


def labthings_capture(url: str, folder: Path) -> tuple[str, bytes, bytes]:
    client = LabThingsClient.from_url(url)
    blob = client.capture(scale=1)
    blob.save(str(folder / "capture.jpg"))
    return blob.media_type, blob.content, (folder / "capture.jpg").read_bytes()


async def test_labthings_client_downloads_a_blob_output(port: int, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{port}/microscope/"
    with trio.fail_after(60):
        media_type, content, saved = await trio.to_thread.run_sync(
            labthings_capture, url, tmp_path)
    assert media_type == "image/jpeg"
    assert content == DATA
    assert saved == DATA


async def test_our_client_and_plain_http_with_range(port: int) -> None:
    url = f"http://127.0.0.1:{port}/microscope/"
    with trio.fail_after(60):
        async with ttc.connect(url, options=ttc.ClientOptions(poll_interval=0.01)) as scope:
            blob = await (await scope.invoke("capture")).result()
            assert isinstance(blob, ttc.RemoteBlob)
            assert await blob.read() == DATA
            http = HttpConnection(await trio.open_tcp_stream("127.0.0.1", port),
                                  host=f"127.0.0.1:{port}")
            async with http.stream:
                ranged = await http.get(blob.href.removeprefix(f"http://127.0.0.1:{port}"),
                                        headers={"range": "bytes=1000-1999"})
                assert ranged.status == 206
                assert ranged.headers["content-range"] == f"bytes 1000-1999/{len(DATA)}"
                assert ranged.headers["content-type"] == "image/jpeg"
                assert ranged.body == DATA[1000:2000]
                whole = await http.get(blob.href.removeprefix(f"http://127.0.0.1:{port}"))
                assert (whole.status, whole.body) == (200, DATA)
