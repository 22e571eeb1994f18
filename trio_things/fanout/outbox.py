"""The Outbox: what one WebSocket connection has yet to be sent, in bounded memory.

Theory of operation
-------------------
Publishers (observer sets, the connection's own replies) put whole pre-built frames
into a connection's Outbox without ever waiting; the connection's relay task takes
everything pending at once and writes it in one ``send_all``. Between the two, the
Outbox decides what a client that reads slower than changes happen gets:

* **Properties are state.** A frame put with :meth:`Outbox.put_latest` under a key (one
  observed property) replaces the frame still pending under that key: a slow client gets
  the latest value of each property, never a growing backlog. The replacement moves to
  the end of the queue, so a client never sees a value older than a message that was
  queued before it.
* **Events, action status and replies are history.** Frames put with :meth:`Outbox.put`
  are kept in order, losslessly, up to ``size`` (the outbox size). One more would have to
  be dropped or thinned, so instead the Outbox *overflows*: it accepts nothing more, and the relay
  closes the connection with :data:`OVERFLOW_CLOSE_CODE` and a reason. A client never
  silently misses history.

======================= =============================== ===========================
put                     pending                         then
======================= =============================== ===========================
``put_latest(k, f)``    nothing under ``k``             ``f`` appended
``put_latest(k, f)``    ``f0`` under ``k``              ``f0`` dropped, ``f`` appended
``put(f)``              fewer than ``size``             ``f`` appended
``put(f)``              ``size`` already                overflow: nothing kept, and a
                                                        close with 1008 requested
``request_close(c, r)`` anything                        kept; the close goes after it
anything                overflowed, closing or closed   ignored
======================= =============================== ===========================

Closing goes through the Outbox too (:meth:`Outbox.request_close`), so that the relay,
the connection's only writer, writes what was queued before the close frame: a client
told "429, slow down" gets that answer before it is closed for flooding.

The fast path: when nothing is pending, a put first offers the frame to the Outbox's
``writer`` (a :class:`FrameWriter`, handed to the Outbox when it is made: for a
WebSocket, :class:`trio_things.websockets.SocketWriter`, a synchronous, non-blocking write
to an idle socket). It answers with what it did (:class:`Written`): nothing, and the frame
is queued as above; the whole frame, and the relay is not woken at all; or part of it, and
the relay is woken to write the rest (or to notice that the socket broke). Only an
*empty* queue allows it, so frames still leave in order::

    put_latest / put --(queue empty)--> writer.write_now(frame)
        NOTHING -> queued, the relay is rung      WHOLE -> done
        PART    -> the relay is rung (it flushes the socket's backlog)

The relay learns of new frames through a :class:`Doorbell`: the first put after a
:meth:`~Outbox.take` rings it once (a put never blocks, and a burst of puts costs the
relay one wake-up). Memory per connection is therefore bounded by ``size`` frames plus
one frame per observed property.

Which observer sets hold an Outbox is the business of
:class:`~trio_things.fanout.observers.ObserverRegistry`, not the Outbox's: the Outbox
knows nothing of observers. Every method is synchronous and must be called from the
Trio thread (:mod:`trio_things.fanout.bridge` brings worker threads' changes there).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Hashable
from typing import Final, Protocol

import attrs
import trio

from trio_things.errors import LocalProtocolError

__all__ = [
    "OVERFLOW_CLOSE_CODE",
    "CloseRequest",
    "Doorbell",
    "Frame",
    "FrameWriter",
    "Outbox",
    "OutboxStatistics",
    "Written",
]

#: One whole WebSocket frame as parts to be joined at write time (a header, a shared
#: body, a per-observer tail): joining once per write, not once per observer.
Frame = tuple[bytes, ...]

#: RFC 6455 section 7.4.1: "1008 indicates that an endpoint is terminating the
#: connection because it has received a message that violates its policy." Reading too
#: slowly to keep up with lossless history is that policy.
OVERFLOW_CLOSE_CODE: Final = 1008


class Written(enum.IntEnum):
    """What a :class:`FrameWriter` did with a frame offered on the fast path.

    An ``IntEnum`` whose "nothing" is false: the Outbox tests the answer for truth, then
    for :attr:`PART`, and a delivery pays for no more than that.
    """

    NOTHING = 0
    """Nothing written (a write under way, a backlog, a full socket, no socket at all):
    queue the frame for the relay."""
    WHOLE = 1
    """The whole frame is written (or dropped, because the connection is closing)."""
    PART = 2
    """The frame is taken care of, but the relay has work left: the rest of the frame
    waits in the stream's backlog, or the stream broke during the write."""


#: The members the hot path compares against, bound once: ``Written.PART`` is a lookup
#: through the enum's metaclass, ~70 ns, which a delivery should not pay.
_PART: Final = Written.PART


class FrameWriter(Protocol):
    """How an Outbox writes a frame at once, on its fast path (see the module docstring)."""

    def write_now(self, frame: Frame) -> Written:
        """Write ``frame`` without blocking, if the socket takes it now; say how far.
        Runs once per delivery; must never block and never raise for the peer's state."""
        ...


class Doorbell:
    """What a relay waits on: a memory channel of capacity 1 carrying nothing, in a few
    dozen bytes. :meth:`ring` leaves one ring (a second before it is received is the
    same ring); :meth:`receive` takes it, or waits for it; :meth:`close` ends it, and
    once a ring left before is received, :meth:`receive` raises
    :exc:`trio.EndOfChannel`.

    Why not ``trio.open_memory_channel(1)``, which does the same: its two ends, their
    state, a deque and the sets and dicts of waiting tasks take about 2 KiB, and every
    idle connection holds its Outbox's. One task waits at a time (the relay); a second
    raises :exc:`trio.BusyResourceError`. Like a channel, it works outside ``trio.run``
    but for :meth:`receive`.
    """

    __slots__ = ("_closed", "_rung", "_waiter")

    def __init__(self) -> None:
        self._rung = False
        self._closed = False
        self._waiter: trio.lowlevel.Task | None = None

    def ring(self) -> None:
        """Leave a ring, waking the waiting task if there is one. Never blocks; ignored
        once closed."""
        if self._closed:
            return
        self._rung = True
        if self._waiter is not None:
            task, self._waiter = self._waiter, None
            trio.lowlevel.reschedule(task)

    def close(self) -> None:
        """End the doorbell: a ring already left is still received, then
        :exc:`trio.EndOfChannel`. Idempotent."""
        self._closed = True
        if self._waiter is not None:
            task, self._waiter = self._waiter, None
            trio.lowlevel.reschedule(task)

    def receive_nowait(self) -> None:
        """Take the ring; :exc:`trio.WouldBlock` if there is none, or
        :exc:`trio.EndOfChannel` if there is none and the doorbell is closed."""
        if self._rung:
            self._rung = False
            return
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> None:
        """Take the ring, waiting for one if need be; :exc:`trio.EndOfChannel` once the
        doorbell is closed and no ring is left. A checkpoint, like a channel's; if
        cancelled, no ring is taken."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                self.receive_nowait()
            except trio.WouldBlock:
                pass
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            if self._waiter is not None:
                raise trio.BusyResourceError("another task waits on this doorbell")
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
            # Woken by a ring or by close(): receive_nowait() says which.
            try:
                self.receive_nowait()
            except trio.WouldBlock:  # pragma: no cover (woken only by those two)
                continue
            return

    def _abort(self, raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


@attrs.frozen(kw_only=True)
class CloseRequest:
    """Close the connection with ``code`` and ``reason`` once what is queued is written."""

    code: int
    reason: str


@attrs.frozen(kw_only=True)
class OutboxStatistics:
    """A snapshot of an :class:`Outbox`."""

    pending_latest: int
    """Frames pending under a key (at most one per observed property)."""
    pending_queued: int
    """Frames pending in order (events, action status, replies)."""
    size: int
    """The bound on ``pending_queued``: the outbox size."""
    coalesced: int
    """Frames replaced by a newer one before they were sent."""
    taken: int
    """Frames handed to the relay so far."""
    written_now: int
    """Frames the writer took on the fast path (whole or in part)."""
    overflowed: bool
    """Whether the ordered queue overflowed (the relay then closes the connection)."""
    closed: bool
    """Whether the Outbox accepts nothing more."""


@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Outbox:
    """The frames pending for one connection; see the module docstring for the policy.

    Identity object: it is what :class:`~trio_things.fanout.observers.ObserverSet`
    holds for a connection.

    ``size`` is validated when the Outbox is made, not on every attribute write
    (``on_setattr=NO_OP``): attrs' validating ``__setattr__`` would run for each counter
    update on the fan-out path, ~0.4 us per delivery.
    """

    size: int = attrs.field(validator=attrs.validators.gt(0))
    """How many frames of history (events, action status, replies) may be pending before
    the Outbox overflows: ``outbox_size`` in the configuration. Properties never count."""
    writer: FrameWriter | None = attrs.field(default=None, kw_only=True)
    """The fast path (:class:`FrameWriter`); None: every frame waits for the relay."""
    _pending: dict[Hashable, Frame] = attrs.field(init=False, factory=dict)
    _queued: int = attrs.field(init=False, default=0)
    _sequence: itertools.count[int] = attrs.field(init=False, factory=itertools.count)
    _rung: bool = attrs.field(init=False, default=False)
    _coalesced: int = attrs.field(init=False, default=0)
    _taken: int = attrs.field(init=False, default=0)
    _overflowed: bool = attrs.field(init=False, default=False)
    _close_request: CloseRequest | None = attrs.field(init=False, default=None)
    _closed: bool = attrs.field(init=False, default=False)
    _relay_claimed: bool = attrs.field(init=False, default=False)
    _written_now: int = attrs.field(init=False, default=0)
    _fast: FrameWriter | None = attrs.field(init=False, default=None)
    """``writer`` while the fast path is open (nothing pending, not closing, not closed),
    else None: one field for a delivery to read, where there were four."""
    receive_channel: Doorbell = attrs.field(init=False, factory=Doorbell)
    """What the relay waits on (``await outbox.receive_channel.receive()``): a ring
    arrives when frames are pending, the queue overflowed, or a fast-path write left
    work; :exc:`trio.EndOfChannel` once the Outbox is closed."""

    def __attrs_post_init__(self) -> None:
        self._fast = self.writer

    @property
    def overflowed(self) -> bool:
        """Whether the ordered queue overflowed; nothing is accepted after that."""
        return self._overflowed

    @property
    def close_request(self) -> CloseRequest | None:
        """How the relay should close the connection after writing what is pending."""
        return self._close_request

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def put_latest(self, key: Hashable, frame: Frame) -> None:
        """Queue ``frame`` as the latest state under ``key``, replacing a pending one.

        Never blocks. Ignored once the Outbox has overflowed, is closing or is closed.
        """
        # The fast path, inline (it runs once per delivery: no call that can be saved).
        writer = self._fast
        if writer is not None:
            written = writer.write_now(frame)
            if written:
                self._written_now += 1
                if written is _PART:
                    self._ring()
                return
        elif self._close_request is not None or self._closed:
            return
        if self._pending.pop(key, None) is not None:
            self._coalesced += 1
        self._pending[key] = frame
        self._fast = None
        self._ring()

    def put(self, frame: Frame) -> None:
        """Queue ``frame`` in order, losslessly; overflow if ``size`` are pending.

        Never blocks. Ignored once the Outbox has overflowed, is closing or is closed. On
        overflow every pending frame is dropped (the connection is about to be closed, so
        writing them would only delay the close) and a close with
        :data:`OVERFLOW_CLOSE_CODE` is requested.
        """
        if self._close_request is not None or self._closed:
            return
        if self._queued >= self.size:
            self._overflowed = True
            self._pending.clear()
            self._queued = 0
            self.request_close(OVERFLOW_CLOSE_CODE,
                               f"too slow: more than {self.size} messages pending")
            return
        writer = self._fast
        if writer is not None:
            written = writer.write_now(frame)
            if written:
                self._written_now += 1
                if written is _PART:
                    self._ring()
                return
        self._queued += 1
        self._pending[next(self._sequence)] = frame
        self._fast = None
        self._ring()

    def request_close(self, code: int, reason: str) -> None:
        """Ask the relay to close the connection with ``code`` and ``reason`` once it has
        written what is pending; accept nothing more. The first request wins."""
        if self._close_request is not None or self._closed:
            return
        self._close_request = CloseRequest(code=code, reason=reason)
        self._fast = None
        self._ring()

    def discard_latest(self, key: Hashable) -> None:
        """Drop the frame pending under ``key``, if any (the client stopped observing)."""
        self._pending.pop(key, None)

    def take(self) -> list[Frame]:
        """Every pending frame, in order, leaving none; the next put rings again."""
        frames = list(self._pending.values())
        self._pending.clear()
        self._queued = 0
        self._rung = False
        if self._close_request is None and not self._closed:
            self._fast = self.writer
        self._taken += len(frames)
        return frames

    def claim_relay(self) -> None:
        """Record that a relay now takes from this Outbox; a second one is a bug
        (:class:`~trio_things.errors.LocalProtocolError`): two writers would reorder
        frames, as two ``send_all`` callers would on a Trio stream."""
        if self._relay_claimed:
            raise LocalProtocolError("this Outbox already has a relay")
        self._relay_claimed = True

    def close(self) -> None:
        """Drop what is pending, accept nothing more, and end the relay's channel.
        Idempotent; call it when the connection ends, after it left every observer set
        (:meth:`~trio_things.fanout.observers.ObserverRegistry.leave_all`)."""
        self._closed = True
        self._fast = None
        self._pending.clear()
        self._queued = 0
        self.receive_channel.close()

    def statistics(self) -> OutboxStatistics:
        """A frozen snapshot of this Outbox."""
        return OutboxStatistics(
            pending_latest=len(self._pending) - self._queued,
            pending_queued=self._queued,
            size=self.size,
            coalesced=self._coalesced,
            taken=self._taken,
            written_now=self._written_now,
            overflowed=self._overflowed,
            closed=self._closed,
        )

    def _ring(self) -> None:
        if not self._rung:  # a ring already waiting for the relay serves this put too
            self._rung = True
            self.receive_channel.ring()
