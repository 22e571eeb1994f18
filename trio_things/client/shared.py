"""One subscription the server or broker holds for the client (a WebSocket
observation, an MQTT topic filter), shared by every local observer of it.

The first local observer makes the subscription; the others *join* it: they are given
the latest message at once (a property's current value), then wait, as the first one
does, for the server or broker to confirm it.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import trio

from trio_things.client.errors import ClientError, Timeout

__all__ = ["SharedSubscription", "join"]

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)


class _Sink(Protocol[M_contra]):
    def deliver(self, message: M_contra, /) -> None: ...


class SharedSubscription(Protocol[M]):
    """What :func:`join` needs of a subscription."""

    sinks: set[Any]
    established: trio.Event
    error: ClientError | None
    last: M | None


async def join(subscription: SharedSubscription[M], sink: _Sink[M], *, limit: float,
               no_answer: str) -> None:
    """Add ``sink`` to ``subscription``, made already (or being made): deliver the latest
    message, and return once the subscription is confirmed. :class:`Timeout` with
    ``no_answer`` after ``limit`` seconds without; the subscription's own error if it
    failed. ``sink`` is removed again when this raises (or is cancelled)."""
    subscription.sinks.add(sink)
    if subscription.last is not None:
        sink.deliver(subscription.last)
    try:
        with trio.move_on_after(limit) as waiting:
            await subscription.established.wait()
        if waiting.cancelled_caught:
            raise Timeout(no_answer)
        if subscription.error is not None:
            raise subscription.error
    except BaseException:
        subscription.sinks.discard(sink)
        raise
