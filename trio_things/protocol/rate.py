"""A token bucket that limits how fast one client may send requests."""

from __future__ import annotations

import attrs

__all__ = ["RequestRate"]


@attrs.define
class RequestRate:
    """A token bucket: ``burst`` messages at once, ``rate`` per second sustained.

    Pure (the caller passes the time), so it is tested without a clock. ``refused``
    counts the messages refused since the last one accepted: a client that keeps
    sending after being told to slow down is closed.
    """

    rate: float
    burst: int
    _tokens: float = attrs.field(init=False)
    _last: float | None = attrs.field(init=False, default=None)
    refused: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._tokens = float(self.burst)

    def allow(self, now: float) -> bool:
        """Whether a message arriving at ``now`` (seconds) may be served."""
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.refused = 0
            return True
        self.refused += 1
        return False
