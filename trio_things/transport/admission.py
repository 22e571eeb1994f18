"""Which connections to let in: a count of open connections per client address.

A lab server is small: one misbehaving script that opens connections in a loop (and
never closes them) could otherwise take every file descriptor and all the memory the
server has, and with them the service every other client gets. Limiting connections per
*address* bounds what one client can take without a global cap that one client could
use up for everybody.

Sans-IO: :class:`ClientConnections` only counts; the listener (``ThingServer.serve``)
asks it before serving a socket and answers a refused one with 429 itself.
"""

from __future__ import annotations

import collections

import attrs

__all__ = ["ClientConnections"]


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
