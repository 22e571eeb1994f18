"""What an action invocation is at one moment: :class:`State`, :class:`ActionStatus`
and its :class:`LogLine` values, parsed from either shape a server sends (a Web Thing
Protocol status, an HTTP invocation).

Immutable values, sans-IO: apart from :class:`~trio_things.client.actions.Invocation`,
the live handle that follows them, which re-exports them.
"""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import attrs

from trio_things.client.errors import problem_from_json
from trio_things.client.values import JsonValue
from trio_things.protocol.problems import ProblemDetails

__all__ = ["ActionStatus", "LogLine", "State", "looks_like_invocation"]


class State(enum.Enum):
    """Where an invocation is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        """Whether this state is final."""
        return self in (State.COMPLETED, State.FAILED, State.CANCELLED)

    @property
    def rank(self) -> int:
        """Order of the life cycle: a status never moves to a lower rank."""
        return 2 if self.ended else (1 if self is State.RUNNING else 0)

    @classmethod
    def parse(cls, value: object) -> State:
        """A server's state name, leniently: LabThings says ``error`` for ``failed``;
        an unknown name is taken as still running, so nobody stops waiting too early."""
        if isinstance(value, str):
            name = _ALIASES.get(value.lower(), value.lower())
            for state in cls:
                if state.value == name:
                    return state
        return cls.RUNNING


_ALIASES: Final = {"error": "failed", "canceled": "cancelled", "idle": "pending",
                   "queued": "pending", "success": "completed", "succeeded": "completed"}


@attrs.frozen(kw_only=True)
class LogLine:
    """One line the action logged (servers that keep an invocation log send them)."""

    timestamp: str | None
    level: str
    message: str

    def to_json(self) -> dict[str, JsonValue]:
        """The line as JSON, as servers send it."""
        return {"timestamp": self.timestamp, "level": self.level, "message": self.message}


@attrs.frozen(kw_only=True)
class ActionStatus:
    """One invocation's status at one moment."""

    id: str
    """The invocation's id on the server (``""`` when the server gave none: an action
    answered synchronously)."""
    action: str
    state: State
    output: JsonValue = None
    error: ProblemDetails | None = None
    time_requested: str | None = None
    time_ended: str | None = None
    log: tuple[LogLine, ...] = ()
    log_from: int = 0
    """How many lines the action logged before the first in :attr:`log`: a trio-things
    notification carries only the lines since the previous one (``logFrom``)."""
    href: str | None = None
    """The invocation's absolute URL, when the server named one."""

    @classmethod
    def from_wtp(cls, status: object, *, action: str) -> ActionStatus:
        """From the Web Thing Protocol's ActionStatus object (``actionID``, ``state``,
        ``output``, ``error``, ``timeRequested``, ``timeEnded``; and ``log``, which
        trio-things servers add)."""
        data: Mapping[str, Any] = status if isinstance(status, dict) else {}
        error = data.get("error")
        return cls(id=_str(data.get("actionID")) or "", action=action,
                   state=State.parse(data.get("state")), output=data.get("output"),
                   error=problem_from_json(error) if error else None,
                   time_requested=_str(data.get("timeRequested")),
                   time_ended=_str(data.get("timeEnded")), log=_log(data.get("log")),
                   log_from=_count(data.get("logFrom")))

    @classmethod
    def from_invocation(cls, body: object, *, action: str, url: str,
                        location: str | None = None) -> ActionStatus:
        """From an HTTP invocation object (the LabThings shape: ``id``, ``status``,
        ``output``, ``error``, ``log``, ``links``), resolving its hrefs against ``url``.
        Lenient: a server may send less (an id in ``Location`` only, say)."""
        data: Mapping[str, Any] = body if isinstance(body, dict) else {}
        href = _self_link(data) or _str(data.get("href")) or location
        href = urllib.parse.urljoin(url, href) if href else None
        identifier = _str(data.get("id")) or _str(data.get("actionID"))
        if identifier is None and href:
            identifier = urllib.parse.urlsplit(href).path.rstrip("/").rsplit("/", 1)[-1]
        state = data.get("status", data.get("state"))
        if isinstance(state, dict):  # an ActionStatus object under "status"
            return attrs.evolve(cls.from_wtp(state, action=action), href=href)
        error = data.get("error")
        return cls(
            id=identifier or "", action=action, state=State.parse(state),
            output=data.get("output"), error=problem_from_json(error) if error else None,
            time_requested=_str(data.get("timeRequested")),
            time_ended=_str(data.get("timeCompleted")) or _str(data.get("timeEnded")),
            log=_log(data.get("log")), href=href)

    def to_json(self) -> dict[str, JsonValue]:
        """The status as JSON (what ``trio-things invoke --json`` prints): ``log`` and
        ``href`` only when there are some."""
        out: dict[str, JsonValue] = {"action": self.action, "id": self.id,
                                     "state": self.state.value}
        if self.state is State.COMPLETED:
            out["output"] = self.output
        if self.error is not None:
            out["error"] = self.error.to_json()
        if self.time_requested is not None:
            out["timeRequested"] = self.time_requested
        if self.time_ended is not None:
            out["timeEnded"] = self.time_ended
        if self.log:
            out["log"] = [line.to_json() for line in self.log]
        if self.href is not None:
            out["href"] = self.href
        return out


def looks_like_invocation(body: object) -> bool:
    """Whether a 200 answer to an invoke is an invocation rather than the output: an
    object with a string ``id`` and a known ``status`` plus a link to itself."""
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        return False
    status = body.get("status")
    known = isinstance(status, str) and status.lower() in (
        {s.value for s in State} | set(_ALIASES))
    return known and ("links" in body or "href" in body)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _log(value: object) -> tuple[LogLine, ...]:
    """The ``log`` member of either shape: a list of ``timestamp``, ``level``,
    ``message`` objects (anything else in it is skipped)."""
    return tuple(LogLine(timestamp=_str(line.get("timestamp")),
                         level=_str(line.get("level")) or "INFO",
                         message=_str(line.get("message")) or "")
                 for line in (value if isinstance(value, list) else [])
                 if isinstance(line, dict))


def _self_link(data: Mapping[str, Any]) -> str | None:
    links = data.get("links")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("rel") == "self":
            return _str(link.get("href"))
    return None
