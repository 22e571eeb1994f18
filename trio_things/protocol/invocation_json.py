"""Invocations as clients see them: the JSON shape LabThings clients already read.

``ThingClient`` needs ``id``, ``action`` (a path ending in the action name), ``status``
(``pending``/``running`` while it runs, exactly ``completed`` on success), ``output``
and ``links`` with ``{"rel": "self", "href": ...}`` (``docs/design.md``, "HTTP layout");
we add the TD 1.1 ``href``, the three timestamps, ``input``, ``error`` (problem details)
and ``log``.
"""

from __future__ import annotations

import datetime
from typing import Any

from trio_things.model.invocation import Invocation
from trio_things.protocol.commands import ActionStatusChanged
from trio_things.protocol.problems import ProblemDetails

__all__ = ["invocation_href", "invocation_json", "status_change_json"]


def invocation_href(invocation_id: str) -> str:
    """The invocation's path from the server root."""
    return f"/action_invocations/{invocation_id}"


def _time(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def invocation_json(invocation: Invocation) -> dict[str, Any]:
    """The invocation as a JSON object (hrefs are paths from the server root)."""
    href = invocation_href(invocation.id)
    error = None
    if invocation.error is not None:
        error = ProblemDetails.from_status(
            invocation.error.status, invocation.error.detail).to_json() | {
            "title": invocation.error.title}
    return {
        "id": invocation.id,
        "action": f"/{invocation.thing}/{invocation.action}",
        "href": href,
        "status": invocation.status.value,
        "timeRequested": _time(invocation.time_requested),
        "timeStarted": _time(invocation.time_started),
        "timeCompleted": _time(invocation.time_completed),
        "input": invocation.input,
        "output": invocation.output,
        "error": error,
        "log": [
            {"timestamp": _time(e.timestamp), "level": e.level, "message": e.message}
            for e in invocation.log_lines()
        ],
        "links": [
            {"rel": "self", "href": href},
            {"rel": "output", "href": f"{href}/output"},
        ],
    }


def status_change_json(notification: ActionStatusChanged) -> dict[str, Any]:
    """An invocation as a pushed status change carries it (SSE, MQTT): as
    :func:`invocation_json`, with only the lines logged since the previous change in
    ``log``, and ``logFrom``, how many came before them."""
    status = invocation_json(notification.invocation)
    new_log = notification.new_log
    status["log"] = [{"timestamp": entry.timestamp, "level": entry.level,
                      "message": entry.message} for entry in new_log]
    status["logFrom"] = new_log[0].number - 1 if new_log else notification.invocation.logged
    return status
