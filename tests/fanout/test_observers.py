"""Observer sets and the registry: encode once per dialect, frame once, never block."""

from __future__ import annotations

import datetime

import attrs
import pytest

from trio_things.fanout.observers import (
    ACTION,
    EVENT,
    PROPERTY,
    Observer,
    ObserverRegistry,
    ObserverSet,
    ObserverSetStatistics,
)
from trio_things.fanout.outbox import Frame, Outbox
from trio_things.protocol.commands import Notification, PropertyChanged
from trio_things.protocol.frames import text_frame

KEY = ("counter", PROPERTY, "count")


@attrs.define(eq=False)
class CountingEncoder:
    """A dialect's encoder that counts its calls; hashable by identity, like a function."""

    body: bytes = b'{"a":1'
    calls: list[Notification] = attrs.field(factory=list)

    def __call__(self, notification: Notification) -> bytes:
        self.calls.append(notification)
        return self.body


def changed(value: int = 1) -> PropertyChanged:
    return PropertyChanged(thing="counter", name="count", value=value,
                           timestamp=datetime.datetime.now(datetime.UTC))


def outbox() -> Outbox:
    return Outbox(100)


def joined(frame: Frame) -> bytes:
    return b"".join(frame)


def test_publish_encodes_once_per_encoder() -> None:
    observers = ObserverSet(key=KEY, coalesce=False)
    wtp, labthings = CountingEncoder(), CountingEncoder(body=b'{"b":2}')
    boxes = [outbox() for _ in range(10)]
    for i, box in enumerate(boxes):
        encoder = wtp if i % 2 else labthings
        observers.add(Observer(outbox=box, encoder=encoder, tail=b"}" if encoder is wtp else b""))
    notification = changed()
    observers.publish(notification)
    assert wtp.calls == [notification]
    assert labthings.calls == [notification]
    for box in boxes:
        assert len(box.take()) == 1


def test_tailed_frames_are_header_body_tail() -> None:
    observers = ObserverSet(key=KEY, coalesce=False)
    encoder = CountingEncoder()
    tails = [b',"c":"x"}', b',"c":"longer one"}']
    boxes = [outbox() for _ in tails]
    for box, tail in zip(boxes, tails, strict=True):
        observers.add(Observer(outbox=box, encoder=encoder, tail=tail))
    observers.publish(changed())
    for box, tail in zip(boxes, tails, strict=True):
        [frame] = box.take()
        assert len(frame) == 3
        assert frame[1] is encoder.body
        assert frame[2] == tail
        assert joined(frame) == text_frame(encoder.body + tail)


def test_untailed_observers_share_one_frame() -> None:
    observers = ObserverSet(key=KEY, coalesce=False)
    encoder = CountingEncoder()
    boxes = [outbox() for _ in range(3)]
    for box in boxes:
        observers.add(Observer(outbox=box, encoder=encoder))
    observers.publish(changed())
    frames = [box.take()[0] for box in boxes]
    assert frames[0] == (text_frame(encoder.body),)
    assert all(frame is frames[0] for frame in frames)


def test_equal_length_tails_share_the_header() -> None:
    observers = ObserverSet(key=KEY, coalesce=False)
    # Longer than 125 bytes, so each header is packed anew rather than precomputed.
    encoder = CountingEncoder(body=b'{"a":"' + b"x" * 200 + b'"')
    tails = [b',"c":"1"}', b',"c":"2"}', b',"c":"33"}']
    boxes = [outbox() for _ in tails]
    for box, tail in zip(boxes, tails, strict=True):
        observers.add(Observer(outbox=box, encoder=encoder, tail=tail))
    observers.publish(changed())
    first, second, third = (box.take()[0] for box in boxes)
    assert first[0] is second[0]
    assert third[0] != first[0]
    for frame in (first, second, third):
        assert joined(frame) == text_frame(frame[1] + frame[2])


def test_observers_leave_their_tail_length_group_and_the_rest_still_receive() -> None:
    """Observers are grouped by tail length (one header per group): leaving, or coming
    back with a tail of another length, moves only that observer."""
    observers = ObserverSet(key=KEY, coalesce=False)
    encoder = CountingEncoder()
    short, short_too, long_, plain = outbox(), outbox(), outbox(), outbox()
    observers.add(Observer(outbox=short, encoder=encoder, tail=b',"c":"1"}'))
    observers.add(Observer(outbox=short_too, encoder=encoder, tail=b',"c":"2"}'))
    observers.add(Observer(outbox=long_, encoder=encoder, tail=b',"c":"long one"}'))
    observers.add(Observer(outbox=plain, encoder=encoder))
    observers.discard(short)
    observers.discard(long_)  # the last of its length
    observers.add(Observer(outbox=short_too, encoder=encoder, tail=b',"c":"now longer"}'))
    assert len(observers) == 2 and short not in observers and long_ not in observers
    observers.publish(changed())
    assert short.take() == [] and long_.take() == []
    assert [joined(f) for f in short_too.take()] == [text_frame(b'{"a":1,"c":"now longer"}')]
    assert plain.take() == [(text_frame(encoder.body),)]
    observers.discard(short_too)
    observers.discard(plain)
    assert not observers and len(observers) == 0
    observers.publish(changed())
    assert len(encoder.calls) == 1  # nobody left: nothing encoded


def test_coalescing_set_keeps_the_latest_under_its_key() -> None:
    observers = ObserverSet(key=KEY, coalesce=True)
    box = outbox()
    observers.add(Observer(outbox=box, encoder=lambda n: b'{"v":%d}' % n.value))
    observers.publish(changed(1))
    observers.publish(changed(2))
    assert box.take() == [(text_frame(b'{"v":2}'),)]
    assert box.statistics().coalesced == 1


def test_history_set_keeps_every_frame() -> None:
    observers = ObserverSet(key=("counter", EVENT, "e"), coalesce=False)
    box = outbox()
    observers.add(Observer(outbox=box, encoder=lambda n: b'{"v":%d}' % n.value))
    observers.publish(changed(1))
    observers.publish(changed(2))
    assert box.take() == [(text_frame(b'{"v":1}'),), (text_frame(b'{"v":2}'),)]


def test_publish_without_observers_encodes_nothing() -> None:
    observers = ObserverSet(key=KEY, coalesce=True)
    assert not observers
    encoder = CountingEncoder()
    box = outbox()
    observers.add(Observer(outbox=box, encoder=encoder))
    observers.discard(box)
    observers.publish(changed())
    assert encoder.calls == []
    assert observers.statistics() == ObserverSetStatistics(observers=0, published=0,
                                                           delivered=0)


def test_add_again_replaces() -> None:
    observers = ObserverSet(key=KEY, coalesce=False)
    box = outbox()
    first, second = CountingEncoder(), CountingEncoder()
    observers.add(Observer(outbox=box, encoder=first, tail=b"}"))
    observers.add(Observer(outbox=box, encoder=second, tail=b',"new":1}'))
    assert len(observers) == 1
    observers.publish(changed())
    assert first.calls == []
    assert box.take() == [(text_frame(b'{"a":1,"new":1}')[:2], b'{"a":1', b',"new":1}')]


def test_discard_removes_membership_both_ways_and_the_pending_frame() -> None:
    sets = registry()
    observers = sets.get("counter", PROPERTY, "count")
    other = sets.get("thermometer", PROPERTY, "temperature")
    box = outbox()
    encoder = CountingEncoder()
    observers.add(Observer(outbox=box, encoder=encoder))
    other.add(Observer(outbox=box, encoder=encoder))
    observers.publish(changed())
    other.publish(changed())
    assert sets.memberships(box) == {observers, other}
    observers.discard(box)
    observers.discard(box)  # absent: nothing happens
    assert box not in observers
    assert not observers
    assert sets.memberships(box) == {other}
    assert box.take() == [(text_frame(encoder.body),)]  # only ``other``'s frame


def test_leave_all_leaves_every_observer_set() -> None:
    """A connection that ends leaves every set it is in, and only its own place."""
    sets = registry()
    mine = [sets.get("counter", PROPERTY, "count"), sets.get("thermometer", EVENT, "overheated"),
            sets.invocation("abc")]
    box, other = outbox(), outbox()
    for observers in mine:
        observers.add(Observer(outbox=box, encoder=bytes))
        observers.add(Observer(outbox=other, encoder=bytes))
    assert sets.memberships(box) == set(mine)
    sets.leave_all(box)
    sets.leave_all(box)  # already gone: nothing happens
    assert sets.memberships(box) == set()
    assert sets.memberships(other) == set(mine)
    for observers in mine:
        assert box not in observers
        assert other in observers
        assert len(observers) == 1


def test_discard_keeps_history_already_queued() -> None:
    observers = ObserverSet(key=("counter", EVENT, "e"), coalesce=False)
    box = outbox()
    observers.add(Observer(outbox=box, encoder=CountingEncoder()))
    observers.publish(changed())
    observers.discard(box)
    assert len(box.take()) == 1


def test_clear_removes_everyone() -> None:
    sets = registry()
    observers = sets.get("counter", PROPERTY, "count")
    boxes = [outbox() for _ in range(3)]
    for i, box in enumerate(boxes):
        observers.add(Observer(outbox=box, encoder=CountingEncoder(), tail=b"}" * i))
    observers.clear()
    assert len(observers) == 0
    assert all(sets.memberships(box) == set() for box in boxes)


def test_deliver_to_reaches_one_observer_only() -> None:
    observers = ObserverSet(key=KEY, coalesce=True)
    encoder = CountingEncoder()
    one, two = outbox(), outbox()
    observer = Observer(outbox=one, encoder=encoder, tail=b"}")
    observers.add(observer)
    observers.add(Observer(outbox=two, encoder=encoder))
    observers.deliver_to(observer, changed(1))
    assert len(encoder.calls) == 1
    assert [joined(f) for f in one.take()] == [text_frame(b'{"a":1}')]
    assert two.take() == []
    # Under the set's key: a publish before the relay takes replaces it.
    observers.deliver_to(observer, changed(1))
    observers.publish(changed(2))
    assert len(one.take()) == 1
    assert one.statistics().coalesced == 1


def test_statistics() -> None:
    observers = ObserverSet(key=KEY, coalesce=False)
    observers.publish(changed())  # nobody observes: not counted
    boxes = [outbox() for _ in range(3)]
    for box in boxes:
        observers.add(Observer(outbox=box, encoder=CountingEncoder()))
    observers.publish(changed())
    observers.publish(changed())
    observers.deliver_to(Observer(outbox=boxes[0], encoder=CountingEncoder()), changed())
    assert observers.statistics() == ObserverSetStatistics(observers=3, published=2,
                                                           delivered=7)


def test_contains_len_bool() -> None:
    observers = ObserverSet(key=KEY, coalesce=False)
    box, stranger = outbox(), outbox()
    observers.add(Observer(outbox=box, encoder=CountingEncoder()))
    observers.add(Observer(outbox=outbox(), encoder=CountingEncoder()))
    assert observers
    assert len(observers) == 2
    assert box in observers
    assert stranger not in observers
    assert box in list(observers) and len(list(observers)) == 2


# --------------------------------------------------------------------------- registry


def registry() -> ObserverRegistry:
    return ObserverRegistry({
        "counter": (["count"], [], ["increment"]),
        "thermometer": (["temperature", "setpoint"], ["overheated"], ["ramp"]),
    })


@pytest.mark.parametrize(("thing", "kind", "name", "coalesce"), [
    ("counter", PROPERTY, "count", True),
    ("counter", ACTION, "increment", False),
    ("thermometer", PROPERTY, "setpoint", True),
    ("thermometer", EVENT, "overheated", False),
    ("thermometer", ACTION, "ramp", False),
])
def test_registry_get(thing: str, kind: str, name: str, coalesce: bool) -> None:
    observers = registry().get(thing, kind, name)
    assert observers.key == (thing, kind, name)
    assert observers.coalesce is coalesce


@pytest.mark.parametrize(("thing", "kind", "name"), [
    ("nope", PROPERTY, "count"),
    ("counter", EVENT, "count"),
    ("counter", PROPERTY, "nope"),
    ("thermometer", ACTION, "overheated"),
])
def test_registry_get_unknown(thing: str, kind: str, name: str) -> None:
    with pytest.raises(KeyError):
        registry().get(thing, kind, name)


def test_registry_get_is_stable() -> None:
    observers = registry()
    assert observers.get("counter", PROPERTY, "count") is observers.get(
        "counter", PROPERTY, "count")


def test_registry_invocations() -> None:
    observers = registry()
    assert observers.invocation_if_observed("abc") is None
    invocation = observers.invocation("abc")
    assert not invocation.coalesce
    assert observers.invocation("abc") is invocation
    assert observers.invocation_if_observed("abc") is invocation
    assert observers.invocation("def") is not invocation
    box = outbox()
    invocation.add(Observer(outbox=box, encoder=CountingEncoder()))
    observers.forget_invocation("abc")
    observers.forget_invocation("abc")  # already gone: nothing happens
    observers.forget_invocation("never")
    assert observers.invocation_if_observed("abc") is None
    assert observers.memberships(box) == set()
    assert box not in invocation


def test_registry_iterates_every_set() -> None:
    observers = registry()
    invocation = observers.invocation("abc")
    sets = list(observers)
    assert len(sets) == 6 + 1
    assert invocation in sets
    assert {s.key for s in sets} >= {("counter", PROPERTY, "count"),
                                     ("thermometer", EVENT, "overheated"),
                                     ("counter", ACTION, "increment")}
    observers.forget_invocation("abc")
    assert invocation not in list(observers)
