"""Where the fan-out path begins: a Thing's changes become notifications.

The server installs one :class:`ThingNotifier` in each Thing it serves (the Thing calls
it through the :class:`~trio_things.model.thing.Notifier` protocol), and
:func:`publish_action_status` is the action runner's ``on_status``. Both turn a change
into a :mod:`~trio_things.protocol.commands` notification and publish it to the
observer sets (:mod:`trio_things.fanout.observers`), on the Trio thread: a change made in
a worker thread crosses over through :class:`~trio_things.fanout.bridge.TrioBridge`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from trio_things.fanout.bridge import TrioBridge
from trio_things.fanout.history import History
from trio_things.fanout.observers import ACTION, EVENT, PROPERTY, STREAM, ObserverRegistry
from trio_things.model.invocation import Invocation
from trio_things.model.thing import Thing
from trio_things.protocol.commands import (
    ActionStatusChanged,
    EventEmitted,
    FramePublished,
    PropertyChanged,
)

__all__ = ["ThingNotifier", "publish_action_status"]


class ThingNotifier:
    """The :class:`~trio_things.model.thing.Notifier` the server installs in a Thing:
    the start of the fan-out path (Thing code -> observer set -> outboxes -> relays).

    Called from whatever thread changed the Thing; the notification is built and
    published on the Trio thread, where it is given its id
    (:mod:`~trio_things.fanout.history`), so ids increase in the order observers see
    them. A property change does nothing at all while nobody observes the property:
    reading an observer set's size from a worker thread is racy, and harmless, since a
    change that just missed a new observer is covered by the current value that
    observer is sent. An event always crosses over: the Thing's replay ring keeps it
    for consumers that come back.

    A change of a setting (``tt.setting``) also crosses over, observed or not, to
    ``on_setting(name)``: the Thing's settings store, which saves it
    (:mod:`trio_things.runtime.settings`).
    """

    def __init__(self, name: str, bridge: TrioBridge, history: History,
                 observers: ObserverRegistry, *,
                 on_setting: Callable[[str], object] | None = None) -> None:
        self._name = name
        self._bridge = bridge
        self._history = history
        self._observers = observers
        self._on_setting = on_setting

    def property_changed(self, thing: Thing, name: str, value: Any) -> None:
        if self._on_setting is not None and thing.affordances.properties[name].setting:
            self._bridge.call_soon(self._on_setting, name)
        observers = self._observers.get(self._name, PROPERTY, name)
        if observers:
            self._bridge.call_soon(self._publish_property, name, value, _now())

    def event_emitted(self, thing: Thing, name: str, data: Any) -> None:
        self._bridge.call_soon(self._publish_event, name, data, _now())

    def frame_published(self, thing: Thing, name: str, frame: bytes) -> None:
        # A frame nobody views goes no further than here, in the camera's thread: no
        # copy, no crossing to the Trio thread. It is kept as the stream's newest (one
        # reference, atomic under the GIL) *before* the set is looked at: a viewer is
        # added, then reads ``latest``, on the Trio thread, so it gets this frame either
        # way (bindings/sse.py).
        observers = self._observers.get(self._name, STREAM, name)
        notification = observers.latest = FramePublished(thing=self._name, name=name,
                                                         frame=frame)
        if observers:
            self._bridge.call_soon(observers.publish, notification)

    def watched(self, thing: Thing, name: str) -> bool:
        return bool(self._observers.get(self._name, STREAM, name))

    def _publish_property(self, name: str, value: Any, timestamp: datetime.datetime) -> None:
        self._observers.get(self._name, PROPERTY, name).publish(PropertyChanged(
            thing=self._name, name=name, value=value, timestamp=timestamp,
            id=self._history.next_id()))

    def _publish_event(self, name: str, data: Any, timestamp: datetime.datetime) -> None:
        notification = EventEmitted(thing=self._name, name=name, data=data,
                                    timestamp=timestamp, id=self._history.next_id())
        self._history.record(self._name, notification)
        self._observers.get(self._name, EVENT, name).publish(notification)


def publish_action_status(observers: ObserverRegistry, history: History,
                          invocation: Invocation) -> None:
    """Tell the action's observers and the invocation's own (its invoker) of its status
    and of the lines it logged since the last time, and keep it in the Thing's replay
    ring; forget the invocation's observer set once it has ended. On the Trio thread."""
    new_log = invocation.log_lines(after=invocation.log_notified)
    if new_log:
        invocation.log_notified = new_log[-1].number
    notification = ActionStatusChanged(invocation=invocation, timestamp=_now(),
                                       new_log=new_log, id=history.next_id())
    history.record(invocation.thing, notification)
    observers.get(invocation.thing, ACTION, invocation.action).publish(notification)
    invocation_observers = observers.invocation_if_observed(invocation.id)
    if invocation_observers is not None:
        invocation_observers.publish(notification)
        if invocation.status.ended:
            observers.forget_invocation(invocation.id)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
