"""Binary values: an image, a file, a raw buffer, with its media type.

JSON cannot carry bytes, so a :class:`Blob` travels as a *link*: wherever a value is
JSON (an action's output in an invocation, a property's value, a WebSocket
notification), a blob is ``{"href": "/blob/<id>", "media_type": "image/png"}``, and a
``GET`` of that ``href`` answers the bytes with their ``Content-Type`` (``docs/settings.md``,
"Binary outputs"). LabThings-FastAPI serves blob outputs the same way, so its
``ThingClient`` downloads ours.

A blob lives as long as something holds it: the invocation whose output it is, the
Thing whose property holds it. Every blob is registered under its id in a weak mapping,
so the server finds a linked blob by id and never keeps one alive by itself: when its
holders are gone (an invocation forgotten after its retention), its link answers 404 and
its file, if it spilled to one, is deleted.

The media type is the blob's own (``Blob(data, media_type="image/png")``), or its
class's: ``tt.PNG``, ``tt.JPEG``, or a subclass declared as
``class TIFF(tt.Blob, media_type="image/tiff")``. Annotating an action's output (or a
property) with such a class puts its media type in the Thing Description.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
import weakref
from collections.abc import Generator
from pathlib import Path
from typing import Any, ClassVar, Final

__all__ = ["BLOB_PATH", "JPEG", "PNG", "Blob", "blob_id_from_href"]

#: The path blobs are served under, from the server root.
BLOB_PATH: Final = "/blob/"
#: Bytes read from a blob's file at a time.
_CHUNK: Final = 256 * 1024
#: A media type: RFC 6838 section 4.2's type "/" subtype, parameters allowed after.
_MEDIA_TYPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/"
                                r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
                                r"(?:[ \t]*;[\t\x20-\x7e]*)?")
_HREF: Final = re.compile(r"(?:.*)/blob/([0-9a-f]{32})/?")

_registry: weakref.WeakValueDictionary[str, Blob] = weakref.WeakValueDictionary()


def _checked(media_type: str) -> str:
    # A header value: printable ASCII only (h11 would refuse the response).
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise ValueError(f"{media_type!r} is not a media type (type/subtype)")
    return media_type


class Blob:
    """Bytes with a media type, held in memory or in a file.

    ``Blob(data, media_type=...)`` holds ``data`` (bytes are not copied);
    :meth:`from_file` serves a file as it is. :meth:`spill` moves a blob held in memory
    to a temporary file (the server does it for large ones, so that memory stays
    bounded); a file made so is deleted when the blob is.

    Immutable once made: a new value is a new blob, with a new id and link.
    """

    #: The class's media type, when an instance does not name one.
    media_type: ClassVar[str] = "application/octet-stream"
    #: Whether the class fixes the media type (a subclass declared with one): its
    #: schema then says which.
    fixed_media_type: ClassVar[bool] = False

    __slots__ = ("__weakref__", "_data", "_finalizer", "_media_type", "_path", "_size", "id")

    def __init_subclass__(cls, *, media_type: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if media_type is not None:
            cls.media_type = _checked(media_type)
            cls.fixed_media_type = True

    def __init__(self, data: bytes | bytearray | memoryview, *,
                 media_type: str | None = None) -> None:
        self._data: bytes | None = bytes(data) if not isinstance(data, bytes) else data
        self._size = len(self._data)
        self._path: Path | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._media_type = _checked(media_type) if media_type is not None else None
        self.id = uuid.uuid4().hex
        """The blob's id: unguessable, the last segment of its link."""
        _registry[self.id] = self

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, media_type: str | None = None) -> Blob:
        """A blob served from the file at ``path``, read when it is downloaded (the
        file must stay as it is while the blob lives; it is not deleted)."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"no file at {str(path)!r}")
        blob = cls(b"", media_type=media_type)
        blob._size = file.stat().st_size
        blob._path = file
        blob._data = None
        return blob

    @classmethod
    def lookup(cls, blob_id: str) -> Blob | None:
        """The live blob with this id, if any."""
        return _registry.get(blob_id)

    @property
    def content_type(self) -> str:
        """The media type its bytes are served with."""
        return self._media_type or type(self).media_type

    @property
    def href(self) -> str:
        """Its link, from the server root."""
        return f"{BLOB_PATH}{self.id}"

    @property
    def size(self) -> int:
        """How many bytes it holds (known without touching the disk: a file's size is
        taken when the blob is made)."""
        return self._size

    @property
    def in_memory(self) -> bool:
        """Whether its bytes are in memory (else in a file)."""
        return self._data is not None

    def view(self) -> memoryview | None:
        """Its bytes as a memoryview if they are in memory, else None (then read them
        with :meth:`chunks`, in a worker thread). The view keeps the bytes alive, even
        if the blob spills to a file meanwhile."""
        data = self._data  # once: spill() may clear it from a worker thread
        return None if data is None else memoryview(data)

    def to_json(self) -> dict[str, str]:
        """The link that stands for it in JSON (what LabThings' clients read)."""
        return {"href": self.href, "media_type": self.content_type}

    def read(self) -> bytes:
        """All its bytes (blocking, for a file)."""
        data, path = self._data, self._path  # data first: spill() sets the path first
        if data is not None:
            return data
        assert path is not None
        return path.read_bytes()

    def chunks(self, start: int = 0, stop: int | None = None
               ) -> Generator[bytes | memoryview, None, None]:
        """Its bytes from ``start`` to ``stop``, in pieces, without a copy of what is in
        memory (blocking, for a file: run it in a worker thread)."""
        stop = self.size if stop is None else stop
        view = self.view()
        if view is not None:
            for offset in range(start, stop, _CHUNK):
                yield view[offset:min(offset + _CHUNK, stop)]
            return
        assert self._path is not None
        with self._path.open("rb") as file:
            file.seek(start)
            remaining = stop - start
            while remaining > 0:
                piece = file.read(min(_CHUNK, remaining))
                if not piece:
                    raise OSError(f"{self._path} is shorter than when it was linked")
                remaining -= len(piece)
                yield piece

    def spill(self, folder: str | os.PathLike[str] | None = None) -> None:
        """Move the bytes held in memory to a new file in ``folder`` (the system's
        temporary folder by default), deleted when the blob is. Blocking: call it from a
        worker thread. Does nothing for a blob already in a file."""
        if self._data is None:
            return
        descriptor, name = tempfile.mkstemp(prefix="trio-things-blob-", dir=folder)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(self._data)
        except BaseException:
            os.unlink(name)
            raise
        self._path = Path(name)
        self._finalizer = weakref.finalize(self, _unlink, name)
        self._data = None

    def __repr__(self) -> str:
        where = f"{self.size} bytes" if self._data is not None else f"in {self._path}"
        return f"<{type(self).__name__} {self.id} {self.content_type}, {where}>"


class PNG(Blob, media_type="image/png"):
    """A PNG image."""

    __slots__ = ()


class JPEG(Blob, media_type="image/jpeg"):
    """A JPEG image."""

    __slots__ = ()


def blob_id_from_href(href: str) -> str | None:
    """The id a blob link (``/blob/<id>``, absolute or not) names, or None."""
    match = _HREF.fullmatch(href)
    return match.group(1) if match else None


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
