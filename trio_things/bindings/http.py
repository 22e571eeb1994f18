"""The HTTP binding: request -> command -> dispatch -> response, and the TD forms it serves.

Status codes (RFC 9110), every error with an RFC 9457 problem details body:

====== =========================================================================
200    a value, a TD, an invocation (queried or cancelled)
201    an action invoked (``Location`` names the invocation)
204    a property written; a synchronous action without output; a long-poll timeout
400    a body that is not JSON, an action input that is not an object
401    no bearer token, or an unknown one, when the server requires tokens
403    a read-only token asking to write, invoke or cancel
404    an unknown path, Thing, affordance or invocation (or an expired one)
405    a method the resource does not support, e.g. writing a read-only property
409    cancelling an ended invocation; the output of one that did not complete
413    a body over the size limit (from the transport)
415    a body that is not declared ``application/json``
422    a value that violates its schema, naming the field
500    Thing code that failed (the detail names the exception, never a traceback)
====== =========================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import attrs
import orjson

from trio_things.errors import RemoteProtocolError, Unauthorized
from trio_things.model.affordances import ActionSpec, Affordances, EventSpec, PropertySpec
from trio_things.model.description import Form
from trio_things.protocol.access import WWW_AUTHENTICATE, AccessPolicy, check_role
from trio_things.protocol.commands import (
    DocumentReply,
    InvocationListReply,
    InvocationReply,
    NoContentReply,
    Reply,
    SubscribedReply,
    ValueReply,
)
from trio_things.protocol.invocation_json import invocation_href, invocation_json
from trio_things.protocol.problems import ProblemDetails
from trio_things.protocol.routes import decode_request, server_base
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
    """
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
        role = access.authenticate(authorization=request.header("authorization"),
                                   query=request.query)
    except Unauthorized as error:
        response = HttpResponse.problem(ProblemDetails.from_error(error))
        return attrs.evolve(response, headers=(*response.headers,
                                               ("www-authenticate", WWW_AUTHENTICATE)))
    try:
        command = decode_request(
            method=request.method,
            target=request.target,
            body=request.body,
            content_type=request.header("content-type"),
            base=base,
            things=things,
        )
        check_role(role, command)
        reply = await dispatcher.run(command)
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


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)
