"""Blob outputs through ``trio_things.client``: the async client in memory, the blocking
``ThingClient`` and the ``trio-things invoke --output`` command over loopback."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest
import trio

import trio_things as tt
import trio_things.client as ttc
from tests.helpers.servers import serve_on_loopback
from trio_things.client.errors import ConnectionLost
from trio_things.config import ServerConfig
from trio_things.server import ThingServer
from trio_things.testing import InMemoryServer, serve_in_memory

DATA = bytes(range(256)) * 2000  # 512000 bytes: several pieces
FAST = ttc.ClientOptions(timeout=5.0, poll_interval=0.01)


class Camera(tt.Thing):
    image: tt.PNG | None = tt.property(default=None)
    label: str = tt.property(default="camera")

    @tt.action
    def snap(self, size: int = len(DATA)) -> tt.PNG:
        return tt.PNG(DATA[:size])

    @tt.action
    async def keep(self) -> tt.PNG:
        self.image = tt.PNG(DATA[:10])
        return self.image

    @tt.action
    def measure(self, image: tt.PNG) -> int:
        return image.size

    @tt.action
    def count(self) -> int:
        return 3


@pytest.fixture
async def served() -> AsyncIterator[InMemoryServer]:
    async with serve_in_memory(Camera(), name="camera",
                               config=ServerConfig(invocation_retention=60)) as served:
        yield served


@pytest.mark.parametrize("websocket", [True, False])
async def test_a_blob_output_is_a_remote_blob(served: InMemoryServer, tmp_path: Path,
                                              websocket: bool) -> None:
    with trio.fail_after(30):
        async with served.connect("camera", options=FAST, websocket=websocket) as camera:
            invocation = await camera.invoke("snap")
            blob = await invocation.result()
            assert isinstance(blob, ttc.RemoteBlob)
            assert blob.media_type == "image/png"
            assert blob.href.startswith("http://testserver/blob/")
            assert isinstance(invocation.status.output, dict)  # the status keeps the link
            assert blob.size is None  # not known before a download
            assert await blob.read() == DATA
            assert blob.size == len(DATA)
            assert await invocation.result(ttc.RemoteBlob) is not None
            target = tmp_path / "image.png"
            assert await blob.save(target) == len(DATA)
            assert target.read_bytes() == DATA
            assert os.listdir(tmp_path) == ["image.png"]  # no part file left
            pieces = [piece async for piece in blob.chunks()]
            assert len(pieces) > 1 and b"".join(pieces) == DATA
            # Sent back as an input, it is its link, which the server reads as the blob.
            assert await (await camera.invoke("measure", image=blob)).result() == len(DATA)


async def test_stopping_early_and_reading_again(served: InMemoryServer) -> None:
    with trio.fail_after(30):
        async with served.connect("camera", options=FAST) as camera:
            blob = await (await camera.invoke("snap")).result()
            async with contextlib.aclosing(blob.chunks()) as pieces:
                async for first in pieces:
                    assert DATA.startswith(first)
                    break
            assert await blob.read() == DATA  # the client goes on, on a new connection


async def test_other_outputs_and_links(served: InMemoryServer) -> None:
    with trio.fail_after(30):
        async with served.connect("camera", options=FAST) as camera:
            counted = await camera.invoke("count")
            assert await counted.result() == 3
            with pytest.raises(ttc.InvalidValue, match="no blob link"):
                await counted.result(ttc.RemoteBlob)
            held = await (await camera.invoke("keep")).result()
            link = await camera.read("image")
            assert link == {"href": held.href.removeprefix("http://testserver"),
                            "media_type": "image/png"}
            image = await camera.read("image", ttc.RemoteBlob)
            assert (image.href, await image.read()) == (held.href, DATA[:10])
            assert await camera.blob(link).read() == DATA[:10]
            with pytest.raises(ttc.InvalidValue):
                await camera.read("label", ttc.RemoteBlob)
            with pytest.raises(ttc.InvalidValue):
                camera.blob({"href": 3})


async def test_a_blob_the_server_forgot_is_not_found(autojump_clock: object) -> None:
    config = ServerConfig(invocation_retention=10)
    with trio.fail_after(60):
        async with serve_in_memory(Camera(), name="camera", config=config) as served, \
                served.connect("camera", options=FAST, websocket=False) as camera:
            blob = await (await camera.invoke("snap")).result()
            await trio.sleep(11)
            await (await camera.invoke("count")).result()  # the server forgets the first
            gc.collect()
            with pytest.raises(ttc.NotFound):
                await blob.read()


class _BrokenBlob(ttc.RemoteBlob):
    """A download that breaks off after its first piece."""

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        yield b"first piece"
        raise ConnectionLost("the connection broke")


async def test_an_interrupted_save_leaves_the_file_as_it_was(
        served: InMemoryServer, tmp_path: Path) -> None:
    target = tmp_path / "image.png"
    target.write_bytes(b"the previous image")
    with trio.fail_after(30):
        async with served.connect("camera", options=FAST) as camera:
            blob = await (await camera.invoke("snap")).result()
            broken = _BrokenBlob(href=blob.href, media_type=blob.media_type,
                                 http=camera._http)
            with pytest.raises(ConnectionLost):
                await broken.save(target)
            gone = camera.blob({"href": "/blob/" + "0" * 32, "media_type": "image/png"})
            with pytest.raises(ttc.NotFound):
                await gone.save(target)
    assert target.read_bytes() == b"the previous image"
    assert os.listdir(tmp_path) == ["image.png"]


# ---------------------------------------------------------------------- over loopback


@pytest.fixture
async def loopback() -> AsyncIterator[str]:
    """The camera on 127.0.0.1 and a free port; yields its TD's URL."""
    server = ThingServer(ServerConfig(port=0))
    server.add_thing("camera", Camera())
    async with serve_on_loopback(server) as served:
        yield f"http://127.0.0.1:{served.port}/camera/"


def _blocking_session(url: str, folder: Path) -> None:
    """What a script does with the blocking client (run in a worker thread)."""
    with ttc.ThingClient(url, options=FAST) as camera:
        blob = camera.snap(size=300_000)
        assert isinstance(blob, ttc.BlockingBlob)
        assert (blob.media_type, blob.size) == ("image/png", None)
        assert blob.read(timeout=10) == DATA[:300_000]
        assert blob.size == 300_000
        assert blob.save(folder / "snap.png") == 300_000
        assert (folder / "snap.png").read_bytes() == DATA[:300_000]
        assert b"".join(blob.chunks()) == DATA[:300_000]
        for first in blob.chunks():  # left early: the download is closed
            assert DATA.startswith(first)
            break
        assert camera.measure(image=blob) == 300_000
        invocation = camera.invoke("keep")
        kept = invocation.result(timeout=10)
        assert isinstance(kept, ttc.BlockingBlob)
        image = camera.read("image", ttc.BlockingBlob)
        assert image.read() == DATA[:10] == camera.blob(camera.image).read()


async def test_the_blocking_client(loopback: str, tmp_path: Path) -> None:
    with trio.fail_after(60):
        await trio.to_thread.run_sync(_blocking_session, loopback, tmp_path)


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "TRIO_THINGS_TOKEN"}
    with trio.fail_after(30):
        return await trio.run_process([sys.executable, "-m", "trio_things.cli", *args],
                                      capture_stdout=True, capture_stderr=True, check=False,
                                      env=env, stdin=subprocess.DEVNULL)


async def test_invoke_saves_a_blob_with_output(loopback: str, tmp_path: Path) -> None:
    target = tmp_path / "snap.png"
    saved = await cli("invoke", loopback, "snap", "size=1000", "--output", str(target))
    assert saved.returncode == 0, saved.stderr
    assert target.read_bytes() == DATA[:1000]
    assert f"saved 1000 bytes of image/png to {target}" in saved.stderr.decode()
    # Without --output: the link, absolute, and a hint.
    shown = await cli("invoke", loopback, "snap", "size=10")
    assert shown.returncode == 0, shown.stderr
    last = shown.stdout.decode().splitlines()[-1]
    assert last.startswith('snap = {"href": "http://127.0.0.1:')
    assert '"media_type": "image/png"' in last
    assert "--output FILE" in shown.stderr.decode()
    # Any other output goes to the file as JSON; a file that cannot be written is said so.
    counted = await cli("invoke", loopback, "count", "--output", str(tmp_path / "n.json"))
    assert counted.returncode == 0 and (tmp_path / "n.json").read_text() == "3\n"
    failed = await cli("invoke", loopback, "snap", "--output", str(tmp_path / "no" / "x"))
    assert failed.returncode == 2
    assert "cannot save the output" in failed.stderr.decode()
