"""The blocking handles :class:`~trio_things.client.blocking.ThingClient` hands out:
:class:`ActionMethod` (an action as a method), :class:`BlockingInvocation` and
:class:`BlockingObservation`.

Each wraps an async handle that lives in the client's Trio thread
(:mod:`trio_things.client.blocking_thread`) and waits for it from the caller's thread;
apart from :class:`ThingClient` so that each module holds one job. They reach their
client through :class:`_Client`, not by importing :mod:`~trio_things.client.blocking`
(which imports this module).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Iterator, Mapping
from types import TracebackType
from typing import Any, Final, Generic, Protocol, Self, TypeVar, cast, overload

import trio

from trio_things.client.actions import ActionStatus, Invocation
from trio_things.client.blobs import RemoteBlob
from trio_things.client.blocking_thread import _Closed, _seconds, _Stop, _TrioThread, _wait
from trio_things.client.errors import NotificationsMissed, Timeout
from trio_things.client.observation import Change, Observation
from trio_things.client.values import JsonValue
from trio_things.errors import LocalProtocolError
from trio_things.model.values import converter

__all__ = ["ActionMethod", "BlockingBlob", "BlockingInvocation", "BlockingObservation"]

T = TypeVar("T")

logger = logging.getLogger("trio_things.client")

_MISSING: Final[Any] = object()


class _Client(Protocol):
    """What the handles use of their :class:`~trio_things.client.blocking.ThingClient`."""

    _loop: _TrioThread

    @property
    def title(self) -> str: ...

    @property
    def actions(self) -> Mapping[str, Mapping[str, Any]]: ...

    def call(self, name: str, input: object = ..., /, *, timeout: float | None = None,
             **arguments: object) -> JsonValue | BlockingBlob: ...


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

    def __init__(self, client: _Client, name: str) -> None:
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
                 **arguments: object) -> JsonValue | BlockingBlob:
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

    def __init__(self, client: _Client, invocation: Invocation) -> None:
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
    def result(self, *, timeout: float | None = None) -> JsonValue | BlockingBlob: ...
    @overload
    def result(self, type_: type[T], *, timeout: float | None = None) -> T: ...

    def result(self, type_: type[Any] | None = None, *,
               timeout: float | None = None) -> Any:
        """Wait for the end and return the output (structured as ``type_`` if given;
        a blob's link as a :class:`BlockingBlob`).

        Raises:
            ActionFailed, ActionCancelled: as :meth:`Invocation.result`.
            Timeout: it had not ended within ``timeout`` seconds (it still runs).
        """
        async def result() -> Any:
            with trio.move_on_after(_seconds(timeout)):
                if type_ is None:
                    return await self._invocation.result()
                return await self._invocation.result(
                    RemoteBlob if type_ is BlockingBlob else type_)
            raise Timeout(f"{self._invocation!r} did not end within {timeout} s "
                          f"(it is still running: cancel() cancels it)")
        return _blocking(self._client, self._loop.run(result))

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

    A subscription that lost events across a reconnection raises
    :class:`~trio_things.client.errors.NotificationsMissed` where they are missing,
    and stays open: iterating again (the same ``changes()`` iterator too) goes on
    after the gap.

    Iteration also ends when the client is closed. Ctrl-C while waiting closes the
    observation. ``break`` out of a ``for`` loop leaves the observation open until it
    is closed, or garbage collected (which ends it without waiting): the ``with``
    block ends it at a known point.
    """

    def __init__(self, client: _Client, observation: Observation[T], *, what: str,
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
        return _Changes(self)

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
        except NotificationsMissed:  # a gap: the subscription goes on
            raise
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


class _Changes(Iterator[Change[T]]):
    """:meth:`BlockingObservation.changes`: an iterator, not a generator, so that it
    can be iterated again after it raised ``NotificationsMissed``."""

    def __init__(self, observation: BlockingObservation[T]) -> None:
        self._observation = observation

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Change[T]:
        return self._observation._next()


# ---------------------------------------------------------------------- blobs


class BlockingBlob:
    """A blob on the server, from blocking code: what :meth:`ThingClient.call` (and
    :meth:`BlockingInvocation.result`) return for an output that is a blob's link.

    The handle of the async client's :class:`~trio_things.client.RemoteBlob`, whose
    downloads run in the client's Trio thread (the client must be open); ``timeout``
    bounds a whole call, and the client's ``timeout`` each piece of it."""

    def __init__(self, client: _Client, blob: RemoteBlob) -> None:
        self._client = client  # kept alive (and open) for as long as the handle is
        self._loop = client._loop
        self._blob = blob

    @property
    def href(self) -> str:
        """Where its bytes are (an absolute URL)."""
        return self._blob.href

    @property
    def media_type(self) -> str:
        """Its media type, as the link says."""
        return self._blob.media_type

    @property
    def size(self) -> int | None:
        """How many bytes it holds, once a download began."""
        return self._blob.size

    def __repr__(self) -> str:
        return f"<BlockingBlob {self.media_type} at {self.href}>"

    def to_json(self) -> dict[str, str]:
        """Its link (what a server reads back as the blob, as an action's input)."""
        return self._blob.to_json()

    def read(self, *, timeout: float | None = None) -> bytes:
        """All its bytes (``Timeout`` past ``timeout`` seconds)."""
        return self._loop.run(lambda: self._bounded(self._blob.read(), timeout))

    def save(self, path: str | os.PathLike[str], *, timeout: float | None = None) -> int:
        """Download it into the file at ``path`` (replaced only once the download is
        complete) and return how many bytes it holds; as :meth:`RemoteBlob.save`."""
        return self._loop.run(lambda: self._bounded(self._blob.save(path), timeout))

    def chunks(self) -> Iterator[bytes]:
        """Its bytes, piece by piece as they arrive; leaving the loop early closes the
        download (at once when the generator is closed, else when it is collected)."""
        pieces = self._blob.chunks()

        async def next_piece() -> bytes | None:
            try:
                return await pieces.__anext__()
            except StopAsyncIteration:
                return None

        try:
            while (piece := self._loop.run(next_piece)) is not None:
                yield piece
        finally:
            with contextlib.suppress(Exception):
                self._loop.run(pieces.aclose)

    async def _bounded(self, work: Awaitable[T], limit: float | None) -> T:
        with trio.move_on_after(_seconds(limit)):
            return await work
        raise Timeout(f"the blob at {self.href} was not downloaded within {limit} s")


def _blocking(client: _Client, value: T) -> T | BlockingBlob:
    """``value``, a :class:`RemoteBlob` made a :class:`BlockingBlob` for ``client``."""
    return BlockingBlob(client, value) if isinstance(value, RemoteBlob) else value


# Sent as an input, a blob is its link, as a RemoteBlob is (client/blobs.py).
converter.register_unstructure_hook(BlockingBlob, BlockingBlob.to_json)
