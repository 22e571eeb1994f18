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

The status values (:class:`State`, :class:`ActionStatus`, :class:`LogLine`) are in
:mod:`trio_things.client.action_status`, re-exported here; this module holds the handle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar, overload

import attrs
import trio

from trio_things.client.action_status import ActionStatus, LogLine, State
from trio_things.client.action_status import looks_like_invocation as looks_like_invocation
from trio_things.client.backoff import Backoff
from trio_things.client.blobs import RemoteBlob
from trio_things.client.errors import (
    ActionCancelled,
    ActionFailed,
    ClientError,
    ConnectionLost,
    InvalidValue,
    InvocationLost,
    NotFound,
    Timeout,
)
from trio_things.client.options import ClientOptions
from trio_things.client.values import JsonValue, from_json
from trio_things.client.wtp import Message
from trio_things.protocol.problems import ProblemDetails

__all__ = ["ActionChannel", "ActionStatus", "Invocation", "LogLine", "State"]

logger = logging.getLogger("trio_things.client")

T = TypeVar("T")
Spawn = Callable[[Callable[[], Awaitable[None]]], None]


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
                 spawn: Spawn, on_end: Callable[[], None] = lambda: None,
                 blob_of: Callable[[JsonValue], RemoteBlob | None] = lambda _: None) -> None:
        self.action = action
        self._blob_of = blob_of
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
        if given). An output that is a blob's link (``{"href": ..., "media_type":
        ...}``) is returned as a :class:`~trio_things.client.RemoteBlob`, to download
        (``status.output`` keeps the link).

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
        if type_ is None or type_ is RemoteBlob:
            blob = self._blob_of(final.output)
            if blob is not None:
                return blob
            if type_ is RemoteBlob:
                raise InvalidValue(f"the output of {self.action!r} is no blob link: "
                                   f"{final.output!r:.80}")
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
