"""What trio-things adds to each delivery on the fan-out fast path, layer by layer.

``python -m benchmarks.fastpath [--observers 1000] [--rounds 300]``

The load-generator benchmark (:mod:`benchmarks.fanout`) measures whole servers, and at
C >= 100 the kernel's loopback write is most of a delivery's cost, the same for every
server; the Python around it is what a change to the core can win or lose, and it is
lost in that benchmark's noise. This one takes the kernel out: it builds ``--observers``
real connections' writing sides (a socket pair each, an :class:`UpgradeStream`, a
trio-websocket connection, a :class:`SocketWriter`, an :class:`Outbox` whose fast path
is the stream, and the relay task, running), then points
each server-side descriptor at ``/dev/null`` with ``dup2``, so a write costs a small,
steady amount. It then delivers one frame to every observer through each layer in turn,
interleaved round by round, and reports the median cost per delivery:

===============  =========================================================
``os.write``     the floor: a bare loop of writes to the same descriptors
``write_now``    :meth:`UpgradeStream.write_now`, the Outbox's writer (join, checks)
``put_latest``   :meth:`Outbox.put_latest` (a property's coalescing put)
``publish``      :meth:`ObserverSet.publish`: what one property change costs
===============  =========================================================

The figure to read is ``publish`` minus ``os.write``. The encoder is the Web Thing
Protocol's; it runs once per publish, so at C observers its cost is divided by C. Each
observer has a tail of its own, as a Web Thing Protocol observer has (its
``correlationID``), so each frame is ``(header, body, tail)``, joined at the write; the
``os.write`` floor writes the same bytes, joined beforehand.
Figures are wall-clock nanoseconds on this machine: compare two versions by running
this in one sitting, not against figures from another day.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import time
from collections.abc import Callable, Sequence

import trio
import trio.testing
import trio_websocket
import wsproto

from trio_things.fanout.observers import Observer, ObserverSet
from trio_things.fanout.outbox import Outbox
from trio_things.protocol.commands import PropertyChanged
from trio_things.protocol.frames import text_frame_header
from trio_things.protocol.limits import WebSocketLimits
from trio_things.protocol.wtp import encode_notification
from trio_things.transport.upgrade import UpgradeStream
from trio_things.websockets import SocketWriter, relay_notifications_to_websocket

__all__ = ["LAYERS", "main", "measure"]

LAYERS = ("os.write", "write_now", "put_latest", "publish")
_KEY = ("bench", "property", "tick")


async def measure(observers: int, rounds: int) -> dict[str, float]:
    """Median nanoseconds per delivery through each of :data:`LAYERS`."""
    sink = os.open(os.devnull, os.O_WRONLY)
    pairs = [socket.socketpair() for _ in range(observers)]
    try:
        async with trio.open_nursery() as nursery:
            streams: list[UpgradeStream] = []
            outboxes: list[Outbox] = []
            observer_set = ObserverSet(key=_KEY, coalesce=True)
            for ours, _peer in pairs:
                stream = UpgradeStream(trio.SocketStream(trio.socket.from_stdlib_socket(ours)),
                                       b"")
                websocket = trio_websocket.WebSocketConnection(
                    stream, wsproto.WSConnection(wsproto.ConnectionType.SERVER))
                writer = SocketWriter(websocket=websocket, stream=stream,
                                      limits=WebSocketLimits())
                outbox = Outbox(WebSocketLimits().outbox_size, writer=stream)
                nursery.start_soon(relay_notifications_to_websocket, writer, outbox)
                observer_set.add(Observer(outbox=outbox, encoder=encode_notification,
                                          tail=_tail(len(streams))))
                streams.append(stream)
                outboxes.append(outbox)
                os.dup2(sink, ours.fileno())  # the kernel's share is out of the figures
            await trio.testing.wait_all_tasks_blocked()  # every relay waits for a frame

            notification = PropertyChanged(
                thing="bench", name="tick", value={"n": 123456, "t": 1764067200.123456},
                timestamp=datetime.datetime.now(datetime.UTC))
            body = encode_notification(notification)
            frames = [(text_frame_header(len(body) + len(tail)), body, tail)
                      for tail in map(_tail, range(observers))]
            joined = [b"".join(frame) for frame in frames]
            descriptors = [ours.fileno() for ours, _peer in pairs]

            def bare() -> None:
                for fd, data in zip(descriptors, joined, strict=True):
                    os.write(fd, data)

            def write_now() -> None:
                for stream, frame in zip(streams, frames, strict=True):
                    stream.write_now(frame)

            def put_latest() -> None:
                for outbox, frame in zip(outboxes, frames, strict=True):
                    outbox.put_latest(_KEY, frame)

            def publish() -> None:
                observer_set.publish(notification)

            layers: dict[str, Callable[[], None]] = dict(zip(LAYERS, (
                bare, write_now, put_latest, publish), strict=True))
            samples: dict[str, list[float]] = {name: [] for name in LAYERS}
            for _ in range(rounds):
                for name, deliver in layers.items():
                    start = time.perf_counter_ns()
                    deliver()
                    samples[name].append((time.perf_counter_ns() - start) / observers)
            if any(outbox.statistics().taken for outbox in outboxes):
                raise RuntimeError("a frame left the fast path: the figures would mix paths")
            nursery.cancel_scope.cancel()
    finally:
        for ours, peer in pairs:
            ours.close()
            peer.close()
        os.close(sink)
    return {name: statistics.median(values) for name, values in samples.items()}


def _tail(index: int) -> bytes:
    """An observer's tail as the Web Thing Protocol encodes it: each its own."""
    return (b',"operation":"observeproperty","thingID":"bench","correlationID":'
            b'"00000000-0000-4000-8000-%012d"}' % index)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fastpath",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--observers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv)
    figures = trio.run(measure, args.observers, args.rounds)
    floor = figures["os.write"]
    print(f"ns per delivery, median of {args.rounds} rounds, {args.observers} observers")
    for name, value in figures.items():
        print(f"{name:>12}  {value:7.0f}  (+{value - floor:.0f})")
    print(f"trio-things adds {figures['publish'] - floor:.0f} ns to each delivery")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
