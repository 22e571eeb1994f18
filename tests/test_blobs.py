"""Binary outputs (blobs) end to end, in memory: an action returns a ``tt.Blob``, its
invocation's output is the link, ``GET`` of the link (or of the invocation's output)
answers the bytes, whole or a range; the invocation holds the blob as long as it is
kept; the TD says the media type; blobs beyond the memory budget are served from files.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trio
import trio.testing

import trio_things as tt
from trio_things.config import ConfigError, ServerConfig, load_config
from trio_things.protocol.access import AccessPolicy
from trio_things.testing import HttpConnection, InMemoryServer, serve_in_memory

DATA = bytes(range(256)) * 1000  # 256000 bytes


class TIFF(tt.Blob, media_type="image/tiff"):
    """A class of blob declared with its media type."""

    __slots__ = ()


class Camera(tt.Thing):
    """Makes images."""

    image: tt.PNG | None = tt.property(default=None)
    """The last image kept."""

    @tt.action
    def snap(self, size: int = len(DATA)) -> tt.PNG:
        """An image that only its invocation holds."""
        return tt.PNG((DATA * (size // len(DATA) + 1))[:size])

    @tt.action
    async def keep(self) -> tt.PNG:
        """An image the Thing holds too, in a property."""
        self.image = tt.PNG(DATA[:10])
        return self.image

    @tt.action
    def any_kind(self) -> tt.Blob:
        return tt.Blob(b"%PDF-1.7", media_type="application/pdf")

    @tt.action
    def scan(self) -> TIFF:
        return TIFF(b"II*\x00")

    @tt.action
    def several(self) -> list[tt.Blob]:
        return [tt.Blob(b"one", media_type="text/plain"), tt.JPEG(b"two")]

    @tt.action
    def wrong(self) -> tt.PNG:
        return tt.JPEG(b"not a png")  # type: ignore[return-value]

    @tt.action
    def measure(self, image: tt.PNG) -> int:
        """Takes a blob back, by its link."""
        return image.size


@pytest.fixture
async def served() -> AsyncIterator[InMemoryServer]:
    config = ServerConfig(invocation_retention=10)
    async with serve_in_memory(Camera(), name="camera", config=config) as served:
        yield served


@pytest.fixture
async def http(served: InMemoryServer) -> AsyncIterator[HttpConnection]:
    async with served.http() as http:
        yield http


async def completed(http: HttpConnection, action: str, **input: Any) -> dict[str, Any]:
    """Invoke as LabThings' client does (201, then poll) and return the invocation."""
    response = await http.post(f"/camera/{action}", input)
    assert response.status == 201
    invocation: dict[str, Any] = response.json()
    with trio.fail_after(10):
        while invocation["status"] in ("pending", "running"):
            await trio.sleep(0.01)
            invocation = (await http.get(invocation["href"])).json()
    assert invocation["status"] == "completed", invocation["error"]
    return invocation


async def test_the_td_says_what_a_blob_output_is(
        http: HttpConnection, td_validator: jsonschema.Draft7Validator) -> None:
    td = (await http.get("/camera/")).json()
    td_validator.validate(td)
    actions = td["actions"]
    png = actions["snap"]["output"]
    assert png["type"] == "object" and png["required"] == ["href", "media_type"]
    assert png["properties"]["media_type"] == {"type": "string", "enum": ["image/png"]}
    assert actions["scan"]["output"]["properties"]["media_type"]["enum"] == ["image/tiff"]
    assert "enum" not in actions["any_kind"]["output"]["properties"]["media_type"]
    assert td["properties"]["image"]["oneOf"][0]["title"] == "PNG"


async def test_an_output_blob_is_a_link_and_its_bytes_are_served(http: HttpConnection) -> None:
    invocation = await completed(http, "snap")
    link = invocation["output"]
    assert link == {"href": link["href"], "media_type": "image/png"}
    assert link["href"].startswith("/blob/")
    gc.collect()  # only the invocation holds the blob
    response = await http.get(link["href"])
    assert response.status == 200
    assert response.body == DATA
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["x-content-type-options"] == "nosniff"
    # LabThings serves the bytes at the invocation's output too.
    output = await http.get(invocation["href"] + "/output")
    assert (output.status, output.headers["content-type"], output.body) == (
        200, "image/png", DATA)


async def test_invoke_and_wait_answers_the_link(http: HttpConnection) -> None:
    response = await http.post("/camera/actions/snap", {"size": 5})
    assert response.status == 200
    link = response.json()
    assert link["media_type"] == "image/png"
    assert (await http.get(link["href"])).body == DATA[:5]


@pytest.mark.parametrize(("action", "media_type", "data"), [
    ("any_kind", "application/pdf", b"%PDF-1.7"),
    ("scan", "image/tiff", b"II*\x00"),
])
async def test_any_blob_class(http: HttpConnection, action: str, media_type: str,
                              data: bytes) -> None:
    link = (await completed(http, action))["output"]
    assert link["media_type"] == media_type
    response = await http.get(link["href"])
    assert (response.headers["content-type"], response.body) == (media_type, data)


async def test_blobs_inside_an_output_live_as_long_as_the_invocation(
        http: HttpConnection) -> None:
    links = (await completed(http, "several"))["output"]
    gc.collect()
    assert [(await http.get(link["href"])).body for link in links] == [b"one", b"two"]


async def test_an_output_of_the_wrong_media_type_fails_the_invocation(
        http: HttpConnection) -> None:
    response = await http.post("/camera/wrong", {})
    invocation = response.json()
    with trio.fail_after(10):
        while invocation["status"] in ("pending", "running"):
            await trio.sleep(0.01)
            invocation = (await http.get(invocation["href"])).json()
    assert invocation["status"] == "failed"
    assert "image/jpeg" in invocation["error"]["detail"]


async def test_a_blob_lives_as_long_as_its_invocation_is_kept(
        http: HttpConnection, autojump_clock: trio.testing.MockClock) -> None:
    invocation = await completed(http, "snap")
    href = invocation["output"]["href"]
    await trio.sleep(9)
    gc.collect()
    assert (await http.get(href)).status == 200
    await trio.sleep(2)  # past the retention of 10 s
    assert (await http.get(invocation["href"])).status == 404  # forgotten
    gc.collect()
    gone = await http.get(href)
    assert gone.status == 404
    assert gone.headers["content-type"] == "application/problem+json"
    assert "retention" in gone.json()["detail"]
    assert (await http.get(invocation["href"] + "/output")).status == 404


async def test_a_blob_the_thing_holds_outlives_its_invocation(
        http: HttpConnection, autojump_clock: trio.testing.MockClock) -> None:
    invocation = await completed(http, "keep")
    await trio.sleep(11)
    assert (await http.get(invocation["href"])).status == 404
    gc.collect()
    assert (await http.get(invocation["output"]["href"])).body == DATA[:10]


async def test_a_blob_property_reads_as_its_link_and_takes_one_back(
        http: HttpConnection) -> None:
    assert (await http.get("/camera/image")).json() is None
    held = (await completed(http, "keep"))["output"]
    assert (await http.get("/camera/image")).json() == held
    cleared = await http.request("PUT", "/camera/image", body=b"null",
                                 headers={"content-type": "application/json"})
    assert cleared.status == 204
    assert (await http.put("/camera/image", held)).status == 204  # a link back: the blob
    assert (await http.get("/camera/image")).json() == held
    # A JPEG is no PNG; an unknown link is no blob.
    jpeg = (await completed(http, "several"))["output"][1]
    refused = await http.put("/camera/image", jpeg)
    assert refused.status == 422 and "image/jpeg" in refused.json()["detail"]
    unknown = await http.put("/camera/image", {"href": "/blob/" + "0" * 32,
                                               "media_type": "image/png"})
    assert unknown.status == 422


async def test_a_link_in_labthings_shape_is_taken_as_an_input(http: HttpConnection) -> None:
    link = (await completed(http, "snap", size=7))["output"]
    labthings = link | {"rel": "output", "description": "a file"}
    measured = await completed(http, "measure", image=labthings)
    assert measured["output"] == 7


@pytest.mark.parametrize(("range_", "status", "content_range", "body"), [
    ("bytes=0-9", 206, "bytes 0-9/256000", DATA[:10]),
    ("bytes=255990-", 206, "bytes 255990-255999/256000", DATA[-10:]),
    ("bytes=-3", 206, "bytes 255997-255999/256000", DATA[-3:]),
    ("bytes=0-1,5-6", 200, None, DATA),  # several: the whole
    ("lines=1-2", 200, None, DATA),
])
async def test_ranges(http: HttpConnection, range_: str, status: int,
                      content_range: str | None, body: bytes) -> None:
    href = (await completed(http, "snap"))["output"]["href"]
    response = await http.get(href, headers={"range": range_})
    assert response.status == status
    assert response.headers.get("content-range") == content_range
    assert response.headers["content-length"] == str(len(body))
    assert response.body == body


async def test_a_range_past_the_end_is_416(http: HttpConnection) -> None:
    invocation = await completed(http, "snap")
    for url in (invocation["output"]["href"], invocation["href"] + "/output"):
        response = await http.get(url, headers={"range": "bytes=256000-"})
        assert response.status == 416
        assert response.headers["content-range"] == "bytes */256000"
        assert response.json()["title"] == "Range Not Satisfiable"


async def test_if_range_and_head(http: HttpConnection) -> None:
    href = (await completed(http, "snap"))["output"]["href"]
    head = await http.request("HEAD", href, headers={"range": "bytes=0-0"})
    assert (head.status, head.headers["content-length"], head.body) == (200, "256000", b"")
    etag = head.headers["etag"]
    ranged = await http.get(href, headers={"range": "bytes=0-0", "if-range": etag})
    assert (ranged.status, ranged.body) == (206, DATA[:1])
    changed = await http.get(href, headers={"range": "bytes=0-0", "if-range": '"other"'})
    assert (changed.status, changed.body) == (200, DATA)


async def test_only_reads(http: HttpConnection) -> None:
    href = (await completed(http, "snap"))["output"]["href"]
    for method in ("POST", "PUT", "DELETE"):
        response = await http.request(method, href)
        assert response.status == 405
        assert response.headers["allow"] == "GET, HEAD"
    assert (await http.get("/blob/nothing-here")).status == 404


async def test_blobs_need_a_token_when_the_server_does() -> None:
    config = ServerConfig(access=AccessPolicy(tokens=["full-access-token"],
                                              readonly_tokens=["read-only-token"]))
    with trio.fail_after(30):
        async with serve_in_memory(Camera(), name="camera", config=config) as served, \
                served.http() as http:
            full = {"authorization": "Bearer full-access-token"}
            link = (await http.post("/camera/actions/snap", {"size": 3}, headers=full)).json()
            assert (await http.get(link["href"])).status == 401
            viewer = await http.get(link["href"],
                                    headers={"authorization": "Bearer read-only-token"})
            assert (viewer.status, viewer.body) == (200, DATA[:3])


def files_in(folder: Path) -> int:
    return len(list(folder.iterdir()))


async def test_beyond_the_budget_blobs_are_served_from_files(tmp_path: Path) -> None:
    config = ServerConfig(blob_memory_bytes=250_000, blob_spill_bytes=200_000,
                          blob_folder=tmp_path)
    camera = Camera()
    with trio.fail_after(30):
        async with serve_in_memory(camera, name="camera", config=config) as served, \
                served.http() as http:
            large = (await completed(http, "snap", size=250_000))["output"]["href"]
            assert files_in(tmp_path) == 1  # over blob_spill_bytes: at once
            smaller = [(await completed(http, "snap", size=100_000))["output"]["href"]
                       for _ in range(4)]
            assert files_in(tmp_path) == 3  # the two oldest of the four
            store = served.server._dispatcher._invocations.blobs  # type: ignore[union-attr]
            assert store.memory_bytes == 200_000
            for href, size in [(large, 250_000)] + [(h, 100_000) for h in smaller]:
                whole = await http.get(href)
                assert whole.body == (DATA * 2)[:size]
                part = await http.get(href, headers={"range": "bytes=99990-100009"})
                assert part.body == (DATA * 2)[99990:min(100010, size)]


def test_the_blob_settings_are_read_from_toml(tmp_path: Path) -> None:
    (tmp_path / "blobs").mkdir()
    path = tmp_path / "things.toml"
    path.write_text('[server]\nblob_memory_bytes = 1000\nblob_spill_bytes = 10\n'
                    'blob_folder = "blobs"\n')
    config = load_config(path)
    assert (config.blob_memory_bytes, config.blob_spill_bytes, config.blob_folder) == (
        1000, 10, tmp_path / "blobs")  # relative to the file
    assert ServerConfig().blob_folder is None
    path.write_text('[server]\nblob_folder = "nowhere"\n')
    with pytest.raises(ConfigError, match="not an existing folder"):
        load_config(path)
    path.write_text('[server]\nblob_memory_bytes = -1\n')
    with pytest.raises(ConfigError, match="blob_memory_bytes"):
        load_config(path)
