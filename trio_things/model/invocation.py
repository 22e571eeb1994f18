"""The record of one action invocation, and the rules its status follows.

Theory of operation
-------------------
An invocation is created ``pending`` when a client asks for an action, becomes
``running`` when its task (or worker thread) starts, and ends in exactly one of
``completed`` (it returned), ``failed`` (it raised) or ``cancelled`` (a client cancelled
it, or the server shut down while it ran). A pending invocation may be cancelled before
it ever runs. Ended invocations never change again; they are kept for a retention time
so clients can fetch the result, then forgotten.

=========== ===================================== ==========
from        to                                    why
=========== ===================================== ==========
pending     running                               task started
pending     cancelled                             cancelled before it started
running     completed / failed / cancelled        returned / raised / cancelled
=========== ===================================== ==========

Any other transition is a bug in trio-things and raises
:class:`~trio_things.errors.LocalProtocolError`.

This module keeps the *record*; running the action (tasks, threads, cancel scopes) is
the server's job (:mod:`trio_things.runtime.actions`).
"""

from __future__ import annotations

import collections
import datetime
import enum
import uuid
from typing import Any, Final

import attrs

from trio_things.errors import LocalProtocolError

__all__ = ["Invocation", "InvocationError", "InvocationStatus", "LogEntry"]


class InvocationStatus(enum.Enum):
    """Where an invocation is in its life; the values are what clients see."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        """Whether this status is final."""
        return self in _ENDED


_ENDED: Final = frozenset(
    {InvocationStatus.COMPLETED, InvocationStatus.FAILED, InvocationStatus.CANCELLED})

_TRANSITIONS: Final[dict[InvocationStatus, frozenset[InvocationStatus]]] = {
    InvocationStatus.PENDING: frozenset({InvocationStatus.RUNNING, InvocationStatus.CANCELLED}),
    InvocationStatus.RUNNING: _ENDED,
    InvocationStatus.COMPLETED: frozenset(),
    InvocationStatus.FAILED: frozenset(),
    InvocationStatus.CANCELLED: frozenset(),
}

#: Log lines kept per invocation; older ones are dropped (a chatty action must not
#: grow memory without bound).
MAX_LOG_ENTRIES: Final = 1000


@attrs.frozen(kw_only=True)
class LogEntry:
    """One line an action logged while it ran."""

    timestamp: datetime.datetime
    level: str
    message: str
    number: int = 0
    """The line's place in the whole log, from 1: it stays right when older lines are
    dropped (``MAX_LOG_ENTRIES``), so "the lines after line *n*" has one meaning."""


@attrs.frozen(kw_only=True)
class InvocationError:
    """Why an invocation failed: what the client may see (never a traceback).

    ``status`` is the HTTP status the failure maps to: 422 when the action rejected its
    input with :class:`~trio_things.errors.InvalidValue`, 500 for anything else.
    """

    title: str
    detail: str
    status: int = 500


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@attrs.define(eq=False, kw_only=True)
class Invocation:
    """One invocation of one action of one Thing. Identity object: compared by ``id``.

    Mutated only through :meth:`start` and :meth:`finish`, which enforce the table
    above and stamp the times.
    """

    thing: str
    action: str
    input: Any
    id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    status: InvocationStatus = InvocationStatus.PENDING
    time_requested: datetime.datetime = attrs.field(factory=_now)
    time_started: datetime.datetime | None = None
    time_completed: datetime.datetime | None = None
    output: Any = None
    error: InvocationError | None = None
    log: collections.deque[LogEntry] = attrs.field(
        factory=lambda: collections.deque(maxlen=MAX_LOG_ENTRIES))
    logged: int = 0
    """How many lines were logged in all (older ones may be gone from :attr:`log`)."""
    log_notified: int = 0
    """The number of the last line a status notification carried (the notifier's own
    bookkeeping, on the Trio thread): the next one carries the lines after it."""

    def _move(self, status: InvocationStatus) -> None:
        if status not in _TRANSITIONS[self.status]:
            raise LocalProtocolError(
                f"invocation {self.id}: {self.status.value} -> {status.value} is not allowed")
        self.status = status

    def start(self) -> None:
        """``pending`` -> ``running``."""
        self._move(InvocationStatus.RUNNING)
        self.time_started = _now()

    def finish(self, status: InvocationStatus, *, output: Any = None,
               error: InvocationError | None = None) -> None:
        """End the invocation as ``completed`` (with its JSON ``output``), ``failed``
        (with its ``error``) or ``cancelled``."""
        if status not in _ENDED:
            raise LocalProtocolError(f"{status.value} is not a final status")
        self._move(status)
        self.time_completed = _now()
        self.output = output
        self.error = error

    def add_log(self, level: str, message: str) -> None:
        """Append a log line. Called by the action's own thread (or task) only; readers
        on the Trio thread take :meth:`log_lines`, a copy made atomically."""
        self.logged += 1
        self.log.append(LogEntry(timestamp=_now(), level=level, message=message,
                                 number=self.logged))

    def log_lines(self, *, after: int = 0) -> tuple[LogEntry, ...]:
        """The lines still kept, numbered above ``after``. ``deque.copy`` runs without
        releasing the GIL, so a thread appending meanwhile cannot break the copy, as it
        would break an iteration of the deque itself."""
        return tuple(entry for entry in self.log.copy() if entry.number > after)
