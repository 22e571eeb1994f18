"""The handle of an action invocation: live status, result, cancellation.

Where the status comes from depends on the form the action was invoked through
(chosen by :meth:`ConsumedThing.invoke`, which see):

* **Web Thing Protocol** (a ``webthingprotocol`` WebSocket form): the server pushes an
  ``invokeaction`` notification at each change, to the connection that invoked. If
  that connection is lost, the handle falls back to polling ``queryaction``. A
  trio-things server's status also carries the action's ``log`` lines (our extension of
  the draft's ActionStatus).
* **HTTP, answered with an invocation** (201, as LabThings servers do): the handle polls
  the ``queryaction`` form (``GET`` on the invocation) every
  ``ClientOptions.poll_interval`` until the invocation ends. Such a status also carries
  the action's ``log`` lines, its progress.
* **HTTP, answered with the output** (what generic WoT servers do): the action had
  already ended when ``invoke`` returned; the handle only holds the result.

Rules of the status: it only moves forward (``pending`` -> ``running`` -> ended), so a
late poll cannot undo a pushed change; once ended it never changes again.
:meth:`Invocation.updates` yields the latest status each time it changes: a slow reader
may skip an intermediate one, never the final one.

Polling runs in a task of the client's nursery, started with the handle and ended
with the invocation or the client. When a poll cannot reach the server, a warning is
logged (``trio_things.client``) and polling goes on with backoff; once the server has
been unreachable for ``ClientOptions.reconnect_for`` seconds, the handle gives up:
:meth:`Invocation.updates` and :meth:`Invocation.result` raise
:class:`~trio_things.client.errors.InvocationLost`, naming the invocation's URL.
"""

from __future__ import annotations

import enum
import logging
import math
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final, Protocol, TypeVar, overload

import attrs
import trio

from trio_things.client.backoff import Backoff
from trio_things.client.errors import (
    ActionCancelled,
    ActionFailed,
    ClientError,
    ConnectionLost,
    InvocationLost,
    NotFound,
    Timeout,
    problem_from_json,
)
from trio_things.client.options import ClientOptions
from trio_things.client.values import JsonValue, from_json
from trio_things.client.wtp import Message
from trio_things.protocol.problems import ProblemDetails

__all__ = ["ActionChannel", "ActionStatus", "Invocation", "LogLine", "State"]

logger = logging.getLogger("trio_things.client")

T = TypeVar("T")
Spawn = Callable[[Callable[[], Awaitable[None]]], None]


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


class ActionChannel(Protocol):
    """How a handle reaches its invocation on the server (the consumed Thing knows the
    forms)."""

    async def query(self, status: ActionStatus) -> ActionStatus:
        """The invocation's current status (``queryaction``)."""
        ...

    async def cancel(self, status: ActionStatus) -> ActionStatus | None:
        """Ask for cancellation (``cancelaction``); the status the server answered
        with, if it answered with one. Raises a 409 ``ServerError`` if it had ended."""
        ...


class Invocation:
    """One invocation of an action, as :meth:`ConsumedThing.invoke` returns it.

    The client's handle, not the server's record (:class:`trio_things.model.invocation.
    Invocation`): the client never imports the server, and a handle polls and cancels.

    ``status`` is the latest known :class:`ActionStatus`. The handle needs the client
    that made it to be open (``async with connect(...)``) to learn anything new.
    """

    def __init__(self, *, action: str, channel: ActionChannel, options: ClientOptions,
                 spawn: Spawn, on_end: Callable[[], None] = lambda: None) -> None:
        self.action = action
        self._channel = channel
        self._options = options
        self._spawn = spawn
        self._on_end = on_end
        self._status: ActionStatus | None = None
        self._error: ClientError | None = None
        self._changed = trio.Event()
        self._polling = False

    @property
    def status(self) -> ActionStatus:
        """The latest status known."""
        if self._status is None:
            return ActionStatus(id="", action=self.action, state=State.PENDING)
        return self._status

    @property
    def id(self) -> str:
        """The invocation's id on the server."""
        return self.status.id

    def __repr__(self) -> str:
        return f"<Invocation {self.action} {self.id or '(no id)'} {self.status.state.value}>"

    async def updates(self) -> AsyncIterator[ActionStatus]:
        """The status now, then each time it changes; ends after the final one.

        Raises the error that stopped the handle from following the invocation
        (``NotFound`` when the server forgot it, ``InvocationLost`` when the server
        stayed unreachable for ``ClientOptions.reconnect_for``).
        """
        seen: ActionStatus | None = None
        while True:
            changed = self._changed
            if self._error is not None:
                raise self._error
            status = self._status
            if status is not None and status is not seen:
                seen = status
                yield status
                if status.state.ended:
                    return
            await changed.wait()

    @overload
    async def result(self) -> JsonValue: ...
    @overload
    async def result(self, type_: type[T]) -> T: ...

    async def result(self, type_: type[Any] | None = None) -> Any:
        """Wait for the action to end and return its output (structured as ``type_``
        if given).

        It waits as long as the action runs: bound it the Trio way,
        ``with trio.fail_after(60): await invocation.result()``.

        Raises:
            ActionFailed: it raised; ``problem`` holds its error.
            ActionCancelled: it was cancelled.
            InvocationLost: the server was unreachable for longer than
                ``ClientOptions.reconnect_for``; ``href`` is where to ask later.
            NotFound: the server no longer knows the invocation.
        """
        async for _status in self.updates():
            pass
        final = self.status
        if final.state is State.FAILED:
            problem = final.error or ProblemDetails.from_status(500, "the action failed")
            raise ActionFailed(f"action {self.action!r} failed: {problem.title}: "
                               f"{problem.detail}", problem=problem)
        if final.state is State.CANCELLED:
            raise ActionCancelled(f"action {self.action!r} was cancelled")
        if type_ is None:
            return final.output
        return from_json(final.output, type_, what=f"the output of {self.action!r}")

    async def cancel(self) -> bool:
        """Ask the server to cancel the invocation.

        Returns:
            True if the server accepted (the final status, usually ``cancelled``,
            then arrives through :meth:`updates` and :meth:`result`); False if the
            invocation had already ended.
        """
        if self._status is None or self._status.state.ended or not self._status.id:
            return False
        try:
            answered = await self._channel.cancel(self._status)
        except ClientError as error:
            if error.status != 409:
                raise
            try:  # it ended meanwhile: learn how
                self.update(await self._channel.query(self._status))
            except ClientError:
                pass
            return False
        if answered is not None:
            self.update(answered)
        return True

    # ------------------------------------------------------------------ feeding

    def update(self, status: ActionStatus) -> None:
        """Take a newer status (an older or equal-but-ended one is ignored). Its log
        never shrinks: lines only come, never go."""
        current = self._status
        if current is not None:
            if current.href is None and status.href is not None and status.id in (
                    "", current.id):  # the URL, even from a status overtaken by a newer
                current = self._status = attrs.evolve(current, href=status.href)
            if current.state.ended or status.state.rank < current.state.rank:
                return
            if not status.id:
                status = attrs.evolve(status, id=current.id)
            if status.href is None and current.href is not None:
                status = attrs.evolve(status, href=current.href)
            if status.log_from:  # the lines after the first log_from: they extend ours
                known = current.log[:status.log_from]
                status = attrs.evolve(status, log=known + status.log, log_from=0)
            elif len(status.log) < len(current.log):  # a late poll, or a source without
                status = attrs.evolve(status, log=current.log)  # the log: keep the lines
            if status == current:
                return
        self._status = status
        self._wake()
        if status.state.ended:
            self._on_end()

    def deliver(self, message: Message) -> None:
        """An ``invokeaction`` notification (the session's side, an InvocationSink)."""
        self.update(ActionStatus.from_wtp(message.body.get("status"), action=self.action))

    def lost(self) -> None:
        """The connection that pushed this invocation's status is gone: poll instead."""
        self.start_polling_if_needed(pushed=False)

    def start_polling_if_needed(self, *, pushed: bool) -> None:
        """Poll ``queryaction`` until the end, unless pushed status makes it pointless."""
        if pushed or self._polling or self.status.state.ended or self._error is not None:
            return
        self._polling = True
        self._spawn(self._poll)

    def _fail(self, error: ClientError) -> None:
        self._error = error
        self._wake()
        self._on_end()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _poll(self) -> None:
        """Query until the invocation ends. While the server cannot be reached, retry
        with backoff; after ``reconnect_for`` seconds of that (a strict bound: a query
        hanging on a vanished server is cut short), fail with InvocationLost."""
        backoff = Backoff(self._options.backoff_initial, self._options.backoff_max)
        limit = self._options.reconnect_for
        lost: ClientError | None = None  # why the server was unreachable, since when
        deadline = math.inf
        wait = self._options.poll_interval
        while not self.status.state.ended and self._error is None:
            with trio.move_on_at(deadline):
                await trio.sleep(wait)
                try:
                    status = await self._channel.query(self.status)
                except NotFound as error:
                    self._fail(NotFound(
                        f"the server no longer knows invocation {self.id} of "
                        f"{self.action!r} (it may have restarted, or forgotten it)",
                        problem=error.problem))
                    return
                except (ConnectionLost, Timeout) as error:
                    if lost is None:
                        deadline = trio.current_time() + (math.inf if limit is None
                                                          else limit)
                        logger.warning(
                            "lost the server while following %s (%s); reconnecting%s",
                            self._name(), error, "" if limit is None
                            else f" for up to {limit:g} s")
                    lost = error
                    wait = backoff.next()
                    continue
                except ClientError as error:
                    self._fail(error)
                    return
                if lost is not None:
                    logger.warning("reached the server again; following %s", self._name())
                lost, deadline, wait = None, math.inf, self._options.poll_interval
                backoff.reset()
                self.update(status)
                continue
            assert lost is not None and limit is not None  # only a deadline cancels
            self._fail(self._gave_up(lost, limit))
            return

    def _name(self) -> str:
        return f"invocation {self.id or '(no id)'} of {self.action!r}"

    def _gave_up(self, lost: ClientError, limit: float) -> InvocationLost:
        href = self.status.href
        where = (f"ask for it later at {href}" if href
                 else "the server gave no URL to ask for it later")
        return InvocationLost(
            f"gave up on {self._name()} after {limit:g} s without reaching the server "
            f"({lost}); it may still be running: {where}", href=href,
            invocation_id=self.id)
