"""Notification ids and the replay ring: nothing silently lost across a reconnect.

Every notification the server publishes gets an **id** (``docs/design.md``, "Resume"):
``"<epoch>.<sequence>"``, where the sequence increases with every notification of the
server and the epoch is drawn at random when the server starts. A consumer that keeps
the last id it saw can come back with it (SSE's ``Last-Event-ID``, the Web Thing
Protocol's ``lastEventID``, a long-poll's ``Last-Event-ID`` header) and be given what
it missed.

What it missed is kept per Thing, in a **ring** of the Thing's most recent events and
action-status changes: history, which a consumer cannot rebuild. Property changes are
state: a consumer that comes back is sent each property's current value, so the ring
never holds them. The ring is bounded (``replay_size`` notifications a Thing); when it
drops its oldest, it remembers, for that affordance, the newest id it dropped. A consumer
whose last id is older than that is told of a **gap**, never left to guess; so is one
whose id is of another epoch (the server restarted, and the ring with it) or no id of
ours at all.

============================ ============================================================
the consumer's last id       it is given
============================ ============================================================
this epoch, nothing dropped  every wanted notification after it, oldest first
  after it
this epoch, some dropped     a gap (:class:`~trio_things.protocol.commands.NotificationsMissed`),
                             then every wanted notification the ring still holds
another epoch, or not ours   a gap, then every wanted notification the ring holds
============================ ============================================================

An action-status change is recorded as a snapshot: the invocation record is live (its
status moves on), and a replay must tell what the status was then.

Everything here runs on the Trio thread; it does no I/O.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Collection, Iterable
from typing import Final, TypeAlias

import attrs

from trio_things.fanout.observers import ACTION, EVENT
from trio_things.protocol.commands import (
    ActionStatusChanged,
    EventEmitted,
    Notification,
    NotificationsMissed,
)

__all__ = ["DEFAULT_REPLAY_SIZE", "History", "Replay", "event_id_sequence"]

#: Events and action-status changes a Thing keeps for consumers that come back.
DEFAULT_REPLAY_SIZE: Final = 1024

#: What a ring entry is of: (``EVENT`` or ``ACTION``, the affordance's name).
Affordance: TypeAlias = tuple[str, str]


@attrs.frozen(kw_only=True)
class Replay:
    """What a consumer coming back with its last id is sent before the live stream."""

    missed: tuple[Notification, ...] = ()
    """A :class:`~trio_things.protocol.commands.NotificationsMissed` first if there is a
    gap, then the wanted notifications the ring holds after the consumer's id, oldest
    first."""


@attrs.define(eq=False)
class _Ring:
    entries: collections.deque[tuple[int, Affordance, Notification]]
    dropped: dict[Affordance, int] = attrs.Factory(dict)
    """For each affordance, the sequence of the newest entry dropped from the ring."""


def event_id_sequence(event_id: str, epoch: str) -> int | None:
    """The sequence in ``event_id`` if it is an id of ``epoch``, else None."""
    head, dot, tail = event_id.partition(".")
    if not dot or head != epoch or not (tail.isascii() and tail.isdigit()) or len(tail) > 18:
        return None
    return int(tail)


class History:
    """The server's notification ids and each Thing's replay ring."""

    def __init__(self, things: Iterable[str], *, size: int = DEFAULT_REPLAY_SIZE,
                 epoch: str | None = None) -> None:
        """``size``: notifications each Thing's ring holds (0: none, every resume is a
        gap). ``epoch``: the id prefix (random by default)."""
        if size < 0:
            raise ValueError(f"replay size must be 0 or more, not {size}")
        self.epoch: Final = epoch if epoch is not None else os.urandom(4).hex()
        self.size: Final = size
        self._sequence = 0
        self._rings = {thing: _Ring(collections.deque()) for thing in things}

    @property
    def last_id(self) -> str:
        """The id of the newest notification so far (``<epoch>.0`` before any): what a
        consumer that was just sent the current state has seen up to."""
        return f"{self.epoch}.{self._sequence}"

    def next_id(self) -> str:
        """A new id, greater than every one before it."""
        self._sequence += 1
        return f"{self.epoch}.{self._sequence}"

    def record(self, thing: str, notification: EventEmitted | ActionStatusChanged) -> None:
        """Keep ``notification`` (stamped with :meth:`next_id`) in ``thing``'s ring,
        dropping the oldest entry if the ring is full."""
        ring = self._rings[thing]
        sequence = event_id_sequence(notification.id, self.epoch)
        assert sequence is not None, "record() takes notifications stamped by next_id()"
        if isinstance(notification, EventEmitted):
            key: Affordance = (EVENT, notification.name)
        else:
            key = (ACTION, notification.invocation.action)
        if self.size == 0:  # kept no sooner than dropped
            ring.dropped[key] = sequence
            return
        if isinstance(notification, ActionStatusChanged):
            notification = attrs.evolve(notification, invocation=attrs.evolve(
                notification.invocation,
                log=collections.deque(notification.new_log, maxlen=len(notification.new_log))))
        ring.entries.append((sequence, key, notification))
        if len(ring.entries) > self.size:
            dropped, dropped_key, _ = ring.entries.popleft()
            ring.dropped[dropped_key] = dropped

    def since(self, thing: str, last_event_id: str, wanted: Collection[Affordance]) -> Replay:
        """What a consumer of ``wanted`` affordances of ``thing`` missed after
        ``last_event_id``."""
        ring = self._rings[thing]
        sequence = event_id_sequence(last_event_id, self.epoch)
        missed: list[Notification] = []
        if sequence is None or sequence > self._sequence:
            after = 0
            detail = (f"{last_event_id!r} is no id of this server's run (it restarted, or "
                      "the id is not one it gave): what came before is lost")
        else:
            after = sequence
            lost = max((ring.dropped.get(key, 0) for key in wanted), default=0)
            detail = (f"the server no longer holds every notification after "
                      f"{last_event_id!r} (it keeps the newest {self.size} of a Thing)")
            if lost <= after:
                detail = ""
        if detail:
            oldest = ring.entries[0][0] - 1 if ring.entries else self._sequence
            missed.append(NotificationsMissed(
                thing=thing, last_event_id=last_event_id,
                resume_id=f"{self.epoch}.{max(oldest, after)}", detail=detail))
        for entry_sequence, key, notification in ring.entries:
            if entry_sequence > after and key in wanted:
                missed.append(notification)
        return Replay(missed=tuple(missed))
