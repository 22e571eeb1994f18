"""The connection after an HTTP Upgrade: a Stream again, with one writer at a time.

h11 reads ahead: by the time it hands us an upgrade request, it has consumed the request
head and perhaps the first bytes of the new protocol. trio-websocket (through wsproto's
``WSConnection(SERVER)``) wants to parse that handshake itself, so :class:`UpgradeStream`
serves those bytes again before it reads the socket.

It also owns the connection's write lock. trio-websocket writes each frame in one
``send_all`` under a lock of its own, which our relay cannot take; our relay writes
pre-built frames (``docs/design.md``, "The write lock shared with trio-websocket").
Serializing every ``send_all`` here keeps the two
from interleaving mid-frame with public APIs only. That holds while trio-websocket writes
one whole frame per ``send_all`` and negotiates no extensions (pinned to 0.12.x;
``tests/transport/test_upgrade.py`` interleaves pings, relay frames and a close).

The fast path, :meth:`UpgradeStream.write_now`: when nobody is writing and the socket
takes the bytes at once, a publisher writes a frame itself, synchronously, as asyncio's
transports do, instead of waking the connection's relay task for it: with the relay
alone, each delivery of a coalesced property costs a task wake-up, a lock and a
``send_all`` (three to four trips through Trio's scheduler); written at once it costs one
``send(2)``, and what trio-things adds to it is measured by ``make bench-fastpath``.
What the socket does not take at once is kept as a *backlog* that the next ``send_all``
(the relay's, or trio-websocket's) writes first, so bytes always leave in order. The
answer says which happened (:class:`~trio_things.fanout.outbox.Written`: nothing, the
whole, or part with work left), so the caller wakes the relay only when it must.

Over a plain socket, the stream reads and writes the descriptor itself
(:func:`socket_read`, :func:`socket_write`), as the fast path does: a ``send_all`` the
socket takes at once, and a read of the replay, return without a task switch (each is
still where cancellation is delivered), because a handshake that waited a scheduler
round at each step admitted a client only after several fan-outs to every observer
while a producer ran flat out; and an idle connection's reader waits on the socket
directly, five coroutines (about 1 KiB) shallower than in ``trio.SocketStream``.

One job in one module, though it is long: one stream wrapper, :class:`UpgradeStream`,
whose read and write paths share the connection's state (the replayed bytes, the write
lock, the backlog), and the socket reads and writes it shares with the HTTP loop.
"""

from __future__ import annotations

import errno
import math
import os
import sys
from collections.abc import Callable
from typing import Final

import attrs
import trio

from trio_things.errors import LocalProtocolError
from trio_things.fanout.outbox import Frame, Written
from trio_things.protocol.credit import (
    INITIAL_SIZE,
    PING_PAYLOAD_SIZE,
    Credit,
    ping_payload,
    ponged_position,
)
from trio_things.protocol.frame_guard import FrameGuard, Violation
from trio_things.protocol.frames import CLOSE_FRAME_START, ping_frame

__all__ = ["PROGRESS_CHUNK", "UpgradeStream", "UpgradeStreamStatistics", "socket_read",
           "socket_receive", "socket_write"]

#: The bytes a write must get through within its progress timeout: a reader of 16 KiB
#: per ``write_timeout`` (1.6 KiB/s at the default 10 s) counts as reading.
PROGRESS_CHUNK: Final = 16 * 1024

#: Bytes a read asks for when the reader names no size (as a ``trio.SocketStream``).
_RECEIVE_SIZE: Final = 65536

#: A stream position no stream reaches: flow credit off.
_NEVER: Final = sys.maxsize
#: A credit ping frame: a 2-byte header (a server frame is unmasked) and its payload.
_CREDIT_PING_SIZE: Final = 2 + PING_PAYLOAD_SIZE

# Bound once: an enum member looked up through its class costs ~70 ns per delivery.
_NOTHING: Final = Written.NOTHING
_WHOLE: Final = Written.WHOLE
_PART: Final = Written.PART


def _always() -> bool:
    return True


# Reads and writes on a socket's descriptor itself. Why not through a trio.SocketStream:
# its receive_some and send_all yield to the scheduler even when the socket had the
# bytes, or took them, at once; while a producer runs flat out every scheduler round
# carries a fan-out to every observer, and a handshake that waits a round at each step
# admitted a client only after several of them. And an idle reader waiting in
# SocketStream.receive_some holds five coroutines more than one waiting here (~1 KiB).


def socket_read(fileno: Callable[[], int], size: int) -> bytes | None:
    """At most ``size`` bytes from the socket, without blocking (None: none yet), or
    the errors a ``trio.SocketStream`` raises."""
    fd = fileno()
    if fd < 0:
        raise trio.ClosedResourceError("the socket was closed")
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
    except OSError as error:
        if error.errno == errno.EBADF:
            raise trio.ClosedResourceError("the socket was closed") from None
        raise trio.BrokenResourceError(f"socket connection broken: {error}") from error


def socket_write(fileno: Callable[[], int], data: bytes | bytearray) -> int:
    """Write what the socket takes of ``data`` now, without blocking: how many bytes
    (0 if none, or the socket is closed), or -1 if the peer is gone."""
    fd = fileno()
    if fd < 0:
        return 0
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError:  # EPIPE, ECONNRESET
        return -1


async def socket_receive(fileno: Callable[[], int], size: int) -> bytes:
    """``trio.SocketStream.receive_some``, but bytes already there are returned without
    a task switch (it is still where cancellation is delivered). For a reader that
    always meets a checkpoint soon after, as the HTTP loop does (it writes an answer to
    every request, and a request's size is bounded)."""
    await trio.lowlevel.checkpoint_if_cancelled()
    data = socket_read(fileno, size)
    while data is None:  # outside any except block: it holds no error while it waits
        await trio.lowlevel.wait_readable(fileno())
        data = socket_read(fileno, size)
    return data


@attrs.frozen(kw_only=True)
class UpgradeStreamStatistics:
    """A snapshot of an :class:`UpgradeStream`'s writes."""

    bytes_sent: int
    """Bytes written so far, by ``send_all`` and by the fast path
    (:meth:`UpgradeStream.write_now`)."""
    writes: int
    """``send_all`` calls that completed (the fast path's writes are not counted here,
    but by the Outbox that made them: ``written_now``)."""
    broken: bool
    """Whether a write was interrupted, so that no write will be attempted again."""


class UpgradeStream(trio.abc.Stream):
    """Wraps the connection's stream after an HTTP Upgrade.

    :meth:`receive_some` first returns ``replay`` (the request head h11 already consumed,
    followed by h11's trailing data), then reads the underlying stream. Like any Trio
    stream, it expects one reader at a time.

    Every :meth:`send_all` is serialized through one :class:`trio.StrictFIFOLock`, so
    trio-websocket's frames and frames our relay writes never interleave mid-frame, and
    writers take turns in arrival order. After a ``send_all`` is cancelled or fails, half a
    frame may be on the wire: the stream is then *broken*, and every later ``send_all``
    (including those already waiting for the lock) raises :exc:`trio.BrokenResourceError`
    without writing. Reading is unaffected, so a close frame can still be received.

    Reads are counted (:attr:`bytes_received`, :attr:`received_at`): they are how the
    relay's keepalive (:mod:`trio_things.protocol.keepalive`) knows the peer is alive.

    Ownership: the stream owns the wrapped ``stream``; :meth:`aclose` closes it.

    Slotted: every idle WebSocket connection holds one, and 22 slots take about 200
    bytes where an instance dictionary of the same fields took over 800.
    """

    __slots__ = (
        "_backlog", "_broken", "_bytes_sent", "_credit", "_credit_mark", "_credit_target",
        "_credited", "_fast_fd", "_fileno", "_guard", "_head_left", "_next_ping",
        "_on_violation", "_replay", "_replay_read", "_sealed", "_stream", "_write_limit",
        "_write_lock", "_writers", "_writes", "bytes_received", "over_socket", "received_at",
    )

    def __init__(self, stream: trio.abc.Stream, replay: bytes) -> None:
        self._stream = stream
        self._replay = replay
        self._write_lock = trio.StrictFIFOLock()
        # How many send_all calls hold or wait for the lock: a plain int, because the
        # fast path reads it on every delivery (cheaper than asking the lock).
        self._writers = 0
        self._broken = False
        self._bytes_sent = 0
        self._writes = 0
        # Only a real socket has a fast path; memory streams (tests) always take the relay's.
        self._fileno: Callable[[], int] | None = (
            stream.socket.fileno if isinstance(stream, trio.SocketStream) else None)
        self.over_socket = isinstance(stream, trio.SocketStream) or (
            isinstance(stream, trio.SSLStream)
            and isinstance(stream.transport_stream, trio.SocketStream))
        """Whether the bytes go through a socket (TLS or not), which the kernel buffers on
        both ends: where flow credit (:meth:`enable_credit`) matters."""
        self._backlog = b""
        self.bytes_received = 0
        """Bytes read from the underlying stream so far."""
        self.received_at = -math.inf
        """:func:`trio.current_time` after the last read that returned bytes."""
        # Flow credit (enable_credit): how far we may write, and where the next credit
        # ping is due; the fast path reads only the smaller of the two, _credit_mark, on
        # every delivery. Off until enabled; an idle connection makes its Credit only at
        # its first ping.
        self._credit_mark = _NEVER
        self._credit_target: float | None = None
        self._credit: Credit | None = None
        self._write_limit = _NEVER  # no write may start at or past this position
        self._next_ping = _NEVER  # a write starting at or past this position ends with a ping
        self._credited: trio.Event | None = None
        # The receive path's frame guard (guard_frames): none until given one.
        self._guard: FrameGuard | None = None
        self._head_left = 0  # bytes of the request head still ahead in the replay: not frames
        self._replay_read = False
        self._on_violation: Callable[[int, str], None] | None = None
        # Whether a close frame went into send_all: no frame may follow it.
        self._sealed = False
        # The descriptor the fast path writes to, or -1 when it may not write now: the
        # one field a delivery reads before os.write (see _refresh_fast).
        self._fast_fd = -1
        self._refresh_fast()

    @property
    def needs_flush(self) -> bool:
        """Whether bytes from :meth:`write_now` wait for the next ``send_all``."""
        return bool(self._backlog)

    def write_now(self, frame: Frame) -> Written:
        """Write the parts of ``frame``, joined, now and without blocking, if nobody else
        is writing: the Outbox's fast path (a
        :class:`~trio_things.fanout.outbox.FrameWriter`), run once per delivery.

        Returns :attr:`~Written.NOTHING`, having written nothing, when a ``send_all`` holds
        or awaits the write lock, a backlog is waiting, the stream is no socket, a close
        frame was sent, or the socket's buffer is full: then queue the frame for the
        relay. Returns :attr:`~Written.WHOLE` when all of it is written. Returns
        :attr:`~Written.PART` when the frame is taken care of but a writer has work left:
        the rest is kept as :attr:`needs_flush` backlog, or the stream broke (the peer is
        gone) and the frame was dropped; either way the next ``send_all`` (the relay's)
        must run.

        Synchronous, so it can never be interrupted mid-frame by a cancellation. Every
        condition above is folded into one field, the descriptor to write to or -1
        (:meth:`_refresh_fast`), so that a delivery reads one field of one object before
        its ``os.write``: with a thousand connections, each delivery's first touch of an
        object is a cache miss, and they were most of its cost.
        """
        fd = self._fast_fd
        if fd >= 0:
            data = b"".join(frame)  # one part (a shared frame): that very bytes object
        else:
            # Not now, or a credit ping is due with this write (see enable_credit).
            if self._bytes_sent >= self._write_limit:
                return _NOTHING  # the client has not read enough yet: the Outbox coalesces
            fd = self._idle_fd()
            if fd < 0:
                return _NOTHING
            data = b"".join(frame)
            if self._bytes_sent >= self._credit_mark:
                data = self._with_ping(data, self._bytes_sent)
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            return _NOTHING
        except OSError:  # the peer is gone (EPIPE, ECONNRESET): the relay will end
            self._broken = True
            self._fast_fd = -1
            return _PART
        self._bytes_sent += sent
        if sent < len(data):
            self._backlog = data[sent:]
            self._fast_fd = -1
            return _PART
        if self._bytes_sent >= self._credit_mark:
            self._fast_fd = -1  # the next write takes the way above, and a ping
        return _WHOLE

    def write_nowait(self, data: bytes) -> Written:
        """:meth:`write_now` of the bytes ``data``: the relay's first try at a write."""
        return self.write_now((data,))

    def _idle_fd(self) -> int:
        """The socket's descriptor while nothing but flow credit stands in a write's way
        (no ``send_all`` holds or awaits the write lock, no backlog waits, the stream is
        not broken, no close frame was sent); -1 otherwise, and once the socket is
        closed: never a descriptor number that may have been reused."""
        fileno = self._fileno
        if fileno is None or self._writers or self._backlog or self._broken or self._sealed:
            return -1
        return fileno()

    def _refresh_fast(self) -> None:
        """Recompute :meth:`write_now`'s descriptor: :meth:`_idle_fd` while no credit ping
        is due, -1 otherwise. Called after every change to one of those conditions (the
        rare ones set -1 directly)."""
        self._fast_fd = self._idle_fd() if self._bytes_sent < self._credit_mark else -1

    # ------------------------------------------------------------------ flow credit

    def enable_credit(self, target: float) -> None:
        """Write no more than the client reads in about ``target`` seconds beyond what it
        confirmed it has read, learnt from the pongs to pings this stream appends to its
        writes (:mod:`trio_things.protocol.credit`). Only with a frame guard
        (:meth:`guard_frames`), which is where pongs are read."""
        if self._guard is None:
            raise LocalProtocolError("enable_credit() needs guard_frames() first")
        self._credit_target = target
        self._write_limit = INITIAL_SIZE
        self._next_ping = INITIAL_SIZE // 2
        self._mark()

    @property
    def has_credit(self) -> bool:
        """Whether the client has read enough for more to be written now."""
        return self._bytes_sent < self._write_limit

    async def wait_for_credit(self) -> None:
        """Return once :attr:`has_credit`: at once, or when a pong confirms enough."""
        while not self.has_credit:
            if self._credited is None:
                self._credited = trio.Event()
            await self._credited.wait()

    def _sync_credit(self, credit: Credit) -> None:
        self._write_limit = credit.confirmed + credit.size
        self._next_ping = credit.next_ping
        self._mark()

    def _mark(self) -> None:
        self._credit_mark = min(self._write_limit, self._next_ping)
        self._refresh_fast()

    def _unpinged(self, backlog: bytes | bytearray) -> bool:
        """Whether bytes written (or about to be: ``backlog``) lie beyond every ping."""
        if self._credit_target is None:
            return False
        last_ping = 0 if self._credit is None else self._credit.last_ping
        return last_ping < self._bytes_sent + len(backlog)

    def _with_ping(self, data: bytes, start: int) -> bytes:
        """``data``, which begins at stream position ``start``, and a credit ping after
        it: its payload is where it ends, which the client's pong will confirm."""
        credit = self._credit
        if credit is None:  # the first ping: from here on the client is not idle
            assert self._credit_target is not None
            credit = self._credit = Credit(target=self._credit_target)
        position = start + len(data) + _CREDIT_PING_SIZE
        credit.ping_sent(position, trio.current_time())
        self._next_ping = credit.next_ping
        self._mark()
        return data + ping_frame(ping_payload(position))

    def _take_pongs(self, guard: FrameGuard) -> bool:
        """Take the pongs ``guard`` read, for flow credit; return whether every one of
        them answered a credit ping (and so is of no interest to trio-websocket)."""
        credit = self._credit
        pongs, guard.pongs = guard.pongs, []
        if credit is None:
            return False
        ours = True
        for payload in pongs:
            position = ponged_position(payload)
            if position is None:
                ours = False
            elif credit.pong(position, trio.current_time()):
                self._sync_credit(credit)
                if self._credited is not None and self.has_credit:
                    self._credited.set()
                    self._credited = None
        return ours

    @property
    def broken(self) -> bool:
        """Whether a write was interrupted; if so, nothing will be written again."""
        return self._broken

    def statistics(self) -> UpgradeStreamStatistics:
        """A frozen snapshot of the writes so far."""
        return UpgradeStreamStatistics(
            bytes_sent=self._bytes_sent, writes=self._writes, broken=self._broken)

    def guard_frames(self, guard: FrameGuard) -> None:
        """From now on, pass what the client sends through ``guard`` before any reader
        gets it (:mod:`trio_things.protocol.frame_guard`): the frames after the request
        head that begins the replay, then every byte read from the socket.

        Why here: this stream sees every byte before trio-websocket parses and buffers
        it, so a client that floods frames or breaks the framing is stopped in the read
        that does, and nothing from it on is parsed. Once the guard finds a
        :class:`~trio_things.protocol.frame_guard.Violation`, :meth:`receive_some`
        passes nothing of that read and stops reading for good (it waits until
        cancelled; the connection's nursery ends it): a flooder's bytes already read or
        still in the socket's buffer cost nothing more. The connection learns of it
        through :meth:`on_violation`, and closes with its code.

        Call it before the first read (:exc:`~trio_things.errors.LocalProtocolError`
        after), with the request head at the start of the replay, as
        :func:`~trio_things.transport.http.serve_http_connection` makes it.
        """
        if self._replay_read:
            raise LocalProtocolError("guard_frames() after the first read")
        # h11 rebuilt the head from its parsed headers, which hold no CR or LF: the
        # first blank line ends it, and h11's trailing data (frames, if any) follows.
        end = self._replay.find(b"\r\n\r\n")
        self._head_left = len(self._replay) if end < 0 else end + 4
        self._guard = guard

    @property
    def violation(self) -> Violation | None:
        """Why the guard stopped reading this connection; None while it has not."""
        return None if self._guard is None else self._guard.violation

    def on_violation(self, callback: Callable[[int, str], None]) -> None:
        """Have ``callback(code, reason)`` called once when the guard finds a violation,
        at once if it already has; a later call replaces an earlier callback. Called
        from the reading task, synchronously: it must not block (the connection's
        ``Outbox.request_close`` does not)."""
        violation = self.violation
        if violation is None:
            self._on_violation = callback
        else:
            self._on_violation = None
            callback(violation.code, violation.reason)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Up to ``max_bytes`` of the replay while it lasts, then of the underlying stream;
        with a guard (:meth:`guard_frames`), only what it passes, and nothing at all once
        it found a violation: then this waits until cancelled.

        Cancellation: if cancelled, no replayed byte is consumed; once the replay is used
        up, the underlying stream's guarantee applies.
        """
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._guard is not None and self._guard.violation is not None:
            await trio.sleep_forever()
        if not self._replay:
            fileno = self._fileno
            data: bytes | bytearray | None
            while True:  # again only after a read that held nothing but credit pongs
                if fileno is None:  # TLS, or a memory stream (tests)
                    data = await self._stream.receive_some(max_bytes)
                else:
                    # SocketStream.receive_some, inline: five coroutines fewer in the
                    # stack an idle connection's reader waits in (about 1 KiB each).
                    await trio.lowlevel.checkpoint_if_cancelled()
                    size = _RECEIVE_SIZE if max_bytes is None else max_bytes
                    data = socket_read(fileno, size)
                    if data is None:
                        while data is None:  # outside any except block: it holds no error
                            await trio.lowlevel.wait_readable(fileno())
                            data = socket_read(fileno, size)
                    else:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                if not data:
                    return data
                self.bytes_received += len(data)
                self.received_at = trio.current_time()
                if self._guard is None:
                    return data
                passed = await self._guarded(self._guard, data, 0, absorb=True)
                if passed is not None:
                    return passed
        await trio.lowlevel.checkpoint_if_cancelled()
        self._replay_read = True
        size = len(self._replay) if max_bytes is None else max_bytes
        chunk, self._replay = self._replay[:size], self._replay[size:]
        if self._guard is not None:
            head = min(self._head_left, len(chunk))
            self._head_left -= head
            if head < len(chunk):
                passed = await self._guarded(self._guard, chunk, head)
                assert passed is not None  # absorbs nothing unless asked to
                return passed
        return chunk

    async def _guarded(self, guard: FrameGuard, data: bytes | bytearray, skip: int, *,
                       absorb: bool = False) -> bytes | bytearray | None:
        """``data`` if ``guard`` passes what follows its first ``skip`` bytes (the end of
        the request head, passed unread). Otherwise tell the connection, and return only
        those ``skip`` bytes, or wait until cancelled if there are none (an empty read
        would be taken for the end of the stream): nothing of a read that broke a limit
        reaches trio-websocket, so it is idle when the server closes.

        With ``absorb``, None when ``data`` is nothing but whole pongs answering credit
        pings: this stream's business alone (trio-websocket would parse each and drop
        it as answering no ping of its own), so the reader reads on instead. A client
        reading at full speed answers a few credit pings a second, and at a thousand
        connections their parsing in trio-websocket cost the fan-out a few percent."""
        whole = absorb and guard.between_frames
        frames = guard.frames
        passed = guard.feed(memoryview(data)[skip:] if skip else data, trio.current_time())
        if guard.pongs:
            pongs = len(guard.pongs)
            ours = self._take_pongs(guard)
            if (passed and ours and whole and guard.between_frames
                    and guard.frames - frames == pongs):
                return None
        if passed:
            return data
        callback, self._on_violation = self._on_violation, None
        if callback is not None and guard.violation is not None:
            callback(guard.violation.code, guard.violation.reason)
        if not skip:
            await trio.sleep_forever()
        return data[:skip]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` while no other ``send_all`` writes.

        Raises :exc:`trio.BrokenResourceError` without writing if an earlier write was
        interrupted. If this write is cancelled or fails, the stream becomes broken and the
        exception propagates. Cancelled while waiting for the lock, nothing was written
        and the stream stays usable.
        """
        if data[:1] == CLOSE_FRAME_START:
            # RFC 6455 section 5.5.1: "The application MUST NOT send any more data frames
            # after sending a Close frame." trio-websocket writes each frame in a
            # send_all of its own, so this is its close frame: the fast path ends here,
            # before the frame waits for the lock (the relay checks for itself).
            self._sealed = True
            self._fast_fd = -1
        await self.send_all_while(data, _always)

    async def send_all_while(self, data: bytes | bytearray | memoryview,
                             still_open: Callable[[], bool], *,
                             progress_timeout: float = math.inf,
                             credit_ping: bool = False) -> bool:
        """Like :meth:`send_all`, but write only if ``still_open()`` holds once the write
        lock is held; return whether it wrote.

        This is how the relay writes: trio-websocket marks a connection closed *before*
        it queues its close frame for the lock, so checking under the lock guarantees no
        data frame ever follows a close frame (RFC 6455 section 5.5.1: "The application
        MUST NOT send any more data frames after sending a Close frame").

        ``progress_timeout`` bounds how long the write may make no progress: waiting for
        the lock, then each :data:`PROGRESS_CHUNK` bytes, must each finish within it, or
        :exc:`trio.TooSlowError` is raised (and the stream is broken if a chunk was
        begun). A whole batch is not bounded: a client that keeps reading, however
        slowly, is never taken for one that stopped.

        ``credit_ping``: the relay's writes end with a credit ping when one is due (see
        :meth:`enable_credit`); trio-websocket's never do, since one of them may be a
        close frame, after which nothing may follow. With no ``data``, a ping alone is
        written if no ping sent so far covers everything written: without it, a client
        with too much unconfirmed could read it all and still owe no answer.
        """
        self._raise_if_broken()
        self._writers += 1
        self._fast_fd = -1
        try:
            # Not StrictFIFOLock.acquire() when the lock is free: it would yield to the
            # scheduler even then, and a handshake's answer would wait a whole round
            # (which may carry a fan-out to every observer) for nothing.
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                self._write_lock.acquire_nowait()
            except trio.WouldBlock:
                with trio.fail_after(progress_timeout):
                    await self._write_lock.acquire()
            try:
                self._raise_if_broken()
                # A backlog is the rest of a frame already begun: it goes first, always
                # (even when the connection is closing: a close frame may follow only
                # whole frames).
                wrote = still_open()
                payload = self._backlog + data if wrote else self._backlog
                self._backlog = b""
                if credit_ping and wrote and (
                        self._bytes_sent >= self._next_ping if data else self._unpinged(payload)):
                    payload = self._with_ping(bytes(payload), self._bytes_sent)
                if payload and self._fileno is not None:
                    # What the socket takes at once is written without a task switch, as
                    # on the fast path; a send_all writes the rest, waiting as it must.
                    sent = socket_write(self._fileno, payload)
                    if sent < 0:
                        self._broken = True
                        raise trio.BrokenResourceError("socket connection broken")
                    self._bytes_sent += sent
                    payload = payload[sent:]
                    if not payload:
                        self._writes += 1
                        return wrote
                if payload:
                    view = memoryview(payload)
                    try:
                        for start in range(0, len(view), PROGRESS_CHUNK):
                            with trio.fail_after(progress_timeout):
                                await self._stream.send_all(view[start:start + PROGRESS_CHUNK])
                    except BaseException:
                        self._broken = True
                        raise
                    self._bytes_sent += len(payload)
                    self._writes += 1
                return wrote
            finally:
                self._write_lock.release()
        finally:
            self._writers -= 1
            self._refresh_fast()

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the underlying stream might accept data, taking the write lock meanwhile.

        Holding the lock keeps this from overlapping a ``send_all``, which Trio's streams
        treat as a conflict.
        """
        self._writers += 1
        self._fast_fd = -1
        try:
            async with self._write_lock:
                self._raise_if_broken()
                await self._stream.wait_send_all_might_not_block()
        finally:
            self._writers -= 1
            self._refresh_fast()

    def _raise_if_broken(self) -> None:
        if self._broken:
            raise trio.BrokenResourceError("an earlier write to this connection was interrupted")

    async def aclose(self) -> None:
        """Close the underlying stream and drop any unread replay and backlog. Idempotent."""
        self._replay = b""
        self._backlog = b""
        self._fileno = None
        self._fast_fd = -1
        await self._stream.aclose()
