"""HTTP requests -> commands: the whole HTTP layout in one pure function.

The layout (``docs/design.md``, "HTTP layout") keeps LabThings clients working unchanged::

    GET  /                                      ListThings
    GET  /things/                               ListThings
    GET  /thing_descriptions/                   ReadAllThingDescriptions
    GET  /.well-known/wot                       Discover (the directory's TD)
    GET  /.well-known/wot/things                ListThingDescriptions (?offset=&limit=&format=)
    GET  /.well-known/wot/things/{id}           RetrieveThing (a TD by its id)
    GET  /action_invocations/                   QueryAllActions (a page: ?limit=&after=)
    GET  /action_invocations/{id}               QueryAction
    GET  /action_invocations/{id}/output        QueryAction(output_only); a blob's bytes
    DELETE /action_invocations/{id}             CancelAction
    GET  /blob/{id}                             a blob's bytes (blob_route, no command)
    GET  /{thing}/                              ReadThingDescription
    GET  /{thing}/properties                    ReadAllProperties (?names=a,b: multiple)
    PUT  /{thing}/properties                    WriteMultipleProperties
    GET  /{thing}/actions                       QueryAllActions(thing)
    POST /{thing}/actions/{action}              InvokeAction(wait): answers the bare output
    GET  /{thing}/events/{event}                SubscribeEvent (long-poll: the next event)
    GET  /{thing}/{property}                    ReadProperty
    GET  /{thing}/{property}/next               ObserveProperty (long-poll: the next value)
    PUT  /{thing}/{property}                    WriteProperty
    POST /{thing}/{action}                      InvokeAction: 201 with the invocation
    GET  /{thing}/{action}                      QueryAllActions(thing, action)
    GET  /{thing}/{stream}                      WatchStream (multipart/x-mixed-replace)

A ``GET`` that accepts ``text/event-stream`` by name (``event_stream``) asks for the
resource's changes as a Server-Sent Events stream instead (``docs/observing-over-http.md``)::

    GET  /{thing}/properties                    ObserveAllProperties
    GET  /{thing}/{property}  (or .../next)     ObserveProperty
    GET  /{thing}/events                        SubscribeAllEvents (a stream only)
    GET  /{thing}/events/{event}                SubscribeEvent
    GET  /{thing}/{action}                      ObserveAction (every invocation's status)

and any other ``GET`` is answered 406. ``Last-Event-ID`` (``last_event_id``) rides along
as the subscription's ``after``.

Nothing here touches a socket or a Thing: it needs only the names of the Things and
their affordances, so every status it can answer (404, 405, 400, 413, 415) is tested
without a server.

The three listings of invocations (``QueryAllActions``) answer one page each
(:func:`invocation_page`): up to 10,000 invocations are kept, and one response with all
of them would be megabytes, encoded while the server's loop waits.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Collection, Mapping
from typing import Any, Final

import attrs
import orjson

from trio_things.errors import (
    BadRequest,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    UnsupportedMediaType,
)
from trio_things.model.affordances import Affordances
from trio_things.protocol import commands as c

__all__ = [
    "INVOCATION_PAGE_SIZE",
    "MAX_INVOCATION_PAGE_SIZE",
    "STREAM_COMMANDS",
    "InvocationPage",
    "ListingPage",
    "blob_route",
    "decode_request",
    "invocation_page",
    "is_frame_stream",
    "listing_page",
    "server_base",
    "websocket_route",
]

#: Invocations in one page of a listing when the client gives no ``limit``; also the
#: most a WebSocket ``queryallactions`` answers (the newest), which has no pages.
INVOCATION_PAGE_SIZE: Final = 100
#: The most one page holds, whatever ``limit`` asks for.
MAX_INVOCATION_PAGE_SIZE: Final = 1000

_NO_BODY: Final = object()


#: RFC 3986 section 3.2.2 host (reg-name, IPv4, or an IP literal in brackets) and
#: section 3.2.3 port, in ASCII only.
_HOST: Final = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]*)?")


def server_base(host: str | None, default_host: str, scheme: str = "http") -> str:
    """The server's root URL as the client addressed it (``Host``), ending with ``/``.

    A ``Host`` that is no RFC 3986 authority without userinfo (a name or an IP
    literal, and a port) is replaced by ``default_host``: it ends up in TDs, ``Location``
    headers and ids, where anything else (a ``/``, a non-ASCII byte) would break them.
    """
    if not host or not _HOST.fullmatch(host):
        host = default_host
    return f"{scheme}://{host}/"


def decode_request(
    *,
    method: str,
    target: str,
    body: bytes,
    content_type: str | None,
    base: str,
    things: Mapping[str, Affordances],
    event_stream: bool = False,
    last_event_id: str | None = None,
) -> c.Command:
    """Decode one HTTP request into a :class:`~trio_things.protocol.commands.Command`.

    Raises :class:`~trio_things.errors.NotFound` for an unknown path, Thing or
    affordance, :class:`~trio_things.errors.MethodNotAllowed` (with ``allow``) for a
    method the resource does not support, :class:`~trio_things.errors.BadRequest` for a
    body that is not JSON, :class:`~trio_things.errors.UnsupportedMediaType` for a body
    that is not declared as JSON, :class:`~trio_things.errors.NotAcceptable` (406) for
    an event stream of a resource that has none. ``HEAD`` is routed like ``GET``.
    """
    path, _, query = target.partition("?")
    segments = [urllib.parse.unquote(s) for s in path.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash is the same resource
    if method == "HEAD":
        method = "GET"
    command = _decode(method, segments, path, query, body, content_type, base, things,
                      event_stream, last_event_id)
    if event_stream and method == "GET" and not isinstance(command, STREAM_COMMANDS):
        raise NotAcceptable(f"{path!r} has no event stream; the Thing Description's forms "
                            "with subprotocol 'sse' name those that do")
    return command


#: The commands an event stream subscribes with.
STREAM_COMMANDS: Final = (c.ObserveProperty, c.ObserveAllProperties, c.SubscribeEvent,
                          c.SubscribeAllEvents, c.ObserveAction)


def _decode(method: str, segments: list[str], path: str, query: str, body: bytes,
            content_type: str | None, base: str, things: Mapping[str, Affordances],
            event_stream: bool, last_event_id: str | None) -> c.Command:
    """:func:`decode_request`'s routing, for a ``GET`` (not ``HEAD``) or another method."""

    def json_body() -> Any:
        return _json_body(body, content_type)

    match segments:
        case []:
            _allow(method, "GET")
            return c.ListThings(base=base)
        case ["things"]:
            _allow(method, "GET")
            return c.ListThings(base=base)
        case ["thing_descriptions"]:
            _allow(method, "GET")
            return c.ReadAllThingDescriptions(base=base)
        case [".well-known", "wot"]:
            _allow(method, "GET")
            return c.Discover(base=base)
        case [".well-known", "wot", "things"]:
            _allow(method, "GET", detail=_READ_ONLY_DIRECTORY)
            page = listing_page(query)
            return c.ListThingDescriptions(base=base, offset=page.offset, limit=page.limit,
                                           collection=page.collection)
        case [".well-known", "wot", "things", *parts] if any(parts):
            _allow(method, "GET", detail=_READ_ONLY_DIRECTORY)
            return c.RetrieveThing(id="/".join(parts), base=base)
        case ["action_invocations"]:
            _allow(method, "GET")
            return c.QueryAllActions()
        case ["action_invocations", invocation_id]:
            _allow(method, "GET", "DELETE")
            if method == "DELETE":
                return c.CancelAction(invocation_id=invocation_id)
            return c.QueryAction(invocation_id=invocation_id)
        case ["action_invocations", invocation_id, "output"]:
            _allow(method, "GET")
            return c.QueryAction(invocation_id=invocation_id, output_only=True)
        case [thing]:
            _affordances(things, thing)
            _allow(method, "GET")
            return c.ReadThingDescription(thing=thing, base=base)
        case [thing, "properties"]:
            _affordances(things, thing)
            _allow(method, "GET", "PUT")
            if method == "PUT":
                values = json_body()
                if not isinstance(values, dict):
                    raise BadRequest("expected a JSON object of property names and values")
                return c.WriteMultipleProperties(thing=thing, values=values)
            if event_stream and method == "GET":
                return c.ObserveAllProperties(thing=thing)
            names = urllib.parse.parse_qs(query).get("names")
            if names:
                return c.ReadMultipleProperties(
                    thing=thing, names=tuple(n for v in names for n in v.split(",") if n))
            return c.ReadAllProperties(thing=thing)
        case [thing, "actions"]:
            _affordances(things, thing)
            _allow(method, "GET")
            return c.QueryAllActions(thing=thing)
        case [thing, "actions", name]:
            if name not in _affordances(things, thing).actions:
                raise NotFound(f"Thing {thing!r} has no action {name!r}")
            _allow(method, "POST")
            return c.InvokeAction(thing=thing, name=name, input=_action_input(body, content_type),
                                  wait=True)
        case [thing, "events", name]:
            if name not in _affordances(things, thing).events:
                raise NotFound(f"Thing {thing!r} has no event {name!r}")
            _allow(method, "GET")
            return c.SubscribeEvent(thing=thing, name=name, after=last_event_id)
        case [thing, "events"]:
            _affordances(things, thing)
            _allow(method, "GET")
            if not event_stream:
                raise NotAcceptable(f"the events of {thing!r} are served as an event stream "
                                    "only (Accept: text/event-stream); one event's href "
                                    "also answers a long-poll")
            return c.SubscribeAllEvents(thing=thing, after=last_event_id)
        case [thing, name, "next"] if name in _affordances(things, thing).properties:
            _allow(method, "GET")
            return c.ObserveProperty(thing=thing, name=name)
        case [thing, name]:
            affordances = _affordances(things, thing)
            prop = affordances.properties.get(name)
            if prop is not None:
                if prop.readonly:
                    _allow(method, "GET", detail=f"property {name!r} is read-only")
                _allow(method, "GET", "PUT")
                if method == "PUT":
                    return c.WriteProperty(thing=thing, name=name, value=json_body())
                if event_stream:
                    if not prop.observable:
                        raise NotAcceptable(f"property {name!r} is not observable: it "
                                            "has no event stream")
                    return c.ObserveProperty(thing=thing, name=name)
                return c.ReadProperty(thing=thing, name=name)
            if name in affordances.streams:
                _allow(method, "GET")
                return c.WatchStream(thing=thing, name=name)
            if name in affordances.actions:
                _allow(method, "GET", "POST")
                if method == "POST":
                    return c.InvokeAction(thing=thing, name=name,
                                          input=_action_input(body, content_type))
                if event_stream:
                    return c.ObserveAction(thing=thing, name=name, after=last_event_id)
                return c.QueryAllActions(thing=thing, action=name)
            raise NotFound(f"Thing {thing!r} has no property, action or stream {name!r}")
    raise NotFound(f"no resource at {path!r}")


#: Why the directory (``/.well-known/wot/things``) answers only GET and HEAD.
_READ_ONLY_DIRECTORY: Final = (
    "the directory is read-only: it lists the Things this server serves, whose Thing "
    "Descriptions no request can create, update or delete")


def _affordances(things: Mapping[str, Affordances], thing: str) -> Affordances:
    try:
        return things[thing]
    except KeyError:
        raise NotFound(f"no Thing named {thing!r}") from None


def _allow(method: str, *allowed: str, detail: str | None = None) -> None:
    if method not in allowed:
        allow = (*allowed, "HEAD") if "GET" in allowed else allowed
        raise MethodNotAllowed(detail or f"{method} is not allowed here", allow=allow)


def _json_body(body: bytes, content_type: str | None) -> Any:
    if content_type is not None:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise UnsupportedMediaType(
                f"the body must be application/json, not {media_type or 'empty'!r}")
    if not body.strip():
        raise BadRequest("the body is empty; expected a JSON value")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None


def _action_input(body: bytes, content_type: str | None) -> Any:
    """An action's input: an empty body means no arguments (``{}``)."""
    if not body.strip():
        return {}
    return _json_body(body, content_type)


@attrs.frozen(kw_only=True)
class InvocationPage:
    """Which page of a listing of invocations (oldest first) a client asked for."""

    limit: int = INVOCATION_PAGE_SIZE
    """At most this many invocations (1 to :data:`MAX_INVOCATION_PAGE_SIZE`)."""
    after: str | None = None
    """Those after the invocation with this id (the last of the previous page); None:
    from the first."""


def invocation_page(query: str) -> InvocationPage:
    """The page a listing's query asks for: ``limit`` (a positive integer; more than
    :data:`MAX_INVOCATION_PAGE_SIZE` is taken as that) and ``after`` (an invocation
    id). Other parameters are left to others (``access_token``). Raises
    :class:`~trio_things.errors.BadRequest` for a ``limit`` that is no positive integer
    or an empty ``after``."""
    parameters = urllib.parse.parse_qs(query, keep_blank_values=True)
    limit = INVOCATION_PAGE_SIZE
    if "limit" in parameters:
        text = parameters["limit"][-1]
        digits = text.lstrip("0")
        if not (text.isascii() and text.isdigit()) or not digits:
            raise BadRequest(f"limit must be a positive integer, not {text!r}")
        # Never int() of thousands of digits: Python refuses those (ValueError).
        limit = MAX_INVOCATION_PAGE_SIZE if len(digits) > 9 else min(
            int(digits), MAX_INVOCATION_PAGE_SIZE)
    after = None
    if "after" in parameters:
        after = parameters["after"][-1]
        if not after:
            raise BadRequest("after must be the id of an invocation, not empty")
    return InvocationPage(limit=limit, after=after)


@attrs.frozen(kw_only=True)
class ListingPage:
    """Which page of the directory's listing (TDs sorted by id) a client asked for."""

    offset: int = 0
    """TDs skipped before the page (zero-based)."""
    limit: int | None = None
    """At most this many TDs (a positive integer); None: all from ``offset``."""
    collection: bool = False
    """``format=collection``: a ``ThingCollection`` object rather than an array."""


#: Larger numbers are taken as this one: no server serves that many Things.
_HUGE: Final = 10**9


def listing_page(query: str) -> ListingPage:
    """The page of the directory's listing a query asks for (WoT Discovery): ``offset``
    (a non-negative integer), ``limit`` (a positive one) and ``format`` (``array`` or
    ``collection``). Other parameters are left to others (``access_token``). Raises
    :class:`~trio_things.errors.BadRequest` for anything else."""
    parameters = urllib.parse.parse_qs(query, keep_blank_values=True)
    offset = 0
    if "offset" in parameters:
        offset = _integer(parameters["offset"][-1], "offset", "a non-negative integer")
    limit = None
    if "limit" in parameters:
        limit = _integer(parameters["limit"][-1], "limit", "a positive integer")
        if limit == 0:
            raise BadRequest("limit must be a positive integer, not 0")
    collection = False
    if "format" in parameters:
        text = parameters["format"][-1]
        if text not in ("array", "collection"):
            raise BadRequest(f"format must be 'array' or 'collection', not {text!r}")
        collection = text == "collection"
    return ListingPage(offset=offset, limit=limit, collection=collection)


def _integer(text: str, name: str, expected: str) -> int:
    """``text`` as a non-negative decimal integer, at most :data:`_HUGE`."""
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(f"{name} must be {expected}, not {text!r}")
    digits = text.lstrip("0")
    # Never int() of thousands of digits: Python refuses those (ValueError).
    return _HUGE if len(digits) > 9 else int(digits or "0")


def is_frame_stream(path: str, things: Mapping[str, Affordances]) -> bool:
    """Whether ``path`` is a frame stream's (``/{thing}/{stream}``): a browser shows it
    with ``<img src>``, which can send no header, so its token may come in the query."""
    segments = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
    return (len(segments) == 2 and segments[0] in things
            and segments[1] in things[segments[0]].streams)


def websocket_route(path: str, things: Collection[str]) -> str | None:
    """The Thing a WebSocket path addresses (``""`` for the server-wide ``/ws``), or
    ``None`` when the path is no WebSocket endpoint."""
    segments = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
    match segments:
        case ["ws"]:
            return ""
        case [thing, "ws"] if thing in things:
            return thing
    return None


def blob_route(method: str, path: str) -> str | None:
    """The id a blob's path (``/blob/{id}``, one trailing slash allowed) names, or
    ``None`` when the path is no blob's. Blobs are answered by the HTTP binding, not by
    a command: their bytes are no JSON. Raises
    :class:`~trio_things.errors.MethodNotAllowed` for a method but ``GET`` and ``HEAD``.
    """
    if not path.startswith("/blob/"):
        return None  # every other request, at the cost of one comparison
    segments = [urllib.parse.unquote(s) for s in path.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()
    match segments:
        case ["blob", blob_id]:
            _allow("GET" if method == "HEAD" else method, "GET",
                   detail="a blob is read only: GET or HEAD")
            return blob_id
    return None
