"""The control loop of the two Trio servers: request lines on stdin, replies on stdout."""

from __future__ import annotations

import os
import sys

import trio

from benchmarks.servers.control import Producer, handle, write_line

__all__ = ["serve_control"]


async def serve_control(producer: Producer) -> None:
    """Answer every request line on stdin until it ends (the harness closed it).

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
                    write_line(handle(producer, line))
