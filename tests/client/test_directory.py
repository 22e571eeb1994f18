"""Starting from a Thing Description Directory: the real server's (in memory and over
loopback), a generic one that pages by itself (canned answers), and the pure helpers."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import h11
import orjson
import pytest
import trio
import trio.testing
from trio.testing import MockClock

import trio_things.client as ttc
from tests.client.conftest import BASE, FAST, MemoryNetwork
from tests.client.test_blocking import RunningServer, demo  # noqa: F401 (a fixture)
from tests.helpers.servers import serve_on_loopback
from trio_things.client.directory import (
    is_directory,
    item_links,
    link_target,
    listing_members,
    retrieve_url,
)
from trio_things.client.forms import expand_uri_template
from trio_things.config import ServerConfig
from trio_things.demo import Counter, Thermometer
from trio_things.protocol.access import AccessPolicy
from trio_things.server import ThingServer
from trio_things.testing import serve_in_memory

WELL_KNOWN = BASE + ".well-known/wot"
NAMES = ("lab", "broken", "counter", "thermometer")


# --------------------------------------------------------------------------- the real server


@pytest.mark.parametrize("url", [BASE, WELL_KNOWN, "http://testserver", BASE + "counter/"])
async def test_a_directory_from_its_url_or_its_servers(
        autojump_clock: MockClock, network: MemoryNetwork, url: str) -> None:
    """The well-known URL, the server's root (which lists Things, no TD) and even a
    Thing's TD URL lead to the server's directory."""
    with trio.fail_after(5):
        async with ttc.open_directory(url, open_stream=network, options=FAST) as directory:
            assert directory.url == WELL_KNOWN
            assert directory.td["@type"] == "ThingDirectory"
            assert directory.names == {name: f"{BASE}{name}/" for name in NAMES}
            assert sorted(directory.titles) == ["Broken", "Counter", "Lab", "Thermometer"]
            assert list(directory.ids) == sorted(directory.ids)  # the listing's order
            async with ttc.open_client(open_stream=network, options=FAST) as client:
                for name in NAMES:
                    own = await client.consume(f"{BASE}{name}/")
                    [listed] = [t for t in directory.things if t.id == own.id]
                    assert listed.td == own.td
                    assert listed.title == own.title
                    assert listed.url == (f"{WELL_KNOWN}/things/"
                                          + urllib.parse.quote(str(own.id), safe=""))
                    # The retrieve URL answers the same TD.
                    assert (await client.consume(listed.url)).td == own.td


async def test_consume_a_listed_thing_by_name_id_or_title(network: MemoryNetwork) -> None:
    """(Real clock: the counter's increment runs in a worker thread.)"""
    with trio.fail_after(5):
        async with ttc.open_directory(BASE, open_stream=network, options=FAST) as directory:
            by_name = await directory.consume("counter")
            assert by_name.url == BASE + "counter/"  # fetched from the linked TD URL
            [listed] = [t for t in directory.things if t.title == "Thermometer"]
            by_id = await directory.consume(str(listed.id))
            assert (by_id.title, by_id.url) == ("Thermometer", listed.url)
            await by_id.write("setpoint", 30)
            assert await by_id.read("setpoint") == 30
            by_title = await directory.consume("Counter")
            assert by_title.id == by_name.id
            invocation = await by_title.invoke("increment", by=2)  # over the WebSocket
            assert await invocation.result() == 2
            assert await by_name.read("count") == 2
            assert (await directory.consume(listed)).id == listed.id
            with pytest.raises(ttc.NotFound, match=r"lists no Thing with the id, name or "
                                                   r"title 'nope'; its Things: lab, broken"):
                await directory.consume("nope")


async def test_connect_to_a_thing_of_a_directory(autojump_clock: MockClock,
                                                 network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with ttc.connect(BASE, thing="lab", open_stream=network, options=FAST) as lab:
            assert lab.url == BASE + "lab/"
            assert await lab.read("serial") == 7
        with pytest.raises(ttc.NotFound, match="'ghost'"):
            async with ttc.connect(BASE, thing="ghost", open_stream=network, options=FAST):
                pass  # pragma: no cover


async def test_two_things_of_one_title_need_an_id(autojump_clock: MockClock) -> None:
    with trio.fail_after(5):
        async with serve_in_memory({"a": Counter(), "b": Counter()}) as served, \
                ttc.open_directory(served.url, open_stream=served.open_stream) as directory:
            assert directory.titles == ("Counter", "Counter")
            with pytest.raises(ttc.NotFound, match=r"2 Things of the directory .* are titled "
                                                   r"'Counter'; name one by its id: urn:uuid:"):
                await directory.consume("Counter")
            for name in ("a", "b"):
                assert (await directory.consume(name)).url == f"{served.url}{name}/"


async def test_the_directory_needs_the_token(autojump_clock: MockClock) -> None:
    config = ServerConfig(access=AccessPolicy(tokens=("full-token-1",)).allowing_host(
        "testserver"))
    with trio.fail_after(5):
        async with serve_in_memory(Counter(), config=config) as served:
            with pytest.raises(ttc.ServerError) as info:
                async with ttc.open_directory(served.url, open_stream=served.open_stream):
                    pass  # pragma: no cover
            assert info.value.status == 401
            async with ttc.connect(served.url, thing="counter", token="full-token-1",
                                   open_stream=served.open_stream) as counter:
                assert await counter.read("count") == 0


async def test_over_loopback() -> None:
    server = ThingServer(ServerConfig(port=0))
    server.add_thing("counter", Counter())
    server.add_thing("thermometer", Thermometer())
    with trio.fail_after(20):
        async with serve_on_loopback(server) as served:
            root = f"http://127.0.0.1:{served.port}/"
            async with ttc.open_directory(root, options=FAST) as directory:
                assert set(directory.names) == {"counter", "thermometer"}
                thermometer = await directory.consume("Thermometer")
                assert thermometer.td["base"] == root
                assert await thermometer.read("setpoint") == 20.0
            async with ttc.connect(root + ".well-known/wot", thing="counter",
                                   options=FAST) as counter:
                assert await (await counter.invoke("increment")).result() == 1


def test_the_blocking_client_opens_a_thing_of_a_directory(demo: RunningServer) -> None:  # noqa: F811
    root = f"http://127.0.0.1:{demo.port}/"
    with ttc.ThingClient(root, thing="counter", options=FAST) as counter:
        assert counter.url == demo.url("counter")
        assert counter.increment(by=3) == 3
    with ttc.ThingClient.from_url(root, thing="Thermometer", options=FAST) as thermo:
        assert thermo.title == "Thermometer"
        assert thermo.setpoint == 20.0


# --------------------------------------------------------------------------- any directory


Canned = Mapping[str, tuple[int, list[tuple[str, str]], Any]]


@asynccontextmanager
async def canned_server(answers: Canned) -> AsyncIterator[ttc.OpenStream]:
    """An OpenStream to a server that answers each request target with a canned
    ``(status, headers, JSON body)``, and 404 for any other: a directory that is not
    ours, as a generic WoT Discovery server may answer."""
    async with trio.open_nursery() as nursery:
        async def serve(stream: trio.abc.Stream) -> None:
            connection = h11.Connection(h11.SERVER)
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some()
                    if not data:
                        return
                    connection.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    status, headers, body = answers.get(
                        event.target.decode(), (404, [], {"status": 404, "detail": "no"}))
                    payload = orjson.dumps(body)
                    await stream.send_all(connection.send(h11.Response(
                        status_code=status, headers=[
                            ("content-type", "application/json"),
                            ("content-length", str(len(payload))), *headers])) or b"")
                    await stream.send_all((connection.send(h11.Data(data=payload)) or b"")
                                          + (connection.send(h11.EndOfMessage()) or b""))
                elif isinstance(event, h11.EndOfMessage):
                    connection.start_next_cycle()
                else:
                    return

        async def open_stream(host: str, port: int, *, tls: bool) -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(serve, server)
            return client

        yield open_stream
        nursery.cancel_scope.cancel()


def tdd(listing: str = "/things{?offset,limit}") -> dict[str, Any]:
    """A directory's TD as WoT Discovery's directory Thing Model has it (no links)."""
    return {
        "@context": ["https://www.w3.org/2022/wot/td/v1.1",
                     "https://www.w3.org/2022/wot/discovery"],
        "@type": ["ThingDirectory"], "title": "A TDD", "base": "http://tdd.test/",
        "securityDefinitions": {"nosec": {"scheme": "nosec"}}, "security": "nosec",
        "properties": {"things": {"forms": [{"href": listing, "htv:methodName": "GET"}]}},
        "actions": {"retrieveThing": {"uriVariables": {"id": {"type": "string"}}, "forms": [
            {"href": "/things/{id}", "htv:methodName": "GET"}]}},
    }


def thing(n: int) -> dict[str, Any]:
    return {"@context": "https://www.w3.org/2022/wot/td/v1.1", "id": f"urn:dev:{n}",
            "title": f"Sensor {n}", "securityDefinitions": {"nosec": {"scheme": "nosec"}},
            "security": "nosec", "properties": {}}


async def test_a_directory_that_pages_by_itself(autojump_clock: MockClock) -> None:
    """Pages linked by ``Link`` (two header fields: next, then canonical) and by a
    ThingCollection's ``next``, relative to the directory's base, are all read."""
    answers: Canned = {
        "/.well-known/wot": (200, [], tdd()),
        "/things": (200, [("link", "</things?offset=1&limit=1>; rel=next"),
                          ("link", '</things>; rel="canonical"; etag="v1"')], [thing(1)]),
        "/things?offset=1&limit=1": (200, [], {
            "@context": "https://www.w3.org/2022/wot/discovery",
            "@type": "ThingCollection", "members": [thing(2)], "total": 3,
            "next": "things?offset=2&limit=1"}),
        "/things?offset=2&limit=1": (200, [], [thing(3)]),
    }
    with trio.fail_after(5):
        async with canned_server(answers) as open_stream, ttc.open_directory(
                "http://tdd.test/", open_stream=open_stream, options=FAST) as directory:
            assert directory.url == "http://tdd.test/.well-known/wot"
            assert directory.ids == ("urn:dev:1", "urn:dev:2", "urn:dev:3")
            assert directory.names == {}
            assert directory.things[0].url == "http://tdd.test/things/urn%3Adev%3A1"
            sensor = await directory.consume("Sensor 2")
            assert sensor.id == "urn:dev:2"
            with pytest.raises(ttc.NotFound, match=r"its Things: Sensor 1 \(urn:dev:1\)"):
                await directory.consume("counter")


@pytest.mark.parametrize(("answers", "error", "match"), [
    ({}, ttc.NotFound, "http://tdd.test/ is no Thing Description Directory, and "
                       "http://tdd.test/.well-known/wot is none either"),
    ({"/.well-known/wot": (200, [], thing(1))}, ttc.NotFound, "is none either"),
    ({"/.well-known/wot": (200, [], tdd("ws://tdd.test/things"))},
     ttc.UnsupportedOperation, "no HTTP form to list its Things"),
    ({"/.well-known/wot": (200, [], tdd()), "/things": (200, [], {"things": []})},
     ttc.ServerError, "no array of Thing Descriptions"),
    ({"/.well-known/wot": (200, [], tdd()), "/things": (200, [], [1, 2])},
     ttc.ServerError, "holds something that is no Thing Description"),
    ({"/.well-known/wot": (200, [], tdd()),
      "/things": (200, [("link", "</things>; rel=next")], [])},
     ttc.ServerError, "links back to a page it gave already"),
    ({"/.well-known/wot": (200, [], tdd()),
      "/things": (500, [], {"status": 500, "detail": "database down"})},
     ttc.ServerError, "database down"),
])
async def test_what_is_no_directory_or_no_listing(
        autojump_clock: MockClock, answers: Canned, error: type[Exception],
        match: str) -> None:
    with trio.fail_after(5):
        async with canned_server(answers) as open_stream:
            with pytest.raises(error, match=match):
                async with ttc.open_directory("http://tdd.test/", open_stream=open_stream,
                                              options=FAST):
                    pass  # pragma: no cover


# --------------------------------------------------------------------------- pure helpers


def test_is_directory() -> None:
    assert is_directory({"@type": "ThingDirectory"})
    assert is_directory({"@type": ["Thing", "https://www.w3.org/2022/wot/discovery#ThingDirectory"]})
    assert not is_directory({"@type": "ThingLink"})
    assert not is_directory({"title": "no type"})


@pytest.mark.parametrize(("header", "rel", "target"), [
    ('<http://a/things?offset=1&limit=1>; rel="next", <http://a/things>; rel="canonical"; '
     'etag="v1"', "next", "http://a/things?offset=1&limit=1"),
    ('<http://a/things>; rel="canonical"; etag="v1", </p2>; rel=next', "next", "/p2"),
    ('</p2>; rel="prev next"', "next", "/p2"),
    ('</p2>; REL="Next"', "next", "/p2"),
    ('<http://a/things>; rel="canonical"', "next", None),
    ("", "next", None),
])
def test_link_target(header: str, rel: str, target: str | None) -> None:
    assert link_target(header, rel) == target


def test_listing_members() -> None:
    assert listing_members([{"id": "a"}], "u") == ([{"id": "a"}], None)
    assert listing_members({"members": [{"id": "a"}], "next": "/p2"}, "u") == (
        [{"id": "a"}], "/p2")
    assert listing_members({"members": []}, "u") == ([], None)
    with pytest.raises(ttc.ServerError):
        listing_members({"id": "a"}, "u")


def test_item_links_and_retrieve_url() -> None:
    directory = tdd() | {"links": [
        {"rel": "item", "href": "pump/", "type": "application/td+json"},
        {"rel": "item", "href": "http://other.test/valve%20one"},
        {"rel": "describedby", "href": "docs/"},
        {"rel": "item", "href": "stream", "type": "multipart/x-mixed-replace"}]}
    assert item_links(directory, "http://tdd.test/.well-known/wot") == {
        "pump": "http://tdd.test/pump/", "valve one": "http://other.test/valve%20one"}
    assert retrieve_url(directory, "http://tdd.test/.well-known/wot", "urn:a/b") == (
        "http://tdd.test/things/urn%3Aa%2Fb")
    assert retrieve_url({"title": "no actions"}, "http://tdd.test/", "urn:a") is None


@pytest.mark.parametrize(("href", "variables", "expanded"), [
    ("/things{?offset,limit,format}", {}, "/things"),
    ("/things{?offset,limit,format}", {"limit": 10}, "/things?limit=10"),
    ("/things{?offset,limit}", {"offset": 2, "limit": 1}, "/things?offset=2&limit=1"),
    ("/things?a=1{&limit}", {"limit": 5}, "/things?a=1&limit=5"),
    ("/things/{id}", {"id": "urn:x y"}, "/things/urn%3Ax%20y"),
    ("/things/{id}", {}, "/things/"),
    ("/things{#frag}", {"frag": "x"}, "/things{#frag}"),
])
def test_expand_uri_template(href: str, variables: Mapping[str, str | int],
                             expanded: str) -> None:
    assert expand_uri_template(href, variables) == expanded

