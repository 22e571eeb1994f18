"""The one exception hierarchy of trio-things.

Like h11, we separate two kinds of mistake:

* :class:`LocalProtocolError`: *our* side got it wrong: a Thing class that cannot be
  described, a server misconfiguration, a call made in the wrong state. These are bugs
  in the program using trio-things and should be fixed, not answered.
* :class:`RemoteProtocolError`: the *peer* got it wrong: an unknown Thing, a value
  that violates its schema, malformed JSON. These are data, not crashes: each carries
  the HTTP ``status`` it should be answered with (see RFC 9457 problem details in
  :mod:`trio_things.protocol.problems`), and the connection edge turns it into a reply.

Any other exception reaching a connection's edge is a bug in trio-things or in Thing
code: it is logged once with its traceback and answered with 500, never allowed to take
a connection's neighbours down.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InvalidValue",
    "LocalProtocolError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RemoteProtocolError",
    "ThingDefinitionError",
    "ThingsError",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "unknown_names",
]


def unknown_names(given: Iterable[str], known: Iterable[str], *, what: str = "key") -> str:
    """A message for names that are not among ``known``, each with the nearest known
    name where one is close, then every known name: ``unknown key 'prot' (did you mean
    'port'?); the keys are: host, port``. Empty when every name is known.

    For the mistakes people make when they write a name by hand (a keyword argument, a
    configuration key), so that the message carries the fix.
    """
    known = sorted(known)
    unknown = [name for name in given if name not in known]
    if not unknown:
        return ""
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1) or [
            candidate for candidate in known if len(name) >= 3 and candidate.startswith(name)]
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    plural = "s" if len(unknown) > 1 else ""
    return (f"unknown {what}{plural} {', '.join(parts)}; the {what}s are: "
            f"{', '.join(known)}")


class ThingsError(Exception):
    """Root of every exception trio-things raises on purpose."""


class LocalProtocolError(ThingsError):
    """This program used trio-things wrongly (a bug to fix, not a peer to answer)."""


class ThingDefinitionError(LocalProtocolError):
    """A Thing class cannot be served as written (bad annotation, reserved name, ...).

    Raised when the class is *defined*, so the mistake surfaces at import time with the
    class and attribute named, not at the first request.
    """


class RemoteProtocolError(ThingsError):
    """The peer sent something we cannot accept.

    ``detail`` is a human-readable explanation meant for the client (RFC 9457
    ``detail``); it must never contain secrets. ``status`` is the HTTP status the
    error is answered with; subclasses fix it, and the base class accepts any.
    """

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad Request"

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r}, status={self.status})"


class BadRequest(RemoteProtocolError):
    """Malformed input: not JSON, missing fields, wrong shape."""


class Unauthorized(RemoteProtocolError):
    """No bearer token, or one the server does not know (RFC 6750 section 3)."""

    status = 401
    title = "Unauthorized"


class Forbidden(RemoteProtocolError):
    """Authenticated, but not allowed: a read-only token asking to write, or a WebSocket
    handshake from an Origin that is not allowed."""

    status = 403
    title = "Forbidden"


class TooManyRequests(RemoteProtocolError):
    """The client sends faster than its rate limit."""

    status = 429
    title = "Too Many Requests"


class NotFound(RemoteProtocolError):
    """No such Thing, affordance, route or invocation."""

    status = 404
    title = "Not Found"


class MethodNotAllowed(RemoteProtocolError):
    """The resource exists but does not support this operation (e.g. a read-only write).

    ``allow`` lists the methods that *are* supported, for the ``Allow`` header.
    """

    status = 405
    title = "Method Not Allowed"

    def __init__(self, detail: str, *, allow: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.allow = allow


class NotAcceptable(RemoteProtocolError):
    """No representation the client accepts: an event stream of what has none."""

    status = 406
    title = "Not Acceptable"


class Conflict(RemoteProtocolError):
    """The request is valid but the resource is in the wrong state for it."""

    status = 409
    title = "Conflict"


class PayloadTooLarge(RemoteProtocolError):
    """The body is larger than the configured limit."""

    status = 413
    title = "Content Too Large"


class UnsupportedMediaType(RemoteProtocolError):
    """The body is not ``application/json``."""

    status = 415
    title = "Unsupported Media Type"


class InvalidValue(RemoteProtocolError, ValueError):
    """A value violates its affordance's schema.

    Raised both for values a client sends and for values Thing code assigns to a
    property, so the message always names the offending field (``path``), e.g.
    ``setpoint: 200 is greater than the maximum 150``. It is also a :class:`ValueError`,
    so Thing code can catch it the ordinary way.
    """

    status = 422
    title = "Unprocessable Content"

    def __init__(self, detail: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {detail}" if path else detail)
        self.path = path
