"""A blob's bytes over HTTP: at ``/blob/{id}`` and at its invocation's ``/output``.

A blob (:mod:`trio_things.model.blob`) is served whole (200) or one range of it (206;
416 past its end; :mod:`~trio_things.protocol.ranges`), as a
:class:`~trio_things.transport.http.SizedBody`: ``Content-Length`` framed, streamed from
memory without a copy, or from its file in a worker thread
(:func:`~trio_things.runtime.blobs.blob_chunks`), each chunk within the write timeout.
Its id is its strong ``ETag``, since a blob never changes (``docs/design.md``, "Binary
values").
"""

from __future__ import annotations

import functools
from typing import Final

import attrs

from trio_things.errors import NotFound
from trio_things.model.blob import Blob, blob_id_from_href
from trio_things.protocol.commands import Reply, ValueReply
from trio_things.protocol.problems import ProblemDetails
from trio_things.protocol.ranges import RangeNotSatisfiable, requested_range, unsatisfied_range
from trio_things.runtime.blobs import blob_chunks
from trio_things.transport.http import HttpRequest, HttpResponse, SizedBody

__all__ = ["blob_response", "live_blob", "output_blob"]


#: Headers of every blob's bytes. A blob's media type is the Thing's to choose, and a
#: browser opening an HTML or SVG blob from the server's origin would run its scripts
#: there: ``nosniff`` and a sandbox keep it from doing anything on our origin.
_BLOB_HEADERS: Final = (
    ("accept-ranges", "bytes"),
    ("x-content-type-options", "nosniff"),
    ("content-security-policy", "sandbox"),
)


def live_blob(blob_id: str) -> Blob:
    blob = Blob.lookup(blob_id)
    if blob is None:
        raise NotFound(f"no blob {blob_id!r}: unknown, or nothing holds it any more (the "
                       "invocation whose output it was is forgotten after its retention)")
    return blob


def output_blob(reply: Reply) -> Blob | None:
    """The live blob an invocation's output links to, if the output is a blob's link."""
    if not isinstance(reply, ValueReply) or not isinstance(reply.value, dict):
        return None
    href = reply.value.get("href")
    if not isinstance(href, str) or "media_type" not in reply.value:
        return None
    blob_id = blob_id_from_href(href)
    return None if blob_id is None else Blob.lookup(blob_id)


def blob_response(blob: Blob, request: HttpRequest) -> HttpResponse:
    """A blob's bytes, whole (200) or the one range asked for (206; 416 past the end;
    :mod:`~trio_things.protocol.ranges`), streamed from memory or its file. Its id is
    its strong ``ETag``: a blob never changes."""
    size = blob.size
    etag = f'"{blob.id}"'
    headers = (("content-type", blob.content_type), ("etag", etag), *_BLOB_HEADERS)
    try:  # RFC 9110 section 14.2: GET is the one method ranges are defined for
        wanted = requested_range(request.header("range") if request.method == "GET" else None,
                                 size, if_range=request.header("if-range"), etag=etag)
    except RangeNotSatisfiable as error:
        response = HttpResponse.problem(ProblemDetails.from_error(error))
        return attrs.evolve(response, headers=(*response.headers,
                                               ("content-range", unsatisfied_range(size))))
    if wanted is None:
        return HttpResponse(status=200, headers=headers, sized=SizedBody(
            length=size, chunks=functools.partial(blob_chunks, blob, 0, size)))
    return HttpResponse(status=206, headers=(*headers, ("content-range", wanted.content_range)),
                        sized=SizedBody(length=wanted.length, chunks=functools.partial(
                            blob_chunks, blob, wanted.start, wanted.stop)))
