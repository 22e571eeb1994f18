"""An observed property or a subscribed event, as an async context manager and iterator.

::

    async with thermo.observe("temperature") as values:
        async for value in values:
            ...

Entering sends the request and returns once the server confirmed it (so a missing or
unobservable name raises right there); leaving ends it on the server (when this was
its last local observer) and closes the channel. Values arrive through a
``trio.MemoryReceiveChannel`` fed by the session's reader task, which never waits for
a slow observer:

* a property is state: beyond ``ClientOptions.event_buffer`` values the oldest is
  dropped, so a slow reader always gets the latest (the server coalesces the same way);
* an event is history: beyond the buffer the subscription ends with
  :class:`~trio_things.client.errors.FellBehind` once the buffered events are read,
  never silently thinned.

Cancellation: a cancelled ``__anext__`` leaves the channel unchanged (trio's memory
channel guarantee), so the next one gets the next value. Across a reconnection the
iteration simply pauses; after it, an observed property's current value comes again,
and an event subscription goes on from the last event it received (the session sends
its ``eventID`` as ``lastEventID``): each event once, in order. When the server no
longer holds every event missed meanwhile, or restarted, the iterator raises
:class:`~trio_things.client.errors.NotificationsMissed` in the gap's place, and goes on
after it when iterated again::

    async with lab.subscribe("alarm", Reading) as alarms:
        while True:
            try:
                async for reading in alarms:
                    ...
                break                      # the block was left: done
            except ttc.NotificationsMissed as gap:
                log.warning("%s", gap)     # some alarms are lost; go on after them

Why raise, rather than yield a marker: the values stay of the type asked for
(``Observation[Reading]`` yields only ``Reading``), a gap is the server's problem
details like every other error the client raises, and an application that does not
expect gaps stops at one instead of going on as if nothing were missing, as with
:class:`~trio_things.client.errors.FellBehind`. Unlike that error, this one ends
nothing: ``async for`` over the same observation (or the same :meth:`changes` iterator)
resumes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

import attrs
import trio

from trio_things.client.errors import (
    ClientError,
    FellBehind,
    NotificationsMissed,
    problem_from_json,
)
from trio_things.client.session import Sink
from trio_things.client.values import JsonValue
from trio_things.client.wtp import Message
from trio_things.errors import LocalProtocolError

__all__ = ["Change", "Observation", "Source"]

T = TypeVar("T")


class Source(Protocol):
    """Where an observation is made and ended: a WebSocket
    :class:`~trio_things.client.session.Session`, or a subscription through an MQTT
    broker (:class:`~trio_things.client.mqtt.MqttSource`). Either delivers
    :class:`~trio_things.client.wtp.Message` values to the observation, a
    :class:`~trio_things.client.session.Sink`."""

    async def attach(self, operation: str, *, thing_id: str | None, name: str,
                     sink: Sink) -> None: ...

    async def detach(self, operation: str, *, thing_id: str | None, name: str,
                     sink: Sink) -> None: ...


@attrs.frozen(kw_only=True)
class Change(Generic[T]):
    """One notification: a property's new value, or an event's payload."""

    name: str
    value: T
    timestamp: str | None
    """When it happened, as the server wrote it (RFC 3339), if it did."""
    event_id: str | None = None
    """The server's id of the notification (``eventID``), if it sent one: what a
    subscription resumes from after a lost connection, and what a gap's
    ``last_event_id`` names."""


class Observation(Generic[T]):
    """The values of one observed property, or the payloads of one subscribed event.

    Made by :meth:`ConsumedThing.observe` and :meth:`ConsumedThing.subscribe`; enter it
    once with ``async with``, then iterate it (values) or :meth:`changes` (values with
    their timestamps). Iteration ends when the block is left, and raises the error
    that ended the observation otherwise (``ConnectionLost`` when reconnecting gave
    up, ``FellBehind``, or the server's refusal to restore it after a restart).

    An event subscription that lost events across a reconnection raises
    :class:`~trio_things.client.errors.NotificationsMissed` where they are missing;
    that ends nothing: iterating again gives the events after the gap.
    """

    def __init__(self, *, session: Source, operation: str, thing_id: str | None, name: str,
                 convert: Callable[[JsonValue], T], buffer: int, coalesce: bool) -> None:
        self.name = name
        self._session = session
        self._operation = operation
        self._thing_id = thing_id
        self._convert = convert
        self._coalesce = coalesce
        self._send, self._receive = trio.open_memory_channel[Message](buffer)
        self._state = "new"
        self._error: ClientError | None = None

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise LocalProtocolError("an observation can be entered only once")
        self._state = "open"
        await self._session.attach(self._operation, thing_id=self._thing_id, name=self.name,
                                   sink=self)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self._state = "closed"
        self._send.close()
        await self._session.detach(self._operation, thing_id=self._thing_id, name=self.name,
                                   sink=self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        return (await self._next()).value

    def changes(self) -> AsyncIterator[Change[T]]:
        """The notifications with their names and timestamps, not just the values.

        The same stream as the values: take one or the other. Like the observation
        itself, the iterator goes on after raising ``NotificationsMissed``."""
        return _Changes(self)

    async def _next(self) -> Change[T]:
        if self._state == "new":
            raise LocalProtocolError(
                f"enter the observation of {self.name!r} with `async with` before iterating")
        try:
            message = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None
        if (gap := message.gap) is not None:
            raise self._missed(gap)
        return Change(name=message.name or self.name, value=self._convert(message.value),
                      timestamp=message.timestamp, event_id=message.event_id)

    def _missed(self, gap: Mapping[str, Any]) -> NotificationsMissed:
        problem = problem_from_json(gap)
        last, resume = gap.get("lastEventID"), gap.get("resumeID")
        return NotificationsMissed(
            f"event {self.name!r}: notifications missed: {problem.detail}", problem=problem,
            name=self.name, last_event_id=last if isinstance(last, str) else None,
            resume_id=resume if isinstance(resume, str) else None)

    # The session's side (a Sink): on the Trio thread, never blocking.

    def deliver(self, message: Message) -> None:
        """Queue one notification; coalesce (properties) or fail (events) when full."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            if self._coalesce:
                with contextlib.suppress(trio.WouldBlock):
                    self._receive.receive_nowait()  # drop the oldest value
                with contextlib.suppress(trio.WouldBlock):
                    self._send.send_nowait(message)
            else:
                self.fail(FellBehind(
                    f"the subscription to {self.name!r} fell more than "
                    f"{self._send.statistics().max_buffer_size} events behind"))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def fail(self, error: ClientError) -> None:
        """End the iteration with ``error`` once what is queued has been read."""
        if self._error is None:
            self._error = error
        self._send.close()


class _Changes(AsyncIterator[Change[T]]):
    """:meth:`Observation.changes`: an iterator, not a generator, so that it can be
    iterated again after it raised ``NotificationsMissed`` (a generator that raised is
    finished)."""

    def __init__(self, observation: Observation[T]) -> None:
        self._observation = observation

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Change[T]:
        return await self._observation._next()
