"""Flow credit: how many bytes a WebSocket client may have unread, learnt from its pongs.

Why: a client that reads slower than a property changes should get the latest value,
not a backlog. The Outbox coalesces what waits in the server, but bytes already written
wait in the kernel, mostly in the *client's* receive buffer, which the server cannot see
or shrink: with Linux's defaults, over 100 KiB. A reader taking 20 messages a second
was reading values 20 s old (``python -m benchmarks.staleness``).

So the server asks the client how far it has read. Every so many bytes it appends a ping
whose payload is its position in the stream (the bytes written up to and including that
ping); RFC 6455 section 5.5.2 has the client answer "as soon as is practical" with a pong
carrying the same payload, which it can only do once it has *read* up to the ping. The
server writes no more than :attr:`Credit.size` bytes beyond the last position a pong
confirmed; meanwhile the Outbox coalesces, and the value the client reads next is at most
about ``size`` bytes old, which the client reads in about ``target`` seconds.

The size adapts to the client: each pong tells how fast it reads (the bytes it confirms
over the time since their ping was sent), and the size becomes what it reads in
``target`` seconds, within ``[minimum, maximum]``. A client that keeps up confirms fast,
so its size grows and it never waits; a slow one is held to about ``target`` seconds of
backlog. Clients that never answer pings are not RFC 6455 clients; they are dropped as
stalled once the credit is spent (the relay waits ``write_timeout`` for a pong).

Pure: positions and times in, decisions out.
"""

from __future__ import annotations

import collections
from typing import Final

import attrs

__all__ = ["INITIAL_SIZE", "PING_PAYLOAD_SIZE", "PING_PREFIX", "Credit", "ping_payload",
           "ponged_position"]

#: The credit a connection starts with: between a slow client's and a fast one's.
INITIAL_SIZE: Final = 16 * 1024

#: Marks our pings' payloads, so a pong answering anything else (trio-websocket's own
#: pings, a client's unsolicited pong) is not taken for a confirmation.
PING_PREFIX: Final = b"tt-credit "
#: The position, in fixed-width hexadecimal: every credit ping frame has the same size.
_DIGITS: Final = 16
PING_PAYLOAD_SIZE: Final = len(PING_PREFIX) + _DIGITS
#: Pings whose pong has not come: a client is not owed more than this many at once.
_MAX_OUTSTANDING: Final = 64


def ping_payload(position: int) -> bytes:
    """The payload of the credit ping that ends at stream ``position``."""
    return PING_PREFIX + b"%016x" % position


def ponged_position(payload: bytes | bytearray) -> int | None:
    """The position a pong's payload confirms; None for a pong not answering ours."""
    if len(payload) != PING_PAYLOAD_SIZE or not payload.startswith(PING_PREFIX):
        return None
    try:
        return int(payload[len(PING_PREFIX):], 16)
    except ValueError:
        return None


@attrs.define
class Credit:
    """One connection's flow credit (see the module docstring).

    The writer keeps its own count of bytes written; it asks :meth:`ping_due` whether to
    append a ping, tells :meth:`ping_sent` where one ends, and may write while
    ``written - confirmed < size``. :meth:`pong` takes the client's answers.
    """

    target: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    """Seconds of reading a client may have waiting for it."""
    minimum: int = attrs.field(default=4096, validator=attrs.validators.gt(0))
    maximum: int = attrs.field(default=4 * 1024 * 1024, validator=attrs.validators.gt(0))
    size: int = attrs.field(default=INITIAL_SIZE)
    """The bytes the client may have unconfirmed now (starts in between, then adapts)."""
    confirmed: int = 0
    """The last position a pong confirmed: the client has read everything before it."""
    _pings: collections.OrderedDict[int, float] = attrs.field(
        init=False, factory=collections.OrderedDict)
    _last_ping: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if not self.minimum <= self.size <= self.maximum:
            raise ValueError(f"size {self.size} is not within [{self.minimum}, {self.maximum}]")

    @property
    def last_ping(self) -> int:
        """Where the last ping sent ends (0 before the first)."""
        return self._last_ping

    @property
    def next_ping(self) -> int:
        """Past this position, the next write ends with a ping: at half the credit beyond
        the last ping, so the answer usually comes before the credit is spent."""
        return max(self._last_ping, self.confirmed) + self.size // 2

    def ping_sent(self, position: int, now: float) -> None:
        """A ping ending at ``position`` was written at ``now``."""
        self._last_ping = position
        self._pings[position] = now
        while len(self._pings) > _MAX_OUTSTANDING:
            self._pings.popitem(last=False)

    def pong(self, position: int, now: float) -> bool:
        """The client answered the ping ending at ``position`` at ``now``; whether that
        confirmed anything new (an unknown, repeated or stale pong does not)."""
        sent_at = self._pings.get(position)
        if sent_at is None or position <= self.confirmed:
            return False
        while self._pings:  # this ping and every earlier one are answered
            earlier, _ = self._pings.popitem(last=False)
            if earlier == position:
                break
        rate = (position - self.confirmed) / max(now - sent_at, 1e-4)
        self.size = min(self.maximum, max(self.minimum, int(rate * self.target)))
        self.confirmed = position
        return True
