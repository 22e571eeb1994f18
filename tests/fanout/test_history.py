"""The replay ring and notification ids (fanout/history.py), driven directly."""

from __future__ import annotations

import datetime

import pytest

from trio_things.fanout.history import History, event_id_sequence
from trio_things.fanout.observers import ACTION, EVENT
from trio_things.model.invocation import Invocation, InvocationStatus
from trio_things.protocol.commands import (
    ActionStatusChanged,
    EventEmitted,
    Notification,
    NotificationsMissed,
)

NOW = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)
FLASHED = (EVENT, "flashed")
DIMMED = (EVENT, "dimmed")


def emit(history: History, name: str, data: object, thing: str = "lamp") -> EventEmitted:
    event = EventEmitted(thing=thing, name=name, data=data, timestamp=NOW,
                         id=history.next_id())
    history.record(thing, event)
    return event


def data(missed: tuple[Notification, ...]) -> list[object]:
    return [n.data for n in missed if isinstance(n, EventEmitted)]


def test_ids_increase_and_carry_the_epoch() -> None:
    history = History(["lamp"], epoch="abc")
    assert history.last_id == "abc.0"
    assert [history.next_id() for _ in range(3)] == ["abc.1", "abc.2", "abc.3"]
    assert history.last_id == "abc.3"


def test_the_epoch_is_random_per_history() -> None:
    assert History(["lamp"]).epoch != History(["lamp"]).epoch


@pytest.mark.parametrize(("event_id", "sequence"), [
    ("e.7", 7), ("e.0", 0), ("f.7", None), ("e7", None), ("e.", None), ("e.-1", None),
    ("e.1.2", None), ("e.٣", None), ("e." + "9" * 19, None), ("", None),
])
def test_only_ids_of_this_epoch_are_read(event_id: str, sequence: int | None) -> None:
    assert event_id_sequence(event_id, "e") == sequence


def test_a_consumer_gets_what_it_wants_after_its_id_oldest_first() -> None:
    history = History(["lamp", "other"])
    emit(history, "flashed", 1)
    last = history.last_id
    emit(history, "flashed", 2)
    emit(history, "dimmed", 0.5)
    emit(history, "flashed", 3, thing="other")
    emit(history, "flashed", 4)
    assert data(history.since("lamp", last, [FLASHED]).missed) == [2, 4]
    assert data(history.since("lamp", last, [FLASHED, DIMMED]).missed) == [2, 0.5, 4]
    assert history.since("lamp", history.last_id, [FLASHED]).missed == ()


def test_a_full_ring_drops_its_oldest_and_tells_of_the_gap() -> None:
    history = History(["lamp"], size=2, epoch="e")
    last = history.last_id
    for value in (1, 2, 3):
        emit(history, "flashed", value)
    gap, *rest = history.since("lamp", last, [FLASHED]).missed
    assert isinstance(gap, NotificationsMissed)
    assert gap.last_event_id == "e.0"
    assert gap.resume_id == "e.1"  # what follows starts after e.1: e.2 and e.3
    assert "newest 2" in gap.detail
    assert data(tuple(rest)) == [2, 3]


def test_a_dropped_entry_of_another_affordance_is_no_gap() -> None:
    history = History(["lamp"], size=2)
    last = history.last_id
    emit(history, "dimmed", 0.1)  # dropped below: never wanted by a flashed consumer
    emit(history, "flashed", 1)
    emit(history, "flashed", 2)
    assert data(history.since("lamp", last, [FLASHED]).missed) == [1, 2]
    assert isinstance(history.since("lamp", last, [DIMMED]).missed[0], NotificationsMissed)


@pytest.mark.parametrize("last", ["other-run.3", "garbage", "", "e.99"])
def test_an_id_of_another_run_or_none_of_ours_is_a_gap(last: str) -> None:
    history = History(["lamp"], epoch="e")
    emit(history, "flashed", 1)
    gap, *rest = history.since("lamp", last, [FLASHED]).missed
    assert isinstance(gap, NotificationsMissed)
    assert gap.resume_id == "e.0" and "restarted" in gap.detail
    assert data(tuple(rest)) == [1]  # everything the ring holds follows


def test_a_ring_of_size_zero_keeps_nothing_and_every_resume_is_a_gap() -> None:
    history = History(["lamp"], size=0)
    last = history.last_id
    emit(history, "flashed", 1)
    assert len(history.since("lamp", last, [FLASHED]).missed) == 1
    assert isinstance(history.since("lamp", last, [FLASHED]).missed[0], NotificationsMissed)


def test_action_status_is_kept_as_it_was() -> None:
    history = History(["counter"])
    invocation = Invocation(thing="counter", action="increment", input={})
    last = history.last_id
    for change in (invocation.start, lambda: invocation.finish(
            InvocationStatus.COMPLETED, output=1)):
        change()
        history.record("counter", ActionStatusChanged(
            invocation=invocation, timestamp=NOW, id=history.next_id()))
    missed = history.since("counter", last, [(ACTION, "increment")]).missed
    assert [n.invocation.status for n in missed if isinstance(n, ActionStatusChanged)] == [
        InvocationStatus.RUNNING, InvocationStatus.COMPLETED]


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        History(["lamp"], size=-1)
