"""An example Thing: a motorised stage, with a simulated driver standing in for hardware."""

from __future__ import annotations

import datetime
import time
from typing import Annotated, Any, Literal, Self

import attrs
import trio

import trio_things as tt


class FakeDriver:
    """A blocking driver, as hardware vendors ship them (simulated here)."""

    def __init__(self, port: str) -> None:
        self.port = port
        self.position = 0

    def open(self) -> None:
        time.sleep(0.01)

    def close(self) -> None:
        time.sleep(0.01)

    def read_position(self) -> int:
        return self.position

    def move_to(self, position: int) -> None:
        time.sleep(0.01)
        self.position = position


@attrs.frozen
class Arrival:
    """Where a move ended, and how long it took."""

    position: int = attrs.field(metadata={"description": "steps from home"})
    seconds: float


class Stage(tt.Thing):
    """A motorised translation stage."""

    speed: float = tt.property(default=1000.0, minimum=1, maximum=5000,
                               unit="steps per second")
    """How fast `move_to` moves the stage."""

    mode: Literal["fast", "precise"] = tt.property(default="precise")
    """Whether moves favour speed or accuracy."""

    label: str = tt.property(default="", max_length=32)
    """A name for this stage, shown to users."""

    moving: bool = tt.property(default=False, readonly=True)
    """True while an action moves the stage."""

    homed_at: datetime.datetime | None = tt.property(default=None, readonly=True)
    """When the stage was last homed, if ever."""

    arrived = tt.event(Arrival)
    """The stage finished a move."""

    def __init__(self, port: str = "/dev/ttyUSB0") -> None:
        super().__init__()
        self.driver = FakeDriver(port)

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await trio.to_thread.run_sync(self.driver.open)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await trio.to_thread.run_sync(self.driver.close)

    async def background_task(self) -> None:
        """Notice when someone moves the stage by hand."""
        last = self.driver.read_position()
        while True:
            await trio.sleep(0.5)
            now = await trio.to_thread.run_sync(self.driver.read_position)
            if now != last:
                last = now
                self.property_changed("position")

    # ------------------------------------------------------------ a functional property

    @tt.property(minimum=-100_000, maximum=100_000, unit="step")
    def position(self) -> int:
        """The position in steps from home, read from the hardware."""
        return self.driver.read_position()

    @position.setter
    def position(self, value: int) -> None:
        self.driver.move_to(value)

    # ------------------------------------------------------------ actions

    @tt.action
    def move_to(
        self,
        context: tt.ActionContext,
        target: Annotated[int, tt.Schema(minimum=-100_000, maximum=100_000, unit="step")],
    ) -> int:
        """Move to ``target`` 100 steps at a time; return the position reached."""
        start = time.monotonic()
        self.moving = True
        try:
            while (here := self.driver.read_position()) != target:
                context.check_cancelled()
                step = max(-100, min(100, target - here))
                self.driver.move_to(here + step)
                context.sleep(abs(step) / self.speed)
        finally:
            self.moving = False
        context.log(f"reached {target}")
        self.arrived.emit(Arrival(position=target, seconds=time.monotonic() - start))
        return target

    @tt.action
    async def scan(
        self,
        context: tt.ActionContext,
        points: Annotated[list[int], tt.Schema(min_items=1, max_items=100)],
        dwell: Annotated[float, tt.Schema(minimum=0, maximum=60, unit="second")] = 0.1,
    ) -> list[int]:
        """Visit each point, wait ``dwell`` seconds there; return the positions read."""
        readings = []
        for index, point in enumerate(points):
            await trio.to_thread.run_sync(self.driver.move_to, point)
            await trio.sleep(dwell)
            readings.append(self.driver.read_position())
            context.log(f"point {index + 1} of {len(points)}")
        return readings

    @tt.action(idempotent=True)
    def home(self) -> None:
        """Move to position 0 and remember when."""
        self.driver.move_to(0)
        self.homed_at = datetime.datetime.now(datetime.UTC)
