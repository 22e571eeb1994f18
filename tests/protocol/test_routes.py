"""The HTTP layout, tested without a server: every route and every status it can answer;
and the paths of the WebSocket endpoints."""

from __future__ import annotations

import re
from typing import Any

import pytest

from trio_things.demo import Counter, Thermometer
from trio_things.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    RemoteProtocolError,
    UnsupportedMediaType,
)
from trio_things.protocol import commands as c
from trio_things.protocol.problems import ProblemDetails
from trio_things.protocol.routes import decode_request, server_base, websocket_route

THINGS = {"thermometer": Thermometer.affordances, "counter": Counter.affordances}
BASE = "http://h/"


def route(method: str, target: str, body: bytes = b"",
          content_type: str | None = "application/json") -> c.Command:
    return decode_request(method=method, target=target, body=body, content_type=content_type,
                          base=BASE, things=THINGS)


@pytest.mark.parametrize(("method", "target", "body", "expected"), [
    ("GET", "/", b"", c.ListThings(base=BASE)),
    ("GET", "/things/", b"", c.ListThings(base=BASE)),
    ("GET", "/thing_descriptions/", b"", c.ReadAllThingDescriptions(base=BASE)),
    ("GET", "/.well-known/wot", b"", c.Discover(base=BASE)),
    ("GET", "/.well-known/wot/things", b"", c.ListThingDescriptions(base=BASE)),
    ("HEAD", "/.well-known/wot/things/", b"", c.ListThingDescriptions(base=BASE)),
    ("GET", "/.well-known/wot/things?offset=2&limit=5&format=collection&access_token=x",
     b"", c.ListThingDescriptions(base=BASE, offset=2, limit=5, collection=True)),
    ("GET", "/.well-known/wot/things?format=array&offset=007", b"",
     c.ListThingDescriptions(base=BASE, offset=7)),
    ("GET", "/.well-known/wot/things/urn:uuid:1234", b"",
     c.RetrieveThing(id="urn:uuid:1234", base=BASE)),
    ("GET", "/.well-known/wot/things/urn%3Auuid%3A1234", b"",
     c.RetrieveThing(id="urn:uuid:1234", base=BASE)),
    ("GET", "/.well-known/wot/things/https://example.com/td/1", b"",
     c.RetrieveThing(id="https://example.com/td/1", base=BASE)),
    ("GET", "/action_invocations/", b"", c.QueryAllActions()),
    ("GET", "/action_invocations/abc", b"", c.QueryAction(invocation_id="abc")),
    ("GET", "/action_invocations/abc/output", b"",
     c.QueryAction(invocation_id="abc", output_only=True)),
    ("DELETE", "/action_invocations/abc", b"", c.CancelAction(invocation_id="abc")),
    ("GET", "/counter/", b"", c.ReadThingDescription(thing="counter", base=BASE)),
    ("GET", "/counter", b"", c.ReadThingDescription(thing="counter", base=BASE)),
    ("HEAD", "/counter/", b"", c.ReadThingDescription(thing="counter", base=BASE)),
    ("GET", "/counter/properties", b"", c.ReadAllProperties(thing="counter")),
    ("GET", "/thermometer/properties?names=setpoint,temperature", b"",
     c.ReadMultipleProperties(thing="thermometer", names=("setpoint", "temperature"))),
    ("PUT", "/counter/properties", b'{"count": 3}',
     c.WriteMultipleProperties(thing="counter", values={"count": 3})),
    ("GET", "/counter/actions", b"", c.QueryAllActions(thing="counter")),
    ("POST", "/counter/actions/increment", b"",
     c.InvokeAction(thing="counter", name="increment", input={}, wait=True)),
    ("GET", "/thermometer/events/overheated", b"",
     c.SubscribeEvent(thing="thermometer", name="overheated")),
    ("GET", "/counter/count", b"", c.ReadProperty(thing="counter", name="count")),
    ("PUT", "/counter/count", b"7", c.WriteProperty(thing="counter", name="count", value=7)),
    ("POST", "/counter/increment", b'{"by": 2}',
     c.InvokeAction(thing="counter", name="increment", input={"by": 2})),
    ("GET", "/counter/increment", b"", c.QueryAllActions(thing="counter", action="increment")),
])
def test_routes(method: str, target: str, body: bytes, expected: c.Command) -> None:
    assert route(method, target, body) == expected


@pytest.mark.parametrize(("method", "target", "error", "status"), [
    ("GET", "/nope/", NotFound, 404),
    ("GET", "/counter/nope", NotFound, 404),
    ("GET", "/counter/a/b/c", NotFound, 404),
    ("GET", "/counter/..%2Fthermometer", NotFound, 404),
    ("GET", "/../counter/", NotFound, 404),
    ("GET", "/counter%2Fcount", NotFound, 404),
    ("GET", "/counter/" + "x" * 10_000, NotFound, 404),
    ("BREW", "/counter/count", MethodNotAllowed, 405),
    ("GET", "/counter/actions/nope", NotFound, 404),
    ("GET", "/counter/events/nope", NotFound, 404),
    ("PUT", "/thermometer/temperature", MethodNotAllowed, 405),
    ("DELETE", "/counter/count", MethodNotAllowed, 405),
    ("POST", "/counter/", MethodNotAllowed, 405),
    ("PATCH", "/action_invocations/abc", MethodNotAllowed, 405),
    ("GET", "/counter/actions/increment", MethodNotAllowed, 405),
    ("POST", "/.well-known/wot", MethodNotAllowed, 405),
    ("GET", "/.well-known/wot/nope", NotFound, 404),
    ("GET", "/.well-known/nope", NotFound, 404),
])
def test_route_errors(method: str, target: str, error: type[RemoteProtocolError],
                      status: int) -> None:
    with pytest.raises(error) as info:
        route(method, target, b"1")
    assert info.value.status == status


def test_read_only_write_names_allowed_methods() -> None:
    with pytest.raises(MethodNotAllowed, match="read-only") as info:
        route("PUT", "/thermometer/temperature", b"1")
    problem = ProblemDetails.from_error(info.value)
    assert problem.allow == ("GET", "HEAD")
    assert problem.to_json()["status"] == 405


@pytest.mark.parametrize(("method", "target"), [
    ("POST", "/.well-known/wot/things"),
    ("PUT", "/.well-known/wot/things/urn:uuid:1234"),
    ("PATCH", "/.well-known/wot/things/urn:uuid:1234"),
    ("DELETE", "/.well-known/wot/things/urn:uuid:1234"),
])
def test_the_directory_is_read_only(method: str, target: str) -> None:
    """WoT Discovery's create, update and delete are optional; a method an endpoint does
    not support is answered 405, as WoT Discovery advises; the detail says why."""
    with pytest.raises(MethodNotAllowed, match="read-only") as info:
        route(method, target, b"{}")
    assert ProblemDetails.from_error(info.value).allow == ("GET", "HEAD")


@pytest.mark.parametrize(("query", "detail"), [
    ("limit=0", "limit must be a positive integer, not 0"),
    ("limit=-1", "limit must be a positive integer, not '-1'"),
    ("limit=", "limit must be a positive integer, not ''"),
    ("limit=ten", "limit must be a positive integer"),
    ("offset=-1", "offset must be a non-negative integer, not '-1'"),
    ("offset=1.5", "offset must be a non-negative integer"),
    ("offset=%D9%A3", "offset must be a non-negative integer"),  # an Arabic-Indic 3
    ("format=jsonld", "format must be 'array' or 'collection', not 'jsonld'"),
])
def test_bad_listing_parameters(query: str, detail: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(detail)):
        route("GET", f"/.well-known/wot/things?{query}")


def test_listing_parameters_of_many_digits_are_taken_as_huge() -> None:
    command = route("GET", "/.well-known/wot/things?offset=" + "9" * 5000 + "&limit=1" + "0" * 50)
    assert isinstance(command, c.ListThingDescriptions)
    assert command.offset == command.limit == 10**9


@pytest.mark.parametrize(("body", "content_type", "error"), [
    (b"{not json", "application/json", BadRequest),
    (b"", "application/json", BadRequest),
    (b"7", "text/plain", UnsupportedMediaType),
    (b"count=7", "application/x-www-form-urlencoded", UnsupportedMediaType),
])
def test_bad_bodies(body: bytes, content_type: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        route("PUT", "/counter/count", body, content_type)


@pytest.mark.parametrize("content_type", [
    "application/json; charset=utf-8", "application/td+json", None])
def test_json_media_types(content_type: str | None) -> None:
    command: Any = route("PUT", "/counter/count", b"7", content_type)
    assert command.value == 7


def test_write_multiple_needs_an_object() -> None:
    with pytest.raises(BadRequest, match="JSON object"):
        route("PUT", "/counter/properties", b"[1]")


def test_server_base_uses_host_header_but_not_nonsense() -> None:
    assert server_base("example:81", "127.0.0.1:8000") == "http://example:81/"
    assert server_base(None, "127.0.0.1:8000") == "http://127.0.0.1:8000/"
    assert server_base("evil/path", "127.0.0.1:8000") == "http://127.0.0.1:8000/"


def test_websocket_route() -> None:
    things = {"counter"}
    assert websocket_route("/ws", things) == ""
    assert websocket_route("/counter/ws", things) == "counter"
    assert websocket_route("/counter/ws/", things) == "counter"
    assert websocket_route("/nothing/ws", things) is None
    assert websocket_route("/counter/count", things) is None


# --------------------------------------------------------------------------- observing over HTTP


def stream(target: str, last_event_id: str | None = None, method: str = "GET") -> c.Command:
    return decode_request(method=method, target=target, body=b"", content_type=None,
                          base=BASE, things=THINGS, event_stream=True,
                          last_event_id=last_event_id)


@pytest.mark.parametrize(("target", "expected"), [
    ("/thermometer/temperature", c.ObserveProperty(thing="thermometer", name="temperature")),
    ("/thermometer/temperature/next",
     c.ObserveProperty(thing="thermometer", name="temperature")),
    ("/thermometer/properties", c.ObserveAllProperties(thing="thermometer")),
    ("/thermometer/events", c.SubscribeAllEvents(thing="thermometer", after="e.3")),
    ("/thermometer/events/overheated",
     c.SubscribeEvent(thing="thermometer", name="overheated", after="e.3")),
    ("/counter/increment", c.ObserveAction(thing="counter", name="increment", after="e.3")),
])
def test_an_event_stream_request_observes(target: str, expected: c.Command) -> None:
    assert stream(target, "e.3") == expected
    assert stream(target, "e.3", method="HEAD") == expected


def test_a_long_poll_is_a_plain_get_of_the_next_change() -> None:
    assert route("GET", "/thermometer/temperature/next") == c.ObserveProperty(
        thing="thermometer", name="temperature")
    assert decode_request(method="GET", target="/thermometer/events/overheated", body=b"",
                          content_type=None, base=BASE, things=THINGS,
                          last_event_id="e.9") == c.SubscribeEvent(
        thing="thermometer", name="overheated", after="e.9")


@pytest.mark.parametrize(("target", "detail"), [
    ("/", "'/' has no event stream"),
    ("/counter/", "'/counter/' has no event stream"),
    ("/counter/actions", "has no event stream"),
    ("/action_invocations/abc", "has no event stream"),
])
def test_an_event_stream_of_what_has_none_is_not_acceptable(target: str, detail: str) -> None:
    with pytest.raises(RemoteProtocolError, match=detail) as info:
        stream(target)
    assert info.value.status == 406


def test_the_events_of_a_thing_are_a_stream_only() -> None:
    with pytest.raises(RemoteProtocolError, match="as an event stream only") as info:
        route("GET", "/thermometer/events")
    assert info.value.status == 406


def test_next_is_only_a_route_of_properties() -> None:
    with pytest.raises(NotFound):
        route("GET", "/counter/increment/next")
    with pytest.raises(NotFound):
        route("GET", "/nope/count/next")
    with pytest.raises(MethodNotAllowed):
        route("PUT", "/counter/count/next", b"1")
