"""The Thing trio-things serves in the benchmark: a counter and a timestamp, as a property
that changes and as an event.

Every update carries ``{"n": counter, "t": time.time()}``, so the load generator can tell
how many updates an observer saw and how long each took to arrive, without asking the
server. The producer is the Thing's own background task, as it would be for a real
device: it sets the property (or emits the event) through the public API, so each update
pays what a Thing's update pays (validation, the notifier, one encode per update).
"""

from __future__ import annotations

import time

import attrs
import trio

import trio_things as tt
from benchmarks.messages import EVENT
from benchmarks.servers.control import Plan
from benchmarks.servers.trio_control import wait_for_turn

__all__ = ["BenchThing", "Tick"]


@attrs.frozen
class Tick:
    """One update: its number, and when it was published (seconds since the epoch)."""

    n: int
    t: float


class BenchThing(tt.Thing):
    """A Thing whose ``tick`` changes as fast as the server accepts, or at a fixed rate."""

    tick: Tick = tt.property(default=Tick(0, 0.0), readonly=True)
    """The latest update."""

    ticked: tt.Event[Tick] = tt.event(Tick)
    """An update, as an event: lossless where the property is coalesced."""

    def __init__(self) -> None:
        super().__init__()
        self.updates = 0
        self._plans_in, self._plans = trio.open_memory_channel[Plan](16)
        self._scope: trio.CancelScope | None = None

    @property
    def producing(self) -> bool:
        return self._scope is not None

    def start(self, plan: Plan) -> None:
        """Stop the running plan, if any, and run ``plan`` next (on the Trio thread)."""
        self.stop()
        self._plans_in.send_nowait(plan)

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def background_task(self) -> None:
        """Run each plan the harness sends until it is done or stopped."""
        async for plan in self._plans:
            with trio.CancelScope() as self._scope:
                await self._produce(plan)
            self._scope = None

    async def _produce(self, plan: Plan) -> None:
        start = trio.current_time()
        index = 0
        while plan.count is None or index < plan.count:
            await wait_for_turn(plan, start, index)
            index += 1
            self.updates += 1
            value = Tick(self.updates, time.time())
            if plan.kind == EVENT:
                self.ticked.emit(value)
            else:
                self.tick = value
