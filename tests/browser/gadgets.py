"""A Thing written for the dashboard's tests, as a user would: one property of each kind
of schema the page builds a control for, actions with such inputs, a blob output, and a
description that tries to inject markup."""

from __future__ import annotations

import struct
import zlib
from typing import Literal

import attrs

import trio_things as tt


@attrs.frozen
class Limits:
    low: int
    high: int


@attrs.frozen
class Configured:
    mode: str
    enabled: bool
    note: str


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A ``width`` x ``height`` red PNG, made by hand (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


class Gadget(tt.Thing):
    """A gadget <img src=x id=injected> whose <b>description</b> is only text.

    Its second paragraph."""

    enabled: bool = tt.property(default=False)
    """Whether the gadget runs."""

    mode: Literal["idle", "scan", "track"] = tt.property(default="idle")
    """What it does."""

    label: str = tt.property(default="first")
    """A name for people."""

    limits: Limits = tt.property(default=Limits(low=0, high=10))
    """An object, edited as JSON."""

    level: int = tt.property(default=3, minimum=0, maximum=10)
    """A small integer."""

    @tt.action
    def configure(self, mode: Literal["idle", "scan", "track"], enabled: bool = False,
                  note: str = "") -> Configured:
        """Set mode and enabled at once; answer what was set."""
        self.mode = mode
        self.enabled = enabled
        return Configured(mode=mode, enabled=enabled, note=note)

    @tt.action
    def picture(self) -> tt.PNG:
        """A tiny picture (4x3 pixels)."""
        return tt.PNG(tiny_png())
