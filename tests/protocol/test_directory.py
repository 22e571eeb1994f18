"""The Thing Description Directory's TD and its listing's pages, without a server."""

from __future__ import annotations

import jsonschema
import orjson

from trio_things.model.description import TD_CONTEXT, thing_id
from trio_things.protocol.commands import DescriptionPageReply
from trio_things.protocol.directory import (
    DISCOVERY_CONTEXT,
    LISTING_PATH,
    collection_etag,
    directory_description,
    encode_listing,
    listing_url,
)

BASE = "http://h:8000/"
NOSEC = {"nosec_sc": {"scheme": "nosec"}}


def test_the_directory_td(td_validator: jsonschema.Draft7Validator) -> None:
    td = directory_description(BASE, ["counter", "thermometer"], NOSEC)
    assert not list(td_validator.iter_errors(td))
    # WoT Discovery: the type ThingDirectory from the discovery context.
    assert td["@type"] == "ThingDirectory"
    assert td["@context"] == [*TD_CONTEXT, DISCOVERY_CONTEXT]
    assert td["id"] == thing_id(BASE, ".well-known/wot")
    assert td["base"] == BASE
    assert "read-only" in td["description"]
    things = td["properties"]["things"]
    assert things["readOnly"] is True
    assert things["forms"] == [{
        "href": ".well-known/wot/things{?offset,limit,format}", "op": ["readproperty"],
        "htv:methodName": "GET", "contentType": "application/ld+json",
        "additionalResponses": [{"success": False, "contentType": "application/problem+json"}]}]
    assert set(things["uriVariables"]) == {"offset", "limit", "format"}
    retrieve = td["actions"]["retrieveThing"]
    assert retrieve["uriVariables"]["id"]["type"] == "string"
    assert retrieve["safe"] is retrieve["idempotent"] is True
    [form] = retrieve["forms"]
    assert form["href"] == ".well-known/wot/things/{id}"
    assert (form["op"], form["htv:methodName"]) == (["invokeaction"], "GET")
    assert form["response"] == {"contentType": "application/td+json"}
    # Read-only: no createThing, updateThing, deleteThing, nor anything else.
    assert list(td["actions"]) == ["retrieveThing"]
    assert td["events"] == {}
    assert td["links"] == [
        {"rel": "item", "href": "counter/", "type": "application/td+json"},
        {"rel": "item", "href": "thermometer/", "type": "application/td+json"}]


def test_each_directory_td_is_a_fresh_object() -> None:
    first = directory_description(BASE, [], NOSEC)
    first["properties"]["things"]["forms"].clear()
    assert directory_description(BASE, [], NOSEC)["properties"]["things"]["forms"]


def test_listing_urls() -> None:
    assert listing_url(BASE) == f"{BASE}{LISTING_PATH}"
    assert listing_url(BASE, offset=4, limit=2, collection=True) == (
        f"{BASE}.well-known/wot/things?offset=4&limit=2&format=collection")


def page(count: int, *, offset: int = 0, limit: int | None = None, total: int = 5,
         collection: bool = False) -> DescriptionPageReply:
    return DescriptionPageReply(
        descriptions=tuple({"id": f"urn:x:{offset + i}"} for i in range(count)),
        offset=offset, total=total, limit=limit, collection=collection, etag="e1")


def test_a_page_with_more_after_it_links_the_next() -> None:
    body, link = encode_listing(page(2, offset=1, limit=2), BASE)
    assert orjson.loads(body) == [{"id": "urn:x:1"}, {"id": "urn:x:2"}]
    assert link == (f'<{BASE}.well-known/wot/things?offset=3&limit=2>; rel="next", '
                    f'<{BASE}.well-known/wot/things>; rel="canonical"; etag="e1"')


def test_the_last_page_links_only_the_collection() -> None:
    body, link = encode_listing(page(2, offset=3, limit=2), BASE)
    assert len(orjson.loads(body)) == 2
    assert link == f'<{BASE}.well-known/wot/things>; rel="canonical"; etag="e1"'
    _, link = encode_listing(page(0, offset=9, limit=2), BASE)  # past the end: empty
    assert 'rel="next"' not in link


def test_a_collection_page() -> None:
    body, link = encode_listing(page(2, limit=2, collection=True), BASE)
    assert orjson.loads(body) == {
        "@context": DISCOVERY_CONTEXT, "@type": "ThingCollection",
        "@id": f"{BASE}.well-known/wot/things?offset=0&limit=2&format=collection",
        "total": 5, "members": [{"id": "urn:x:0"}, {"id": "urn:x:1"}],
        "next": f"{BASE}.well-known/wot/things?offset=2&limit=2&format=collection"}
    assert "offset=2&limit=2&format=collection>" in link
    last = orjson.loads(encode_listing(page(1, offset=4, limit=2, collection=True), BASE)[0])
    assert "next" not in last


def test_the_collection_etag_follows_the_ids() -> None:
    assert collection_etag(["a", "b"]) == collection_etag(["a", "b"])
    assert collection_etag(["a", "b"]) != collection_etag(["a", "c"])
    assert collection_etag(["ab"]) != collection_etag(["a", "b"])
