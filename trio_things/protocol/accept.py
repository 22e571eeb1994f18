"""``Accept`` (RFC 9110 section 12.5.1), as far as the server negotiates: by name.

The server offers another representation than its JSON in two places only: an event
stream (``text/event-stream``, what ``EventSource`` asks for) and the dashboard
(``text/html``, what a browser's navigation asks for). Both are given only to a client
that names the media type, so a ``*/*`` (curl, most libraries) keeps getting JSON.
"""

from __future__ import annotations

__all__ = ["names"]


def names(accept: str | None, media_type: str) -> bool:
    """Whether ``accept`` names ``media_type`` (case aside) with a quality above 0."""
    if not accept:
        return False
    for part in accept.split(","):
        name, _, parameters = part.partition(";")
        if name.strip().lower() == media_type and not _refused(parameters):
            return True
    return False


def _refused(parameters: str) -> bool:
    """Whether the parameters say ``q=0`` (RFC 9110 section 12.4.2: "not acceptable")."""
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value.strip()) == 0.0
            except ValueError:
                return False
    return False
