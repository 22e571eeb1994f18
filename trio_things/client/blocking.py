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

The Trio thread itself is in :mod:`trio_things.client.blocking_thread`, the handles
(:class:`ActionMethod`, :class:`BlockingInvocation`, :class:`BlockingObservation`) in
:mod:`trio_things.client.blocking_handles`; this module holds :class:`ThingClient`, and
re-exports the others' public names.
"""

from __future__ import annotations

import contextlib
import keyword
import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import trio

from trio_things.client.actions import Invocation
from trio_things.client.blobs import RemoteBlob
from trio_things.client.blocking_handles import (
    _MISSING,
    ActionMethod,
    BlockingBlob,
    BlockingInvocation,
    BlockingObservation,
    _blocking,
)
from trio_things.client.blocking_thread import WAKE_INTERVAL, _seconds, _TrioThread
from trio_things.client.connect import connect
from trio_things.client.errors import ClientError, Timeout
from trio_things.client.observation import Observation
from trio_things.client.options import ClientOptions
from trio_things.client.streams import OpenStream, open_tcp_stream
from trio_things.client.things import ConsumedThing
from trio_things.client.values import JsonValue

__all__ = ["WAKE_INTERVAL", "ActionMethod", "BlockingBlob", "BlockingInvocation",
           "BlockingObservation", "ThingClient"]

T = TypeVar("T")

logger = logging.getLogger("trio_things.client")


# ---------------------------------------------------------------------- the client


class ThingClient:
    """One Thing, consumed from blocking code (a script, a notebook); see the module.

    ``ThingClient(url)`` fetches the TD at ``url`` and returns once it has (raising
    ``Unreachable``, ``NotFound``, ... otherwise); ``ThingClient(url, thing="counter")``
    the Thing a directory at ``url`` (or a server's root) lists under that name, id or
    title. The other arguments are :func:`~trio_things.client.connect`'s. Use it as a
    context manager, or call :meth:`close`.

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

    def __init__(self, url: str, *, thing: str | None = None,
                 options: ClientOptions | None = None, token: str | None = None,
                 websocket: bool = True, open_stream: OpenStream = open_tcp_stream,
                 close_timeout: float | None = None) -> None:
        options = options or ClientOptions()

        def open_thing() -> AbstractAsyncContextManager[ConsumedThing]:
            return connect(url, thing=thing, open_stream=open_stream, options=options,
                           token=token, websocket=websocket)

        self._options = options
        self._loop = _TrioThread(open_thing, name=f"trio-things client of {url}",
                                 options=options,
                                 close_timeout=close_timeout or options.timeout)
        self._thing = self._loop.start()
        self._loop.name = f"ThingClient of {self._thing.title} at {self._thing.url}"

    @classmethod
    def from_url(cls, url: str, *, thing: str | None = None,
                 options: ClientOptions | None = None, token: str | None = None,
                 websocket: bool = True, open_stream: OpenStream = open_tcp_stream,
                 close_timeout: float | None = None) -> ThingClient:
        """``ThingClient(url, ...)``, under the name LabThings' ``ThingClient`` uses."""
        return cls(url, thing=thing, options=options, token=token, websocket=websocket,
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
        """The property's value (structured as ``type_`` if given; a blob's link as a
        :class:`BlockingBlob` with ``type_=BlockingBlob``); as
        :meth:`ConsumedThing.read`, whose errors it raises."""
        async def read() -> Any:
            if type_ is None:
                return await self._thing.read(name)
            return await self._thing.read(name, RemoteBlob if type_ is BlockingBlob else type_)
        return _blocking(self, self._loop.run(read))

    def blob(self, link: object) -> BlockingBlob:
        """The blob a link names (``{"href": ..., "media_type": ...}``), to download;
        as :meth:`ConsumedThing.blob`."""
        return BlockingBlob(self, self._loop.run_sync(lambda: self._thing.blob(link)))

    def write(self, name: str, value: object) -> None:
        """Write the property; as :meth:`ConsumedThing.write` (``InvalidValue`` when the
        server refuses the value, ``NotWritable`` for a read-only property)."""
        self._loop.run(lambda: self._thing.write(name, value))

    def read_all(self) -> dict[str, JsonValue]:
        """Every readable property's value, by name."""
        return self._loop.run(self._thing.read_all)

    # ------------------------------------------------------------------ actions

    def call(self, name: str, input: object = _MISSING, /, *, timeout: float | None = None,
             **arguments: object) -> JsonValue | BlockingBlob:
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

        An output that is a blob's link is returned as a :class:`BlockingBlob`, to
        download (``.save(path)``, ``.read()``).

        Raises:
            NotFound: no such action.
            trio_things.client.errors.InvalidValue: the server refused the input.
            ActionFailed, ActionCancelled: it failed, or was cancelled by someone else.
            Timeout: it did not end within ``timeout`` (and was cancelled).
        """
        return _blocking(self, self._loop.run(
            lambda: self._call(name, input, arguments, timeout)))

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
