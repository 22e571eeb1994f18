"""Blobs on a server: bytes with a media type, downloaded when asked.

JSON cannot carry bytes, so a server sends a *link* in their place:
``{"href": "/blob/<id>", "media_type": "image/png"}`` (trio-things, LabThings). An
action whose output is such a link returns a :class:`RemoteBlob` from
``await invocation.result()``; any other link (a property's value, say) becomes one
with :meth:`ConsumedThing.blob <trio_things.client.ConsumedThing.blob>` or
``await thing.read(name, RemoteBlob)``.

The bytes stay on the server until asked for, over the client's HTTP connections: all
of them (:meth:`RemoteBlob.read`), piece by piece (:meth:`RemoteBlob.chunks`), or into
a file (:meth:`RemoteBlob.save`). A blob lives on the server as long as what holds it
(an invocation, for ``invocation_retention`` seconds): download it before then, or get
:class:`~trio_things.client.errors.NotFound`. Sent back as an input
(``await thing.invoke("process", image=blob)``), a blob travels as its link, which a
server that still holds it reads as the blob.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

import orjson
import trio

from trio_things.client.errors import error_for_problem, problem_from_json
from trio_things.client.http import Download, HttpClient
from trio_things.model.values import converter

__all__ = ["RemoteBlob", "blob_link"]

#: The most of an error answer's body read to report it.
_PROBLEM_BYTES = 64 * 1024


def blob_link(value: object) -> tuple[str, str] | None:
    """``(href, media_type)`` when ``value`` is a blob's link (an object with a string
    ``href`` and ``media_type``, as LabThings' client tells them), else None."""
    if not isinstance(value, Mapping):
        return None
    href, media_type = value.get("href"), value.get("media_type")
    if isinstance(href, str) and isinstance(media_type, str):
        return href, media_type
    return None


class RemoteBlob:
    """A blob on a server: its ``href`` (absolute) and ``media_type``, and the bytes
    behind them, fetched by :meth:`read`, :meth:`chunks` or :meth:`save` through the
    client that made it (which must still be open)."""

    def __init__(self, *, href: str, media_type: str, http: HttpClient) -> None:
        self.href = href
        """Where its bytes are: an absolute URL (``GET`` it with any HTTP client that
        sends the server's token, if it wants one)."""
        self.media_type = media_type
        """Its media type, as the link says (``image/png``)."""
        self.size: int | None = None
        """How many bytes it holds, once known: after a download began."""
        self._http = http

    def __repr__(self) -> str:
        size = "" if self.size is None else f", {self.size} bytes"
        return f"<RemoteBlob {self.media_type} at {self.href}{size}>"

    def to_json(self) -> dict[str, str]:
        """Its link, as a server reads it back (an input of another action)."""
        return {"href": self.href, "media_type": self.media_type}

    async def read(self) -> bytes:
        """All its bytes, in memory (for a large blob, prefer :meth:`save`)."""
        pieces = [piece async for piece in self.chunks()]
        return b"".join(pieces)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Its bytes, piece by piece as they arrive (each within the client's
        ``timeout``: a slow download is fine as long as it moves). Stopping early
        closes the connection; to do so at once, not when the generator is collected,
        iterate in ``async with contextlib.aclosing(blob.chunks()) as pieces``.

        Raises:
            NotFound: the server no longer holds it (its invocation was forgotten).
            ConnectionLost, Timeout: the download broke off.
        """
        async with self._http.download(self.href) as response:
            await self._check(response)
            async for piece in response.chunks():
                yield piece

    async def save(self, path: str | os.PathLike[str]) -> int:
        """Download it into the file at ``path`` and return how many bytes it holds.

        The bytes go to a new file beside ``path`` first (``.NAME.XXXXXXXX.part``),
        which replaces ``path`` only once complete: an interrupted download leaves
        whatever was at ``path`` as it was (and no partial file). Writes run in a worker
        thread. Raises what :meth:`chunks` raises, and ``OSError`` for the file.
        """
        target = Path(path)
        part = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        size = 0
        try:
            async with await trio.open_file(part, "xb") as file:
                async for piece in self.chunks():
                    await file.write(piece)
                    size += len(piece)
            await trio.to_thread.run_sync(os.replace, part, target)
        except BaseException:
            try:
                part.unlink()  # a local unlink: quick, and needed even when cancelled
            except FileNotFoundError:
                pass
            raise
        return size

    async def _check(self, response: Download) -> None:
        if response.ok:
            self.size = response.length
            return
        body = await response.read(_PROBLEM_BYTES)
        problem = problem_from_json(_json_or_text(body), response.status)
        raise error_for_problem(problem, operation="readblob", what=f"the blob at {self.href}")


def _json_or_text(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


# Sent as an input, a RemoteBlob is its link (the converter is the one client and server
# share; the server never meets a RemoteBlob).
converter.register_unstructure_hook(RemoteBlob, RemoteBlob.to_json)
