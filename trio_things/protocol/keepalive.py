"""When to ping a WebSocket peer, and when to give up on it: sans-IO.

RFC 6455 section 5.5.2: "A Ping frame MAY serve either as a keepalive or as a means to
verify that the remote endpoint is still responsive." Any bytes from the peer verify
that as well as a pong does (a request, a pong, a close frame), so a peer is pinged
only after ``interval`` seconds of silence, and given up on when ``timeout`` more
seconds pass without a byte. A client that talks is never pinged.

Why not a task per connection that pings and awaits the pong: an idle connection is
mostly the memory of its blocked tasks (about 3 KiB each), and the relay already waits
with nothing to do. It waits until :meth:`Keepalive.deadline` instead, and asks
:meth:`Keepalive.due` what to do then. The peer's progress is read off the transport as
a byte count and the time of the last read, so this module needs neither.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["Keepalive", "KeepaliveAction"]


class KeepaliveAction(enum.Enum):
    """What :meth:`Keepalive.due` asks of the connection."""

    PING = "ping"
    GIVE_UP = "give up"


@attrs.define(on_setattr=attrs.setters.NO_OP)  # validated once, not on every wake-up
class Keepalive:
    """The keepalive of one connection, opened at ``start`` (seconds, any clock).

    >>> keepalive = Keepalive(interval=20, timeout=10, start=0)
    >>> keepalive.deadline(), keepalive.due(now=20, received_at=0, received_bytes=0)
    (20, <KeepaliveAction.PING: 'ping'>)
    >>> keepalive.deadline(), keepalive.due(now=30, received_at=0, received_bytes=0)
    (30, <KeepaliveAction.GIVE_UP: 'give up'>)
    """

    interval: float = attrs.field(validator=attrs.validators.gt(0))
    timeout: float = attrs.field(validator=attrs.validators.gt(0))
    _quiet_since: float = attrs.field(alias="start")
    """When the peer was last known to be alive (its last read, or the opening)."""
    _ping: tuple[float, int] | None = attrs.field(default=None, init=False)
    """When the unanswered ping was sent, and the peer's byte count at that moment."""

    def deadline(self) -> float:
        """When :meth:`due` may next have something to do: no need to ask before."""
        if self._ping is not None:
            return self._ping[0] + self.timeout
        return self._quiet_since + self.interval

    def due(self, *, now: float, received_at: float, received_bytes: int
            ) -> KeepaliveAction | None:
        """What to do at ``now``, given when the peer's last bytes were read
        (``received_at``) and how many it has sent in all (``received_bytes``).

        :attr:`KeepaliveAction.PING` means send a ping now (it is recorded as sent);
        :attr:`KeepaliveAction.GIVE_UP` means close the connection; None, nothing yet.
        A byte count is compared, not times, so a pong read at the very instant of its
        ping (a fast peer, a test's mock clock) still counts.
        """
        if self._ping is not None and received_bytes != self._ping[1]:
            self._quiet_since = max(self._ping[0], received_at)  # answered
            self._ping = None
        if self._ping is not None:
            return KeepaliveAction.GIVE_UP if now >= self._ping[0] + self.timeout else None
        self._quiet_since = max(self._quiet_since, received_at)
        if now >= self._quiet_since + self.interval:
            self._ping = (now, received_bytes)
            return KeepaliveAction.PING
        return None
