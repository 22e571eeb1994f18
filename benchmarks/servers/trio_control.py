"""The control loop of the two Trio servers: request lines on stdin, replies on stdout."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import trio

from benchmarks.servers.control import Plan, write_line

__all__ = ["serve_control", "wait_for_turn"]


async def wait_for_turn(plan: Plan, start: float, index: int) -> None:
    """Wait until update ``index`` is due: both Trio servers pace their producers with
    this one function, so their comparison is of fan-out, not of pacing. At full speed
    it yields after every update, so the producer gets one turn per scheduler batch
    and the connections' tasks get theirs."""
    deadline = plan.deadline(start, index)
    if deadline is None:
        await trio.lowlevel.checkpoint()
    else:
        await trio.sleep_until(deadline)


async def serve_control(answer: Callable[[bytes], dict[str, Any]]) -> None:
    """Answer every request line on stdin with ``answer(line)`` until the input ends (the
    harness closed it); ``functools.partial(control.handle, producer)`` answers the
    requests of :mod:`benchmarks.servers.control`.

    Returns:
        At end of input. Replies are written synchronously: they are a few bytes, and
        the harness reads each one before it sends the next request.
    """
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stdin:
        while True:
            chunk = await stdin.receive_some(4096)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    write_line(answer(line))
