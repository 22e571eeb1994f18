"""How the harness drives a server under test: JSON lines on the server's stdin and stdout.

Why a pipe and not HTTP: the pipe dies with the process, needs no port, and costs the
server nothing while it is idle; and the same few lines work in Trio and in asyncio.

Protocol (one request line, then exactly one reply line; nothing else on stdout)::

    <- {"port": 43121}                                  once, when listening
    -> {"op": "start", "plan": {"kind": "property", "rate": null, "count": null}}
    <- {"ok": true}
    -> {"op": "stats"}
    <- {"updates": 123456, "producing": true, "cpu": 12.5, "user": 9.5, "system": 3.0,
        "time": 1700000000.0}
    -> {"op": "stop"}
    <- {"updates": 130000, "producing": false, "cpu": 13.0, "time": 1700000001.0}

End of input (the harness closed the pipe) shuts the server down; so does SIGINT.
``updates`` counts every update the producer made since the process started;
``cpu`` is the process's CPU time in seconds (user + system, all threads); ``user`` and
``system`` split it (the Python servers give them; the C limit gives ``cpu`` only).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any, Protocol

import attrs
import orjson

from benchmarks.messages import EVENT, PROPERTY, Kind

__all__ = ["Plan", "Producer", "handle", "raise_open_files_limit", "write_line"]


@attrs.frozen(kw_only=True)
class Plan:
    """What the producer does: update a property or emit an event, ``count`` times
    (``None``: until stopped), ``rate`` times a second (``None``: as fast as the server
    accepts, yielding to it after each update)."""

    kind: Kind = attrs.field(validator=attrs.validators.in_((PROPERTY, EVENT)))
    rate: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0)))
    count: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(kind=data["kind"], rate=data.get("rate"), count=data.get("count"))

    def deadline(self, start: float, index: int) -> float | None:
        """When update ``index`` (from 0) is due, on the clock ``start`` was read from;
        ``None`` at full speed. Absolute deadlines, so a late update never shifts the
        ones after it."""
        return None if self.rate is None else start + index / self.rate


class Producer(Protocol):
    """What each server implements for :func:`handle`."""

    updates: int

    @property
    def producing(self) -> bool: ...

    def start(self, plan: Plan) -> None:
        """Stop any running plan, then run ``plan`` in the background."""

    def stop(self) -> None:
        """Stop the running plan, if any."""


def handle(producer: Producer, line: bytes) -> dict[str, Any]:
    """The reply to one request line (a malformed one gets ``{"error": ...}``)."""
    try:
        request = orjson.loads(line)
        op = request["op"]
        if op == "start":
            producer.start(Plan.from_json(request["plan"]))
            return {"ok": True}
        if op == "stop":
            producer.stop()
        elif op != "stats":
            return {"error": f"unknown op {op!r}"}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        return {"error": f"{type(error).__name__}: {error}"}
    times = os.times()
    return {"updates": producer.updates, "producing": producer.producing,
            "cpu": time.process_time(), "user": times.user, "system": times.system,
            "time": time.time()}


def write_line(message: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed (the harness waits for it)."""
    sys.stdout.write(orjson.dumps(message).decode() + "\n")
    sys.stdout.flush()


def raise_open_files_limit() -> int:
    """Raise this process's open-files limit to its hard limit (5,000 connections need
    more than the usual 1,024); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
