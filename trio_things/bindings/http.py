"""The HTTP binding: request -> command -> dispatch -> response, and the TD forms it serves.

Status codes (RFC 9110), every error with an RFC 9457 problem details body:

====== =========================================================================
200    a value, a TD, an invocation (queried or cancelled)
201    an action invoked (``Location`` names the invocation)
204    a property written; a synchronous action without output; a long-poll timeout
206    the one range of a blob's bytes a ``Range`` asked for
400    a body that is not JSON, an action input that is not an object; a listing's
       ``limit``, ``offset`` or ``format`` that is none
401    no bearer token, or an unknown one, when the server requires tokens
403    a read-only token asking to write, invoke or cancel; a token cancelling another's
       invocation; a ``Host`` the server is not known as (DNS rebinding); a write
       (POST, PUT, DELETE, PATCH) from a page of another site (CSRF)
404    an unknown path, Thing, affordance or invocation (or an expired one); a listing
       ``after`` an invocation it no longer holds; a TD id the directory does not hold
405    a method the resource does not support, e.g. writing a read-only property or
       a TD of the (read-only) directory
409    cancelling an ended invocation; the output of one that did not complete
413    a body over the size limit (from the transport)
415    a body that is not declared ``application/json``; an action's, even empty
416    a ``Range`` that starts past the end of a blob (``Content-Range: bytes */SIZE``)
422    a value that violates its schema, naming the field
429    an action whose ``max_concurrent`` invocations run and ``max_queued`` wait
500    Thing code that failed (the detail names the exception, never a traceback)
503    running invocations alone fill ``max_invocations(_per_thing)``
====== =========================================================================

Observation over plain HTTP (``docs/observing-over-http.md``): a ``GET`` that accepts
``text/event-stream`` is answered 200 with a Server-Sent Events stream
(:mod:`trio_things.bindings.sse`); a long-poll (``.../next`` of a property, an event's
href) waits up to ``long_poll_timeout`` for the next change, as an observer with an
Outbox of its own, and answers it with its id in ``Last-Event-ID`` (and a property's
``ETag``); a ``HEAD`` of either is answered at once. A long-poll that sends
``Last-Event-ID`` is answered with the first event it missed, if the replay ring holds
one; ``409`` if the ring no longer reaches back that far. A property long-poll whose
``If-None-Match`` is not the value's ``ETag`` is answered with the value at once.

A ``GET`` of a frame stream (``tt.frame_stream``) is answered 200 with a live image
stream, ``multipart/x-mixed-replace`` (:mod:`trio_things.protocol.multipart`), served
by the same stream body as SSE; a ``HEAD`` with its head alone.

A blob (:mod:`trio_things.model.blob`) is answered with its bytes at ``/blob/{id}``
(:func:`~trio_things.protocol.routes.blob_route`), and at its invocation's
``/output``: a :class:`~trio_things.transport.http.SizedBody` streamed from memory or
its file (:func:`~trio_things.runtime.blobs.blob_chunks`), whole or one range
(:mod:`~trio_things.protocol.ranges`), to any caller that may read.

The directory's listing of TDs (``/.well-known/wot/things``) answers a page of them,
``application/ld+json``, with ``Link`` to the next page and to the whole collection
(:mod:`trio_things.protocol.directory`).

Listings of invocations answer a page (:func:`~trio_things.protocol.routes.invocation_page`)
of at most ``limit`` invocations and about 1 MiB, oldest first, with
``Link: <...>; rel="next"`` when more follow.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import attrs
import orjson
import trio

from trio_things.bindings.blobs import blob_response, live_blob, output_blob
from trio_things.bindings.dashboard import ACCESS_PATH, dashboard_response
from trio_things.bindings.sse import IMAGE_STREAM, EventStream
from trio_things.errors import NotFound, RemoteProtocolError, Unauthorized
from trio_things.fanout.observers import Observer
from trio_things.fanout.outbox import Outbox
from trio_things.model.affordances import ActionSpec, Affordances, EventSpec, PropertySpec
from trio_things.model.description import Form
from trio_things.model.invocation import Invocation
from trio_things.protocol import multipart, sse
from trio_things.protocol.access import (
    WWW_AUTHENTICATE,
    AccessPolicy,
    Caller,
    check_action_body,
    check_role,
)
from trio_things.protocol.commands import (
    DescriptionPageReply,
    DocumentReply,
    InvocationListReply,
    InvocationReply,
    NoContentReply,
    NotificationsMissed,
    ObserveAction,
    ObserveProperty,
    QueryAction,
    QueryAllActions,
    Reply,
    SubscribedReply,
    SubscribeEvent,
    ValueReply,
    WatchStream,
)
from trio_things.protocol.directory import LISTING_CONTENT_TYPE, encode_listing
from trio_things.protocol.invocation_json import invocation_href, invocation_json
from trio_things.protocol.limits import HttpLimits
from trio_things.protocol.longpoll import ID_HEADER, bare, encode_poll, split_poll
from trio_things.protocol.problems import (
    PROBLEM_CONTENT_TYPE,
    ProblemDetails,
    notifications_missed,
)
from trio_things.protocol.routes import (
    STREAM_COMMANDS,
    InvocationPage,
    blob_route,
    decode_request,
    invocation_page,
    is_frame_stream,
    server_base,
)
from trio_things.runtime.dispatcher import Dispatcher
from trio_things.transport.http import HttpRequest, HttpResponse

__all__ = ["HttpBinding", "handle_http_request"]

logger = logging.getLogger("trio_things.http")

_JSON: Final = "application/json"
#: What a CORS preflight from an allowed origin is told (the Fetch standard's
#: ``Access-Control-Allow-*`` headers); ten minutes before the browser asks again.
_PREFLIGHT: Final = (
    ("access-control-allow-methods", "GET, HEAD, PUT, POST, DELETE"),
    ("access-control-allow-headers", "Authorization, Content-Type"),
    ("access-control-max-age", "600"),
)
#: Bytes of invocations one page holds at most (yet at least one invocation): a page of
#: a thousand invocations, each with a log of a thousand lines, would be a hundred
#: megabytes, encoded while the server's loop waits.
_PAGE_BYTES: Final = 1 << 20
#: The head of every event stream. ``no-transform`` and ``X-Accel-Buffering`` keep
#: proxies (nginx among them) from buffering it.
_STREAM_HEADERS: Final = (
    ("content-type", sse.CONTENT_TYPE),
    ("cache-control", "no-cache, no-transform"),
    ("x-accel-buffering", "no"),
)
#: The head of every live image stream (a frame stream, MJPEG): never cached, never
#: buffered by a proxy (each part replaces the one before; a stored copy means nothing).
_IMAGE_STREAM_HEADERS: Final = (
    ("content-type", multipart.CONTENT_TYPE),
    ("cache-control", "no-cache, no-store, no-transform"),
    ("x-accel-buffering", "no"),
)
#: Notifications a long-poll may be handed before it answers the first: it answers one.
_POLL_OUTBOX: Final = 64


class HttpBinding:
    """The forms of the HTTP layout (see :mod:`trio_things.protocol.routes`).

    Order matters to generic consumers, which take the first form listing an
    operation: an action's first ``invokeaction`` form answers with the bare output
    (what node-wot expects), the second with a 201 invocation (what LabThings expects);
    observing and subscribing list Server-Sent Events first (one stream, lossless up to
    the replay ring), then long-poll (a request per change).
    """

    @property
    def context(self) -> Mapping[str, str]:
        return {}  # the TD context defines the terms it uses

    def property_forms(self, thing: str, spec: PropertySpec, base: str) -> Sequence[Form]:
        ops = ("readproperty",) if spec.readonly else ("readproperty", "writeproperty")
        forms = [Form(href=f"{thing}/{spec.name}", op=ops)]
        if spec.observable:
            observe = ("observeproperty", "unobserveproperty")
            forms += [Form(href=f"{thing}/{spec.name}", op=observe, subprotocol="sse"),
                      Form(href=f"{thing}/{spec.name}/next", op=observe,
                           subprotocol="longpoll")]
        return forms

    def action_forms(self, thing: str, spec: ActionSpec, base: str) -> Sequence[Form]:
        return [
            Form(href=f"{thing}/actions/{spec.name}", op=("invokeaction",), method="POST"),
            Form(href=f"{thing}/{spec.name}", op=("invokeaction",), method="POST"),
            Form(href="action_invocations/{id}", op=("queryaction",), method="GET"),
            Form(href="action_invocations/{id}", op=("cancelaction",), method="DELETE"),
        ]

    def event_forms(self, thing: str, spec: EventSpec, base: str) -> Sequence[Form]:
        subscribe = ("subscribeevent", "unsubscribeevent")
        return [Form(href=f"{thing}/events/{spec.name}", op=subscribe, subprotocol=protocol)
                for protocol in ("sse", "longpoll")]

    def thing_forms(self, thing: str, affordances: Affordances, base: str) -> Sequence[Form]:
        forms = [Form(href=f"{thing}/properties", op=("readallproperties",
                                                      "readmultipleproperties"))]
        if any(not spec.readonly for spec in affordances.properties.values()):
            forms.append(Form(href=f"{thing}/properties", op=("writemultipleproperties",),
                              method="PUT"))
        if any(spec.observable for spec in affordances.properties.values()):
            forms.append(Form(href=f"{thing}/properties", subprotocol="sse",
                              op=("observeallproperties", "unobserveallproperties")))
        if affordances.events:
            forms.append(Form(href=f"{thing}/events", subprotocol="sse",
                              op=("subscribeallevents", "unsubscribeallevents")))
        if affordances.actions:
            forms.append(Form(href=f"{thing}/actions", op=("queryallactions",)))
        return forms


async def handle_http_request(
    dispatcher: Dispatcher,
    things: dict[str, Affordances],
    request: HttpRequest,
    *,
    default_host: str,
    access: AccessPolicy,
    scheme: str = "http",
    limits: HttpLimits = HttpLimits(),
    long_poll_timeout: float = 30.0,
) -> HttpResponse:
    """Answer one HTTP request. Never raises for a client's mistake: those become
    problem details; anything else propagates to the transport, which logs it and
    answers 500.

    Access (:mod:`trio_things.protocol.access`) is checked before the request is even
    routed, so a client without a valid token learns nothing of what the server holds.
    A CORS preflight (``OPTIONS`` from an allowed origin) is answered without a token,
    as browsers send none with it. ``scheme`` (``https`` behind TLS) begins every URL the
    answer holds: the TD's ``base``, its WebSocket forms (``wss``), ``Location``.

    Before anything, even a preflight, the ``Host`` is checked: a page whose name was
    rebound to this server's address (DNS rebinding) gets 403 and nothing else. Before
    routing, a write from a page of another site (CSRF) gets 403; after, an action's
    body declared as a form's content type 415 (:mod:`~trio_things.protocol.access`).
    An event stream from a page of another site not allowed in ``cors_origins`` gets
    403 too, and may carry its token as ``?access_token=`` (``EventSource`` can send no
    header). ``limits`` bound event streams; ``long_poll_timeout`` a long-poll's wait.
    """
    try:
        access.check_host(request.header("host"), bound=default_host)
    except RemoteProtocolError as error:
        return HttpResponse.problem(ProblemDetails.from_error(error))
    allow_origin = access.cors_origin(request.header("origin"))
    cors = (("access-control-allow-origin", allow_origin), ("vary", "Origin")
            ) if allow_origin else ()
    if request.method == "OPTIONS" and allow_origin and request.header(
            "access-control-request-method"):
        return HttpResponse(status=204, headers=(*cors, *_PREFLIGHT))
    page = dashboard_response(request)  # the dashboard's page and files need no token
    if page is not None:
        return page
    response = await _answer(dispatcher, things, request, default_host, access, scheme,
                             limits, long_poll_timeout)
    return attrs.evolve(response, headers=(*response.headers, *cors)) if cors else response


async def _answer(dispatcher: Dispatcher, things: dict[str, Affordances],
                  request: HttpRequest, default_host: str, access: AccessPolicy,
                  scheme: str, limits: HttpLimits, long_poll_timeout: float) -> HttpResponse:
    base = server_base(request.header("host"), default_host, scheme)
    event_stream = request.method in ("GET", "HEAD") and sse.wants_event_stream(
        request.header("accept"))
    # The query's access_token counts only where a browser can send no header: an
    # EventSource, an <img> showing a frame stream.
    query_token = event_stream or (request.method in ("GET", "HEAD")
                                   and is_frame_stream(request.path, things))
    try:
        caller = access.caller(authorization=request.header("authorization"),
                               query=request.query, query_token=query_token)
    except Unauthorized as error:
        response = HttpResponse.problem(ProblemDetails.from_error(error))
        return attrs.evolve(response, headers=(*response.headers,
                                               ("www-authenticate", WWW_AUTHENTICATE)))
    if request.path == ACCESS_PATH and request.method in ("GET", "HEAD"):
        return HttpResponse.json(200, _dumps({"role": caller.role.value}),
                                 headers=(("cache-control", "no-store"),))
    try:
        access.check_write_origin(method=request.method, origin=request.header("origin"),
                                  sec_fetch_site=request.header("sec-fetch-site"),
                                  host=request.header("host"))
        if (blob_id := blob_route(request.method, request.path)) is not None:
            return blob_response(live_blob(blob_id), request)
        command = decode_request(
            method=request.method,
            target=request.target,
            body=request.body,
            content_type=request.header("content-type"),
            base=base,
            things=things,
            event_stream=event_stream,
            last_event_id=request.header(ID_HEADER),
        )
        page = invocation_page(request.query) if isinstance(command, QueryAllActions) else None
        check_action_body(command, request.header("content-type"))
        check_role(caller.role, command)
        if event_stream:
            assert isinstance(command, STREAM_COMMANDS)  # else decode_request raised 406
            access.check_stream_origin(origin=request.header("origin"),
                                       host=request.header("host"))
            return HttpResponse(status=200, headers=_STREAM_HEADERS, stream=EventStream(
                command=command, caller=caller, dispatcher=dispatcher, limits=limits,
                encoder=sse.encode_value if isinstance(command, _ONE_AFFORDANCE)
                else sse.encode_named))
        if isinstance(command, WatchStream):  # a frame stream: multipart, whatever Accept says
            access.check_stream_origin(origin=request.header("origin"),
                                       host=request.header("host"))
            media_type = things[command.thing].streams[command.name].media_type
            return HttpResponse(status=200, headers=_IMAGE_STREAM_HEADERS, stream=EventStream(
                command=command, caller=caller, dispatcher=dispatcher, limits=limits,
                encoder=multipart.encoder_for(media_type), format=IMAGE_STREAM))
        if isinstance(command, ObserveProperty | SubscribeEvent):
            if request.method == "HEAD":  # node-wot's long-poll asks first, and waits 1 s
                return HttpResponse(status=200, headers=(("content-type", _JSON),))
            return await _long_poll(dispatcher, command, caller, long_poll_timeout,
                                    request.header("if-none-match"), request.peer_left)
        reply = await dispatcher.run(command, caller=caller)
        if isinstance(command, QueryAction) and command.output_only and (
                blob := output_blob(reply)) is not None:
            return blob_response(blob, request)  # its bytes, as LabThings serves them
        if page is not None and isinstance(reply, InvocationListReply):
            assert isinstance(command, QueryAllActions)
            return _invocation_page(reply.invocations, page, _listing_url(command, base))
    except RemoteProtocolError as error:
        return HttpResponse.problem(ProblemDetails.from_error(error))
    return encode_reply(reply, base)  # the transport drops the body of a HEAD response


#: Stream commands of one affordance, whose messages are unnamed (sse.encode_value).
_ONE_AFFORDANCE: Final = (ObserveProperty, SubscribeEvent, ObserveAction)


async def _long_poll(dispatcher: Dispatcher, command: ObserveProperty | SubscribeEvent,
                     caller: Caller, wait_seconds: float, if_none_match: str | None,
                     peer_left: Callable[[], Awaitable[None]]) -> HttpResponse:
    """Wait up to ``wait_seconds`` for the next change, as an observer of its own; 204 if
    none came, or if the client closed the connection first (``peer_left``), which
    nobody reads. See the module docstring for ``Last-Event-ID`` and ``If-None-Match``."""
    outbox = Outbox(_POLL_OUTBOX)
    observer = Observer(outbox=outbox, encoder=encode_poll, framer=bare)
    try:
        reply = await dispatcher.run(command, observer, caller=caller)
        assert isinstance(reply, SubscribedReply)
        if reply.missed and isinstance(gap := reply.missed[0], NotificationsMissed):
            return _gap(gap)
        if reply.missed:
            return _polled(encode_poll(reply.missed[0]))
        if reply.initial and if_none_match is not None:
            current = encode_poll(reply.initial[0])
            if not _etag_matches(if_none_match, _etag(split_poll(current)[1])):
                return _polled(current)
        message = None
        async with trio.open_nursery() as nursery:
            # Stop waiting when the client leaves: nothing else reads the connection
            # meanwhile, and its observer stayed until the timeout (30 s by default),
            # however many clients came and went (test_observing_over_http.py).
            nursery.start_soon(_cancel_when, peer_left, nursery.cancel_scope)
            with trio.move_on_after(wait_seconds):
                await outbox.receive_channel.receive()
                message = b"".join(outbox.take()[0])
            nursery.cancel_scope.cancel()
        if message is not None:
            return _polled(message)
        # Nothing came: come back with the id of when this poll began, and what comes
        # meanwhile is not lost.
        return HttpResponse(status=204, headers=((ID_HEADER, reply.event_id),)
                            if reply.event_id is not None else ())
    finally:
        dispatcher.observers.leave_all(outbox)
        outbox.close()


async def _cancel_when(happened: Callable[[], Awaitable[None]], scope: trio.CancelScope
                       ) -> None:
    await happened()
    scope.cancel()


def _polled(message: bytes) -> HttpResponse:
    event_id, body = split_poll(message)
    return HttpResponse.json(200, body, headers=(
        (ID_HEADER, event_id), ("etag", _etag(body)), ("cache-control", "no-store")))


def _etag(body: bytes) -> str:
    """A strong validator of a JSON value (RFC 9110 section 8.8.3)."""
    return f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 section 13.1.2: ``*``, or a list with ``etag`` (weakly compared)."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _gap(gap: NotificationsMissed) -> HttpResponse:
    """409: the replay ring no longer reaches back to the long-poll's ``Last-Event-ID``."""
    problem = notifications_missed(gap.detail, last_event_id=gap.last_event_id,
                                   resume_id=gap.resume_id)
    return HttpResponse.json(409, _dumps(problem), PROBLEM_CONTENT_TYPE,
                             headers=((ID_HEADER, gap.resume_id),))


def encode_reply(reply: Reply, base: str) -> HttpResponse:
    """The HTTP response for a :data:`~trio_things.runtime.dispatcher.Reply`."""
    match reply:
        case ValueReply(value=value):
            return HttpResponse.json(200, _dumps(value))
        case DocumentReply(document=document, content_type=content_type):
            return HttpResponse.json(200, _dumps(document), content_type=content_type)
        case InvocationReply(invocation=invocation, created=created):
            body = _dumps(invocation_json(invocation))
            if created:
                location = base.rstrip("/") + invocation_href(invocation.id)
                return HttpResponse.json(201, body, headers=(("location", location),))
            return HttpResponse.json(200, body)
        case InvocationListReply(invocations=invocations):
            return HttpResponse.json(200, _dumps([invocation_json(i) for i in invocations]))
        case DescriptionPageReply():
            body, link = encode_listing(reply, base)
            return HttpResponse.json(200, body, content_type=LISTING_CONTENT_TYPE,
                                     headers=(("link", link),))
        case NoContentReply() | SubscribedReply():
            return HttpResponse(status=204)


def _invocation_page(invocations: Sequence[Invocation], page: InvocationPage,
                     url: str) -> HttpResponse:
    """One page of a listing at ``url``: the invocations after ``page.after``, at most
    ``page.limit`` of them and about :data:`_PAGE_BYTES`, with a ``Link`` to the next
    page when more follow. :class:`~trio_things.errors.NotFound` when the listing no
    longer holds ``page.after`` (expired, or forgotten to make room): the client lists
    again from the first page rather than skip or repeat some unknowingly."""
    start = 0
    if page.after is not None:
        start = next((i + 1 for i, invocation in enumerate(invocations)
                      if invocation.id == page.after), -1)
        if start < 0:
            raise NotFound(f"this listing holds no invocation {page.after!r} (unknown, "
                           "expired or forgotten); list again from the first page")
    parts: list[bytes] = []
    size = 0
    for invocation in invocations[start:start + page.limit]:
        part = _dumps(invocation_json(invocation))
        if parts and size + len(part) > _PAGE_BYTES:
            break
        parts.append(part)
        size += len(part) + 1
    end = start + len(parts)
    headers: tuple[tuple[str, str], ...] = ()
    if end < len(invocations):
        query = urllib.parse.urlencode({"limit": page.limit, "after": invocations[end - 1].id})
        headers = (("link", f'<{url}?{query}>; rel="next"'),)
    return HttpResponse.json(200, b"[" + b",".join(parts) + b"]", headers=headers)


def _listing_url(command: QueryAllActions, base: str) -> str:
    """The listing's URL, built from the command rather than echoed from the request
    target, which ends up in a header."""
    if command.thing is None:
        return f"{base}action_invocations/"
    if command.action is None:
        return f"{base}{command.thing}/actions"
    return f"{base}{command.thing}/{command.action}"


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)
