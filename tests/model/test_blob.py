"""tt.Blob: bytes with a media type, in memory or in a file, found by id while alive."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import trio_things as tt
from trio_things.model.blob import blob_id_from_href
from trio_things.model.values import structure, unstructure_linking


class TIFF(tt.Blob, media_type="image/tiff"):
    __slots__ = ()


def test_media_types() -> None:
    assert tt.PNG(b"").content_type == "image/png"
    assert TIFF(b"").content_type == "image/tiff" and TIFF.fixed_media_type
    assert tt.Blob(b"").content_type == "application/octet-stream"
    assert not tt.Blob.fixed_media_type
    typed = tt.Blob(b"", media_type="text/plain; charset=utf-8")
    assert typed.content_type == "text/plain; charset=utf-8"
    for bad in ("png", "image/png\r\nx-evil: 1", "image/png; a=\x00", "/png", "a b/c",
                "text/plain; name=caf\u00e9"):
        with pytest.raises(ValueError, match="not a media type"):
            tt.Blob(b"", media_type=bad)


def test_a_blob_is_found_by_id_while_something_holds_it() -> None:
    blob = tt.PNG(bytearray(b"abc"))  # copied: a blob never changes
    assert blob.href == f"/blob/{blob.id}" and len(blob.id) == 32
    assert tt.Blob.lookup(blob.id) is blob
    assert blob_id_from_href(blob.href) == blob.id
    assert blob_id_from_href(f"http://lab:8000{blob.href}") == blob.id
    assert blob_id_from_href("/blob/not-an-id") is None
    blob_id = blob.id
    del blob
    gc.collect()
    assert tt.Blob.lookup(blob_id) is None


def test_a_blob_spills_to_a_file_that_goes_with_it(tmp_path: Path) -> None:
    data = bytes(range(256)) * 2000
    blob = tt.Blob(data)
    assert blob.in_memory and blob.view() is not None
    blob.spill(tmp_path)
    [file] = tmp_path.iterdir()
    assert not blob.in_memory and blob.view() is None
    assert (blob.size, blob.read()) == (len(data), data)
    assert b"".join(blob.chunks(10, 300_000)) == data[10:300_000]
    blob.spill(tmp_path)  # already in a file: nothing
    assert list(tmp_path.iterdir()) == [file]
    del blob
    gc.collect()
    assert not file.exists()


def test_a_blob_from_a_file_is_read_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "scan.tiff"
    path.write_bytes(b"II*\x00" * 100)
    blob = TIFF.from_file(path)
    assert (blob.size, blob.content_type, blob.in_memory) == (400, "image/tiff", False)
    assert b"".join(blob.chunks(0, 4)) == b"II*\x00"
    path.write_bytes(b"short")  # changed behind its back: the read says so
    with pytest.raises(OSError, match="shorter"):
        b"".join(blob.chunks())
    del blob
    gc.collect()
    assert path.exists()  # not ours to delete
    with pytest.raises(FileNotFoundError):
        tt.Blob.from_file(tmp_path / "nothing")


def test_json_holds_links_and_names_the_blobs_it_links_to() -> None:
    png, jpeg = tt.PNG(b"1"), tt.JPEG(b"2")
    data, linked = unstructure_linking([png, jpeg, png], list[tt.Blob], path="out")
    assert data == [png.to_json(), jpeg.to_json(), png.to_json()]
    assert linked == (png, jpeg)
    assert unstructure_linking(3, int, path="out") == (3, ())
    assert structure(png.to_json(), tt.PNG) is png
    assert structure(png.to_json() | {"rel": "output"}, tt.Blob) is png
    with pytest.raises(Exception, match="not image/png"):
        structure(jpeg.to_json(), tt.PNG)
