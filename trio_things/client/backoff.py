"""Exponential backoff with jitter, for reconnecting and for retrying polls.

After a server restart every client comes back at once unless each waits a different
time; "full jitter" spreads them out. The wait doubles on every failed attempt from
``initial`` up to ``maximum`` (so a server that stays down costs a request every few
seconds, not a tight loop), and each wait is drawn from 50-100 % of it, so a client
never retries sooner than half the schedule.
"""

from __future__ import annotations

import random

import attrs

__all__ = ["Backoff"]


@attrs.define
class Backoff:
    """The waits between attempts: call :meth:`next` before each retry, :meth:`reset`
    after a success."""

    initial: float
    maximum: float
    attempt: int = 0

    def next(self) -> float:
        """The next wait, in seconds."""
        delay = min(self.maximum, self.initial * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        """Start again from ``initial``."""
        self.attempt = 0
