"""WoT Discovery's Thing Description Directory, read-only: its TD and its listing's pages.

``GET /.well-known/wot`` answers the TD of a Thing Description Directory (TDD), so that
WoT Discovery consumers (node-wot's ``exploreDirectory``, say) recognise the server and
find its Things; ``docs/http.md``, "Discovery", is the user's page. What W3C WoT
Discovery (the Recommendation of 2023) says, and what we do about it:

* A TD that describes a TDD "MUST use type ``ThingDirectory`` from the discovery
  context": ``"@type": "ThingDirectory"``, and the discovery context
  ``https://www.w3.org/2022/wot/discovery`` after the TD contexts, as the spec's
  directory Thing Model has it.
* The listing (the ``things`` property): ``GET`` answers 200 with an array of TDs, as
  ``application/json`` or ``application/ld+json``, "``application/ld+json`` is
  preferred": :data:`LISTING_CONTENT_TYPE`. Pagination is optional; ours takes
  ``limit`` (a positive integer) and a zero-based ``offset``; when more TDs follow, a
  ``next`` link (RFC 8288) with the same ``limit`` and the next ``offset``, and on every
  page a ``canonical`` link to the collection with an ``etag`` of its state. The
  collection is "sorted in ascending order using Unicode code point order by the unique
  identifier of TDs". ``format=collection`` answers a ``ThingCollection`` object
  (``members``, ``total``, ``@id``, ``next``) instead of the array; invalid arguments
  are answered 400.
* Retrieval (the ``retrieveThing`` action): ``GET .../things/{id}`` answers the TD whose
  ``id`` it is, ``application/td+json``; 404 for an unknown id.
* Creation, update and deletion are optional, and "a method that is not supported on an
  existing API endpoint" is answered 405: this server is the source of its TDs, so the
  directory lists what it serves and nothing else.

The directory's API lives under the well-known path (:data:`LISTING_PATH`): the spec's
examples put it at ``/things``, where LabThings clients read our ``{name: url}`` object.
The directory's ``base`` is the server's root, as every TD's here, so its ``links`` to
each Thing's TD stay as they were; the links of a page are absolute URLs.

Pure functions on JSON values: no I/O, no Trio. The routes that decode these requests
are in :mod:`trio_things.protocol.routes` (:func:`~trio_things.protocol.routes.listing_page`),
the dispatcher answers them, the HTTP binding encodes the page with :func:`encode_listing`.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson

from trio_things.model.description import TD_CONTEXT, thing_id
from trio_things.protocol.commands import DescriptionPageReply

__all__ = [
    "DIRECTORY_PATH",
    "DISCOVERY_CONTEXT",
    "LISTING_CONTENT_TYPE",
    "LISTING_PATH",
    "TD_CONTENT_TYPE",
    "collection_etag",
    "directory_description",
    "encode_listing",
    "listing_url",
]

#: WoT Discovery's JSON-LD context (its ``ThingDirectory``, ``ThingCollection``, ...).
DISCOVERY_CONTEXT: Final = "https://www.w3.org/2022/wot/discovery"
#: Where the directory's TD is, from the server's root (RFC 8615, WoT Discovery).
DIRECTORY_PATH: Final = ".well-known/wot"
#: The listing of TDs, from the server's root; one TD is at ``LISTING_PATH/{id}``.
LISTING_PATH: Final = ".well-known/wot/things"
#: The listing's media type, the one WoT Discovery prefers.
LISTING_CONTENT_TYPE: Final = "application/ld+json"
#: A TD's media type.
TD_CONTENT_TYPE: Final = "application/td+json"
_PROBLEM: Final = "application/problem+json"


def directory_description(base: str, names: Sequence[str],
                          security_definitions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The TD of the directory of the Things ``names`` served at ``base`` (the server's
    root, ending with ``/``): a read-only TDD with the ``things`` property and the
    ``retrieveThing`` action, and a link to each Thing's own TD."""
    return {
        "@context": [*TD_CONTEXT, DISCOVERY_CONTEXT],
        "@type": "ThingDirectory",
        "id": thing_id(base, DIRECTORY_PATH),
        "title": "trio-things directory",
        "description": (
            "A read-only Thing Description Directory of the Things this server serves: "
            "list their Thing Descriptions (things) or retrieve one by its id "
            "(retrieveThing). This server is the source of these Thing Descriptions, so "
            "none can be created, updated or deleted through the directory."),
        "base": base,
        "securityDefinitions": security_definitions,
        "security": list(security_definitions),
        "properties": {"things": _things_property()},
        "actions": {"retrieveThing": _retrieve_action()},
        "events": {},
        "links": [
            {"rel": "item", "href": f"{name}/", "type": TD_CONTENT_TYPE} for name in names
        ],
    }


def _things_property() -> dict[str, Any]:
    """WoT Discovery's listing, as the spec's directory Thing Model describes it."""
    return {
        "title": "Thing Descriptions",
        "description": (
            "The Thing Description of every Thing this server serves, sorted by id. offset "
            "and limit select a page; a Link header (rel=next) names the next page while "
            "more follow. format=collection answers a ThingCollection object instead of an "
            "array."),
        "readOnly": True,
        "oneOf": [
            {"description": "The Thing Descriptions (format=array, the default)",
             "type": "array", "items": {"type": "object"}},
            {"description": "A ThingCollection (format=collection)", "type": "object",
             "properties": {
                 "@context": {"type": "string", "const": DISCOVERY_CONTEXT},
                 "@type": {"type": "string", "const": "ThingCollection"},
                 "@id": {"description": "This page's URL", "type": "string"},
                 "total": {"description": "Thing Descriptions in the collection",
                           "type": "integer"},
                 "members": {"description": "This page's Thing Descriptions", "type": "array",
                             "items": {"type": "object"}},
                 "next": {"description": "The next page's URL, while more follow",
                          "type": "string"},
             }},
        ],
        "uriVariables": {
            "offset": {"title": "Number of TDs to skip before the page", "type": "integer",
                       "minimum": 0, "default": 0},
            "limit": {"title": "Number of TDs in a page", "type": "integer", "minimum": 1},
            "format": {"title": "Payload format", "type": "string",
                       "enum": ["array", "collection"], "default": "array"},
        },
        "forms": [{
            "href": LISTING_PATH + "{?offset,limit,format}",
            "op": ["readproperty"],
            "htv:methodName": "GET",
            "contentType": LISTING_CONTENT_TYPE,
            "additionalResponses": [{"success": False, "contentType": _PROBLEM}],
        }],
    }


def _retrieve_action() -> dict[str, Any]:
    """WoT Discovery's ``retrieveThing``, read-only: the one action this directory has."""
    return {
        "title": "Retrieve a Thing Description",
        "description": "The Thing Description whose id is id.",
        "uriVariables": {
            "id": {"@type": "ThingID", "title": "Thing Description ID", "type": "string",
                   "format": "iri-reference"},
        },
        "output": {"description": "A Thing Description", "type": "object"},
        "safe": True,
        "idempotent": True,
        "synchronous": True,
        "forms": [{
            "href": LISTING_PATH + "/{id}",
            "op": ["invokeaction"],
            "htv:methodName": "GET",
            "response": {"contentType": TD_CONTENT_TYPE},
            "additionalResponses": [{"success": False, "contentType": _PROBLEM}],
        }],
    }


def collection_etag(ids: Iterable[str]) -> str:
    """A tag of the collection's state: its ids, in order. The same Things served at the
    same base give the same tag, so a client paging through sees that nothing moved."""
    digest = hashlib.blake2b(digest_size=8)
    for identifier in ids:
        digest.update(identifier.encode() + b"\n")
    return digest.hexdigest()


def listing_url(base: str, *, offset: int | None = None, limit: int | None = None,
                collection: bool = False) -> str:
    """The absolute URL of the listing at ``base``, or of one of its pages."""
    query: list[tuple[str, str]] = []
    if offset is not None:
        query.append(("offset", str(offset)))
    if limit is not None:
        query.append(("limit", str(limit)))
    if collection:
        query.append(("format", "collection"))
    url = base + LISTING_PATH
    return f"{url}?{urllib.parse.urlencode(query)}" if query else url


def encode_listing(page: DescriptionPageReply, base: str) -> tuple[bytes, str]:
    """The body of one page of the listing at ``base`` and its ``Link`` header: the
    ``next`` page while more follow (same ``limit`` and ``format``, the next
    ``offset``), and always the ``canonical`` collection with its ``etag``. One header
    field for both links (RFC 9110 section 5.3: the same as two), which a client that
    keeps one value of a repeated field reads whole."""
    end = page.offset + len(page.descriptions)
    next_url = None
    if end < page.total:
        next_url = listing_url(base, offset=end, limit=page.limit, collection=page.collection)
    links = [f'<{listing_url(base)}>; rel="canonical"; etag="{page.etag}"']
    if next_url is not None:
        links.insert(0, f'<{next_url}>; rel="next"')
    if page.collection:
        collection: dict[str, Any] = {
            "@context": DISCOVERY_CONTEXT,
            "@type": "ThingCollection",
            "@id": listing_url(base, offset=page.offset, limit=page.limit, collection=True),
            "total": page.total,
            "members": list(page.descriptions),
        }
        if next_url is not None:
            collection["next"] = next_url
        return orjson.dumps(collection), ", ".join(links)
    return orjson.dumps(list(page.descriptions)), ", ".join(links)
