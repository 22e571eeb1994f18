"""Running commands against the Things: the one place a client's wish meets Thing code.

Every binding (HTTP, the WebSocket dialects) decodes its messages into
:mod:`~trio_things.protocol.commands` and awaits :meth:`Dispatcher.run`, which answers
with a protocol-neutral :data:`~trio_things.protocol.commands.Reply` or raises a
:class:`~trio_things.errors.RemoteProtocolError` for the binding to encode.

Data properties are read and written inline (they are memory); functional properties
call Thing code that may block on hardware, so they run in a worker thread.

Observing and subscribing edit the observer sets (:mod:`trio_things.fanout.observers`)
on behalf of the :class:`~trio_things.fanout.observers.Observer` the binding passes in:
a WebSocket connection's, an SSE stream's or a long-poll request's outbox, encoder and
tail; without one they are refused. A consumer coming back with the id of the last
notification it saw (``after``) is answered with what it missed
(:mod:`trio_things.fanout.history`), for the binding to push before anything live: no
checkpoint lies between the subscription and that answer, so nothing falls between.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, assert_never

import trio

from trio_things.errors import (
    BadRequest,
    Conflict,
    MethodNotAllowed,
    NotFound,
    RemoteProtocolError,
)
from trio_things.fanout.history import History
from trio_things.fanout.observers import (
    ACTION,
    EVENT,
    PROPERTY,
    STREAM,
    Observer,
    ObserverRegistry,
)
from trio_things.model.affordances import PropertySpec
from trio_things.model.description import Binding, describe_thing, thing_id
from trio_things.model.docstrings import description_from_docstring
from trio_things.model.invocation import Invocation, InvocationStatus
from trio_things.model.thing import Thing
from trio_things.protocol import commands as c
from trio_things.protocol.access import ANONYMOUS, Caller, check_cancel
from trio_things.protocol.commands import (
    DescriptionPageReply,
    DocumentReply,
    InvocationListReply,
    InvocationReply,
    NoContentReply,
    PropertyChanged,
    Reply,
    SubscribedReply,
    ValueReply,
)
from trio_things.protocol.directory import (
    TD_CONTENT_TYPE,
    collection_etag,
    directory_description,
)
from trio_things.runtime.actions import ActionRunner

__all__ = ["Dispatcher"]


class Dispatcher:
    """Runs commands against a fixed set of Things."""

    def __init__(
        self,
        *,
        things: Mapping[str, Thing],
        invocations: ActionRunner,
        history: History,
        observers: ObserverRegistry,
        bindings: Sequence[Binding],
        security_definitions: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self._things = things
        self._invocations = invocations
        self._history = history
        self._observers = observers
        self._bindings = bindings
        self._security = security_definitions or {"nosec_sc": {"scheme": "nosec"}}

    @property
    def observers(self) -> ObserverRegistry:
        """The observer sets the observation commands edit."""
        return self._observers

    @property
    def history(self) -> History:
        """Notification ids and the Things' replay rings."""
        return self._history

    async def run(self, command: c.Command, observer: Observer | None = None, *,
                  caller: Caller = ANONYMOUS) -> Reply:
        """Run one command. Raises :class:`~trio_things.errors.RemoteProtocolError`
        for anything the client got wrong; any other exception is a bug.

        ``observer`` is the connection on whose behalf observations are made, and which
        hears the status of the actions it invokes. ``caller`` is who sent the command
        (anonymous when the server requires no token): an invocation remembers who
        invoked it, and only they may cancel it
        (:func:`~trio_things.protocol.access.check_cancel`: 403).
        """
        match command:
            case c.ReadProperty(thing=name, name=prop):
                thing, spec = self._property(name, prop)
                return ValueReply(value=await _read(thing, spec))
            case c.WriteProperty(thing=name, name=prop, value=value):
                thing, spec = self._property(name, prop, writing=True)
                await _store(thing, spec, thing._tt_structure_json(spec, value))
                return NoContentReply()
            case c.ReadAllProperties(thing=name):
                thing = self._thing(name)
                return ValueReply(value={
                    spec.name: await _read(thing, spec)
                    for spec in thing.affordances.properties.values()})
            case c.ReadMultipleProperties(thing=name, names=names):
                specs = [self._property(name, prop) for prop in names]
                return ValueReply(value={spec.name: await _read(thing, spec)
                                         for thing, spec in specs})
            case c.WriteMultipleProperties(thing=name, values=values):
                specs = [self._property(name, prop, writing=True) for prop in values]
                # All or nothing: every value is checked and converted before any is
                # written (a conversion can refuse what the schema let through).
                structured = [(thing, spec, thing._tt_structure_json(spec, values[spec.name]))
                              for thing, spec in specs]
                for thing, spec, value in structured:
                    await _store(thing, spec, value)
                return NoContentReply()
            case c.InvokeAction(thing=name, name=action, input=input, wait=wait):
                thing = self._thing(name)
                action_spec = thing.affordances.actions.get(action)
                if action_spec is None:
                    raise NotFound(f"Thing {name!r} has no action {action!r}")
                invocation = self._invocations.invoke(
                    name, thing, action_spec, input,
                    invoker=caller.identity)
                if observer is not None:  # before the action can start: no status is missed
                    self._observers.invocation(invocation.id).add(observer)
                if not wait:
                    return InvocationReply(invocation=invocation, created=True)
                await self._invocations.wait(invocation)
                return _output(invocation)
            case c.QueryAction(invocation_id=invocation_id, output_only=output_only,
                               wait=wait):
                invocation = self._invocations.get(invocation_id)
                if wait:
                    await self._invocations.wait(invocation)
                if output_only:
                    return _output(invocation)
                return InvocationReply(invocation=invocation)
            case c.CancelAction(invocation_id=invocation_id, wait=wait):
                check_cancel(caller, self._invocations.invoker(invocation_id))
                invocation = self._invocations.cancel(invocation_id)
                if wait:
                    await self._invocations.wait(invocation)
                return InvocationReply(invocation=invocation)
            case c.QueryAllActions(thing=name, action=action):
                if name is not None:
                    self._thing(name)
                    if action is not None:
                        self._action(name, action)
                return InvocationListReply(invocations=tuple(
                    self._invocations.list(thing=name, action=action)))
            case c.SubscribeEvent(thing=name, name=event, after=after):
                self._event(name, event)
                observer = self._observing(command, observer)
                self._observers.get(name, EVENT, event).add(observer)
                return self._subscribed(name, after, [(EVENT, event)])
            case c.UnsubscribeEvent(thing=name, name=event):
                self._event(name, event)
                self._observers.get(name, EVENT, event).discard(
                    self._observing(command, observer).outbox)
                return NoContentReply()
            case c.SubscribeAllEvents(thing=name, after=after):
                observer = self._observing(command, observer)
                events = list(self._thing(name).affordances.events)
                for event in events:
                    self._observers.get(name, EVENT, event).add(observer)
                return self._subscribed(name, after, [(EVENT, event) for event in events])
            case c.UnsubscribeAllEvents(thing=name):
                outbox = self._observing(command, observer).outbox
                for event in self._thing(name).affordances.events:
                    self._observers.get(name, EVENT, event).discard(outbox)
                return NoContentReply()
            case c.ObserveProperty(thing=name, name=prop):
                observer = self._observing(command, observer)
                thing, spec = self._property(name, prop)
                if not spec.observable:
                    raise MethodNotAllowed(f"property {prop!r} is not observable")
                return await self._observe(observer, thing, name, [spec])
            case c.UnobserveProperty(thing=name, name=prop):
                outbox = self._observing(command, observer).outbox
                self._property(name, prop)
                self._observers.get(name, PROPERTY, prop).discard(outbox)
                return NoContentReply()
            case c.ObserveAllProperties(thing=name):
                observer = self._observing(command, observer)
                thing = self._thing(name)
                observable = [s for s in thing.affordances.properties.values() if s.observable]
                return await self._observe(observer, thing, name, observable)
            case c.UnobserveAllProperties(thing=name):
                outbox = self._observing(command, observer).outbox
                for prop in self._thing(name).affordances.properties:
                    self._observers.get(name, PROPERTY, prop).discard(outbox)
                return NoContentReply()
            case c.ObserveAction(thing=name, name=action, after=after):
                observer = self._observing(command, observer)
                self._action(name, action)
                self._observers.get(name, ACTION, action).add(observer)
                return self._subscribed(name, after, [(ACTION, action)])
            case c.UnobserveAction(thing=name, name=action):
                outbox = self._observing(command, observer).outbox
                self._action(name, action)
                self._observers.get(name, ACTION, action).discard(outbox)
                return NoContentReply()
            case c.WatchStream(thing=name, name=stream):
                if stream not in self._thing(name).affordances.streams:
                    raise NotFound(f"Thing {name!r} has no stream {stream!r}")
                observer = self._observing(command, observer)
                self._observers.get(name, STREAM, stream).add(observer)
                return SubscribedReply()
            case c.ReadThingDescription(thing=name, base=base):
                return DocumentReply(document=self.describe(name, base),
                                     content_type=TD_CONTENT_TYPE)
            case c.ReadAllThingDescriptions(base=base):
                return ValueReply(value={name: self.describe(name, base) for name in self._things})
            case c.ListThings(base=base):
                return ValueReply(value={name: f"{base}{name}/" for name in self._things})
            case c.Discover(base=base):
                return DocumentReply(document=directory_description(
                    base, list(self._things), self._security), content_type=TD_CONTENT_TYPE)
            case c.ListThingDescriptions(base=base, offset=offset, limit=limit,
                                         collection=collection):
                listed = self._by_id(base)
                end = len(listed) if limit is None else offset + limit
                return DescriptionPageReply(
                    descriptions=tuple(self.describe(name, base) for _, name in
                                       listed[offset:end]),
                    offset=offset, total=len(listed), limit=limit, collection=collection,
                    etag=collection_etag(identifier for identifier, _ in listed))
            case c.RetrieveThing(id=wanted, base=base):
                for identifier, name in self._by_id(base):
                    if identifier == wanted:
                        return DocumentReply(document=self.describe(name, base),
                                             content_type=TD_CONTENT_TYPE)
                raise NotFound(f"the directory holds no Thing Description with id {wanted!r}")
            case _:
                assert_never(command)

    def describe(self, name: str, base: str) -> dict[str, Any]:
        """The TD of Thing ``name`` served at ``base``."""
        thing = self._thing(name)
        cls = type(thing)
        return describe_thing(
            cls.affordances,
            name=name,
            title=cls.title or cls.__name__,
            description=description_from_docstring(cls.__doc__),
            base=base,
            bindings=self._bindings,
            security_definitions=self._security,
        )

    def _by_id(self, base: str) -> list[tuple[str, str]]:
        """``(id, name)`` of every Thing served at ``base``, sorted by id in code point
        order, as WoT Discovery sorts a directory's listing."""
        return sorted((thing_id(base, name), name) for name in self._things)

    async def _observe(self, observer: Observer, thing: Thing, name: str,
                       specs: list[PropertySpec]) -> SubscribedReply:
        """Add ``observer`` to each property's set, then read the current values: read
        after adding, so no change can fall between the value and the first notice."""
        for spec in specs:
            self._observers.get(name, PROPERTY, spec.name).add(observer)
        initial = []
        for spec in specs:
            value = await _read(thing, spec)
            initial.append(PropertyChanged(thing=name, name=spec.name, value=value,
                                           timestamp=_now(), id=self._history.last_id))
        return SubscribedReply(initial=tuple(initial))

    def _subscribed(self, thing: str, after: str | None,
                    wanted: list[tuple[str, str]]) -> SubscribedReply:
        """The reply to a subscription just made: with what the consumer missed after
        ``after``, if it came back with an id. Synchronous, so nothing is published
        between the subscription and the replay."""
        missed = () if after is None else self._history.since(thing, after, wanted).missed
        return SubscribedReply(missed=missed, event_id=self._history.last_id)

    @staticmethod
    def _observing(command: c.Command, observer: Observer | None) -> Observer:
        if observer is None:
            raise BadRequest(f"{type(command).__name__} needs a connection to push to "
                             "(a WebSocket or an event stream)")
        return observer

    def _event(self, name: str, event: str) -> None:
        if event not in self._thing(name).affordances.events:
            raise NotFound(f"Thing {name!r} has no event {event!r}")

    def _action(self, name: str, action: str) -> None:
        if action not in self._thing(name).affordances.actions:
            raise NotFound(f"Thing {name!r} has no action {action!r}")

    def _thing(self, name: str) -> Thing:
        try:
            return self._things[name]
        except KeyError:
            raise NotFound(f"no Thing named {name!r}") from None

    def _property(self, name: str, prop: str, *, writing: bool = False
                  ) -> tuple[Thing, PropertySpec]:
        thing = self._thing(name)
        spec = thing.affordances.properties.get(prop)
        if spec is None:
            raise NotFound(f"Thing {name!r} has no property {prop!r}")
        if writing and spec.readonly:
            raise MethodNotAllowed(f"property {prop!r} is read-only", allow=("GET", "HEAD"))
        return thing, spec


async def _read(thing: Thing, spec: PropertySpec) -> Any:
    if spec.functional:
        return await trio.to_thread.run_sync(thing._tt_read_json, spec)
    return thing._tt_read_json(spec)


async def _store(thing: Thing, spec: PropertySpec, value: Any) -> None:
    """Store a structured value: a functional property's setter may block on hardware,
    so it runs in a worker thread."""
    if spec.functional:
        await trio.to_thread.run_sync(thing._tt_store_structured, spec, value)
    else:
        thing._tt_store_structured(spec, value)


def _output(invocation: Invocation) -> Reply:
    match invocation.status:
        case InvocationStatus.COMPLETED:
            if invocation.output is None:
                return NoContentReply()
            return ValueReply(value=invocation.output)
        case InvocationStatus.FAILED:
            assert invocation.error is not None
            error = invocation.error
            raise RemoteProtocolError(
                f"action {invocation.action!r} failed: {error.title}: {error.detail}",
                status=error.status)
        case InvocationStatus.CANCELLED:
            raise Conflict(f"invocation {invocation.id} was cancelled")
        case _:
            raise Conflict(f"invocation {invocation.id} has not finished "
                           f"({invocation.status.value})")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)

