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
an autojump clock), then forgotten: a client that polls too late gets 404.
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import trio

from trio_things.errors import (
    BadRequest,
    Conflict,
    InvalidValue,
    LocalProtocolError,
    NotFound,
    RemoteProtocolError,
)
from trio_things.model.affordances import ActionSpec
from trio_things.model.invocation import Invocation, InvocationError, InvocationStatus
from trio_things.model.thing import Thing
from trio_things.model.values import structure, unstructure_as

__all__ = ["ActionRunner", "open_action_runner"]

logger = logging.getLogger("trio_things.runtime.actions")

#: How often ``ActionContext.sleep`` checks for cancellation from a worker thread.
_THREAD_SLEEP_SLICE: Final = 0.05  # seconds

StatusListener = Callable[[Invocation], None]


@attrs.frozen
class _Context:
    """The :class:`~trio_things.ActionContext` handed to an action."""

    invocation: Invocation
    announce: Callable[[], None]
    """Tells the invocation's observers of the lines logged (from any thread)."""

    @property
    def invocation_id(self) -> str:
        return self.invocation.id

    def log(self, message: str, *, level: str = "INFO") -> None:
        self.invocation.add_log(level, message)
        self.announce()
        logger.log(logging.getLevelNamesMapping().get(level.upper(), logging.INFO),
                   "%s.%s [%s]: %s", self.invocation.thing, self.invocation.action,
            self.invocation.id[:8], message)

    def check_cancelled(self) -> None:
        if _in_trio_thread():
            return  # async actions are cancelled at their next await
        trio.from_thread.check_cancelled()

    def sleep(self, seconds: float) -> None:
        if _in_trio_thread():
            raise LocalProtocolError(
                "ActionContext.sleep() blocks; in an async action use `await trio.sleep()`")
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            trio.from_thread.check_cancelled()
            time.sleep(min(remaining, _THREAD_SLEEP_SLICE))
        trio.from_thread.check_cancelled()


def _in_trio_thread() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


@attrs.define(eq=False)
class _Running:
    invocation: Invocation
    scope: trio.CancelScope
    done: trio.Event
    announcing: bool = False
    """A notification of new log lines is on its way to the Trio thread: a burst of
    lines costs one notification, not one each."""


class ActionRunner:
    """Starts, tracks, cancels and expires invocations. Create it with
    :func:`open_action_runner`, which owns the nursery the actions run in."""

    def __init__(self, nursery: trio.Nursery, *, retention: float,
                 on_status: StatusListener | None = None) -> None:
        self._nursery = nursery
        self._retention = retention
        self._on_status = on_status
        self._invocations: dict[str, _Running] = {}
        self._expiry: collections.deque[tuple[float, str]] = collections.deque()
        self._token = trio.lowlevel.current_trio_token()

    def invoke(self, thing_name: str, thing: Thing, spec: ActionSpec, input: Any) -> Invocation:
        """Validate ``input`` (JSON data) and start the action; return its invocation.

        Raises :class:`~trio_things.errors.BadRequest` if ``input`` is not an object
        and :class:`~trio_things.errors.InvalidValue` if it violates the input schema;
        in both cases no invocation is created. Returns at once: the action starts at
        the nursery's next scheduling point.
        """
        self._prune()
        kwargs = _arguments(spec, input)
        invocation = Invocation(thing=thing_name, action=spec.name, input=input)
        running = _Running(invocation=invocation, scope=trio.CancelScope(), done=trio.Event())
        self._invocations[invocation.id] = running
        bound = getattr(thing, spec.name)
        if spec.context_parameter is not None:
            kwargs[spec.context_parameter] = _Context(
                invocation, functools.partial(self._announce_log, running))
        self._nursery.start_soon(self._run, running, spec, functools.partial(bound, **kwargs),
                                 name=f"action {thing_name}.{spec.name}")
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

    async def _run(self, running: _Running, spec: ActionSpec, call: Callable[[], Any]) -> None:
        invocation = running.invocation
        try:
            with running.scope:
                # Cancelled while pending (its own scope, or the runner's nursery at
                # shutdown): it never starts.
                try:
                    await trio.lowlevel.checkpoint_if_cancelled()
                except trio.Cancelled:
                    invocation.finish(InvocationStatus.CANCELLED)
                    raise
                invocation.start()
                self._notify(invocation)
                try:
                    if spec.is_async:
                        result = await call()
                    else:
                        result = await trio.to_thread.run_sync(call, abandon_on_cancel=False)
                except trio.Cancelled:
                    invocation.finish(InvocationStatus.CANCELLED)
                    raise
                except Exception as error:  # Thing code failed: record it, keep serving
                    invocation.finish(InvocationStatus.FAILED, error=_failure(invocation, error))
                else:
                    try:
                        output = _output(spec, result)
                    except InvalidValue as error:
                        invocation.finish(InvocationStatus.FAILED,
                                          error=_bad_output(invocation, error))
                    else:
                        invocation.finish(InvocationStatus.COMPLETED, output=output)
        finally:
            self._expiry.append((trio.current_time() + self._retention, invocation.id))
            running.done.set()
            self._notify(invocation)

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
        while self._expiry and self._expiry[0][0] <= now:
            _, invocation_id = self._expiry.popleft()
            self._invocations.pop(invocation_id, None)


def _arguments(spec: ActionSpec, input: Any) -> dict[str, Any]:
    if input is None:
        input = {}
    if not isinstance(input, dict):
        raise BadRequest(f"the input of action {spec.name!r} must be a JSON object of "
                         "keyword arguments")
    if spec.input_schema is None:
        if input:
            raise InvalidValue(f"takes no input, got {sorted(input)}", path=spec.name)
        return {}
    spec.input_schema.validate(input, spec.name)
    return {
        p.name: structure(input[p.name], p.value_type, path=f"{spec.name}.{p.name}")
        for p in spec.parameters if p.name in input
    }


def _output(spec: ActionSpec, result: Any) -> Any:
    """The JSON form of what an action returned, checked against its declared output
    as inputs are against theirs; :class:`~trio_things.errors.InvalidValue` if it does
    not fit (which is the Thing's mistake, see :func:`_bad_output`)."""
    if spec.output_schema is None:
        return None
    path = f"{spec.name} output"
    output = unstructure_as(result, spec.output_type, path=path)
    spec.output_schema.validate(output, path)
    return output


def _bad_output(invocation: Invocation, error: InvalidValue) -> InvocationError:
    """An action returned what its annotation says it does not: a bug in the Thing,
    so a 500 that names the action, never the value passed on as if it were right."""
    logger.error("action %s.%s (invocation %s) returned a value that does not fit its "
                 "declared output: %s", invocation.thing, invocation.action, invocation.id,
                 error.detail)
    return InvocationError(
        title="InvalidOutput",
        detail=f"action {invocation.action!r} returned a value that does not fit its "
               f"declared output type: {error.detail}")


def _failure(invocation: Invocation, error: Exception) -> InvocationError:
    if isinstance(error, RemoteProtocolError):
        # The action rejected its input or state on purpose: the client's problem.
        return InvocationError(title=type(error).__name__, detail=error.detail,
                               status=error.status)
    logger.error("action %s.%s (invocation %s) failed", invocation.thing, invocation.action,
                 invocation.id, exc_info=error)
    return InvocationError(title=type(error).__name__, detail=str(error) or repr(error))


@asynccontextmanager
async def open_action_runner(
    *, retention: float, on_status: StatusListener | None = None,
) -> AsyncIterator[ActionRunner]:
    """An :class:`ActionRunner` whose actions run in a nursery owned by this block.

    On exit (including cancellation at shutdown) every running action is cancelled
    and recorded ``cancelled``; the block returns once all have stopped.
    """
    async with trio.open_nursery() as nursery:
        manager = ActionRunner(nursery, retention=retention, on_status=on_status)
        try:
            yield manager
        finally:
            nursery.cancel_scope.cancel()
