"""Which connections to let in: a count of open connections per client address, and
one for the whole server.

A lab server is small: one misbehaving script that opens connections in a loop (and
never closes them) could otherwise take every file descriptor and all the memory the
server has, and with them the service every other client gets. Limiting connections per
*address* bounds what one client can take without a global cap that one client could
use up for everybody. Many addresses together (a fleet of scripts, a network scan)
still could, so :class:`ConnectionCap` bounds the total too, well before the process
runs out of file descriptors (when it could not even answer a refusal, nor open a
file for a Thing).

Sans-IO: these classes only count; the listener (``ThingServer.serve``) asks them
before serving a socket and answers a refused one itself (429 over the address's
limit, 503 over the server's), and :class:`RefusalTally` tells it when to log them.
"""

from __future__ import annotations

import collections
import math

import attrs

__all__ = ["ClientConnections", "ConnectionCap", "RefusalTally"]


@attrs.define
class ClientConnections:
    """Open connections per client address, at most ``limit`` each.

    >>> clients = ClientConnections(limit=1)
    >>> clients.admit("192.0.2.7"), clients.admit("192.0.2.7")
    (True, False)
    >>> clients.release("192.0.2.7"); clients.admit("192.0.2.7")
    True
    """

    limit: int = attrs.field(validator=attrs.validators.gt(0))
    _open: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``; False (and not counted) if it
        already has ``limit`` open. Every True must be paired with :meth:`release`."""
        if self._open[address] >= self.limit:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        """A connection from ``address`` that :meth:`admit` counted has ended."""
        remaining = self._open[address] - 1
        if remaining > 0:
            self._open[address] = remaining
        else:
            del self._open[address]  # forget the address: the table stays as small as now

    def __getitem__(self, address: str) -> int:
        """How many connections ``address`` has open."""
        return self._open[address]

    def __len__(self) -> int:
        """How many addresses have a connection open."""
        return len(self._open)


@attrs.define
class ConnectionCap:
    """Connections the whole server serves at once, at most ``limit``; and the refused
    ones being answered, at most ``max_refusing``.

    A refusal is answered (problem details, then a half-close and a short drain) by a
    task that may take seconds against a client that does not read; beyond
    ``max_refusing`` at once, a refused connection is closed unanswered, so that a
    flood of refusals is bounded too.

    >>> cap = ConnectionCap(limit=1)
    >>> cap.admit(), cap.admit()
    (True, False)
    >>> cap.release(); cap.admit()
    True
    """

    limit: int = attrs.field(validator=attrs.validators.gt(0))
    max_refusing: int = attrs.field(default=64, validator=attrs.validators.ge(0))
    open: int = attrs.field(default=0, init=False)
    """Connections admitted and not yet released."""
    refusing: int = attrs.field(default=0, init=False)
    """Refusals being answered."""

    def admit(self) -> bool:
        """Count a new connection; False (and not counted) if ``limit`` are open.
        Every True must be paired with :meth:`release`."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        """A connection that :meth:`admit` counted has ended."""
        self.open -= 1

    def begin_refusal(self) -> bool:
        """Whether a refused connection may be answered (then pair it with
        :meth:`end_refusal`), or must be closed unanswered."""
        if self.refusing >= self.max_refusing:
            return False
        self.refusing += 1
        return True

    def end_refusal(self) -> None:
        """A refusal that :meth:`begin_refusal` allowed has been answered."""
        self.refusing -= 1


@attrs.define
class RefusalTally:
    """When to log refusals: at most one line per ``interval`` seconds, each with how
    many there were, rather than one line (or traceback) per refusal, which a flood
    would turn into megabytes of log a second.

    The first refusal is reported at once; those within ``interval`` of a report are
    held back, and reported by the first refusal after it, or by :meth:`flush` at
    :attr:`due` (the caller's timer), so none goes unreported for long.

    >>> tally = RefusalTally(interval=10)
    >>> tally.count(now=0.0), tally.count(now=1.0), tally.count(now=2.0)
    (1, 0, 0)
    >>> tally.due, tally.flush(now=10.0), tally.due
    (10.0, 2, None)
    """

    interval: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    held: int = attrs.field(default=0, init=False)
    """Refusals not yet reported."""
    _next_report: float = attrs.field(default=-math.inf, init=False)

    def count(self, *, now: float) -> int:
        """Count one refusal at ``now``: how many to report now (this one and those
        held back), or 0 to hold it back until :attr:`due`."""
        self.held += 1
        return self.flush(now=now)

    def flush(self, *, now: float) -> int:
        """How many refusals to report now (0: none held back, or not yet due)."""
        if not self.held or now < self._next_report:
            return 0
        reported, self.held = self.held, 0
        self._next_report = now + self.interval
        return reported

    def take(self) -> int:
        """Every refusal held back, to report now whatever the interval: what caused
        them has ended."""
        taken, self.held = self.held, 0
        return taken

    @property
    def due(self) -> float | None:
        """When the refusals held back may be reported; None if none are."""
        return self._next_report if self.held else None
