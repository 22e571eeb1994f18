"""Observer sets: who observes what, and publishing to them without waiting.

The fan-out path, start to end (``docs/design.md``, "The fan-out path")::

    Thing code -> ThingNotifier (fanout/notifier.py; from a thread, via the bridge)
      -> ObserverSet.publish          encode once per dialect, frame once
      -> Outbox.put_latest / put      per connection: coalesce state, queue history
           -> writer.write_now        the fast path: an idle socket takes it at once
           -> (queued) relay          everything pending in one send_all -> socket

:meth:`ObserverSet.publish` is the hot path. It encodes a notification **once per
dialect** (never per observer), frames it once, and hands the same bytes to every
observer's :class:`~trio_things.fanout.outbox.Outbox`, which never blocks. The
publisher therefore never waits for a client, and one stalled client costs the others
nothing but the few hundred nanoseconds of a dictionary insert.

One exception to byte-identical frames: a Web Thing Protocol notification names the
observer's own ``thingID`` and ``correlationID`` (those of its observe request). Each
observer therefore carries a *tail*, encoded when it started observing, and the dialect's
encoder produces the message without it: the frame is ``header + body + tail``, joined by
the relay in the one ``b"".join`` it does anyway. Observers whose tails have the same
length share the header; observers without a tail share the whole frame.

Frames are WebSocket text frames unless the observer names another :data:`Framer`: an
SSE stream's observers frame each message as a chunk of the HTTP response
(:mod:`trio_things.protocol.sse`), and a long-poll request's take the bare message.
Those have no tails: their messages are the same for every observer.

Which sets hold an Outbox (its *memberships*) is recorded in one place, the
:class:`ObserverRegistry`, which the sets share: a connection that ends leaves them all
with :meth:`ObserverRegistry.leave_all`. The Outbox knows nothing of observers.

Everything here runs on the Trio thread; :mod:`trio_things.fanout.bridge` brings worker
threads' changes to it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Final, TypeAlias

import attrs

from trio_things.fanout.outbox import Frame, Outbox
from trio_things.protocol.commands import Notification
from trio_things.protocol.frames import text_frame, text_frame_header

__all__ = [
    "ACTION",
    "EVENT",
    "PROPERTY",
    "STREAM",
    "Encoder",
    "Framer",
    "Observer",
    "ObserverRegistry",
    "ObserverSet",
    "ObserverSetStatistics",
]

#: Which sets hold each Outbox: the sets of one registry share one.
Memberships: TypeAlias = "dict[Outbox, set[ObserverSet]]"

#: Encodes a notification as a dialect's message body, without the observer's tail:
#: UTF-8 JSON bytes such that ``body + tail`` is the whole message.
Encoder = Callable[[Notification], bytes]

#: Frames a whole message for the wire: a WebSocket text frame (:func:`text_frame`), a
#: chunk of an SSE response, or the bare message for a long-poll. One per encoder.
Framer = Callable[[bytes], bytes]

#: The kinds of affordance an :class:`ObserverSet` key names.
PROPERTY: Final = "property"
EVENT: Final = "event"
ACTION: Final = "action"
STREAM: Final = "stream"
_INVOCATION: Final = "invocation"
#: The kinds whose notifications are state, not history.
_COALESCED: Final = frozenset({PROPERTY, STREAM})


@attrs.frozen(kw_only=True)
class Observer:
    """One connection's wish to be told: where to put frames, how to encode them, and
    the tail that ends each message it receives (``b""`` when it needs none)."""

    outbox: Outbox
    encoder: Encoder
    tail: bytes = b""
    framer: Framer = text_frame
    """How the encoder's messages are framed; only WebSocket frames take a tail."""

    def frame(self, notification: Notification) -> Frame:
        """``notification`` encoded and framed for this observer alone (what it missed
        while away, pushed once): :meth:`ObserverSet.publish` does the same for many."""
        body = self.encoder(notification)
        if self.tail:
            return (text_frame_header(len(body) + len(self.tail)), body, self.tail)
        return (self.framer(body),)


@attrs.frozen(kw_only=True)
class ObserverSetStatistics:
    """A snapshot of an :class:`ObserverSet`."""

    observers: int
    published: int
    """Notifications published while the set had observers."""
    delivered: int
    """Frames handed to outboxes."""


@attrs.define(eq=False)
class ObserverSet:
    """The connections observing one affordance (or one invocation).

    ``coalesce``: whether a newer notification replaces one still pending for a client
    (properties: state) or queues behind it (events and action status: history); see
    :mod:`trio_things.fanout.outbox`.
    """

    key: Hashable
    coalesce: bool
    _memberships: Memberships = attrs.field(factory=dict, kw_only=True, repr=False)
    """Shared by every set of a registry (a set made alone keeps its own)."""
    # encoder -> tail length -> outbox -> tail. Grouping by encoder makes "encode once per
    # dialect" a loop, and by tail length "one header per frame size" (0: no tail, one
    # whole frame shared).
    _groups: dict[Encoder, dict[int, dict[Outbox, bytes]]] = attrs.field(init=False,
                                                                         factory=dict)
    _framers: dict[Encoder, Framer] = attrs.field(init=False, factory=dict)
    _published: int = attrs.field(init=False, default=0)
    _delivered: int = attrs.field(init=False, default=0)
    latest: Notification | None = attrs.field(init=False, default=None)
    """A frame stream's newest frame, watched or not (the notifier keeps it, from the
    publishing thread: one reference, never a copy), so that a new viewer is sent it at
    once rather than after the next one (``bindings/sse.py``). None elsewhere."""

    def __len__(self) -> int:
        return sum(len(members) for lengths in self._groups.values()
                   for members in lengths.values())

    def __bool__(self) -> bool:
        return bool(self._groups)

    def __iter__(self) -> Iterator[Outbox]:
        """The Outbox of every observer (for inspection: statistics, tests)."""
        for lengths in self._groups.values():
            for members in lengths.values():
                yield from members

    def __contains__(self, outbox: object) -> bool:
        return any(outbox in members for lengths in self._groups.values()
                   for members in lengths.values())

    def add(self, observer: Observer) -> None:
        """Add (or re-add, with a new encoder or tail) ``observer.outbox``."""
        if observer.tail and observer.framer is not text_frame:
            raise ValueError("only observers framed as WebSocket text frames take a tail")
        self.discard(observer.outbox)
        lengths = self._groups.setdefault(observer.encoder, {})
        lengths.setdefault(len(observer.tail), {})[observer.outbox] = observer.tail
        self._framers[observer.encoder] = observer.framer
        self._memberships.setdefault(observer.outbox, set()).add(self)

    def discard(self, outbox: Outbox) -> None:
        """Remove ``outbox`` if present, and its pending coalesced frame for this key."""
        for encoder, lengths in self._groups.items():
            length = next((n for n, members in lengths.items() if outbox in members), None)
            if length is not None:
                members = lengths[length]
                del members[outbox]
                if not members:
                    del lengths[length]
                    if not lengths:
                        del self._groups[encoder]
                        del self._framers[encoder]
                break
        sets = self._memberships.get(outbox)
        if sets is not None:
            sets.discard(self)
            if not sets:
                del self._memberships[outbox]
        if self.coalesce:
            outbox.discard_latest(self.key)

    def clear(self) -> None:
        """Remove every observer."""
        for outbox in list(self):
            self.discard(outbox)

    def publish(self, notification: Notification) -> None:
        """Encode ``notification`` once per dialect and queue it for every observer.

        Never blocks, never raises for a client's state. With no observers it does
        nothing at all (publishers may also check ``bool(observer_set)`` first, to skip
        building the notification).
        """
        if not self._groups:
            return
        self._published += 1
        framers = self._framers
        for encoder, lengths in self._groups.items():
            self._deliver(encoder(notification), lengths, framers[encoder])

    def deliver_to(self, observer: Observer, notification: Notification) -> None:
        """Queue ``notification`` for one observer only (its current value, right after
        it started observing), under this set's key."""
        self._deliver(observer.encoder(notification),
                      {len(observer.tail): {observer.outbox: observer.tail}}, observer.framer)

    def _deliver(self, body: bytes, lengths: dict[int, dict[Outbox, bytes]],
                 framer: Framer) -> None:
        key = self.key
        coalesce = self.coalesce
        for length, members in lengths.items():
            if length:  # each observer's own tail, after a header and body they share
                header = text_frame_header(len(body) + length)
                for outbox, tail in members.items():
                    if coalesce:
                        outbox.put_latest(key, (header, body, tail))
                    else:
                        outbox.put((header, body, tail))
            else:  # no tail: one whole frame, shared
                frame = (framer(body),)
                for outbox in members:
                    if coalesce:
                        outbox.put_latest(key, frame)
                    else:
                        outbox.put(frame)
            self._delivered += len(members)

    def statistics(self) -> ObserverSetStatistics:
        """A frozen snapshot of this set."""
        return ObserverSetStatistics(observers=len(self), published=self._published,
                                     delivered=self._delivered)


class ObserverRegistry:
    """Every observer set of a server: one per property, event, action and frame stream
    of each Thing, made when the server starts, and one per running invocation, made on
    demand and dropped when the invocation ends; and which sets hold each connection's
    Outbox."""

    def __init__(self, affordances: Mapping[str, Sequence[Sequence[str]]]) -> None:
        """``affordances``: for each Thing name, its (properties, events, actions[,
        frame streams]) names. Properties and frame streams coalesce (state: the newest
        is what counts); events and action status do not (history)."""
        self._memberships: Memberships = {}
        self._sets: dict[tuple[str, str, str], ObserverSet] = {}
        for thing, lists in affordances.items():
            for kind, names in zip((PROPERTY, EVENT, ACTION, STREAM), lists, strict=False):
                for name in names:
                    key = (thing, kind, name)
                    self._sets[key] = ObserverSet(key=key, coalesce=kind in _COALESCED,
                                                  memberships=self._memberships)
        self._invocations: dict[str, ObserverSet] = {}

    def leave_all(self, outbox: Outbox) -> None:
        """Remove ``outbox`` from every set that holds it: its connection ended."""
        for observers in self._memberships.pop(outbox, ()):
            observers.discard(outbox)

    def memberships(self, outbox: Outbox) -> frozenset[ObserverSet]:
        """The sets that hold ``outbox`` now."""
        return frozenset(self._memberships.get(outbox, ()))

    def get(self, thing: str, kind: str, name: str) -> ObserverSet:
        """The set of ``thing``'s ``kind`` (:data:`PROPERTY`, :data:`EVENT`,
        :data:`ACTION`, :data:`STREAM`) ``name``; :exc:`KeyError` if the Thing has no
        such affordance."""
        return self._sets[(thing, kind, name)]

    def invocation(self, invocation_id: str) -> ObserverSet:
        """The set observing one invocation, made if needed."""
        observers = self._invocations.get(invocation_id)
        if observers is None:
            key = (_INVOCATION, invocation_id)
            observers = self._invocations[invocation_id] = ObserverSet(
                key=key, coalesce=False, memberships=self._memberships)
        return observers

    def invocation_if_observed(self, invocation_id: str) -> ObserverSet | None:
        """The set observing one invocation, or ``None`` if nobody does."""
        return self._invocations.get(invocation_id)

    def forget_invocation(self, invocation_id: str) -> None:
        """Drop an ended invocation's set (its observers leave it)."""
        observers = self._invocations.pop(invocation_id, None)
        if observers is not None:
            observers.clear()

    def __iter__(self) -> Iterator[ObserverSet]:
        """Every set, for inspection (tests check that none holds a closed connection)."""
        yield from self._sets.values()
        yield from self._invocations.values()
