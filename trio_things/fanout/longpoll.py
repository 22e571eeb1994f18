"""HTTP long-poll: a request that waits for the next emission of an event.

This is how generic WoT consumers (node-wot) subscribe to events over plain HTTP
(``docs/design.md``, "Thing Description"): ``GET`` the event's href, receive the next
payload, repeat. It is deliberately simple: a waiter sees the emissions that happen
while it waits, and nothing is buffered for clients between polls (WebSocket
subscriptions are the lossless way to follow events).
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

__all__ = ["LongPoll"]


@attrs.define(eq=False)
class _Round:
    event: trio.Event = attrs.Factory(trio.Event)
    value: Any = None


class LongPoll:
    """The next value published to one stream. Trio-thread only."""

    def __init__(self) -> None:
        self._round = _Round()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """How many requests are waiting; publishers skip all work when it is 0."""
        return self._waiting

    def publish(self, value: Any) -> None:
        """Wake every waiter with ``value``. Never blocks."""
        if not self._waiting:
            return
        current, self._round = self._round, _Round()
        current.value = value
        current.event.set()

    async def next(self) -> Any:
        """Wait for the next published value. Cancelling the wait is always safe."""
        current = self._round
        self._waiting += 1
        try:
            await current.event.wait()
        finally:
            self._waiting -= 1
        return current.value
