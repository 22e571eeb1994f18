"""A blocking client for scripts and notebooks: :class:`ThingClient`.

::

    from trio_things.client import ThingClient

    with ThingClient("http://127.0.0.1:8000/thermometer/") as thermo:
        thermo.setpoint = 30                      # writeproperty
        print(thermo.temperature)                 # readproperty
        reached = thermo.ramp(to=25, timeout=60)  # invokeaction; waits for the end
        for temperature in thermo.observe("temperature", duration=5):
            print(temperature)

The same TD-driven client as :func:`~trio_things.client.connect`, for code that is not
a Trio program: a plain script, or a Jupyter notebook, whose kernel already runs an
asyncio loop in the main thread (where ``trio.run`` cannot run).

Why a thread: the async client needs a Trio run for as long as it is open (its
WebSocket reader, keep-alive pings, invocation polling are tasks). So a
:class:`ThingClient` starts **one thread of its own** running ``trio.run``, opens
``connect(url)`` in it, and keeps it open until :meth:`ThingClient.close`. Each blocking
call hands a coroutine to that run (``trio.from_thread.run_sync`` with the run's
``TrioToken``) and waits for its outcome in the caller's thread. Nothing is shared
with the caller's event loop, if it has one: calls work inside ``asyncio.run`` too,
blocking that loop's thread while they wait, as any blocking call does
(``await asyncio.to_thread(thermo.ramp, to=30)`` keeps the loop running instead).

Errors are the async client's (:mod:`trio_things.client.errors`), raised again in the
caller's thread with their traceback (the frames in the Trio thread, then the caller's).
Using a closed client raises :class:`~trio_things.errors.LocalProtocolError`.

Cancellation: a blocked caller wakes every :data:`WAKE_INTERVAL` seconds, so Ctrl-C (a
``KeyboardInterrupt``, which Python delivers to the main thread) is noticed on every
platform. The interrupted call's coroutine is then cancelled in the Trio thread, which
cleans up (an action called as a method is cancelled on the server, an observation is
ended), and the ``KeyboardInterrupt`` is raised again; a second Ctrl-C stops waiting
for the clean-up.

Shutdown: :meth:`ThingClient.close` (or leaving the ``with`` block) cancels whatever is
still running in the Trio thread, closes the async client politely (WebSocket close
1000) and joins the thread, all within ``close_timeout`` seconds; past half of it, the
connections are closed at once. A client never closed is closed when it is garbage
collected (without waiting) or, at the latest, at interpreter exit (``atexit``): its
thread is a daemon thread, so it never keeps a script from ending.

Thread safety: a :class:`ThingClient` may be used from several threads at once (each
call is its own task in the Trio thread); a :class:`BlockingObservation` or
:class:`BlockingInvocation` by one thread at a time.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import functools
import inspect
import keyword
import logging
import math
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeVar, cast, overload

import trio

from trio_things.client.actions import ActionStatus, Invocation
from trio_things.client.connect import connect
from trio_things.client.errors import ClientError, Timeout
from trio_things.client.observation import Change, Observation
from trio_things.client.options import ClientOptions
from trio_things.client.streams import OpenStream, open_tcp_stream
from trio_things.client.things import ConsumedThing
from trio_things.client.values import JsonValue
from trio_things.errors import LocalProtocolError

__all__ = ["WAKE_INTERVAL", "ActionMethod", "BlockingInvocation", "BlockingObservation",
           "ThingClient"]

T = TypeVar("T")

logger = logging.getLogger("trio_things.client")

#: Seconds a blocked caller waits before looking again. Not a poll of the server (the
#: answer wakes the caller at once): on Windows a blocked lock wait does not see
#: Ctrl-C until it returns, so waits are cut into slices this long.
WAKE_INTERVAL: Final = 0.1

_MISSING: Final[Any] = object()

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


# ---------------------------------------------------------------------- the client


class ThingClient:
    """One Thing, consumed from blocking code (a script, a notebook); see the module.

    ``ThingClient(url)`` fetches the TD at ``url`` and returns once it has (raising
    ``Unreachable``, ``NotFound``, ... otherwise); the other arguments are
    :func:`~trio_things.client.connect`'s. Use it as a context manager, or call
    :meth:`close`.

    The Thing's properties are attributes (``thermo.setpoint`` reads, ``thermo.setpoint
    = 30`` writes) and its actions methods (``thermo.ramp(to=30)`` waits for the
    output); ``dir()`` lists them. Where an affordance's name is one of this class's
    own (``read``, ``close``, ``title``, ...) or no Python identifier, the class's
    attribute wins: reach the affordance with :meth:`read`, :meth:`write` or
    :meth:`call`. A name the TD does not list raises ``AttributeError`` saying what the
    Thing has.

    ``close_timeout``: how long :meth:`close` waits for the Trio thread to end
    (default: ``ClientOptions.timeout``).
    """

    def __init__(self, url: str, *, options: ClientOptions | None = None,
                 token: str | None = None, websocket: bool = True,
                 open_stream: OpenStream = open_tcp_stream,
                 close_timeout: float | None = None) -> None:
        options = options or ClientOptions()

        def open_thing() -> AbstractAsyncContextManager[ConsumedThing]:
            return connect(url, open_stream=open_stream, options=options, token=token,
                           websocket=websocket)

        self._options = options
        self._loop = _TrioThread(open_thing, name=f"trio-things client of {url}",
                                 options=options,
                                 close_timeout=close_timeout or options.timeout)
        self._thing = self._loop.start()
        self._loop.name = f"ThingClient of {self._thing.title} at {self._thing.url}"

    @classmethod
    def from_url(cls, url: str, *, options: ClientOptions | None = None,
                 token: str | None = None, websocket: bool = True,
                 open_stream: OpenStream = open_tcp_stream,
                 close_timeout: float | None = None) -> ThingClient:
        """``ThingClient(url, ...)``, under the name LabThings' ``ThingClient`` uses."""
        return cls(url, options=options, token=token, websocket=websocket,
                   open_stream=open_stream, close_timeout=close_timeout)

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End everything still running for this client (observations, waits; an
        action called as a method is cancelled on the server), close its connections
        and join its thread. Idempotent."""
        self._loop.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or the client's thread ended)."""
        return self._loop.closed

    def __del__(self) -> None:
        loop: _TrioThread | None = self.__dict__.get("_loop")
        if loop is not None:
            with contextlib.suppress(Exception):
                loop.request_close()

    # ------------------------------------------------------------------ the description

    @property
    def td(self) -> Mapping[str, Any]:
        """The Thing Description, as fetched."""
        return self._thing.td

    @property
    def url(self) -> str:
        """Where the TD was fetched from (after redirects)."""
        return self._thing.url

    @property
    def title(self) -> str:
        """The TD's ``title``."""
        return self._thing.title

    @property
    def id(self) -> str | None:
        """The TD's ``id``, if it has one."""
        return self._thing.id

    @property
    def properties(self) -> Mapping[str, Mapping[str, Any]]:
        """The TD's property affordances, by name."""
        return self._thing.properties

    @property
    def actions(self) -> Mapping[str, Mapping[str, Any]]:
        """The TD's action affordances, by name."""
        return self._thing.actions

    @property
    def events(self) -> Mapping[str, Mapping[str, Any]]:
        """The TD's event affordances, by name."""
        return self._thing.events

    def __repr__(self) -> str:
        parts = [f"{kind} {', '.join(names)}" for kind, names in (
            ("properties", self.properties), ("actions", self.actions),
            ("events", self.events)) if names]
        closed = " (closed)" if self.closed else ""
        return (f"<ThingClient {self.title!r} at {self.url}{closed}"
                f"{': ' if parts else ''}{'; '.join(parts)}>")

    def __dir__(self) -> list[str]:
        own = set(super().__dir__())
        return sorted(own | {name for name in (*self.properties, *self.actions)
                             if _attribute_name(name) and not hasattr(type(self), name)})

    # ------------------------------------------------------------------ attributes

    def __getattr__(self, name: str) -> Any:
        # Only called for names the class and instance lack: the affordances.
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute "
                                 f"{name!r}", name=name, obj=self)
        if name in self.properties:
            return self.read(name)
        if name in self.actions:
            return ActionMethod(self, name)
        if name in self.events:
            raise AttributeError(
                f"{name!r} is an event of {self.title}, not an attribute: "
                f"iterate .subscribe({name!r})", name=name, obj=self)
        raise AttributeError(f"{self.title} has no property or action {name!r} "
                             f"({self._inventory()})", name=name, obj=self)

    def __setattr__(self, name: str, value: object) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        elif hasattr(type(self), name):
            hint = f"; write the property with .write({name!r}, ...)" if (
                name in self.properties) else ""
            raise AttributeError(f"{name!r} is {type(self).__name__}'s own attribute and "
                                 f"cannot be set{hint}", name=name, obj=self)
        elif name in self.properties:
            self.write(name, value)
        else:
            names = ", ".join(self.properties) or "none"
            raise AttributeError(f"{self.title} has no property {name!r} to set "
                                 f"(its properties: {names})", name=name, obj=self)

    def _inventory(self) -> str:
        return "; ".join(f"its {kind}: {', '.join(names) or 'none'}" for kind, names in (
            ("properties", self.properties), ("actions", self.actions),
            ("events", self.events)))

    # ------------------------------------------------------------------ properties

    @overload
    def read(self, name: str) -> JsonValue: ...
    @overload
    def read(self, name: str, type_: type[T]) -> T: ...

    def read(self, name: str, type_: type[Any] | None = None) -> Any:
        """The property's value (structured as ``type_`` if given); as
        :meth:`ConsumedThing.read`, whose errors it raises."""
        async def read() -> Any:
            if type_ is None:
                return await self._thing.read(name)
            return await self._thing.read(name, type_)
        return self._loop.run(read)

    def write(self, name: str, value: object) -> None:
        """Write the property; as :meth:`ConsumedThing.write` (``InvalidValue`` when the
        server refuses the value, ``NotWritable`` for a read-only property)."""
        self._loop.run(lambda: self._thing.write(name, value))

    def read_all(self) -> dict[str, JsonValue]:
        """Every readable property's value, by name."""
        return self._loop.run(self._thing.read_all)

    # ------------------------------------------------------------------ actions

    def call(self, name: str, input: object = _MISSING, /, *, timeout: float | None = None,
             **arguments: object) -> JsonValue:
        """Invoke the action, wait for it to end and return its output: what
        ``thing.name(...)`` does, for any action name.

        The input is ``input`` (for an action whose input is no object) or the keyword
        ``arguments``; ``timeout`` is not one of them (pass an input named ``timeout``
        in a dict: ``call("acquire", {"timeout": 5})``).

        Past ``timeout`` seconds, or on Ctrl-C (``KeyboardInterrupt``) while waiting,
        the invocation is cancelled on the server before the call raises
        :class:`~trio_things.client.errors.Timeout` (or the ``KeyboardInterrupt``
        again): an action nobody waits for any more does not run on unnoticed. To leave
        it running, use :meth:`invoke` and its :meth:`BlockingInvocation.result`.

        Raises:
            NotFound: no such action.
            trio_things.client.errors.InvalidValue: the server refused the input.
            ActionFailed, ActionCancelled: it failed, or was cancelled by someone else.
            Timeout: it did not end within ``timeout`` (and was cancelled).
        """
        return self._loop.run(lambda: self._call(name, input, arguments, timeout))

    def invoke(self, name: str, input: object = _MISSING, /,
               **arguments: object) -> BlockingInvocation:
        """Start the action and return its handle at once (once the server accepted
        it): for an action to watch, or to leave running. Input as :meth:`call`."""
        return BlockingInvocation(self, self._loop.run(
            lambda: self._invoke(name, input, arguments)))

    async def _invoke(self, name: str, input: object,
                      arguments: dict[str, object]) -> Invocation:
        if input is _MISSING:
            return await self._thing.invoke(name, **arguments)
        return await self._thing.invoke(name, input, **arguments)

    async def _call(self, name: str, input: object, arguments: dict[str, object],
                    limit: float | None) -> JsonValue:
        # Shielded: once the server may have started it, we must learn its id to be
        # able to cancel it (the request itself is bounded by the client's timeout).
        with trio.CancelScope(shield=True):
            invocation = await self._invoke(name, input, arguments)
        try:
            with trio.move_on_after(_seconds(limit)):
                return await invocation.result()
        except trio.Cancelled:  # Ctrl-C in the caller, or the client closing
            await self._cancel_on_server(invocation)
            raise
        cancelled = await self._cancel_on_server(invocation)
        if not cancelled and invocation.status.state.ended:
            return await invocation.result()  # it ended as we gave up on it
        outcome = ("so it was cancelled on the server" if cancelled else
                   "and could not be cancelled on the server (see the log)")
        raise Timeout(f"action {name!r} of {self.title} did not end within {limit} s, "
                      f"{outcome}")

    async def _cancel_on_server(self, invocation: Invocation) -> bool:
        """Cancel it, shielded (this runs when the caller's task is being cancelled) and
        bounded by the client's timeout; whether the server accepted."""
        with trio.move_on_after(self._options.timeout, shield=True):
            try:
                return await invocation.cancel()
            except ClientError as error:
                logger.warning("could not cancel %r: %s", invocation, error)
                return False
        logger.warning("could not cancel %r: no answer within %s s", invocation,
                       self._options.timeout)
        return False

    # ------------------------------------------------------------------ notifications

    @overload
    def observe(self, name: str, *, timeout: float | None = None,
                duration: float | None = None) -> BlockingObservation[JsonValue]: ...
    @overload
    def observe(self, name: str, type_: type[T], *, timeout: float | None = None,
                duration: float | None = None) -> BlockingObservation[T]: ...

    def observe(self, name: str, type_: type[Any] | None = None, *,
                timeout: float | None = None,
                duration: float | None = None) -> BlockingObservation[Any]:
        """The property's values as they change, starting with its current value: a
        context manager and iterator (see :class:`BlockingObservation` for ``timeout``
        and ``duration``). ``NotFound`` or ``UnsupportedOperation`` raise here."""
        def make() -> Observation[Any]:
            if type_ is None:
                return self._thing.observe(name)
            return self._thing.observe(name, type_)
        return BlockingObservation(self, self._loop.run_sync(make), what=f"property {name!r}",
                                   timeout=timeout, duration=duration)

    @overload
    def subscribe(self, name: str, *, timeout: float | None = None,
                  duration: float | None = None) -> BlockingObservation[JsonValue]: ...
    @overload
    def subscribe(self, name: str, type_: type[T], *, timeout: float | None = None,
                  duration: float | None = None) -> BlockingObservation[T]: ...

    def subscribe(self, name: str, type_: type[Any] | None = None, *,
                  timeout: float | None = None,
                  duration: float | None = None) -> BlockingObservation[Any]:
        """The event's payloads as it is emitted (nothing before the next emission);
        use like :meth:`observe`."""
        def make() -> Observation[Any]:
            if type_ is None:
                return self._thing.subscribe(name)
            return self._thing.subscribe(name, type_)
        return BlockingObservation(self, self._loop.run_sync(make), what=f"event {name!r}",
                                   timeout=timeout, duration=duration)


def _attribute_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")


# ---------------------------------------------------------------------- actions


class _Optional:
    """The default shown in a signature for an optional input without a default."""

    def __repr__(self) -> str:
        return "<optional>"


_OPTIONAL: Final = _Optional()
_JSON_TYPES: Final[dict[str, Any]] = {"number": float, "integer": int, "string": str,
                                      "boolean": bool, "array": list, "object": dict}


class ActionMethod:
    """An action as a method of its :class:`ThingClient` (``thermo.ramp``): calling it
    is :meth:`ThingClient.call`. Its docstring and signature come from the TD, for
    ``help()`` and a notebook's ``?``."""

    def __init__(self, client: ThingClient, name: str) -> None:
        self._client = client
        self.__name__ = self.__qualname__ = name
        affordance = client.actions[name]
        description = affordance.get("description") or affordance.get("title") or ""
        self.__doc__ = (f"{description}\n\nAction {name!r} of {client.title}, from its TD. "
                        f"A call waits for the action to end and returns its output;\n"
                        f"past ``timeout`` seconds, or on Ctrl-C, it is cancelled on the "
                        f"server.")
        self.__signature__ = _signature(affordance.get("input"))

    def __call__(self, input: object = _MISSING, /, *, timeout: float | None = None,
                 **arguments: object) -> JsonValue:
        return self._client.call(self.__name__, input, timeout=timeout, **arguments)

    def __repr__(self) -> str:
        return f"<action {self.__name__}{self.__signature__} of {self._client.title}>"


def _signature(schema: object) -> inspect.Signature:
    timeout = inspect.Parameter("timeout", inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=float | None)
    generic = inspect.Signature([
        inspect.Parameter("input", inspect.Parameter.POSITIONAL_ONLY, default=_OPTIONAL),
        timeout, inspect.Parameter("arguments", inspect.Parameter.VAR_KEYWORD)])
    if not isinstance(schema, dict):
        return inspect.Signature([timeout])
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        return generic
    required = schema.get("required")
    required = set(required) if isinstance(required, list) else set()
    parameters = []
    try:
        for name, member in schema["properties"].items():
            member = member if isinstance(member, dict) else {}
            default = (inspect.Parameter.empty if name in required
                       else member.get("default", _OPTIONAL))
            parameters.append(inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default,
                annotation=_JSON_TYPES.get(str(member.get("type")), inspect.Parameter.empty)))
        return inspect.Signature([*parameters, timeout])
    except ValueError:  # a name that is no identifier, or "timeout" itself
        return generic


class BlockingInvocation:
    """An invoked action, from blocking code: made by :meth:`ThingClient.invoke`.

    The handle of the async client's :class:`~trio_things.client.Invocation`, which
    lives in the client's Trio thread and follows the invocation there; ``status`` is
    the latest it knows. Unlike :meth:`ThingClient.call`, giving up waiting (a
    ``timeout``, Ctrl-C) leaves the invocation running: :meth:`cancel` cancels it.
    """

    def __init__(self, client: ThingClient, invocation: Invocation) -> None:
        self._client = client  # kept alive (and open) for as long as the handle is
        self._loop = client._loop
        self._invocation = invocation

    @property
    def action(self) -> str:
        """The action's name."""
        return self._invocation.action

    @property
    def id(self) -> str:
        """The invocation's id on the server."""
        return self._invocation.id

    @property
    def status(self) -> ActionStatus:
        """The latest status known, without asking the server (an immutable value the
        Trio thread replaces as news arrive)."""
        return self._invocation.status

    def __repr__(self) -> str:
        return (f"<BlockingInvocation {self.action} {self.id or '(no id)'} "
                f"{self.status.state.value}>")

    @overload
    def result(self, *, timeout: float | None = None) -> JsonValue: ...
    @overload
    def result(self, type_: type[T], *, timeout: float | None = None) -> T: ...

    def result(self, type_: type[Any] | None = None, *,
               timeout: float | None = None) -> Any:
        """Wait for the end and return the output (structured as ``type_`` if given).

        Raises:
            ActionFailed, ActionCancelled: as :meth:`Invocation.result`.
            Timeout: it had not ended within ``timeout`` seconds (it still runs).
        """
        async def result() -> Any:
            with trio.move_on_after(_seconds(timeout)):
                if type_ is None:
                    return await self._invocation.result()
                return await self._invocation.result(type_)
            raise Timeout(f"{self._invocation!r} did not end within {timeout} s "
                          f"(it is still running: cancel() cancels it)")
        return self._loop.run(result)

    def cancel(self) -> bool:
        """Ask the server to cancel it: True if it accepted, False if it had ended."""
        return self._loop.run(self._invocation.cancel)

    def updates(self, *, timeout: float | None = None) -> Iterator[ActionStatus]:
        """The status now, then each time it changes, until the final one (a slow
        reader may skip an intermediate status, never the final one). ``Timeout`` if
        no change comes within ``timeout`` seconds."""
        seen: ActionStatus | None = None
        while True:
            status = self._loop.run(functools.partial(self._next_status, seen, timeout))
            if status is _Stop.ENDED:
                return
            if status is _Stop.EXPIRED:
                raise Timeout(f"no news of {self._invocation!r} within {timeout} s")
            seen = status
            yield status

    async def _next_status(self, seen: ActionStatus | None,
                           limit: float | None) -> ActionStatus | _Stop:
        updates = cast(AsyncGenerator[ActionStatus, None], self._invocation.updates())
        with trio.move_on_after(_seconds(limit)):
            async with contextlib.aclosing(updates):
                async for status in updates:
                    if status is not seen:
                        return status
            return _Stop.ENDED
        return _Stop.EXPIRED


# ---------------------------------------------------------------------- notifications


class BlockingObservation(Generic[T]):
    """An observed property or a subscribed event, from blocking code: made by
    :meth:`ThingClient.observe` and :meth:`ThingClient.subscribe`.

    A context manager and an iterator::

        with thermo.observe("temperature", duration=10) as temperatures:
            for temperature in temperatures:
                ...

    Entering (or the first ``next``) sends the request and returns once the server
    confirmed it; leaving (or :meth:`close`) ends it. The async
    :class:`~trio_things.client.Observation` stays open in the client's Trio thread
    meanwhile, and each ``next`` takes one value from it: so a slow reader of a property
    gets the latest value, and a subscription that falls too far behind raises
    ``FellBehind``, as in the async client.

    * ``timeout``: the longest wait for the next value; past it ``next`` raises
      :class:`~trio_things.client.errors.Timeout` (the observation stays open).
    * ``duration``: seconds from entering after which the iteration ends (cleanly,
      closing the observation): the bound for a notebook cell.

    Iteration also ends when the client is closed. Ctrl-C while waiting closes the
    observation. ``break`` out of a ``for`` loop leaves the observation open until it
    is closed, or garbage collected (which ends it without waiting): the ``with``
    block ends it at a known point.
    """

    def __init__(self, client: ThingClient, observation: Observation[T], *, what: str,
                 timeout: float | None, duration: float | None) -> None:
        self._client = client  # kept alive (and open) for as long as the observation is
        self._loop = client._loop
        self._observation = observation
        self._what = f"{what} of {client.title}"
        self._timeout = timeout
        self._duration = duration
        self._deadline = math.inf
        self._state = "new"
        self._done = trio.Event()  # set in the Trio thread: leave the observation
        self._ended = threading.Event()  # the holding task has ended

    def __repr__(self) -> str:
        return f"<BlockingObservation of {self._what} ({self._state})>"

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> Self:
        """Start observing (entering does it; the first ``next`` too)."""
        if self._state == "new":
            self._state = "open"
            try:
                self._loop.run(self._start_holding)
            except BaseException:
                self._state = "closed"
                raise
            if self._duration is not None:
                self._deadline = time.monotonic() + self._duration
        elif self._state == "closed":
            raise LocalProtocolError(f"the observation of {self._what} is closed")
        return self

    def close(self) -> None:
        """Stop observing, and wait (up to the client's timeout) until the server has
        been told. Idempotent."""
        state, self._state = self._state, "closed"
        if state == "open":
            self._loop.soon(self._done.set)
            _wait(self._ended, self._loop.options.timeout)

    def __del__(self) -> None:
        if self.__dict__.get("_state") == "open":
            with contextlib.suppress(Exception):
                self._loop.soon(self._done.set)

    def __iter__(self) -> Self:
        if self._state == "new":
            self.open()
        return self

    def __next__(self) -> T:
        return self._next().value

    def changes(self) -> Iterator[Change[T]]:
        """The notifications with their names and the server's timestamps, not just
        the values (from the same stream: one or the other)."""
        while True:
            try:
                change = self._next()
            except StopIteration:
                return
            yield change

    def _next(self) -> Change[T]:
        if self._state == "closed":
            raise StopIteration
        self.open()
        left = self._deadline - time.monotonic()
        limit = min(_seconds(self._timeout), max(0.0, left))
        try:
            change = self._loop.run(lambda: self._pull(limit))
        except _Closed:  # the client closed: the iteration ends
            self._state = "closed"
            raise StopIteration from None
        except BaseException:  # Ctrl-C, FellBehind, ConnectionLost, ...
            self.close()
            raise
        if change is _Stop.EXPIRED and limit < _seconds(self._timeout):
            change = _Stop.ENDED  # the duration is over
        if change is _Stop.ENDED:
            self.close()
            raise StopIteration
        if change is _Stop.EXPIRED:
            raise Timeout(f"no news of {self._what} within {self._timeout} s")
        return change

    async def _start_holding(self) -> None:
        jobs = self._loop._jobs
        if jobs is None:
            raise self._loop.closed_error()
        await jobs.start(self._hold, self._observation, self._done, self._ended, self._what)

    async def _pull(self, limit: float) -> Change[T] | _Stop:
        with trio.move_on_after(limit):
            try:
                return await self._observation._next()
            except StopAsyncIteration:
                return _Stop.ENDED
        return _Stop.EXPIRED

    @staticmethod
    async def _hold(observation: Observation[Any], done: trio.Event, ended: threading.Event,
                    what: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Hold the observation open (in the client's nursery of jobs) until ``done``.

        A static method, given only what it needs: the task must not keep the
        :class:`BlockingObservation` alive, or one dropped after a ``break`` would never
        be collected, and never closed."""
        started = False
        try:
            async with observation:
                task_status.started()
                started = True
                await done.wait()
        except Exception:
            if not started:
                raise  # to open(), through nursery.start
            logger.debug("ending the observation of %s failed", what, exc_info=True)
        finally:
            ended.set()
