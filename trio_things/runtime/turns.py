"""The fair queue of one action's invocations on one Thing: at most ``max_concurrent``
run at once, the others wait their turn in the order they were invoked
(``runtime/actions.py``, "Concurrency")."""

from __future__ import annotations

import collections

import attrs
import trio

__all__: list[str] = []


@attrs.define(eq=False)
class _Turns:
    """Which invocations of one action on one Thing may run: at most ``limit`` at once
    (``held``); the others wait in ``waiting``, in the order they were invoked.

    Not a :class:`trio.CapacityLimiter`: its waiters queue in the order their tasks
    first run, and Trio runs the tasks started in one scheduling batch in any order.
    Here the queue is made by :meth:`ActionRunner.invoke`, in the order of the requests.
    """

    limit: int
    held: int = 0
    waiting: collections.deque[trio.Event] = attrs.Factory(collections.deque)

    @property
    def taken(self) -> int:
        """Invocations running or waiting."""
        return self.held + len(self.waiting)

    def claim(self) -> trio.Event | None:
        """A turn for a new invocation: None if it may start at once, else an event
        set when its turn comes. Pair it with :meth:`leave`."""
        if self.held < self.limit and not self.waiting:
            self.held += 1
            return None
        turn = trio.Event()
        self.waiting.append(turn)
        return turn

    def leave(self, turn: trio.Event | None) -> None:
        """The invocation that :meth:`claim` gave ``turn`` has ended (or was cancelled
        while it waited): its turn goes to the next in line."""
        if turn is not None and not turn.is_set():
            self.waiting.remove(turn)  # never started; at most max_queued to look through
            return
        self.held -= 1
        if self.waiting:
            self.held += 1
            self.waiting.popleft().set()
