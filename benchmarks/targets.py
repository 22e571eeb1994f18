"""The servers a benchmark run can measure, by name, and how to start each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs

from benchmarks.messages import PROPERTY_NAME, THING
from benchmarks.servers import c_limit

__all__ = ["BROADCAST", "C_LIMIT", "LIMITS", "NAIVE", "PYTHON_LIMIT", "TARGETS", "TRIO_THINGS",
           "Target"]


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
    scenarios: frozenset[str] | None = None
    """The scenarios it takes part in (``None``: every one)."""
    limit: bool = False
    """A limit, not a server one would deploy: measured in ``max-rate`` only, at the C of
    ``Settings.limit_clients`` (see :mod:`benchmarks.scenarios`)."""
    unavailable: Callable[[], str | None] | None = None
    """Why it cannot run on this machine (``None``: it can); asked once per invocation,
    before it is first measured. Its figures are then reported as skipped."""

    def takes_part(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios

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

PYTHON_LIMIT: Final = Target(
    name="python-limit", module="benchmarks.servers.python_limit", path="/",
    description="the limit for Python: one `selectors` loop, and a bare `sock.send` of one "
                "pre-built frame per client per update (no framework, no backpressure)",
    scenarios=frozenset({"max-rate"}), limit=True)
C_LIMIT: Final = Target(
    name="c-limit", module="benchmarks.servers.c_limit", path="/",
    description="the limit of the machine: the same in C (`cc -O2`, epoll, a non-blocking "
                "`send` per client per update)",
    scenarios=frozenset({"max-rate"}), limit=True, unavailable=c_limit.unavailable)

#: In the order runs measure them (and tables list them).
TARGETS: Final = {t.name: t for t in (TRIO_THINGS, NAIVE, BROADCAST, PYTHON_LIMIT, C_LIMIT)}
#: The limits, which figures are read against (``Target.limit``).
LIMITS: Final = (PYTHON_LIMIT, C_LIMIT)
