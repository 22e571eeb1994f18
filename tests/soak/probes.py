"""The connect/disconnect soak: many short-lived clients against the real server on
loopback, then an account of what they left behind.

The server runs in this process and this ``trio.run`` (``ThingServer.serve`` on
127.0.0.1, port 0), so its objects, its task tree and its memory can be inspected
directly; the clients are real TCP connections over loopback, in the same run. Every
cycle is one of :data:`KINDS`, mixed round-robin, run ``batch`` at a time:

* ``http_get``: one GET, then a clean close;
* ``ws_clean``: WebSocket connect, observe a property, receive its current value and one
  change, clean close (close handshake 1000);
* ``ws_drop_fin`` / ``ws_drop_rst``: connect, observe, then the TCP connection vanishes
  (FIN, or RST through ``SO_LINGER 0``) with no close frame, while notifications flow;
* ``http_body_fin`` / ``http_body_rst``: a PUT announcing 1000 bytes of body sends 10,
  then the connection vanishes (before an RST, the client waits for the server's
  ``100 Continue``, so that the server is surely reading the body when it comes).

A ticker changes the observed property and emits an event every few milliseconds
throughout, so notifications race every disconnect; a *witness*, one WebSocket that stays
connected all along, must receive every one of those events in order.

:func:`run_soak` runs a warm-up, takes a :class:`Measurement` once the server has no
connection but the witness, runs the cycles, waits for the server to settle again, takes
a second one and returns both in :class:`SoakFigures`; the tests decide what is allowed.
The server is only driven through its public API (``serve``), and inspected from outside:
its objects through ``gc``, its connections through Trio's task tree.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Final

import attrs
import h11
import trio
import trio.testing
import trio_websocket
import wsproto

import trio_things as tt
from tests.helpers.httpclient import HttpClient
from tests.helpers.servers import observer_count
from tests.helpers.sockets import reset_on_close
from tests.helpers.wsclient import receive, request
from trio_things.config import ServerConfig
from trio_things.fanout.observers import ObserverSet
from trio_things.fanout.outbox import Outbox
from trio_things.server import ThingServer
from trio_things.transport.upgrade import UpgradeStream

__all__ = [
    "KINDS",
    "Beacon",
    "Measurement",
    "SoakFigures",
    "run_soak",
]

WTP: Final = ["webthingprotocol"]

#: Seconds between two changes of the ticker: fast enough that notifications are in
#: flight at nearly every disconnect, slow enough to leave the CPU to the cycles.
TICK_INTERVAL: Final = 0.005

#: Seconds any one cycle may take on a loaded 2-core machine before the soak fails.
CYCLE_TIMEOUT: Final = 15.0

#: Seconds the server may take to end every connection once the clients are gone. A
#: dropped WebSocket ends when its reader sees the FIN/RST; an abandoned body at once.
SETTLE_TIMEOUT: Final = 15.0


class Beacon(tt.Thing):
    """A property and an event that the soak's ticker changes all the time."""

    level: int = tt.property(default=0)
    tick = tt.event(int)


# --------------------------------------------------------------------------- measuring

#: The objects one connection creates on either side; a leaked connection leaves some.
_TRACKED: Final[dict[type, str]] = {
    Outbox: "Outbox",
    ObserverSet: "ObserverSet",
    UpgradeStream: "UpgradeStream",
    h11.Connection: "h11.Connection",
    wsproto.WSConnection: "wsproto.WSConnection",
    trio_websocket.WebSocketConnection: "WebSocketConnection",
    trio.SocketStream: "SocketStream",
    trio.lowlevel.Task: "trio Task",
}
#: The same for private classes, by qualified name, so that a rename cannot break the
#: import of this module (the count then reads 0, and the soak's report shows it).
_TRACKED_BY_NAME: Final[dict[str, str]] = {
    "trio_things.transport.http._Connection": "http._Connection",
}


def live_objects() -> dict[str, int]:
    """Counts of live tracked objects (client and server side), after a full
    collection so that only what is still referenced is counted."""
    gc.collect()
    counts = dict.fromkeys([*_TRACKED.values(), *_TRACKED_BY_NAME.values()], 0)
    names: dict[type, str | None] = {}
    for obj in gc.get_objects():
        cls = type(obj)
        if cls not in names:
            names[cls] = _TRACKED.get(cls) or _TRACKED_BY_NAME.get(
                f"{cls.__module__}.{cls.__qualname__}")
        name = names[cls]
        if name is not None:
            counts[name] += 1
    return counts


def admitted_connections() -> int:
    """Open connections the server's per-address admission table (``ClientConnections``,
    found by name so the soak does not depend on where it lives) still counts."""
    return sum(sum(obj._open.values()) for obj in gc.get_objects()
               if type(obj).__name__ == "ClientConnections")


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc/self/statm``); 0 elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def descendant_tasks(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    """Every task below ``task`` in Trio's task tree (its nurseries' tasks, recursively)."""
    found = []
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            found.append(child)
            found.extend(descendant_tasks(child))
    return found


@attrs.frozen(kw_only=True)
class Measurement:
    """The server's state at one moment, with only the witness connected."""

    objects: dict[str, int]
    server_tasks: int
    """Tasks below the task running ``ThingServer.serve``."""
    connections: int
    """Connections still being served (the witness's)."""
    observers: int
    """Memberships in all observer sets (the witness's subscription)."""
    rss: int


@attrs.frozen(kw_only=True)
class SoakFigures:
    """What :func:`run_soak` measured."""

    cycles: int
    warmup: int
    batch: int
    kinds: dict[str, int]
    seconds: float
    before: Measurement
    after: Measurement
    traced_cycles: int
    traced_growth: int | None
    """Bytes allocated during the traced cycles and still alive once the server had
    settled (tracemalloc, after a full collection); None when not traced."""
    traced_half: int | None
    """The same, after the first half of the traced cycles: a leak grows from here to
    ``traced_growth``; bounded caches (trio's deadline heap) have filled by then."""
    traced_top: list[str]
    """Where most of ``traced_growth`` was allocated (file:line, size)."""
    ticks: int
    """Events the witness received, every one in order."""
    idle_observers: int
    """Memberships in all observer sets once the witness too had gone."""
    idle_connections: int
    """Connections still being served once the witness too had gone."""
    idle_outboxes: int
    idle_admitted: int
    """Connections the server's per-address admission count still holds at the end."""

    def report(self) -> list[str]:
        """Lines for the terminal summary."""
        mib = 1024 * 1024
        before, after = self.before, self.after
        lines = [
            f"{self.cycles} cycles (+{self.warmup} warm-up), {self.batch} at a time, in "
            f"{self.seconds:.1f} s ({self.cycles / self.seconds:.0f} cycles/s, untraced)",
            "kinds: " + ", ".join(f"{k} {n}" for k, n in self.kinds.items()),
            f"RSS {before.rss / mib:.1f} MiB after warm-up -> {after.rss / mib:.1f} MiB "
            f"after the cycles ({(after.rss - before.rss) / 1024:+.0f} KiB)",
        ]
        if self.traced_growth is not None:
            assert self.traced_half is not None
            lines.append(f"tracemalloc over {self.traced_cycles} more cycles: "
                         f"{self.traced_growth / 1024:.1f} KiB allocated during them "
                         f"still alive at the end "
                         f"({self.traced_growth / self.traced_cycles:.0f} B per cycle), "
                         f"{self.traced_half / 1024:.1f} KiB after the first half; "
                         f"largest:")
            lines += [f"  {line}" for line in self.traced_top]
        lines += [
            "live objects (after warm-up -> after cycles): " + ", ".join(
                f"{name} {before.objects[name]}->{after.objects[name]}"
                for name in before.objects),
            f"server tasks {before.server_tasks}->{after.server_tasks}, connections "
            f"{before.connections}->{after.connections}, observer memberships "
            f"{before.observers}->{after.observers} (the witness's)",
            f"witness received {self.ticks} events, in order, none missing; with the "
            f"witness gone: {self.idle_connections} connections, {self.idle_observers} "
            f"observer memberships, {self.idle_outboxes} Outboxes, {self.idle_admitted} "
            f"admitted connections",
        ]
        return lines


# --------------------------------------------------------------------------- the server side


def connection_tasks(serve_task: trio.lowlevel.Task) -> int:
    """Connections the server is serving: its accept loop runs each in a task of its own
    (``ThingServer._handle_socket``), below the task running ``ThingServer.serve``."""
    return sum(1 for task in descendant_tasks(serve_task)
               if task.name.endswith("ThingServer._handle_socket"))


async def settle(serve_task: trio.lowlevel.Task, live: int) -> None:
    """Wait until the server serves at most ``live`` connections and every task is
    blocked. Over real sockets, a connection ends when the kernel delivers the peer's
    FIN or RST, or when a server timer (lingering after a 400) expires: no event of ours
    says when, so this polls, briefly, under a deadline."""
    with trio.fail_after(SETTLE_TIMEOUT):
        while True:
            await trio.testing.wait_all_tasks_blocked()
            if connection_tasks(serve_task) <= live:
                return
            await trio.sleep(0.001)


@attrs.define
class _Witness:
    """Counts the events one long-lived observer receives, checking their order."""

    received: int = 0
    _progress: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            message = await receive(ws)
            if message.get("messageType") != "notification":
                continue
            # The ticker emits 0, 1, 2, ...: each must be the next, none missing.
            assert message["data"] == self.received, (message["data"], self.received)
            self.received += 1
            self._progress.set()
            self._progress = trio.Event()

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(SETTLE_TIMEOUT):
            while self.received < count:
                await self._progress.wait()


async def _tick(beacon: Beacon, counter: list[int]) -> None:
    while True:
        await trio.sleep(TICK_INTERVAL)
        beacon.level += 1
        beacon.tick.emit(counter[0])
        counter[0] += 1


# --------------------------------------------------------------------------- the cycles


async def http_get(port: int, index: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        response = await HttpClient(stream).get("/beacon/level")
        assert response.status == 200, response


async def ws_clean(port: int, index: int) -> None:
    url = f"ws://127.0.0.1:{port}/beacon/ws"
    async with trio_websocket.open_websocket_url(url, subprotocols=WTP) as ws:
        response = await request(ws, "observeproperty", thing=None, name="level")
        assert "error" not in response, response
        for _ in range(2):  # the current value, then a change the ticker makes
            notification = await receive(ws)
            assert notification["messageType"] == "notification", notification
            assert notification["name"] == "level"


async def _ws_drop(port: int, *, reset: bool) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, f"127.0.0.1:{port}", "/beacon/ws", subprotocols=WTP)
        response = await request(ws, "observeproperty", thing=None, name="level")
        assert "error" not in response, response
        await request(ws, "subscribeevent", thing=None, name="tick")
        # Gone: no close frame; the client's reader is cancelled, the socket closed.
        nursery.cancel_scope.cancel()
    if reset:
        reset_on_close(stream)
    await trio.aclose_forcefully(stream)


async def ws_drop_fin(port: int, index: int) -> None:
    await _ws_drop(port, reset=False)


async def ws_drop_rst(port: int, index: int) -> None:
    await _ws_drop(port, reset=True)


async def _http_body(port: int, *, reset: bool) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    head = (b"PUT /beacon/level HTTP/1.1\r\nHost: soak\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n")
    if reset:
        # An RST before the server accepts the connection never reaches it (the kernel
        # drops it from the accept queue), so wait for the server's 100 Continue: it has
        # read the head and waits for the body when the connection is reset.
        await stream.send_all(head + b"Expect: 100-continue\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some()
            assert chunk, "the server closed the connection"
            received += chunk
        assert received.startswith(b"HTTP/1.1 100 "), received
        await stream.send_all(b"1234567890")
        reset_on_close(stream)
    else:
        await stream.send_all(head + b"\r\n1234567890")
    await trio.aclose_forcefully(stream)


async def http_body_fin(port: int, index: int) -> None:
    await _http_body(port, reset=False)


async def http_body_rst(port: int, index: int) -> None:
    await _http_body(port, reset=True)


Cycle = Callable[[int, int], Awaitable[None]]

#: The kinds of cycle, mixed round-robin.
KINDS: Final[tuple[Cycle, ...]] = (
    http_get, ws_clean, ws_drop_fin, http_body_fin, ws_drop_rst, http_body_rst)


async def run_cycles(port: int, start: int, count: int, batch: int,
                     kinds: dict[str, int]) -> None:
    """Run cycles ``start`` .. ``start + count - 1``, ``batch`` at a time."""

    async def one(index: int) -> None:
        kind = KINDS[index % len(KINDS)]
        with trio.fail_after(CYCLE_TIMEOUT):
            await kind(port, index)
        kinds[kind.__name__] = kinds.get(kind.__name__, 0) + 1

    for first in range(start, start + count, batch):
        async with trio.open_nursery() as nursery:
            for index in range(first, min(first + batch, start + count)):
                nursery.start_soon(one, index)


# --------------------------------------------------------------------------- the run


async def run_soak(*, cycles: int, warmup: int, batch: int,
                   traced_cycles: int = 0) -> SoakFigures:
    """Serve on loopback; run ``warmup`` cycles, measure, run ``cycles`` more, measure;
    then, if ``traced_cycles``, run that many more under tracemalloc and count the bytes
    they allocated that are still alive once the server has settled (traced apart from
    the RSS measurement, since tracemalloc's own tables would inflate the RSS)."""
    server = ThingServer(ServerConfig(host="127.0.0.1", port=0))
    beacon = Beacon()
    server.add_thing("beacon", beacon)
    kinds: dict[str, int] = {}
    serve_task: list[trio.lowlevel.Task] = []

    async def serve(task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
        serve_task.append(trio.lowlevel.current_task())
        await server.serve(task_status=task_status)

    def measure() -> Measurement:
        return Measurement(objects=live_objects(),
                           server_tasks=len(descendant_tasks(serve_task[0])),
                           connections=connection_tasks(serve_task[0]),
                           observers=observer_count(server),
                           rss=rss_bytes())

    figures: SoakFigures | None = None
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        witness = _Witness()
        async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{port}/beacon/ws", subprotocols=WTP) as witness_ws:
            await request(witness_ws, "subscribeevent", thing=None, name="tick")
            async with trio.open_nursery() as clients:
                clients.start_soon(witness.run, witness_ws)
                emitted = [0]
                ticker = trio.CancelScope()

                async def tick() -> None:
                    with ticker:
                        await _tick(beacon, emitted)

                clients.start_soon(tick)
                await run_cycles(port, 0, warmup, batch, kinds)
                await settle(serve_task[0], 1)  # only the witness is left
                before = measure()
                started = time.perf_counter()
                await run_cycles(port, warmup, cycles, batch, kinds)
                await settle(serve_task[0], 1)
                seconds = time.perf_counter() - started
                after = measure()
                traced_growth: int | None = None
                traced_top: list[str] = []
                traced_half: int | None = None
                if traced_cycles:
                    tracemalloc.start()
                    half = traced_cycles // 2
                    await run_cycles(port, warmup + cycles, half, batch, kinds)
                    await settle(serve_task[0], 1)
                    gc.collect()
                    traced_half = tracemalloc.get_traced_memory()[0]
                    await run_cycles(port, warmup + cycles + half, traced_cycles - half,
                                     batch, kinds)
                    await settle(serve_task[0], 1)
                    gc.collect()
                    traced_growth = tracemalloc.get_traced_memory()[0]
                    snapshot = tracemalloc.take_snapshot().filter_traces(
                        [tracemalloc.Filter(False, tracemalloc.__file__)])
                    tracemalloc.stop()
                    traced_top = [
                        f"{stat.traceback[0].filename.rsplit('/', 2)[-1]}:"
                        f"{stat.traceback[0].lineno}: {stat.size / 1024:.1f} KiB "
                        f"in {stat.count} blocks"
                        for stat in snapshot.statistics("lineno")[:5]]
                    del snapshot
                ticker.cancel()
                await witness.wait_for(emitted[0])
                clients.cancel_scope.cancel()
        await settle(serve_task[0], 0)  # the witness too has gone
        figures = SoakFigures(
            cycles=cycles, warmup=warmup, batch=batch, traced_cycles=traced_cycles,
            kinds={kind.__name__: kinds.get(kind.__name__, 0) for kind in KINDS},
            seconds=seconds, before=before, after=after, traced_growth=traced_growth,
            traced_half=traced_half, traced_top=traced_top,
            ticks=witness.received, idle_observers=observer_count(server),
            idle_connections=connection_tasks(serve_task[0]),
            idle_outboxes=live_objects()["Outbox"], idle_admitted=admitted_connections())
        nursery.cancel_scope.cancel()
    # Only the cancel just above may end the block early; anything else is a failure.
    assert figures is not None, "the soak ended early, without an error"
    return figures
