"""The Trio thread behind the blocking client (:mod:`trio_things.client.blocking`).

One thread running ``trio.run`` that holds an async client open, runs each blocking
call's coroutine in it and hands the outcome back to the caller's thread (sliced waits
for Ctrl-C, cancellation, shutdown, the ``atexit`` clean-up); the module docstring of
:mod:`~trio_things.client.blocking` explains why. Apart from :class:`ThingClient` and its
handles (:mod:`trio_things.client.blocking_handles`) because it knows nothing of Things'
properties, actions or events: it only runs coroutines.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Generic, TypeVar, cast

import trio

from trio_things.client.options import ClientOptions
from trio_things.client.things import ConsumedThing
from trio_things.errors import LocalProtocolError

__all__ = ["WAKE_INTERVAL"]

T = TypeVar("T")

logger = logging.getLogger("trio_things.client")

#: Seconds a blocked caller waits before looking again. Not a poll of the server (the
#: answer wakes the caller at once): on Windows a blocked lock wait does not see
#: Ctrl-C until it returns, so waits are cut into slices this long.
WAKE_INTERVAL: Final = 0.1

#: The Trio threads still running, closed at interpreter exit if nobody closed them.
_RUNNING: set[_TrioThread] = set()


@atexit.register
def _close_all() -> None:
    for thread in list(_RUNNING):
        thread.close()


def _seconds(limit: float | None) -> float:
    return math.inf if limit is None else max(0.0, limit)


def _wait(event: threading.Event, timeout: float | None = None) -> bool:
    """``event.wait(timeout)``, in slices so that Ctrl-C is seen (see the module)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        slice_ = WAKE_INTERVAL if deadline is None else min(
            WAKE_INTERVAL, deadline - time.monotonic())
        if event.wait(max(0.0, slice_)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


class _Outcome(Generic[T]):
    """What a coroutine run in the Trio thread returned or raised, for the caller's
    thread (a ``concurrent.futures.Future`` without the ``TimeoutError`` that would be
    confused with the client's own :class:`Timeout`)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def set_value(self, value: T) -> None:
        self._value = value
        self.done.set()

    def set_error(self, error: BaseException) -> None:
        self._error = error
        self.done.set()

    def unwrap(self) -> T:
        """The value, or raise the error (its traceback grows the caller's frames)."""
        error, self._error = self._error, None
        if error is not None:
            raise error
        return cast(T, self._value)


class _Interrupted(Exception):
    """A call the caller cancelled (Ctrl-C): it raises its own KeyboardInterrupt."""


class _Closed(LocalProtocolError):
    """The client was closed (before or during the call)."""


class _Stop(enum.Enum):
    EXPIRED = "expired"  # the time limit passed
    ENDED = "ended"  # nothing more will come


class _TrioThread:
    """One thread running ``trio.run``, holding an async client open (see the module).

    The ``_jobs`` nursery runs each blocking call's coroutine as a task with a cancel
    scope of its own, so that Ctrl-C in the caller cancels that call only.
    """

    def __init__(self, open_thing: Callable[[], AbstractAsyncContextManager[ConsumedThing]],
                 *, name: str, options: ClientOptions, close_timeout: float) -> None:
        self.name = name
        self.options = options
        self.close_timeout = close_timeout
        #: How long an interrupted call may take to clean up: an invoke to finish (to
        #: know what to cancel), then the cancel, each bounded by the client's timeout.
        self.grace = 2 * options.timeout + 1.0
        self._open_thing = open_thing
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._lock = threading.Lock()
        self._token: trio.lowlevel.TrioToken | None = None
        self._close_requested = False
        self._started: _Outcome[ConsumedThing] = _Outcome()
        # Set in the Trio thread only:
        self._scope: trio.CancelScope | None = None
        self._closing: trio.Event | None = None
        self._jobs: trio.Nursery | None = None

    # ------------------------------------------------------------------ the caller's side

    @property
    def closed(self) -> bool:
        return self._close_requested or not self._thread.is_alive()

    def start(self) -> ConsumedThing:
        """Start the thread and wait until the Thing is consumed; raise what
        ``connect`` raised (``Unreachable``, ``NotFound``, ...)."""
        _RUNNING.add(self)
        self._thread.start()
        try:
            _wait(self._started.done)
            return self._started.unwrap()
        except BaseException:
            self.close()
            raise

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` in the Trio thread; its result, or raise its error.

        Ctrl-C while waiting cancels it there, waits (up to ``grace``) for it to clean
        up, and raises the KeyboardInterrupt again."""
        outcome: _Outcome[T] = _Outcome()
        scope = trio.CancelScope()
        try:
            self._send(self._start_job, fn, outcome, scope)
            _wait(outcome.done)
        except KeyboardInterrupt:
            self.soon(scope.cancel)
            _wait(outcome.done, self.grace)  # a second Ctrl-C stops waiting
            raise
        return outcome.unwrap()

    def run_sync(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the Trio thread (for what must not race the client's tasks)."""
        return self._send(fn)

    def soon(self, fn: Callable[[], object]) -> None:
        """``fn()`` in the Trio thread, without waiting, from any thread (even the
        Trio thread itself, as a ``__del__`` may run there); nothing if it ended."""
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(fn)

    def request_close(self) -> None:
        """Start closing, without waiting (safe from any thread, and in ``__del__``)."""
        with self._lock:
            if self._close_requested:
                return
            self._close_requested = True
        self.soon(self._begin_close)

    def close(self) -> None:
        """Close and join the thread (within ``close_timeout``)."""
        self.request_close()
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return
        deadline = time.monotonic() + self.close_timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(min(WAKE_INTERVAL, max(0.0, deadline - time.monotonic())))
        if self._thread.is_alive():
            logger.warning("%s did not end within %s s of being closed; left running "
                           "(a daemon thread, which does not keep the program alive)",
                           self.name, self.close_timeout)

    def closed_error(self) -> LocalProtocolError:
        return _Closed(f"{self.name} is closed")

    def _send(self, fn: Callable[..., T], *args: Any) -> T:
        if trio.lowlevel.in_trio_run():
            raise RuntimeError("ThingClient blocks its caller, so it cannot be used in a "
                               "Trio program: use trio_things.client.connect there")
        token = self._token
        if token is None or self.closed:
            raise self.closed_error()
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=token)
        except trio.RunFinishedError:
            raise self.closed_error() from None

    # ------------------------------------------------------------------ the Trio thread

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as error:
            if not self._started.done.is_set():
                self._started.set_error(error)
            else:
                logger.warning("%s ended with an error", self.name, exc_info=True)
        else:
            if not self._started.done.is_set():
                self._started.set_error(self.closed_error())
        finally:
            _RUNNING.discard(self)

    async def _serve(self) -> None:
        with trio.CancelScope() as self._scope:
            self._closing = trio.Event()
            with self._lock:
                self._token = trio.lowlevel.current_trio_token()
                if self._close_requested:  # closed (Ctrl-C) before the thread got here
                    return
            async with self._open_thing() as thing, trio.open_nursery() as jobs:
                self._jobs = jobs
                self._started.set_value(thing)
                await self._closing.wait()
                jobs.cancel_scope.cancel()

    def _begin_close(self) -> None:
        assert self._scope is not None and self._closing is not None
        if self._jobs is None:  # still connecting: stop that
            self._scope.cancel()
            return
        self._closing.set()
        # Half the time to close politely (end observations, close the WebSocket),
        # then at once, so the thread has ended when close() stops waiting for it.
        self._scope.deadline = min(self._scope.deadline,
                                   trio.current_time() + self.close_timeout / 2)

    def _start_job(self, fn: Callable[[], Awaitable[T]], outcome: _Outcome[T],
                   scope: trio.CancelScope) -> None:
        assert self._closing is not None
        if self._jobs is None or self._closing.is_set():
            outcome.set_error(self.closed_error())
            return
        self._jobs.start_soon(self._job, fn, outcome, scope)

    async def _job(self, fn: Callable[[], Awaitable[T]], outcome: _Outcome[T],
                   scope: trio.CancelScope) -> None:
        try:
            with scope:
                outcome.set_value(await fn())
                return
        except trio.Cancelled:  # the client is closing
            outcome.set_error(self.closed_error())
            raise
        except BaseException as error:  # the caller's thread raises it
            outcome.set_error(error)
            return
        outcome.set_error(_Interrupted())  # its scope was cancelled: Ctrl-C
