"""The built-in demo Things that ``trio-things serve`` runs without a configuration.

They double as worked examples of the model: a data property changed by a background
task, constraints, an async action that moves state over time, a worker-thread action
that logs progress and checks for cancellation, an event with an attrs payload, and a
camera: a live frame stream rendered only while watched, a setting, an image output.
"""

from __future__ import annotations

import datetime
import io
import math
import random
import threading
import time
from typing import Annotated, Final

import attrs
import trio
from PIL import Image, ImageDraw, ImageFont

import trio_things as tt

__all__ = ["Camera", "Counter", "Reading", "Thermometer"]


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


# --------------------------------------------------------------------------- the camera

_WIDTH: Final = 640
_HEIGHT: Final = 480
#: Colour bars (75 % white, yellow, cyan, green, magenta, red, blue, black).
_BARS: Final = ((192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0),
                (192, 0, 192), (192, 0, 0), (0, 0, 192), (16, 16, 16))
#: The exposure at which the picture is as drawn; twice as long is twice as bright.
_NEUTRAL_EXPOSURE: Final = 10.0


def _bars() -> Image.Image:
    """Two frames' width of colour bars: a frame is a window onto it that scrolls."""
    image = Image.new("RGB", (2 * _WIDTH, _HEIGHT))
    draw = ImageDraw.Draw(image)
    width = _WIDTH // len(_BARS)
    for i in range(2 * len(_BARS)):
        draw.rectangle((i * width, 0, (i + 1) * width - 1, _HEIGHT - 1),
                       fill=_BARS[i % len(_BARS)])
    return image


class Camera(tt.Thing):
    """A simulated camera: 640x480 colour bars that scroll, a bouncing ball and the time,
    live at up to 30 frames per second.

    Frames are drawn and JPEG-encoded only while somebody watches ``video`` (each in a
    worker thread, never on the server's loop); with nobody watching, the camera costs
    a look at ``video.watched`` per frame period.
    """

    video = tt.frame_stream(media_type="image/jpeg")
    """The live picture, MJPEG: ``<img src="/camera/video">`` shows it."""

    exposure: float = tt.setting(default=_NEUTRAL_EXPOSURE, minimum=0.5, maximum=100.0,
                                 unit="millisecond")
    """How long each frame collects light: the longer, the brighter the picture (10 ms
    shows it as drawn). A setting: kept across restarts."""

    #: Frames per second at most, while watched.
    frame_rate: float = 30.0

    def __init__(self) -> None:
        super().__init__()
        self.frames_encoded = 0
        """JPEG frames encoded so far (none while nobody watches)."""
        self._start = time.monotonic()  # the picture's own clock: it moves in any thread
        # Drawing takes turns: a FreeType font is not to be used by two threads at once
        # (frames and captures are drawn in worker threads). Encoding needs no lock.
        self._lock = threading.Lock()
        self._background = _bars()
        self._font = ImageFont.load_default(size=28)

    async def background_task(self) -> None:
        """Render, encode and publish a frame every frame period while watched."""
        period = 1.0 / self.frame_rate
        deadline = trio.current_time()
        while True:
            # A frame period from the last one, or from now if encoding took longer.
            deadline = max(deadline + period, trio.current_time())
            if self.video.watched:
                frame = await trio.to_thread.run_sync(self._jpeg, self.exposure)
                self.video.publish(frame)
            await trio.sleep_until(deadline)

    @tt.action
    def capture(self) -> tt.PNG:
        """Take one picture now, as a lossless PNG (640x480)."""
        with self._lock:
            image = self._render(self.exposure)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return tt.PNG(buffer.getvalue())

    def _jpeg(self, exposure: float) -> bytes:
        """One frame as JPEG (blocking: called in a worker thread)."""
        with self._lock:
            image = self._render(exposure)
            self.frames_encoded += 1
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=80)
        return buffer.getvalue()

    def _render(self, exposure: float) -> Image.Image:
        """The picture now, at ``exposure`` (in a worker thread, holding the lock)."""
        seconds = time.monotonic() - self._start
        offset = int(seconds * 80) % _WIDTH
        image = self._background.crop((offset, 0, offset + _WIDTH, _HEIGHT))
        draw = ImageDraw.Draw(image)
        x = _WIDTH / 2 + 200 * math.cos(seconds * 1.3)
        y = _HEIGHT / 2 - 30 + 130 * math.sin(seconds * 2.1)
        draw.ellipse((x - 40, y - 40, x + 40, y + 40), fill=(255, 255, 255),
                     outline=(0, 0, 0), width=4)
        now = datetime.datetime.now(datetime.UTC)
        draw.rectangle((0, _HEIGHT - 48, _WIDTH, _HEIGHT), fill=(0, 0, 0))
        draw.text((12, _HEIGHT - 42), now.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC",
                  fill=(255, 255, 255), font=self._font)
        gain = exposure / _NEUTRAL_EXPOSURE
        if gain != 1.0:
            image = image.point([min(255, round(i * gain)) for i in range(256)] * 3)
        return image
