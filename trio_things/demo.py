"""The built-in demo Things that ``trio-things serve`` runs without a configuration.

They double as worked examples of the model: a data property changed by a background
task, constraints, an async action that moves state over time, a worker-thread action
that logs progress and checks for cancellation, and an event with an attrs payload.
"""

from __future__ import annotations

import datetime
import random
from typing import Annotated

import attrs
import trio

import trio_things as tt

__all__ = ["Counter", "Reading", "Thermometer"]


@attrs.frozen
class Reading:
    """A temperature reading."""

    temperature: float = attrs.field(metadata={"description": "degrees Celsius"})
    time: datetime.datetime


class Thermometer(tt.Thing):
    """A simulated thermometer whose temperature follows a setpoint."""

    temperature: float = tt.property(default=20.0, readonly=True, unit="degree Celsius")
    """The measured temperature, updated every 100 ms."""

    setpoint: float = tt.property(default=20.0, minimum=-50, maximum=150,
                                  unit="degree Celsius")
    """The temperature the controller aims for."""

    threshold: float = tt.property(default=100.0, minimum=-50, maximum=150,
                                   unit="degree Celsius")
    """Above this temperature, the Thing emits ``overheated``."""

    overheated: tt.Event[Reading] = tt.event(Reading)
    """The temperature rose above the threshold."""

    #: Seconds between two temperature updates.
    interval: float = 0.1

    def __init__(self) -> None:
        super().__init__()
        self._ramping = trio.Lock()  # fair: waiting ramps run in the order invoked

    async def background_task(self) -> None:
        """Move the temperature a fifth of the way to the setpoint, with a little noise."""
        while True:
            await trio.sleep(self.interval)
            previous = self.temperature
            step = (self.setpoint - previous) * 0.2 + random.gauss(0.0, 0.02)
            self.temperature = round(previous + step, 3)
            if previous <= self.threshold < self.temperature:
                now = datetime.datetime.now(datetime.UTC)
                self.overheated.emit(Reading(temperature=self.temperature, time=now))

    @tt.action
    async def ramp(
        self,
        to: Annotated[float, tt.Schema(minimum=-50, maximum=150, unit="degree Celsius")],
        rate: Annotated[float, tt.Schema(exclusive_minimum=0, unit="degree Celsius per second",
                                         description="How fast the setpoint moves")] = 1.0,
    ) -> float:
        """Move the setpoint to ``to`` at ``rate``; return the temperature reached.

        A ramp invoked while another runs waits for it to end: ramps run one at a time,
        in the order they were invoked, so two of them never fight over the setpoint.
        """
        async with self._ramping:
            while self.setpoint != to:
                await trio.sleep(self.interval)
                step = rate * self.interval
                remaining = to - self.setpoint
                self.setpoint = to if abs(remaining) <= step else self.setpoint + (
                    step if remaining > 0 else -step)
            return self.temperature


class Counter(tt.Thing):
    """A counter, with a slow action that runs in a worker thread."""

    count: int = tt.property(default=0)
    """The current count."""

    def __init__(self, start: int = 0) -> None:
        super().__init__()
        self.count = start

    @tt.action
    def increment(self, by: int = 1) -> int:
        """Add ``by`` to the count and return the new count."""
        self.count += by
        return self.count

    # At most 100 counts 10 s apart (17 minutes): an invocation holds a worker thread
    # while it runs, and none may hold one for hours (docs/security.md, "Actions").
    @tt.action
    def count_slowly(
        self,
        context: tt.ActionContext,
        n: Annotated[int, tt.Schema(minimum=0, maximum=100)] = 10,
        delay: Annotated[float, tt.Schema(minimum=0, maximum=10, unit="second")] = 1.0,
    ) -> int:
        """Count up ``n`` times, ``delay`` seconds apart (blocking: runs in a thread)."""
        for i in range(n):
            context.sleep(delay)
            self.count += 1
            context.log(f"counted {i + 1} of {n}")
        return self.count
