"""The Outbox policy, without a relay: coalescing, ordering, overflow and the doorbell.

The doorbell, like a memory channel, works outside ``trio.run`` (but for waiting on it),
so most of these are plain functions.
"""

from __future__ import annotations

import sys

import attrs
import pytest
import trio
import trio.testing

from trio_things.errors import LocalProtocolError
from trio_things.fanout.outbox import (
    OVERFLOW_CLOSE_CODE,
    CloseRequest,
    Frame,
    Outbox,
    OutboxStatistics,
    Written,
)


def frame(name: str) -> Frame:
    return (name.encode(),)


def rings(outbox: Outbox) -> int:
    """How many wake-ups the relay would get right now."""
    count = 0
    while True:
        try:
            outbox.receive_channel.receive_nowait()
        except trio.WouldBlock:
            return count
        count += 1


def test_put_latest_keeps_only_the_latest_per_key() -> None:
    outbox = Outbox(10)
    outbox.put_latest("k1", frame("old"))
    outbox.put_latest("k1", frame("new"))
    outbox.put_latest("k2", frame("other"))
    assert outbox.statistics().coalesced == 1
    assert outbox.statistics().pending_latest == 2
    assert outbox.take() == [frame("new"), frame("other")]


def test_replacement_moves_to_the_end() -> None:
    outbox = Outbox(10)
    outbox.put_latest("k1", frame("k1-old"))
    outbox.put(frame("f"))
    outbox.put_latest("k1", frame("k1-latest"))
    assert outbox.take() == [frame("f"), frame("k1-latest")]


def test_put_keeps_every_frame_in_order() -> None:
    outbox = Outbox(10)
    frames = [frame(str(i)) for i in range(10)]
    for f in frames:
        outbox.put(f)
    assert outbox.statistics().pending_queued == 10
    assert outbox.take() == frames
    assert outbox.take() == []


def test_put_and_put_latest_interleave_in_order() -> None:
    outbox = Outbox(10)
    outbox.put(frame("a"))
    outbox.put_latest("k", frame("k"))
    outbox.put(frame("b"))
    assert outbox.take() == [frame("a"), frame("k"), frame("b")]


def test_take_frees_room_in_the_queue() -> None:
    outbox = Outbox(2)
    outbox.put(frame("a"))
    outbox.put(frame("b"))
    assert outbox.take() == [frame("a"), frame("b")]
    outbox.put(frame("c"))
    outbox.put(frame("d"))
    assert not outbox.overflowed
    assert outbox.take() == [frame("c"), frame("d")]


def test_overflow_drops_everything_and_ignores_later_puts() -> None:
    outbox = Outbox(3)
    outbox.put_latest("k", frame("k"))
    for i in range(3):
        outbox.put(frame(str(i)))
    assert not outbox.overflowed
    outbox.put(frame("one too many"))
    assert outbox.overflowed
    assert outbox.statistics().overflowed
    outbox.put(frame("later"))
    outbox.put_latest("k", frame("later k"))
    assert outbox.take() == []
    stats = outbox.statistics()
    assert (stats.pending_latest, stats.pending_queued) == (0, 0)


def test_put_latest_does_not_count_towards_the_size() -> None:
    outbox = Outbox(1)
    for key in range(5):
        outbox.put_latest(("property", key), frame(str(key)))
    outbox.put(frame("event"))
    assert not outbox.overflowed
    assert len(outbox.take()) == 6


def test_overflow_rings_the_relay() -> None:
    outbox = Outbox(1)
    outbox.put(frame("a"))
    assert rings(outbox) == 1
    outbox.take()
    outbox.put(frame("b"))
    outbox.put(frame("c"))  # overflows; the ring of "b" is still waiting
    assert outbox.overflowed
    assert rings(outbox) == 1
    assert outbox.take() == []


def test_the_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Outbox(0)


def test_a_burst_rings_once() -> None:
    outbox = Outbox(10)
    outbox.put(frame("a"))
    outbox.put_latest("k", frame("k"))
    outbox.put(frame("b"))
    outbox.receive_channel.receive_nowait()
    with pytest.raises(trio.WouldBlock):
        outbox.receive_channel.receive_nowait()


def test_take_rearms_the_doorbell() -> None:
    outbox = Outbox(10)
    outbox.put(frame("a"))
    assert rings(outbox) == 1
    outbox.put(frame("b"))
    assert rings(outbox) == 0
    assert outbox.take() == [frame("a"), frame("b")]
    outbox.put_latest("k", frame("k"))
    outbox.put(frame("c"))
    assert rings(outbox) == 1
    assert outbox.take() == [frame("k"), frame("c")]


def test_a_waiting_ring_serves_puts_after_take() -> None:
    outbox = Outbox(10)
    outbox.put(frame("a"))
    outbox.take()  # before the relay received the ring
    outbox.put(frame("b"))  # must not block or raise although the ring is still queued
    assert rings(outbox) == 1
    assert outbox.take() == [frame("b")]


def test_no_ring_without_a_put() -> None:
    outbox = Outbox(10)
    assert rings(outbox) == 0
    assert outbox.take() == []
    assert rings(outbox) == 0


def test_discard_latest() -> None:
    outbox = Outbox(10)
    outbox.put_latest("k1", frame("k1"))
    outbox.put(frame("f"))
    outbox.put_latest("k2", frame("k2"))
    outbox.discard_latest("k1")
    outbox.discard_latest("absent")
    stats = outbox.statistics()
    assert (stats.pending_latest, stats.pending_queued) == (1, 1)
    assert outbox.take() == [frame("f"), frame("k2")]


def test_close_ends_the_channel_and_ignores_puts() -> None:
    outbox = Outbox(10)
    outbox.close()
    assert outbox.closed
    with pytest.raises(trio.EndOfChannel):
        outbox.receive_channel.receive_nowait()
    outbox.put(frame("a"))
    outbox.put_latest("k", frame("k"))
    assert outbox.take() == []
    assert outbox.statistics().closed


def test_close_drops_pending_frames_and_the_channel_ends_after_the_ring() -> None:
    outbox = Outbox(10)
    outbox.put(frame("a"))
    outbox.put_latest("k", frame("k"))
    outbox.close()
    outbox.close()  # idempotent
    assert outbox.take() == []
    outbox.receive_channel.receive_nowait()  # the ring already sent is still delivered
    with pytest.raises(trio.EndOfChannel):
        outbox.receive_channel.receive_nowait()


def test_claim_relay_once() -> None:
    outbox = Outbox(10)
    outbox.claim_relay()
    with pytest.raises(LocalProtocolError):
        outbox.claim_relay()


def test_statistics() -> None:
    outbox = Outbox(5)
    assert outbox.statistics() == OutboxStatistics(
        pending_latest=0, pending_queued=0, size=5, coalesced=0, taken=0, written_now=0,
        overflowed=False, closed=False)
    outbox.put_latest("k", frame("1"))
    outbox.put_latest("k", frame("2"))
    outbox.put_latest("j", frame("3"))
    outbox.put(frame("4"))
    assert outbox.statistics() == OutboxStatistics(
        pending_latest=2, pending_queued=1, size=5, coalesced=1, taken=0, written_now=0,
        overflowed=False, closed=False)
    outbox.take()
    outbox.put(frame("5"))
    outbox.take()
    assert outbox.statistics() == OutboxStatistics(
        pending_latest=0, pending_queued=0, size=5, coalesced=1, taken=4, written_now=0,
        overflowed=False, closed=False)


def test_outboxes_compare_by_identity() -> None:
    a, b = Outbox(1), Outbox(1)
    assert a != b
    assert len({a, b}) == 2


def test_a_close_request_keeps_what_was_queued_and_seals_the_outbox() -> None:
    outbox = Outbox(4)
    outbox.put(frame("reply"))
    outbox.request_close(1008, "flood")
    outbox.request_close(1001, "later requests lose")
    outbox.put(frame("after"))
    outbox.put_latest("k", frame("after"))
    assert outbox.close_request == CloseRequest(code=1008, reason="flood")
    assert outbox.take() == [frame("reply")]
    assert rings(outbox) == 1


def test_overflow_requests_a_1008_close() -> None:
    outbox = Outbox(1)
    outbox.put(frame("a"))
    outbox.put(frame("b"))
    assert outbox.close_request is not None
    assert outbox.close_request.code == OVERFLOW_CLOSE_CODE == 1008
    assert "more than 1" in outbox.close_request.reason
    assert outbox.take() == []


@attrs.define
class Writer:
    """A :class:`FrameWriter` that answers what it is told to."""

    answer: Written = Written.WHOLE
    written: list[Frame] = attrs.field(factory=list)

    def write_now(self, frame: Frame) -> Written:
        if self.answer:
            self.written.append(frame)
        return self.answer


def test_the_fast_path_writes_into_an_empty_outbox_only() -> None:
    writer = Writer()
    outbox = Outbox(4, writer=writer)
    outbox.put_latest("k", frame("1"))
    outbox.put(frame("2"))
    assert writer.written == [frame("1"), frame("2")]
    assert rings(outbox) == 0  # the relay never woke
    assert outbox.statistics().written_now == 2
    writer.answer = Written.NOTHING  # the socket is busy: queue
    outbox.put(frame("3"))
    writer.answer = Written.WHOLE
    outbox.put_latest("k", frame("4"))  # something is queued: no overtaking it
    assert writer.written == [frame("1"), frame("2")]
    assert outbox.take() == [frame("3"), frame("4")]
    assert rings(outbox) == 1


@pytest.mark.parametrize("put", ["put", "put_latest"])
def test_a_write_taken_in_part_wakes_the_relay_without_a_frame(put: str) -> None:
    """What the writer leaves (a backlog to flush, a broken stream to notice) is the
    relay's to finish: the Outbox rings it, and queues nothing."""
    writer = Writer(answer=Written.PART)
    outbox = Outbox(4, writer=writer)
    getattr(outbox, put)(*(["k"] if put == "put_latest" else []), frame("1"))
    assert writer.written == [frame("1")]
    assert rings(outbox) == 1
    assert outbox.take() == []
    assert outbox.statistics().written_now == 1


def test_a_closed_outbox_offers_nothing_to_its_writer() -> None:
    writer = Writer()
    outbox = Outbox(4, writer=writer)
    outbox.close()
    outbox.put(frame("1"))
    outbox.put_latest("k", frame("2"))
    assert writer.written == []


def test_the_fast_path_opens_again_once_the_relay_took_everything() -> None:
    writer = Writer(answer=Written.NOTHING)
    outbox = Outbox(4, writer=writer)
    outbox.put_latest("k", frame("1"))  # the socket was busy: queued
    writer.answer = Written.WHOLE
    outbox.put(frame("2"))  # behind "1": queued too, never written ahead of it
    assert writer.written == []
    assert outbox.take() == [frame("1"), frame("2")]
    outbox.put_latest("k", frame("3"))  # nothing pending: written at once again
    assert writer.written == [frame("3")]
    assert outbox.take() == []


def test_a_closing_outbox_offers_nothing_to_its_writer_even_once_taken() -> None:
    """Once a close is requested, the relay writes what was queued and then the close
    frame: nothing may reach the socket past it, not even after the relay's take."""
    writer = Writer(answer=Written.NOTHING)
    outbox = Outbox(4, writer=writer)
    outbox.put(frame("1"))
    outbox.request_close(1008, "policy")
    writer.answer = Written.WHOLE
    assert outbox.take() == [frame("1")]
    outbox.put_latest("k", frame("2"))
    outbox.put(frame("3"))
    assert writer.written == []
    assert outbox.take() == []


def test_attribute_writes_on_the_fan_out_path_are_plain() -> None:
    """attrs runs validators on every attribute write unless told not to: a Python
    ``__setattr__`` that cost each delivery ~0.4 us per counter update (a third of the
    fast path's own cost). Validation happens when the Outbox is made, and only then."""
    assert "__setattr__" not in vars(Outbox)
    with pytest.raises(ValueError, match="size"):
        Outbox(0)


# ------------------------------------------------------------------ the doorbell, waited on


async def test_a_relay_waiting_on_the_doorbell_wakes_at_the_first_put() -> None:
    outbox = Outbox(10)
    woke: list[str] = []

    async def relay() -> None:
        await outbox.receive_channel.receive()
        woke.append("rung")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay)
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []  # nothing pending: it waits
        outbox.put(frame("a"))
        outbox.put(frame("b"))  # the same ring
        await trio.testing.wait_all_tasks_blocked()
        assert woke == ["rung"]
    assert rings(outbox) == 0 and outbox.take() == [frame("a"), frame("b")]


async def test_closing_wakes_the_relay_with_end_of_channel_after_a_ring_left_before() -> None:
    outbox = Outbox(10)
    outcomes: list[str] = []

    async def relay() -> None:
        while True:
            try:
                await outbox.receive_channel.receive()
            except trio.EndOfChannel:
                outcomes.append("ended")
                return
            outcomes.append("rung")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay)
        await trio.testing.wait_all_tasks_blocked()
        outbox.close()
    assert outcomes == ["ended"]

    outbox = Outbox(10)
    outcomes.clear()
    outbox.put(frame("a"))
    outbox.close()  # the ring was left before: received first, then the end
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay)
    assert outcomes == ["rung", "ended"]


async def test_a_cancelled_wait_takes_no_ring_and_leaves_no_waiter() -> None:
    outbox = Outbox(10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.receive_channel.receive)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()  # while it waits
    outbox.put(frame("a"))
    with trio.fail_after(1):
        await outbox.receive_channel.receive()  # the ring is kept for the next wait
    with trio.CancelScope() as scope:
        scope.cancel()
        outbox.put(frame("b"))  # no ring: one is rung only after take()
        outbox.take()
        outbox.put(frame("c"))
        await outbox.receive_channel.receive()  # cancelled before it takes the ring
    assert rings(outbox) == 1


async def test_one_relay_waits_on_a_doorbell_at_a_time() -> None:
    outbox = Outbox(10)

    async def relay() -> None:
        with pytest.raises(trio.EndOfChannel):
            await outbox.receive_channel.receive()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await outbox.receive_channel.receive()
        outbox.close()


def test_a_doorbell_is_a_few_dozen_bytes() -> None:
    """What an idle connection's Outbox holds to wake its relay: no memory channel (two
    ends, their shared state, a deque, sets and dicts of tasks: about 2 KiB)."""
    doorbell = Outbox(10).receive_channel
    assert not hasattr(doorbell, "__dict__")
    assert sys.getsizeof(doorbell) <= 80
