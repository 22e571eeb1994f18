"""RFC 9457 problem details: the body of every error reply, over HTTP and WebSocket.

RFC 9457 section 3.1: "The 'status' member, if present, is only advisory; it conveys the
HTTP status code used for the convenience of the consumer." We always include it, as an
integer, because WebSocket replies have no HTTP status line to carry it, and because
LabThings clients read the string ``detail`` member of every error body.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Final

import attrs
import orjson

from trio_things.errors import MethodNotAllowed, RemoteProtocolError

__all__ = [
    "NOTIFICATIONS_MISSED_TYPE",
    "PROBLEM_CONTENT_TYPE",
    "ProblemDetails",
    "notifications_missed",
]

#: RFC 9457 section 3: the media type of a problem details JSON body.
PROBLEM_CONTENT_TYPE: Final = "application/problem+json"


#: RFC 9110 renamed these; Python's ``HTTPStatus`` uses the new names only from 3.13.
#: Titles must not change with the interpreter a server happens to run on.
_RFC9110_TITLES: Final = {413: "Content Too Large", 416: "Range Not Satisfiable",
                          422: "Unprocessable Content"}


def _status_title(status: int) -> str:
    if status in _RFC9110_TITLES:
        return _RFC9110_TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@attrs.frozen(kw_only=True)
class ProblemDetails:
    """One RFC 9457 problem: ``status`` (integer), ``title``, ``detail`` and ``type``.

    ``type`` defaults to ``"about:blank"`` (RFC 9457 section 4.2.1), which means the
    problem is fully described by the HTTP status. ``allow`` is not part of the body:
    it carries the methods for a 405 response's ``Allow`` header.
    """

    status: int = attrs.field(validator=attrs.validators.and_(
        attrs.validators.ge(400), attrs.validators.le(599)))
    title: str
    detail: str
    type: str = "about:blank"
    instance: str | None = None
    allow: tuple[str, ...] = ()

    @classmethod
    def from_status(cls, status: int, detail: str, *,
                    instance: str | None = None) -> ProblemDetails:
        """A problem for ``status`` whose title is that status' standard phrase."""
        return cls(status=status, title=_status_title(status), detail=detail, instance=instance)

    @classmethod
    def from_error(cls, error: RemoteProtocolError) -> ProblemDetails:
        """The problem a peer's mistake is answered with."""
        allow = error.allow if isinstance(error, MethodNotAllowed) else ()
        return cls(status=error.status, title=_status_title(error.status),
                   detail=error.detail, allow=allow)

    @classmethod
    def internal_error(cls) -> ProblemDetails:
        """What a bug is answered with: the peer learns nothing of our internals."""
        return cls.from_status(500, "The server failed to handle this request; see its log.")

    def to_json(self) -> dict[str, Any]:
        """The JSON object of RFC 9457 section 3.1 (``allow`` is a header, not a member)."""
        body: dict[str, Any] = {
            "type": self.type, "title": self.title, "status": self.status, "detail": self.detail,
        }
        if self.instance is not None:
            body["instance"] = self.instance
        return body

    def to_bytes(self) -> bytes:
        """:meth:`to_json` encoded as UTF-8 JSON bytes."""
        return orjson.dumps(self.to_json())


#: The problem type of a gap (RFC 9457 section 3.1.1: a URI that identifies the problem
#: type; a "tag:" URI, RFC 4151, needs no server to resolve it).
NOTIFICATIONS_MISSED_TYPE: Final = "tag:trio-things,2026:notifications-missed"


def notifications_missed(detail: str, *, last_event_id: str, resume_id: str) -> dict[str, Any]:
    """The problem that tells a consumer that came back with ``last_event_id`` of a gap
    (:mod:`trio_things.fanout.history`), whatever the binding: its extension members are
    the id it came with and ``resumeID``, the id to come back with from now on."""
    problem = ProblemDetails.from_status(409, detail).to_json()
    return problem | {"type": NOTIFICATIONS_MISSED_TYPE, "title": "Notifications missed",
                      "lastEventID": last_event_id, "resumeID": resume_id}
