"""The HTTP binding: request -> command -> dispatch -> response, and the TD forms it serves.

Status codes (RFC 9110), every error with an RFC 9457 problem details body:

====== =========================================================================
200    a value, a TD, an invocation (queried or cancelled)
201    an action invoked (``Location`` names the invocation)
204    a property written; a synchronous action without output; a long-poll timeout
400    a body that is not JSON, an action input that is not an object
401    no bearer token, or an unknown one, when the server requires tokens
403    a read-only token asking to write, invoke or cancel; a token cancelling another's
       invocation; a ``Host`` the server is not known as (DNS rebinding); a write
       (POST, PUT, DELETE, PATCH) from a page of another site (CSRF)
404    an unknown path, Thing, affordance or invocation (or an expired one); a listing
       ``after`` an invocation it no longer holds
405    a method the resource does not support, e.g. writing a read-only property
409    cancelling an ended invocation; the output of one that did not complete
413    a body over the size limit (from the transport)
415    a body that is not declared ``application/json``; an action's, even empty
422    a value that violates its schema, naming the field
429    an action whose ``max_concurrent`` invocations run and ``max_queued`` wait
500    Thing code that failed (the detail names the exception, never a traceback)
503    running invocations alone fill ``max_invocations(_per_thing)``
====== =========================================================================

Listings of invocations answer a page (:func:`~trio_things.protocol.routes.invocation_page`)
of at most ``limit`` invocations and about 1 MiB, oldest first, with
``Link: <...>; rel="next"`` when more follow.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Sequence
from typing import Any, Final

import attrs
import orjson

from trio_things.errors import NotFound, RemoteProtocolError, Unauthorized
from trio_things.model.affordances import ActionSpec, Affordances, EventSpec, PropertySpec
from trio_things.model.description import Form
from trio_things.model.invocation import Invocation
from trio_things.protocol.access import (
    WWW_AUTHENTICATE,
    AccessPolicy,
    check_action_body,
    check_role,
)
from trio_things.protocol.commands import (
    DocumentReply,
    InvocationListReply,
    InvocationReply,
    NoContentReply,
    QueryAllActions,
    Reply,
    SubscribedReply,
    ValueReply,
)
from trio_things.protocol.invocation_json import invocation_href, invocation_json
from trio_things.protocol.problems import ProblemDetails
from trio_things.protocol.routes import (
    InvocationPage,
    decode_request,
    invocation_page,
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


class HttpBinding:
    """The forms of the HTTP layout (see :mod:`trio_things.protocol.routes`).

    Order matters to generic consumers, which take the first form listing an
    operation: an action's first ``invokeaction`` form answers with the bare output
    (what node-wot expects), the second with a 201 invocation (what LabThings expects).
    """

    def property_forms(self, thing: str, spec: PropertySpec, base: str) -> Sequence[Form]:
        ops = ("readproperty",) if spec.readonly else ("readproperty", "writeproperty")
        return [Form(href=f"{thing}/{spec.name}", op=ops)]

    def action_forms(self, thing: str, spec: ActionSpec, base: str) -> Sequence[Form]:
        return [
            Form(href=f"{thing}/actions/{spec.name}", op=("invokeaction",), method="POST"),
            Form(href=f"{thing}/{spec.name}", op=("invokeaction",), method="POST"),
            Form(href="action_invocations/{id}", op=("queryaction",), method="GET"),
            Form(href="action_invocations/{id}", op=("cancelaction",), method="DELETE"),
        ]

    def event_forms(self, thing: str, spec: EventSpec, base: str) -> Sequence[Form]:
        return [Form(href=f"{thing}/events/{spec.name}", op=("subscribeevent",),
                     subprotocol="longpoll")]

    def thing_forms(self, thing: str, affordances: Affordances, base: str) -> Sequence[Form]:
        forms = [Form(href=f"{thing}/properties", op=("readallproperties",
                                                      "readmultipleproperties"))]
        if any(not spec.readonly for spec in affordances.properties.values()):
            forms.append(Form(href=f"{thing}/properties", op=("writemultipleproperties",),
                              method="PUT"))
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
    response = await _answer(dispatcher, things, request, default_host, access, scheme)
    return attrs.evolve(response, headers=(*response.headers, *cors)) if cors else response


async def _answer(dispatcher: Dispatcher, things: dict[str, Affordances],
                  request: HttpRequest, default_host: str, access: AccessPolicy,
                  scheme: str) -> HttpResponse:
    base = server_base(request.header("host"), default_host, scheme)
    try:
        # The query's access_token does not count here: only on WebSocket handshakes.
        caller = access.caller(authorization=request.header("authorization"),
                               query=request.query)
    except Unauthorized as error:
        response = HttpResponse.problem(ProblemDetails.from_error(error))
        return attrs.evolve(response, headers=(*response.headers,
                                               ("www-authenticate", WWW_AUTHENTICATE)))
    try:
        access.check_write_origin(method=request.method, origin=request.header("origin"),
                                  sec_fetch_site=request.header("sec-fetch-site"),
                                  host=request.header("host"))
        command = decode_request(
            method=request.method,
            target=request.target,
            body=request.body,
            content_type=request.header("content-type"),
            base=base,
            things=things,
        )
        page = invocation_page(request.query) if isinstance(command, QueryAllActions) else None
        check_action_body(command, request.header("content-type"))
        check_role(caller.role, command)
        reply = await dispatcher.run(command, caller=caller)
        if page is not None and isinstance(reply, InvocationListReply):
            assert isinstance(command, QueryAllActions)
            return _invocation_page(reply.invocations, page, _listing_url(command, base))
    except RemoteProtocolError as error:
        return HttpResponse.problem(ProblemDetails.from_error(error))
    return encode_reply(reply, base)  # the transport drops the body of a HEAD response


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
