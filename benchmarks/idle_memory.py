"""What an idle WebSocket observer holds in the server, by part.

Run from the repository root::

    python -m benchmarks.idle_memory                     # 2,000 observers
    python -m benchmarks.idle_memory --connections 5000 --types 6

The server (trio-things serving the benchmark Thing, as in :mod:`benchmarks.fanout`)
runs in this process, so that its objects can be inspected; the observers are the
load generator's (:mod:`benchmarks.loadgen`), in another process, so that none of their
objects count. After a first round of connections (which warms every cache and free
list) has come and gone, C observers connect, each observes the property, and nothing
is published. Then:

* *RSS per connection*: the growth of the process's resident memory (``VmRSS``) over
  C, as the benchmark's memory scenario measures it in a server process of its own;
* *objects per connection*: every object created meanwhile that is still alive (the
  garbage collector's objects, and the strings, bytes and numbers they alone refer
  to), sized with ``sys.getsizeof`` (a slotless instance's dictionary included);
* the same, *by part*: each object goes to the first part that reaches it, following
  references from the part's roots in this order: the socket (Trio's stream and
  socket objects), wsproto's connection, trio-websocket's connection (its message
  channel, events and lock), the ``UpgradeStream`` (and its frame guard), the Outbox
  (and its writer), the observer entries, then each of the connection's three tasks
  (their coroutine stacks, and what only they hold), then the nursery and its cancel
  scopes. What none reaches is *other* (mostly the numbers and keys that tables older
  than the connections hold for them).

The parts are an attribution, not a partition of responsibility: a task's stack holds
its locals, so an object held both by a frame and by a part listed earlier counts for
that part. Objects shared with older ones (interned strings, cached dialects, small
integers) count for nobody. No timing is involved: the figures are the same on a busy
machine.

Resource handling: the load generator's processes are ended (by PID) before it returns;
everything binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import sys
from collections.abc import Sequence
from typing import Final

import trio

from benchmarks.loadgen import LoadGenerator
from benchmarks.messages import PROPERTY, THING
from benchmarks.servers.control import raise_open_files_limit
from benchmarks.things import BenchThing
from trio_things.config import ServerConfig
from trio_things.server import ThingServer

__all__ = ["Breakdown", "main", "measure"]

_PAGE_KIB: Final = os.sysconf("SC_PAGE_SIZE") // 1024
#: The parts, in the order they claim objects: (name, the types of their roots).
PARTS: Final = (
    ("socket (Trio's stream, socket, epoll entry)",
     ("SocketStream", "_SocketType", "socket", "EpollWaiters")),
    ("wsproto connection (frame parser)", ("WSConnection",)),
    ("trio-websocket connection (message channel, events, lock)", ("WebSocketConnection",)),
    ("UpgradeStream, frame guard", ("UpgradeStream",)),
    ("Outbox, writer, doorbell", ("Outbox",)),
    ("observer entries", ("Observer",)),
)
_NURSERY: Final = "nursery, cancel scopes"
_OTHER: Final = "other"


def _task_part(task: trio.lowlevel.Task) -> str:
    if task.name.endswith("relay"):
        return "task: relay"
    if "_reader_task" in task.name:
        return "task: trio-websocket's reader"
    return "task: the connection's (HTTP, handshake, processor)"


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_KIB


def _size(obj: object) -> int:
    size = sys.getsizeof(obj)
    if type(obj).__dictoffset__ and not isinstance(obj, type):
        try:
            size += sys.getsizeof(object.__getattribute__(obj, "__dict__"))
        except AttributeError:
            pass
    return size


def _name(obj: object) -> str:
    kind = type(obj).__qualname__
    if kind in ("coroutine", "generator"):
        return f"{kind} {getattr(obj, '__qualname__', '?')}"
    return kind


class Breakdown:
    """The objects C idle connections hold, attributed to parts (see the module
    docstring)."""

    def __init__(self, new: dict[int, object], connections: int) -> None:
        self.connections = connections
        roots: list[tuple[object, str]] = []
        for part, kinds in PARTS:
            roots += [(obj, part) for obj in new.values() if type(obj).__name__ in kinds]
        roots += [(obj, _task_part(obj)) for obj in new.values()
                  if isinstance(obj, trio.lowlevel.Task)]
        roots += [(obj, _NURSERY) for obj in new.values()
                  if isinstance(obj, trio.Nursery | trio.CancelScope)]
        root_ids = {id(obj) for obj, _ in roots}
        owner: dict[int, str] = {}
        for root, part in roots:
            stack = [root]
            while stack:
                obj = stack.pop()
                if id(obj) in owner or id(obj) not in new:
                    continue
                owner[id(obj)] = part
                stack += [ref for ref in gc.get_referents(obj)
                          if id(ref) in new and id(ref) not in owner
                          and id(ref) not in root_ids]
        self.parts: collections.Counter[str] = collections.Counter()
        self.types: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)
        for key, obj in new.items():
            part = owner.get(key, _OTHER)
            size = _size(obj)
            self.parts[part] += size
            self.types[part][_name(obj)] += size

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def lines(self, types: int) -> list[str]:
        """The table: bytes per connection by part, the largest types in each."""
        n = self.connections
        lines = ["| part | bytes per connection | largest (bytes per connection) |",
                 "|---|---|---|"]
        for part, size in self.parts.most_common():
            largest = ", ".join(f"{name} {value / n:.0f}"
                                for name, value in self.types[part].most_common(types))
            lines.append(f"| {part} | {size / n:,.0f} | {largest} |")
        lines.append(f"| **all** | **{self.total / n:,.0f}** | |")
        return lines


def _collect(before: set[int]) -> dict[int, object]:
    """The objects created since ``before`` (ids) was taken, and the untracked ones
    (strings, bytes, numbers) only they refer to."""
    gc.collect()
    tracked = [obj for obj in gc.get_objects() if id(obj) not in before]
    new = {id(obj): obj for obj in tracked}
    for obj in tracked:
        for ref in gc.get_referents(obj):
            if (id(ref) not in new and id(ref) not in before and not gc.is_tracked(ref)
                    and not isinstance(ref, type)):
                new[id(ref)] = ref
    new.pop(id(tracked), None)
    return new


async def _measure(connections: int, workers: int) -> tuple[float, Breakdown]:
    raise_open_files_limit()
    server = ThingServer(ServerConfig(host="127.0.0.1", port=0,
                                      max_connections_per_client=connections + 100,
                                      max_connections=connections + 100))
    server.add_thing(THING, BenchThing())
    with LoadGenerator(workers) as loadgen:
        def observe(port: int, clients: int) -> None:
            loadgen.open(host="127.0.0.1", port=port, path="/bench/ws", kind=PROPERTY,
                         clients=clients, timeout=max(60.0, clients / 20))

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            port = listeners[0].socket.getsockname()[1]
            await trio.to_thread.run_sync(observe, port, min(200, connections))
            await trio.to_thread.run_sync(loadgen.close_clients)
            await trio.sleep(0.5)  # the server notices every close
            gc.collect()
            rss_before = _rss_kib()
            before = {id(obj) for obj in gc.get_objects()}
            await trio.to_thread.run_sync(observe, port, connections)
            await trio.sleep(1.0)  # as the benchmark's memory scenario waits
            rss_after = _rss_kib()
            new = _collect(before)
            new.pop(id(before), None)
            breakdown = Breakdown(new, connections)
            del new
            await trio.to_thread.run_sync(loadgen.close_clients)
            nursery.cancel_scope.cancel()
    return (rss_after - rss_before) / connections, breakdown


def measure(connections: int = 2000, workers: int = 1) -> tuple[float, Breakdown]:
    """RSS growth per connection (KiB) and the breakdown, for ``connections`` idle
    observers of the benchmark Thing."""
    return trio.run(_measure, connections, workers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle_memory",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1,
                        help="load-generator processes")
    parser.add_argument("--types", type=int, default=5,
                        help="the largest object types listed per part")
    args = parser.parse_args(argv)
    rss, breakdown = measure(args.connections, args.workers)
    out: list[str] = [
        f"{args.connections} idle observers: RSS {rss:.2f} KiB per connection; Python "
        f"objects {breakdown.total / args.connections / 1024:.2f} KiB per connection",
        "", *breakdown.lines(args.types)]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
