"""The servers a benchmark run can measure, by name, and how to start each."""

from __future__ import annotations

from typing import Final

import attrs

from benchmarks.messages import PROPERTY_NAME, THING

__all__ = ["BROADCAST", "NAIVE", "TARGETS", "TRIO_THINGS", "Target"]


@attrs.frozen(kw_only=True)
class Target:
    """A server under test: a module run as a script, and the WebSocket path it serves
    (and the path of the property's Server-Sent Events stream, if it serves one)."""

    name: str
    module: str
    path: str
    description: str
    takes_write_timeout: bool = False
    sse_path: str | None = None

    def argv(self, *, write_timeout: float | None = None) -> list[str]:
        """Arguments for ``python``; ``write_timeout`` applies to trio-things only (the
        references have none to set)."""
        argv = ["-m", self.module]
        if write_timeout is not None and self.takes_write_timeout:
            argv += ["--write-timeout", str(write_timeout)]
        return argv


TRIO_THINGS: Final = Target(
    name="trio-things", module="benchmarks.servers.trio_things_server", path="/bench/ws",
    description="this project: encode once, a coalescing Outbox and one relay task per "
                "connection",
    takes_write_timeout=True, sse_path=f"/{THING}/{PROPERTY_NAME}")
NAIVE: Final = Target(
    name="naive", module="benchmarks.servers.naive_trio", path="/",
    description="trio-websocket: `await ws.send_message(msg)` for each client in turn")
BROADCAST: Final = Target(
    name="broadcast", module="benchmarks.servers.asyncio_broadcast", path="/",
    description="asyncio `websockets.broadcast()`: write to every transport, no backpressure")

#: In the order runs measure them (and tables list them).
TARGETS: Final = {t.name: t for t in (TRIO_THINGS, NAIVE, BROADCAST)}
