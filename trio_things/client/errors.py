"""What can go wrong when consuming a Thing, one class per thing a caller handles differently.

Every class is a :class:`~trio_things.errors.ThingsError` (the package's one root) under
:class:`ClientError`, and carries ``problem``: the RFC 9457 problem details the server
sent, or ``None`` when the mistake was found on this side (a name the Thing Description
does not list, a connection refused). A caller that only wants the server's words reads
``error.problem.detail``; one that wants to branch catches the class:

==================== ================================================== ========
class                when                                               CLI exit
==================== ================================================== ========
NotFound             no such Thing, property, action, event, invocation 2
NotAThing            ... the URL is a server's or an affordance's, not  2
                     a Thing's (it says which URL to use instead)
NotWritable          writing a read-only property                       2
InvalidValue         a value or input the server refused (400, 422), or 2
                     one that does not fit the type that was asked for
UnsupportedOperation the TD offers no form this client speaks for it    2
ServerError          any other error answer (401, 409, 500, ...)        2 or 1
ActionFailed         the action ran and raised                          1
ActionCancelled      the action was cancelled                           1
ConnectionLost       the connection broke, or could not be made         3
InvocationLost       ... for longer than ``reconnect_for``, while       3
                     following an invocation (``href`` names it)
Unreachable          ... could not be made at all (refused, no route)   3
Timeout              no answer within the configured timeout            3
FellBehind           an event subscription's buffer overflowed          1
NotificationsMissed  a subscription resumed after a lost connection,    (goes on)
                     but the server no longer held every event it
                     missed (or it restarted): raised in the gap's
                     place, the subscription goes on
==================== ================================================== ========

A ``ServerError`` exits 2 for a 4xx answer (the request was wrong), 1 for a 5xx.

Some classes also derive from the builtin a caller would reach for first:
``NotFound`` is a :class:`LookupError`, ``InvalidValue`` a :class:`ValueError`,
``ConnectionLost`` a :class:`ConnectionError` and ``Timeout`` a :class:`TimeoutError`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Final

from trio_things.errors import ThingsError
from trio_things.protocol.problems import ProblemDetails

__all__ = [
    "ActionCancelled",
    "ActionFailed",
    "ClientError",
    "ConnectionLost",
    "FellBehind",
    "InvalidValue",
    "InvocationLost",
    "NotAThing",
    "NotFound",
    "NotWritable",
    "NotificationsMissed",
    "ServerError",
    "Timeout",
    "Unreachable",
    "UnsupportedOperation",
    "error_for_problem",
    "problem_from_json",
]

#: How much of a body that is not problem details we quote in an error's detail.
_QUOTED_BODY_CHARS: Final = 200


class ClientError(ThingsError):
    """Root of the client's errors. ``problem``: what the server said, if it said anything."""

    def __init__(self, message: str, *, problem: ProblemDetails | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problem = problem

    @property
    def status(self) -> int | None:
        """The HTTP status of the server's answer (also in WebSocket errors), if any."""
        return None if self.problem is None else self.problem.status

    def __str__(self) -> str:
        return self.message


class NotFound(ClientError, LookupError):
    """No such Thing, affordance or invocation: the TD does not list it, or the server
    answered 404 (an invocation it has forgotten, say).

    A :class:`ClientError`, not the server's :class:`trio_things.errors.NotFound` (an
    answer it sends): one ``except ClientError`` catches every failure a client sees."""


class NotAThing(NotFound):
    """The URL given for a Thing Description is something else a server answers: its
    root (which lists its Things) or one of a Thing's affordances. The message says
    which URL to use instead; so do the attributes.
    """

    def __init__(self, message: str, *, things: tuple[str, ...] = (),
                 thing_url: str | None = None, kind: str | None = None,
                 name: str | None = None) -> None:
        super().__init__(message)
        self.things = things
        """For a server's root URL: the TD URLs of its Things."""
        self.thing_url = thing_url
        """For an affordance's URL: the TD URL of its Thing."""
        self.kind = kind
        """... and what it is: ``"property"``, ``"action"`` or ``"event"``."""
        self.name = name
        """... and its name."""


class NotWritable(ClientError):
    """The property is read-only: the TD offers no ``writeproperty`` form, or the server
    answered 405."""


class InvalidValue(ClientError, ValueError):
    """A value the server refused (400, 422: ``problem.detail`` names the field), or a
    value the server sent that does not fit the type the caller asked for.

    A :class:`ClientError`, not the server's :class:`trio_things.errors.InvalidValue`
    (a refusal it sends), for the same reason as :class:`NotFound`."""


class UnsupportedOperation(ClientError):
    """The Thing Description offers no form this client speaks for the operation (say,
    ``observeproperty`` without a ``webthingprotocol`` WebSocket form)."""


class ServerError(ClientError):
    """The server answered with an error no more specific class describes: 401 or 403
    (a token is missing or not enough), 409, a 5xx."""


class ActionFailed(ClientError):
    """The action ran and raised; ``problem`` is the invocation's error (its ``title``
    is the exception's class on trio-things servers)."""


class ActionCancelled(ClientError):
    """The action was cancelled (by this client or another) before it completed."""


class ConnectionLost(ClientError, ConnectionError):
    """The connection to the server broke, or could not be used."""


class InvocationLost(ConnectionLost):
    """The server could not be reached for ``ClientOptions.reconnect_for`` seconds while
    an invocation was being followed: its outcome is unknown. The action may still be
    running; ``href`` (its absolute URL, where the server gave one) is where to ask."""

    def __init__(self, message: str, *, href: str | None, invocation_id: str) -> None:
        super().__init__(message)
        self.href = href
        self.invocation_id = invocation_id


class Unreachable(ConnectionLost):
    """No connection could be made at all: refused, no route, unknown host."""


class Timeout(ClientError, TimeoutError):
    """The server did not answer within the timeout (``ClientOptions.timeout``)."""


class FellBehind(ClientError):
    """An event subscription's buffer overflowed because its reader was too slow.

    Events are history, so they are never silently dropped: the subscription ends with
    this error once the events received before the overflow have been read.
    """


class NotificationsMissed(ClientError):
    """A gap in an event subscription: it lost its connection, and when it came back
    the server no longer held every event emitted meanwhile (its replay ring had
    overflowed), or it had restarted. Events before the gap were delivered, events
    after it follow: this marks where some are missing, and how many is unknown.

    Raised by the subscription's iterator in the gap's place, once; the subscription
    stays open, and iterating it again goes on with the events after the gap (see
    :class:`~trio_things.client.Observation`). ``problem`` is what the server sent
    (409, type ``tag:trio-things,2026:notifications-missed``, ``detail`` says why).

    A :class:`ClientError`, not the server's
    :class:`trio_things.protocol.commands.NotificationsMissed` (a notification it sends).
    """

    def __init__(self, message: str, *, problem: ProblemDetails | None, name: str,
                 last_event_id: str | None, resume_id: str | None) -> None:
        super().__init__(message, problem=problem)
        self.name = name
        """The event's name."""
        self.last_event_id = last_event_id
        """The id of the last event received before the gap (what the client resumed
        from)."""
        self.resume_id = resume_id
        """The id the server resumed from: the events that follow come after it."""


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_from_json(body: Any, status: int | None = None) -> ProblemDetails:
    """Problem details from whatever an error answer held, leniently.

    A server that is not trio-things may send no body, plain text, or an object missing
    members; RFC 9457 makes every member optional. ``status`` is the HTTP status when
    there is one (it wins over the body's advisory ``status``, RFC 9457 section 3.1.2).
    """
    if isinstance(body, dict):
        body_status = body.get("status")
        if status is None and isinstance(body_status, int):
            status = body_status
        status = status if status is not None and 400 <= status <= 599 else 500
        detail = body.get("detail")
        title = body.get("title")
        kind = body.get("type")
        instance = body.get("instance")
        return ProblemDetails(
            status=status,
            title=title if isinstance(title, str) else _phrase(status),
            detail=detail if isinstance(detail, str) else _quote(body),
            type=kind if isinstance(kind, str) else "about:blank",
            instance=instance if isinstance(instance, str) else None)
    status = status if status is not None and 400 <= status <= 599 else 500
    return ProblemDetails(status=status, title=_phrase(status),
                          detail=_quote(body) if body not in (None, "", b"") else _phrase(status))


def _quote(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = body if isinstance(body, str) else repr(body)
    return text if len(text) <= _QUOTED_BODY_CHARS else text[:_QUOTED_BODY_CHARS] + "..."


def error_for_problem(problem: ProblemDetails, *, operation: str, what: str) -> ClientError:
    """The exception for an error answer to ``operation`` on ``what`` (``"property
    'setpoint'"``), by status: 404 NotFound, 405 NotWritable (for a write), 400 and 422
    InvalidValue, anything else ServerError."""
    message = f"{what}: {problem.detail}"
    if problem.status == 404:
        return NotFound(message, problem=problem)
    if problem.status == 405 and operation in ("writeproperty", "writemultipleproperties",
                                               "writeallproperties"):
        return NotWritable(message, problem=problem)
    if problem.status in (400, 422):
        return InvalidValue(message, problem=problem)
    return ServerError(f"{what}: {problem.status} {problem.title}: {problem.detail}",
                       problem=problem)
