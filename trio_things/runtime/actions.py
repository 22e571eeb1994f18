"""Running actions: one task per invocation, owned by the server's nursery.

An ``async def`` action runs as a task; a plain ``def`` action runs in a worker thread
through :func:`trio.to_thread.run_sync`, whose task waits for it. Either way the task
sits in a :class:`trio.CancelScope` that :meth:`ActionRunner.cancel` (or server
shutdown) cancels:

* an async action is cancelled at its next ``await``;
* a thread cannot be interrupted, so it is cancelled where it calls
  ``context.check_cancelled()`` or ``context.sleep()`` (both raise
  :class:`trio.Cancelled` once the scope is cancelled). A thread that never checks runs
  to its end, and its invocation honestly ends ``completed``.

Ended invocations are kept for ``retention`` seconds (on Trio's clock, so tests can use
an autojump clock), then forgotten: a client that polls too late gets 404. The blobs an
output links to live as long as their invocation is kept (it holds them), within the
memory budget of the runner's :class:`~trio_things.runtime.blobs.BlobStore`: an
invocation completes once its blobs are counted and, beyond the budget, spilled.

Limits, so that no client can take what the others need (``docs/security.md``):

* **Records.** At most ``max_invocations_per_thing`` invocations of one Thing, and
  ``max_invocations`` in all, are kept, running or ended. To make room for a new one,
  the ended invocation that ended first is forgotten before its retention is up
  (retention brought forward); a running or pending one never is, so when only those
  fill a bound, a new invocation is refused with 503: the server is out of room, not
  the client out of turn.
* **Concurrency.** At most ``spec.max_concurrent`` invocations of one action run at
  once on one Thing; up to ``spec.max_queued`` more wait ``pending`` for a turn
  (:class:`_Turns`: first come, first started), and one more is refused with 429
  before an invocation is made.
* **Threads.** Thread actions run on the runner's own limiter of ``max_threads``
  worker threads, never on Trio's default one: however many of them run or hang,
  functional property getters and setters (which use the default limiter) still get a
  thread. An invocation stays ``pending`` until it holds a thread, so ``running``
  means running.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from typing import Any, Final

import attrs
import trio

from trio_things.errors import (
    Conflict,
    InvalidValue,
    NotFound,
    RemoteProtocolError,
    TooManyRequests,
)
from trio_things.model.affordances import ActionSpec
from trio_things.model.blob import Blob
from trio_things.model.invocation import Invocation, InvocationStatus
from trio_things.model.thing import Thing
from trio_things.runtime.action_values import _arguments, _bad_output, _failure, _output
from trio_things.runtime.blobs import BlobStore
from trio_things.runtime.context import _Context
from trio_things.runtime.turns import _Turns

__all__ = ["ActionRunner", "open_action_runner"]

logger = logging.getLogger("trio_things.runtime.actions")

#: The defaults of ``ServerConfig``'s keys of the same names (``max_threads`` is its
#: ``max_action_threads``).
DEFAULT_MAX_INVOCATIONS: Final = 10_000
DEFAULT_MAX_INVOCATIONS_PER_THING: Final = 1_000
DEFAULT_MAX_THREADS: Final = 32

StatusListener = Callable[[Invocation], None]


@attrs.define(eq=False)
class _Running:
    invocation: Invocation
    scope: trio.CancelScope
    done: trio.Event
    announcing: bool = False
    """A notification of new log lines is on its way to the Trio thread: a burst of
    lines costs one notification, not one each."""
    invoker: str | None = None
    """Who invoked it: the identity of their token (a keyed hash, never the token;
    :func:`trio_things.protocol.access.identity_of`), None without one. Kept here, not
    on the :class:`Invocation` clients see: only whoever cancels needs it."""
    blobs: tuple[Blob, ...] = ()
    """The blobs its output links to. A blob lives as long as something holds it
    (:mod:`trio_things.model.blob`): held here, its link answers exactly as long as the
    invocation is kept. Not on the :class:`Invocation`, whose copies the replay ring
    keeps longer."""



class ActionRunner:
    """Starts, tracks, cancels and expires invocations. Create it with
    :func:`open_action_runner`, which owns the nursery the actions run in."""

    def __init__(self, nursery: trio.Nursery, *, retention: float,
                 on_status: StatusListener | None = None,
                 max_invocations: int = DEFAULT_MAX_INVOCATIONS,
                 max_invocations_per_thing: int = DEFAULT_MAX_INVOCATIONS_PER_THING,
                 max_threads: int = DEFAULT_MAX_THREADS,
                 blobs: BlobStore | None = None) -> None:
        self._nursery = nursery
        self.blobs = blobs or BlobStore()
        """Where the blobs of outputs are counted, and spilled beyond the budget."""
        self._retention = retention
        self._on_status = on_status
        self._max_invocations = max_invocations
        self._max_per_thing = max_invocations_per_thing
        self._invocations: dict[str, _Running] = {}
        """Every invocation kept, in the order they were made (the listing's order)."""
        self._per_thing: collections.Counter[str] = collections.Counter()
        self._ended: collections.OrderedDict[str, float] = collections.OrderedDict()
        """The ended ones, in the order they ended, with when each expires: the first
        is the next to expire and the first to go when room is needed. An
        OrderedDict, so that one can also leave from the middle in O(1)."""
        self._ended_by_thing: dict[str, collections.OrderedDict[str, None]] = {}
        self._turns: dict[tuple[str, str], _Turns] = {}
        """The turns of each (Thing, action) with a ``max_concurrent``."""
        self._threads = trio.CapacityLimiter(max_threads)
        # Threads are counted by self._threads before an action's thread starts, so that
        # the invocation is pending until it has one; Trio's own count must not wait again.
        self._thread_passthrough = trio.CapacityLimiter(math.inf)
        self._token = trio.lowlevel.current_trio_token()

    def invoke(self, thing_name: str, thing: Thing, spec: ActionSpec, input: Any, *,
               invoker: str | None = None) -> Invocation:
        """Validate ``input`` (JSON data) and start the action; return its invocation,
        remembering ``invoker`` (see :meth:`invoker`).

        Raises :class:`~trio_things.errors.BadRequest` if ``input`` is not an object
        and :class:`~trio_things.errors.InvalidValue` if it violates the input schema,
        :class:`~trio_things.errors.TooManyRequests` (429) if the action has
        ``max_concurrent`` invocations running and ``max_queued`` waiting, and a 503
        :class:`~trio_things.errors.RemoteProtocolError` if running and pending
        invocations alone fill ``max_invocations_per_thing`` or ``max_invocations``; in
        every case no invocation is created. Returns at once: the action starts at the
        nursery's next scheduling point (or, with its slots taken, when one frees).
        """
        self._prune()
        kwargs = _arguments(spec, input)
        turns = self._turns_of(thing_name, spec)
        if turns is not None and turns.taken >= turns.limit + spec.max_queued:
            raise TooManyRequests(
                f"action {spec.name!r} of Thing {thing_name!r} is busy: "
                f"{spec.max_concurrent} invocations running and {spec.max_queued} waiting "
                "are the most it takes; try again when one has ended")
        self._make_room(thing_name)
        invocation = Invocation(thing=thing_name, action=spec.name, input=input)
        running = _Running(invocation=invocation, scope=trio.CancelScope(), done=trio.Event(),
                           invoker=invoker)
        self._invocations[invocation.id] = running
        self._per_thing[thing_name] += 1
        turn = None if turns is None else turns.claim()
        bound = getattr(thing, spec.name)
        if spec.context_parameter is not None:
            kwargs[spec.context_parameter] = _Context(
                invocation, functools.partial(self._announce_log, running))
        self._nursery.start_soon(self._run, running, spec, functools.partial(bound, **kwargs),
                                 turns, turn, name=f"action {thing_name}.{spec.name}")
        self._notify(invocation)
        return invocation

    def get(self, invocation_id: str) -> Invocation:
        """The invocation with this id; :class:`~trio_things.errors.NotFound` if unknown
        or expired."""
        self._prune()
        try:
            return self._invocations[invocation_id].invocation
        except KeyError:
            raise NotFound(f"no invocation {invocation_id!r} (unknown or expired)") from None

    def invoker(self, invocation_id: str) -> str | None:
        """The identity of who invoked it, as given to :meth:`invoke` (None: nobody
        in particular); :class:`~trio_things.errors.NotFound` if unknown or expired."""
        self.get(invocation_id)
        return self._invocations[invocation_id].invoker

    def list(self, *, thing: str | None = None, action: str | None = None) -> list[Invocation]:
        """Invocations still known, oldest first, optionally of one Thing or action."""
        self._prune()
        return [
            r.invocation for r in self._invocations.values()
            if (thing is None or r.invocation.thing == thing)
            and (action is None or r.invocation.action == action)
        ]

    def cancel(self, invocation_id: str) -> Invocation:
        """Ask for the invocation to be cancelled and return it at once.

        :class:`~trio_things.errors.Conflict` if it has already ended. Use :meth:`wait`
        to wait until the action has actually stopped.
        """
        invocation = self.get(invocation_id)
        if invocation.status.ended:
            raise Conflict(f"invocation {invocation_id} has already ended "
                           f"({invocation.status.value})")
        self._invocations[invocation_id].scope.cancel()
        return invocation

    async def wait(self, invocation: Invocation) -> None:
        """Wait until ``invocation`` has ended. Cancelling the wait leaves it running."""
        running = self._invocations.get(invocation.id)
        if running is not None:
            await running.done.wait()

    async def _run(self, running: _Running, spec: ActionSpec, call: Callable[[], Any],
                   turns: _Turns | None, turn: trio.Event | None) -> None:
        """Run one invocation: ``turn`` (from ``turns.claim()``) is set when it may
        start, None if it may at once or has no limit."""
        invocation = running.invocation
        try:
            with running.scope, ExitStack() as held:
                if turns is not None:
                    held.callback(turns.leave, turn)
                # Cancelled while pending (its own scope, or the runner's nursery at
                # shutdown), waiting for its turn or a thread or not: it never starts.
                try:
                    await trio.lowlevel.checkpoint_if_cancelled()
                    if turn is not None:
                        await turn.wait()
                    if not spec.is_async:
                        await self._threads.acquire()
                        held.callback(self._threads.release)
                except trio.Cancelled:
                    invocation.finish(InvocationStatus.CANCELLED)
                    raise
                invocation.start()
                self._notify(invocation)
                try:
                    if spec.is_async:
                        result = await call()
                    else:
                        # run_sync returns only once the thread has ended (it is never
                        # abandoned), so the thread is counted until it really is free.
                        result = await trio.to_thread.run_sync(
                            call, abandon_on_cancel=False, limiter=self._thread_passthrough)
                except trio.Cancelled:
                    invocation.finish(InvocationStatus.CANCELLED)
                    raise
                except Exception as error:  # Thing code failed: record it, keep serving
                    invocation.finish(InvocationStatus.FAILED, error=_failure(invocation, error))
                else:
                    try:
                        output, blobs = _output(spec, result)
                    except InvalidValue as error:
                        invocation.finish(InvocationStatus.FAILED,
                                          error=_bad_output(invocation, error))
                    else:
                        try:  # within the memory budget before it completes
                            if blobs:
                                await self.blobs.keep(blobs)
                        finally:  # even cancelled meanwhile: the action did return
                            running.blobs = blobs
                            invocation.finish(InvocationStatus.COMPLETED, output=output)
        finally:
            self._ended[invocation.id] = trio.current_time() + self._retention
            self._ended_by_thing.setdefault(
                invocation.thing, collections.OrderedDict())[invocation.id] = None
            running.done.set()
            self._notify(invocation)

    def _turns_of(self, thing_name: str, spec: ActionSpec) -> _Turns | None:
        """The turns of ``spec``'s invocations on this Thing (None: no limit)."""
        if spec.max_concurrent is None:
            return None
        key = (thing_name, spec.name)
        turns = self._turns.get(key)
        if turns is None:
            turns = self._turns[key] = _Turns(limit=spec.max_concurrent)
        return turns

    def _make_room(self, thing_name: str) -> None:
        """Forget ended invocations, the first to have ended first, until one more of
        ``thing_name`` fits both bounds; 503 if running and pending ones fill a bound.

        Forgetting one of this Thing's also makes room in the total, so at most one
        invocation is forgotten, and nothing is forgotten for a refused one."""
        if self._per_thing[thing_name] >= self._max_per_thing:
            ended = self._ended_by_thing.get(thing_name)
            if not ended:
                raise _unavailable(
                    f"Thing {thing_name!r} has {self._per_thing[thing_name]} invocations "
                    "pending or running, the most the server keeps for one Thing; try "
                    "again when one has ended")
            self._forget(next(iter(ended)))
        elif len(self._invocations) >= self._max_invocations:
            if not self._ended:
                raise _unavailable(
                    f"the server has {len(self._invocations)} invocations pending or "
                    "running, the most it keeps; try again when one has ended")
            self._forget(next(iter(self._ended)))

    def _forget(self, invocation_id: str) -> None:
        """Forget an ended invocation: later queries of it are answered 404, and so are
        its blobs' links (unless something else holds them)."""
        thing_name = self._invocations.pop(invocation_id).invocation.thing
        del self._ended[invocation_id]
        ended = self._ended_by_thing[thing_name]
        del ended[invocation_id]
        if not ended:
            del self._ended_by_thing[thing_name]
        self._per_thing[thing_name] -= 1
        if not self._per_thing[thing_name]:
            del self._per_thing[thing_name]

    def _announce_log(self, running: _Running) -> None:
        """Have the invocation's observers told of new log lines, soon, on the Trio
        thread; from the action's task or its worker thread. Lines logged before that
        notification leaves ride along with it."""
        if running.announcing:
            return
        running.announcing = True
        try:
            self._token.run_sync_soon(self._log_announced, running)
        except trio.RunFinishedError:
            pass  # the server is gone: nobody is left to tell

    def _log_announced(self, running: _Running) -> None:
        running.announcing = False
        if running.invocation.status is InvocationStatus.RUNNING:  # else its end says all
            try:
                self._notify(running.invocation)
            except Exception:  # raised in a run_sync_soon callback, it would end the run
                logger.exception("announcing the log of invocation %s failed",
                                 running.invocation.id)

    def _notify(self, invocation: Invocation) -> None:
        if self._on_status is not None:
            self._on_status(invocation)

    def _prune(self) -> None:
        now = trio.current_time()
        while self._ended:
            invocation_id, expires = next(iter(self._ended.items()))
            if expires > now:
                return
            self._forget(invocation_id)


def _unavailable(detail: str) -> RemoteProtocolError:
    """503: the server has no room for one more invocation (of anybody's)."""
    return RemoteProtocolError(detail, status=503)


@asynccontextmanager
async def open_action_runner(
    *, retention: float, on_status: StatusListener | None = None,
    max_invocations: int = DEFAULT_MAX_INVOCATIONS,
    max_invocations_per_thing: int = DEFAULT_MAX_INVOCATIONS_PER_THING,
    max_threads: int = DEFAULT_MAX_THREADS, blobs: BlobStore | None = None,
) -> AsyncIterator[ActionRunner]:
    """An :class:`ActionRunner` whose actions run in a nursery owned by this block.

    On exit (including cancellation at shutdown) every running action is cancelled
    and recorded ``cancelled``; the block returns once all have stopped. The limits
    are :class:`ActionRunner`'s (see the module's docstring); ``blobs`` counts the
    blobs of outputs (:mod:`trio_things.runtime.blobs`; a default budget without it).
    """
    async with trio.open_nursery() as nursery:
        manager = ActionRunner(nursery, retention=retention, on_status=on_status,
                               max_invocations=max_invocations,
                               max_invocations_per_thing=max_invocations_per_thing,
                               max_threads=max_threads, blobs=blobs)
        try:
            yield manager
        finally:
            nursery.cancel_scope.cancel()
