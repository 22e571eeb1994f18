"""``/blob/{id}``: which paths are a blob's, decided without a server."""

from __future__ import annotations

import pytest

from trio_things.errors import MethodNotAllowed
from trio_things.protocol.routes import blob_route


@pytest.mark.parametrize(("path", "blob_id"), [
    ("/blob/0c6c4ad2", "0c6c4ad2"),
    ("/blob/0c6c4ad2/", "0c6c4ad2"),  # one trailing slash is the same resource
    ("/blob/a%20b", "a b"),
    ("/blob", None),
    ("/blob/", None),
    ("/blob/a/b", None),
    ("/camera/blob/a", None),
    ("/blobs/a", None),
])
def test_blob_paths(path: str, blob_id: str | None) -> None:
    assert blob_route("GET", path) == blob_id
    assert blob_route("HEAD", path) == blob_id


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_a_blob_is_read_only(method: str) -> None:
    with pytest.raises(MethodNotAllowed) as raised:
        blob_route(method, "/blob/0c6c4ad2")
    assert raised.value.allow == ("GET", "HEAD")
    assert blob_route(method, "/camera/image") is None  # not ours to refuse
