"""Fan-out through an MQTT broker beside the direct WebSocket fan-out: the server's CPU
per property update, and deliveries per second, for N subscribers.

``python -m benchmarks.mqtt [--subscribers 100,1000,5000] [--rounds 3] [--seconds 5]
[--rate 10] [--quick] [--write docs/benchmarks.md]`` (``make bench-mqtt``; about 4
minutes)

The claim (issue #15): with ``[server.mqtt]`` the server publishes each property change
**once**, to the broker, and the broker fans it out, so the server's CPU per update
stays flat as subscribers grow: at N = 5,000 within 1.2x of its cost at N = 100. The
direct WebSocket fan-out beside it costs the server about one socket write per
observer per update, so its cost grows with N.

What runs, every process started here and ended by its PID:

* **the broker**: Debian's Mosquitto (:class:`benchmarks.broker.Mosquitto`) on a free
  loopback port, one for the whole run, started with a soft limit of open files above
  the largest N (the usual 1,024 would stop it near a thousand clients). Its other
  settings are its defaults: ``max_queued_messages`` (1,000 per client) and
  ``max_inflight_messages`` (20) bound what waits for a slow client, and at this rate a
  subscriber would have to be a hundred seconds behind to reach them (it never is:
  *lost* says so), so raising them would change nothing measured here.
* **the server**: trio-things in a child process (``python -m benchmarks.mqtt serve``),
  serving :class:`benchmarks.things.BenchThing`, whose background task sets its
  ``tick`` property (``{"n": counter, "t": time}``) ``--rate`` times a second, through
  the public API, as a device would. For the MQTT path it runs with ``[server.mqtt]``
  (``broker`` the one above, ``qos`` from ``--qos``: 1 by default, the binding's
  default; every other setting the binding's default), and nobody observes it over
  WebSocket; for the WebSocket path it runs without a broker. A fresh server per
  measurement.
* **the subscribers**: :mod:`benchmarks.mqttload`, raw MQTT 3.1.1 subscribers of
  ``things/bench/properties/tick`` (QoS ``--subscriber-qos``, 0 by default: telemetry
  that may be coalesced needs no acknowledgement per delivery) in worker processes that
  count PUBLISH packets; or, for the WebSocket path, the fan-out benchmark's load
  generator (:mod:`benchmarks.loadgen`) observing the same property over the Web Thing
  Protocol. One worker process each by default (CPUs - 1). Both read each message as
  it arrives, as real consumers do, and drain every socket at each mark, so counts are
  exact. Not ``SO_RCVLOWAT``, which the fan-out benchmark uses at full speed: at 10
  updates a second a client that waits for 4 KiB answers the server's credit pings
  seconds late, so the server takes it for a slow reader and coalesces its values
  (``trio_things/protocol/credit.py``: a third of them were lost that way at N = 1,000),
  and the cost of waking a reader would move off the sender's writes on one path only.

The rate: fixed, the same for every N and both paths, so the only thing that changes
along a row is N. 10 updates a second is a telemetry rate, and N = 5,000 makes it
50,000 deliveries a second through the broker, or straight from the server: about what
this two-core, shared machine carries with the server, the broker and a load generator
on it at once. Where it carries less, the report shows it rather than hiding it: the
deliveries per second fall below updates x N, the backlog drains after the producer
stops (*drain*), and nothing is lost unless a subscriber really missed an update.

One measurement: the subscribers connect and get the retained value (MQTT) or their
acknowledgement (WebSocket); a mark; the producer starts at the rate; after
``--warmup`` seconds the window opens (a mark, the server's update count, the CPU
clocks), and closes ``--seconds`` later; the producer stops, the deliveries still on
their way arrive, and a last mark counts them. *Lost* is every update made times N,
less every message received since the first mark (0 when each subscriber got each
update once).

**Server CPU per update** is the server process's CPU time over the window divided by
the updates made in it. It is read from outside the process by its CPU-time clock
(``clock_getcpuclockid``): the same user + system time as ``utime + stime`` in
``/proc/<pid>/stat``, but in nanoseconds rather than 10 ms ticks. That matters here:
at 10 updates a second the MQTT path costs the server a few milliseconds of CPU a
second, below the resolution of ``/proc/<pid>/stat`` over any short window (each
record keeps that coarse figure too, over the whole measurement, as a cross-check).
The broker's CPU and the busiest load-generator worker's are read the same way.

Rounds interleave both paths and every N (the path measured first alternates by
round); the report gives medians over rounds, and the ratio of MQTT's cost at each N
to its cost at the smallest N is taken within each round (the machine is shared and
noisy: ratios within one run carry over, absolute figures much less).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal

import attrs

__all__ = ["MQTT", "QUICK", "WEBSOCKET", "Measurement", "Row", "Settings", "main",
           "process_cpu_seconds", "run", "summarize"]

Transport = Literal["mqtt", "websocket"]
MQTT: Final = "mqtt"
WEBSOCKET: Final = "websocket"
PATHS: Final[tuple[Transport, Transport]] = (MQTT, WEBSOCKET)
HOST: Final = "127.0.0.1"
#: The MQTT topic of the benchmark Thing's property (the binding's default prefix).
TOPIC: Final = "things/bench/properties/tick"
#: The WebSocket path the fan-out benchmark's load generator observes it at.
WS_PATH: Final = "/bench/ws"
#: Seconds between the subscribers being ready and the first mark: what a server sends
#: a new observer right after its acknowledgement (the current value) arrives meanwhile.
SETTLE: Final = 0.25
#: After the producer stops: the longest wait for deliveries still on their way, and
#: how long nothing may arrive before the rest counts as lost.
DRAIN_TIMEOUT: Final = 15.0
DRAIN_QUIET: Final = 2.0
#: The claim: the MQTT path's CPU per update at the largest N over its cost at the
#: smallest, at most.
TARGET: Final = 1.2
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


@attrs.frozen(kw_only=True)
class Settings:
    """The sizes of one invocation."""

    subscribers: tuple[int, ...] = (100, 1000, 5000)
    rounds: int = 3
    seconds: float = 5.0
    """The measurement window."""
    warmup: float = 1.0
    """Seconds of updates before the window opens."""
    rate: float = 10.0
    """Property updates a second."""
    qos: int = 1
    """The server's ``[server.mqtt] qos``: its publications to the broker."""
    subscriber_qos: int = 0
    """The QoS the MQTT subscribers ask for (what the broker delivers them at)."""
    workers: int = 1
    """Processes of each load generator."""
    paths: tuple[Transport, ...] = PATHS


QUICK: Final = Settings(subscribers=(10,), rounds=1, seconds=1.0, warmup=0.5)


# --------------------------------------------------------------------------- the server


def serve(broker: str | None, qos: int) -> None:
    """The server under test: prints ``{"port": ...}``, then obeys
    :mod:`benchmarks.servers.control` on stdin (``start`` a plan, ``stop``, ``stats``;
    ``stats`` also says whether the MQTT binding is connected), until its input ends."""
    import trio

    from benchmarks.messages import THING
    from benchmarks.servers.control import handle, raise_open_files_limit
    from benchmarks.servers.trio_things_server import serve_under_control
    from benchmarks.things import BenchThing
    from trio_things.config import ServerConfig
    from trio_things.protocol.mqtt import MqttConfig
    from trio_things.server import ThingServer

    raise_open_files_limit()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    thing = BenchThing()
    server = ThingServer(ServerConfig(
        host=HOST, port=0,
        mqtt=None if broker is None else MqttConfig(
            broker=broker, qos=qos, client_id=f"bench-server-{os.getpid()}"),
        # Every WebSocket observer connects from 127.0.0.1.
        max_connections_per_client=100_000, max_connections=100_000))
    server.add_thing(THING, thing)

    def reply(line: bytes) -> dict[str, Any]:
        answer = handle(thing, line)
        if "updates" in answer:
            bridge = server.mqtt
            answer |= {"mqtt_connected": bridge is not None and bridge.connected,
                       "mqtt_connections": 0 if bridge is None else bridge.connections,
                       **_outboxes(server)}
        return answer

    try:
        trio.run(serve_under_control, server, reply)
    except KeyboardInterrupt:
        pass


def _outboxes(server: Any) -> dict[str, int]:
    """What the Outboxes of the property's observers did: values written at once (the
    fast path), and values replaced by a newer one before they were written (coalesced:
    those never reach that observer). The MQTT binding's observer is one of them."""
    from benchmarks.messages import PROPERTY_NAME, THING
    from trio_things.fanout.observers import PROPERTY

    dispatcher = server._dispatcher
    if dispatcher is None:
        return {"coalesced": 0, "written_now": 0}
    observers = dispatcher.observers.get(THING, PROPERTY, PROPERTY_NAME)
    coalesced = written_now = 0
    for outbox in observers:
        statistics = outbox.statistics()
        coalesced += statistics.coalesced
        written_now += statistics.written_now
    return {"coalesced": coalesced, "written_now": written_now}


# --------------------------------------------------------------------------- CPU clocks


def _libc_clock_getcpuclockid() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.clock_getcpuclockid
    except (OSError, AttributeError):
        return None

    def clock_of(pid: int) -> int:
        clock = ctypes.c_int()
        if function(pid, ctypes.byref(clock)) != 0:
            raise OSError(f"clock_getcpuclockid({pid}) failed")
        return clock.value

    return clock_of


_CPU_CLOCK_OF: Final = _libc_clock_getcpuclockid()


def stat_cpu_seconds(pid: int) -> float:
    """``utime + stime`` of ``/proc/<pid>/stat`` (every thread; 10 ms ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (every thread), read from outside it by
    its CPU-time clock, in nanoseconds; ``/proc/<pid>/stat`` where that clock cannot be
    read."""
    if _CPU_CLOCK_OF is not None:
        try:
            return time.clock_gettime(_CPU_CLOCK_OF(pid))
        except OSError:
            pass
    return stat_cpu_seconds(pid)


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


# --------------------------------------------------------------------------- one measurement


@attrs.frozen(kw_only=True)
class Measurement:
    """One path at N subscribers, in one round."""

    path: Transport
    subscribers: int
    round: int
    window_s: float
    updates: int
    """Updates made in the window."""
    deliveries: int
    """Messages received in the window, by every subscriber."""
    server_cpu_s: float
    """The server's CPU seconds in the window (its CPU-time clock)."""
    server_stat_cpu_s: float
    """The server's ``utime + stime`` over the whole measurement, from
    ``/proc/<pid>/stat`` (10 ms ticks), beside ``server_clock_cpu_s``: a cross-check."""
    server_clock_cpu_s: float
    """The server's CPU-time clock over the same span as ``server_stat_cpu_s``."""
    broker_cpu_s: float | None
    """The broker's CPU seconds in the window (MQTT only)."""
    loadgen_cpu_s: float
    """The busiest load-generator worker's CPU seconds in the window."""
    machine_busy_s: float
    """CPU seconds the whole machine was busy in the window (every core)."""
    expected: int
    """Every update made, times N: what the subscribers should receive in all."""
    received: int
    drain_s: float
    """From the producer's stop to the last delivery: how far behind the subscribers
    were (0 when they kept up: the last update arrived before the stop)."""
    coalesced: int
    """Values the server's Outboxes replaced by a newer one before writing them: over
    WebSocket an observer's, over MQTT the binding's (a newer value came before its
    relay task took the previous one, or while ``in_flight`` publications waited for
    the broker). Property values coalesce by design: updates a subscriber never got."""
    closed: int
    """Subscribers whose connection ended during the measurement."""
    source: str = ""
    """A digest of the trio_things sources the server started with
    (:func:`benchmarks.procs.source_digest`): the tree may be edited during a run."""

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.window_s

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.window_s

    @property
    def cpu_per_update_us(self) -> float:
        return self.server_cpu_s / self.updates * 1e6 if self.updates else math.nan

    @property
    def server_cpu_share(self) -> float:
        return self.server_cpu_s / self.window_s

    @property
    def broker_cpu_per_delivery_us(self) -> float | None:
        if self.broker_cpu_s is None or not self.deliveries:
            return None
        return self.broker_cpu_s / self.deliveries * 1e6

    @property
    def loadgen_cpu_share(self) -> float:
        return self.loadgen_cpu_s / self.window_s

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self) | {
            "cpu_per_update_us": self.cpu_per_update_us,
            "deliveries_per_s": self.deliveries_per_s, "lost": self.lost}


@attrs.frozen
class _Point:
    """The load generator, the server, the broker and the machine at one moment."""

    time: float
    counts: tuple[int, ...]
    loadgen_cpu: tuple[float, ...]
    updates: int
    coalesced: int
    server_cpu: float
    broker_cpu: float | None
    machine_busy: float


@attrs.frozen
class _Mark:
    """A load generator's snapshot, whichever it is."""

    time: float
    counts: tuple[int, ...]
    cpu: tuple[float, ...]
    closed: int
    last_arrival: float
    """When the latest message arrived, on any worker (wall clock)."""


class _Counters:
    """What one measurement reads: a load generator's marks, and the CPU clocks."""

    def __init__(self, mark: Callable[[], _Mark], server: Any,
                 broker_pid: int | None) -> None:
        self._mark = mark
        self.server = server
        self.broker_pid = broker_pid

    def point(self, opening: bool) -> _Point:
        """A snapshot; ``opening`` (the window's start) asks the server for its count of
        updates before its CPU clock is read, the closing one after, so the window's
        CPU time holds neither request."""
        busy = _machine_busy()
        mark = self._mark()
        broker = None if self.broker_pid is None else process_cpu_seconds(self.broker_pid)
        if opening:
            stats = self.server.stats()
            server_cpu = process_cpu_seconds(self.server.pid)
        else:
            server_cpu = process_cpu_seconds(self.server.pid)
            stats = self.server.stats()
        return _Point(time=mark.time, counts=mark.counts, loadgen_cpu=mark.cpu,
                      updates=int(stats["updates"]), coalesced=int(stats["coalesced"]),
                      server_cpu=server_cpu, broker_cpu=broker, machine_busy=busy)

    def last(self) -> _Mark:
        return self._mark()


def _measure(counters: _Counters, path: Transport, subscribers: int, round_: int,
             settings: Settings) -> Measurement:
    """Run the producer over one window; count, then wait for what is on its way."""
    from benchmarks.messages import PROPERTY
    from benchmarks.servers.control import Plan

    server = counters.server
    time.sleep(SETTLE)
    stat_start, clock_start = stat_cpu_seconds(server.pid), process_cpu_seconds(server.pid)
    start = counters.point(opening=True)
    server.request({"op": "start", "plan": Plan(kind=PROPERTY, rate=settings.rate).to_json()})
    time.sleep(settings.warmup)
    first = counters.point(opening=True)
    time.sleep(settings.seconds)
    last = counters.point(opening=False)
    stopped = server.request({"op": "stop"})
    stopped_at = time.time()
    expected = (int(stopped["updates"]) - start.updates) * subscribers
    # What is still on its way: until everything arrived, or nothing more did for a
    # while (then the rest is lost), bounded.
    previous = counters.last()
    progressed, deadline = time.monotonic(), time.monotonic() + DRAIN_TIMEOUT
    while sum(previous.counts) - sum(start.counts) < expected:
        now = time.monotonic()
        if now > deadline or now - progressed > DRAIN_QUIET:
            break
        time.sleep(0.1)
        mark = counters.last()
        if mark.counts != previous.counts:
            progressed = time.monotonic()
        previous = mark
    stat_end, clock_end = stat_cpu_seconds(server.pid), process_cpu_seconds(server.pid)
    return Measurement(
        path=path, subscribers=subscribers, round=round_,
        window_s=last.time - first.time,
        updates=last.updates - first.updates,
        deliveries=sum(last.counts) - sum(first.counts),
        server_cpu_s=last.server_cpu - first.server_cpu,
        server_stat_cpu_s=stat_end - stat_start,
        server_clock_cpu_s=clock_end - clock_start,
        broker_cpu_s=(None if last.broker_cpu is None or first.broker_cpu is None
                      else last.broker_cpu - first.broker_cpu),
        loadgen_cpu_s=max(b - a for a, b in zip(first.loadgen_cpu, last.loadgen_cpu,
                                                 strict=True)),
        machine_busy_s=last.machine_busy - first.machine_busy,
        expected=expected,
        received=sum(previous.counts) - sum(start.counts),
        drain_s=max(0.0, previous.last_arrival - stopped_at),
        coalesced=int(stopped["coalesced"]) - start.coalesced,
        closed=previous.closed)


class Bench:
    """Both paths, with one broker and both load generators for the whole invocation."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.settings = settings
        self.folder = folder

    @contextmanager
    def running(self) -> Iterator[Bench]:
        from benchmarks.broker import Mosquitto
        from benchmarks.loadgen import LoadGenerator
        from benchmarks.mqttload import MqttSubscribers

        settings = self.settings
        biggest = max(settings.subscribers)
        self.broker = Mosquitto(self.folder, open_files=biggest + 1024)
        with self.broker, MqttSubscribers(settings.workers) as self.subscribers, \
                LoadGenerator(settings.workers) as self.loadgen:
            yield self

    def measure(self, path: Transport, subscribers: int, round_: int) -> Measurement:
        return (self.mqtt(subscribers, round_) if path == MQTT
                else self.websocket(subscribers, round_))

    def mqtt(self, subscribers: int, round_: int) -> Measurement:
        from benchmarks.procs import start_server

        settings = self.settings
        argv = ["-m", "benchmarks.mqtt", "serve", "--broker", self.broker.url,
                "--qos", str(settings.qos)]
        with start_server("trio-things-mqtt", argv) as server:
            deadline = time.monotonic() + 20.0
            while not server.stats()["mqtt_connected"]:
                if time.monotonic() > deadline:
                    raise server.error("the MQTT binding did not connect within 20 s")
                time.sleep(0.05)
            # The binding published the property's current value, retained, on
            # connecting: each subscriber is ready once it has that message.
            try:
                self.subscribers.open(host=HOST, port=self.broker.port, topic=TOPIC,
                                      subscribers=subscribers, qos=settings.subscriber_qos,
                                      timeout=max(30.0, subscribers / 50))

                def mark() -> _Mark:
                    m = self.subscribers.mark()
                    return _Mark(m.time, m.counts, m.cpu, m.closed, m.last_arrival)

                return _measure(_Counters(mark, server, self.broker.pid), MQTT,
                                subscribers, round_, settings)
            finally:
                self.subscribers.close_clients()

    def websocket(self, subscribers: int, round_: int) -> Measurement:
        from benchmarks.messages import PROPERTY
        from benchmarks.procs import start_server

        settings = self.settings
        with start_server("trio-things-ws", ["-m", "benchmarks.mqtt", "serve"]) as server:
            try:
                self.loadgen.open(host=HOST, port=server.port, path=WS_PATH, kind=PROPERTY,
                                  clients=subscribers,
                                  timeout=max(30.0, subscribers / 50))

                def mark() -> _Mark:
                    m = self.loadgen.mark()
                    return _Mark(m.time, m.counts, m.cpu, m.closed, m.last_frame)

                return _measure(_Counters(mark, server, None), WEBSOCKET, subscribers,
                                round_, settings)
            finally:
                self.loadgen.close_clients()


def run(settings: Settings, progress: Callable[[str], object] = print) -> list[Measurement]:
    """Every path at every N, ``settings.rounds`` times, interleaved; the path measured
    first alternates by round."""
    from benchmarks.procs import source_digest

    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as folder, \
            Bench(settings, Path(folder)).running() as bench:
        for round_ in range(settings.rounds):
            paths = settings.paths if round_ % 2 == 0 else tuple(reversed(settings.paths))
            for subscribers in settings.subscribers:
                for path in paths:
                    source = source_digest()
                    m = attrs.evolve(bench.measure(path, subscribers, round_), source=source)
                    if measurements and source != measurements[-1].source:
                        progress(f"WARNING: the trio_things sources changed ({source}); "
                                 "this figure measures different code")
                    measurements.append(m)
                    progress(_line(m))
    return measurements


# --------------------------------------------------------------------------- the figures


def _line(m: Measurement) -> str:
    broker = m.broker_cpu_per_delivery_us
    return (f"round {m.round + 1} {m.path:>9} N={m.subscribers:<5} "
            f"{m.cpu_per_update_us:8.1f} us/update  server CPU {m.server_cpu_share:4.0%}  "
            f"{m.deliveries_per_s:9,.0f} deliveries/s  {m.updates_per_s:5.1f} updates/s  "
            f"lost {m.lost} (coalesced {m.coalesced})  load gen {m.loadgen_cpu_share:4.0%}"
            + ("" if broker is None else f"  broker {broker:.1f} us/delivery")
            + f"  machine busy {m.machine_busy_s / m.window_s:.2f} cores")


@attrs.frozen(kw_only=True)
class Row:
    """Medians over rounds of one N, both paths (NaN where a path was not measured)."""

    subscribers: int
    mqtt_us: float
    websocket_us: float
    mqtt_ratio: float
    """MQTT's CPU per update at this N over its cost at the smallest N, paired by round."""
    websocket_ratio: float
    mqtt_deliveries: float
    websocket_deliveries: float
    offered: float
    """Updates a second times N: the deliveries a second that keep up."""
    mqtt_lost: int
    """The most any round lost."""
    websocket_lost: int
    broker_us: float
    """The broker's CPU per delivery."""
    loadgen_share: float
    """The busiest load-generator worker's CPU share, the highest over paths and rounds."""


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def summarize(measurements: Sequence[Measurement]) -> list[Row]:
    """One row per N, smallest first."""
    by: dict[tuple[str, int, int], Measurement] = {
        (m.path, m.subscribers, m.round): m for m in measurements}
    sizes = sorted({m.subscribers for m in measurements})
    rounds = sorted({m.round for m in measurements})
    smallest = sizes[0]

    def ratios(path: str, n: int) -> list[float]:
        return [by[path, n, r].cpu_per_update_us / by[path, smallest, r].cpu_per_update_us
                for r in rounds if (path, n, r) in by and (path, smallest, r) in by]

    rows = []
    for n in sizes:
        mqtt = [by[MQTT, n, r] for r in rounds if (MQTT, n, r) in by]
        ws = [by[WEBSOCKET, n, r] for r in rounds if (WEBSOCKET, n, r) in by]
        brokers = [b for m in mqtt if (b := m.broker_cpu_per_delivery_us) is not None]
        rows.append(Row(
            subscribers=n,
            mqtt_us=_median([m.cpu_per_update_us for m in mqtt]),
            websocket_us=_median([m.cpu_per_update_us for m in ws]),
            mqtt_ratio=_median(ratios(MQTT, n)),
            websocket_ratio=_median(ratios(WEBSOCKET, n)),
            mqtt_deliveries=_median([m.deliveries_per_s for m in mqtt]),
            websocket_deliveries=_median([m.deliveries_per_s for m in ws]),
            offered=_median([m.updates_per_s * n for m in [*mqtt, *ws]]),
            mqtt_lost=max((m.lost for m in mqtt), default=0),
            websocket_lost=max((m.lost for m in ws), default=0),
            broker_us=_median(brokers),
            loadgen_share=max((m.loadgen_cpu_share for m in [*mqtt, *ws]), default=0.0)))
    return rows


def _us(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f} us" if value >= 100 else f"{value:.1f} us"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _table(rows: Sequence[Row]) -> list[str]:
    first = f"{rows[0].subscribers:,}"
    lines = [
        f"| N | server CPU per update, MQTT | MQTT at N / at {first} | server CPU per "
        f"update, WebSocket | WebSocket at N / at {first} | deliveries/s, MQTT | "
        "deliveries/s, WebSocket | updates/s x N | lost, MQTT | lost, WebSocket | "
        "broker CPU per delivery |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row.subscribers:,} | {_us(row.mqtt_us)} | {_ratio(row.mqtt_ratio)} | "
        f"{_us(row.websocket_us)} | {_ratio(row.websocket_ratio)} | "
        f"{_rate(row.mqtt_deliveries)} | {_rate(row.websocket_deliveries)} | "
        f"{_rate(row.offered)} | {row.mqtt_lost} | {row.websocket_lost} | "
        f"{_us(row.broker_us)} |" for row in rows]
    return lines


def _round_table(measurements: Sequence[Measurement]) -> list[str]:
    lines = [
        "| round | N | path | server CPU per update | server CPU | updates/s | "
        "deliveries/s | lost | drain | broker CPU | load gen CPU | machine busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in sorted(measurements, key=lambda m: (m.subscribers, m.path, m.round)):
        broker = "-" if m.broker_cpu_s is None else f"{m.broker_cpu_s / m.window_s:.0%}"
        lines.append(
            f"| {m.round + 1} | {m.subscribers:,} | {m.path} | {_us(m.cpu_per_update_us)} | "
            f"{m.server_cpu_share:.1%} | {m.updates_per_s:.1f} | {m.deliveries_per_s:,.0f} | "
            f"{m.lost} | {m.drain_s:.2f} s | {broker} | {m.loadgen_cpu_share:.0%} | "
            f"{m.machine_busy_s / m.window_s:.2f} |")
    return lines


def _verdict(rows: Sequence[Row]) -> tuple[float, bool]:
    ratio = rows[-1].mqtt_ratio
    return ratio, ratio <= TARGET


def _section(rows: Sequence[Row], measurements: Sequence[Measurement], settings: Settings,
             command: str, elapsed: float) -> str:
    """The figures as a section of ``docs/benchmarks.md`` (benchmarks/page.py)."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ratio, met = _verdict(rows)
    first, largest = rows[0], rows[-1]
    cross = [m.server_stat_cpu_s / m.server_clock_cpu_s for m in measurements
             if m.server_clock_cpu_s >= 0.5]
    sources = sorted({m.source for m in measurements})
    lines = [
        "## Fan-out through an MQTT broker",
        "",
        "With `[server.mqtt]` the server publishes each property change once, to the "
        "broker, which fans it out to every subscriber; beside it, the same server "
        "pushing the changes to as many WebSocket observers itself. The server's CPU per "
        "update should stay flat as subscribers grow: at N = 5,000 within "
        f"{TARGET:g}x of its cost at N = 100.",
        "",
        f"Mosquitto {_mosquitto_version()} runs on this machine (loopback) with its "
        "defaults, but for a soft limit of open files above N: `max_queued_messages` "
        "(1,000 per client) and `max_inflight_messages` (20) bound what may wait for a "
        "slow client, and a subscriber would have to fall 100 s behind to reach them. "
        "The benchmark Thing's property changes "
        f"{settings.rate:g} times a second for every N and both paths; the server "
        f"publishes at QoS {settings.qos} (the binding's default) and the subscribers "
        "(raw MQTT 3.1.1 clients that count PUBLISH packets, in "
        f"{_processes(settings.workers)}) subscribe at QoS "
        f"{settings.subscriber_qos}; the WebSocket observers are the fan-out benchmark's "
        "load generator. *Server CPU per update* is the server process's CPU time (user "
        "+ system) over each window divided by the updates made in it; the ratios are a "
        f"path's cost at N over its cost at N = {first.subscribers:,}, paired by round. "
        f"Medians of {settings.rounds} rounds that interleave both paths and every N, "
        f"{settings.seconds:g} s windows after {settings.warmup:g} s of updates. *Lost* "
        "is the most any round lost: every update times N, less what arrived after the "
        f"producer stopped. Generated by `{command}` (`make bench-mqtt`) on {when}, "
        f"taking {elapsed / 60:.1f} minutes; the method is in `benchmarks/mqtt.py`.",
        "",
        *_table(rows),
        "",
        f"At N = {largest.subscribers:,} the server's CPU per update through the broker is "
        f"**{ratio:.2f}x** its cost at N = {first.subscribers:,} (the target is "
        f"{TARGET:g}x or less: {'met' if met else 'NOT met'}). The binding publishes each "
        "change once, whatever the number of subscribers, so the server pays for one "
        "publication (a PUBLISH written to the broker, its PUBACK read); the broker pays "
        "for the fan-out (its CPU per delivery is the last column). Over WebSocket the "
        "server writes to every observer itself, so its cost grows with N: "
        f"{_ratio(largest.websocket_ratio)} from N = {first.subscribers:,} to "
        f"{largest.subscribers:,}.",
        "",
        "At this rate most of an update's cost is waking up for it, in the server as in "
        "the broker: system calls and a cold process, not the binding's Python (py-spy "
        "on the MQTT path at 100 updates a second found about half of the server's time "
        "in the `send` to the broker and a third in `epoll_wait`). Where the machine "
        "did not keep up, the "
        "figures say so: deliveries/s below updates/s x N (the broker, or the server, "
        "fell behind in the window), *drain* (from the producer's stop to the last "
        "delivery: zero when the subscribers kept up) above zero, and updates/s below "
        f"{settings.rate:g} (the server's producer was late). *Machine busy* is every "
        "core's busy time over the window (2.00: both cores full), other jobs on this "
        "shared machine included.",
    ]
    if cross:
        lines += [
            "",
            "CPU times are read from outside each process by its CPU-time clock "
            "(`clock_getcpuclockid`): the user + system time of `/proc/<pid>/stat`'s "
            "`utime + stime`, in nanoseconds instead of 10 ms ticks, which matters when "
            "the MQTT path costs the server about 10 ms a second. Over the measurements "
            "long enough for the ticks not to matter, the two agreed within "
            f"{max(abs(1 - c) for c in cross):.0%}.",
        ]
    if len(sources) > 1:
        lines += [
            "",
            f"The trio_things sources changed during the run (other work in the same "
            f"tree): its measurements ran on {len(sources)} versions of the code.",
        ]
    lines += [
        "",
        f"Each round (the busiest load-generator worker used at most "
        f"{max(row.loadgen_share for row in rows):.0%} of a core, so the load generators "
        "were not the limit):",
        "",
        *_round_table(measurements),
    ]
    return "\n".join(lines)


def _processes(n: int) -> str:
    return "one worker process" if n == 1 else f"{n} worker processes"


def _mosquitto_version() -> str:
    import subprocess

    from benchmarks.broker import mosquitto_binary

    try:
        out = subprocess.run([mosquitto_binary(), "-h"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError, AssertionError):
        return "(version unknown)"
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("mosquitto version ") or "(version unknown)"


def _print_table(rows: Sequence[Row]) -> None:
    print()
    print("\n".join(_table(rows)))
    ratio, met = _verdict(rows)
    print(f"\nMQTT: server CPU per update at N = {rows[-1].subscribers} is {ratio:.2f}x "
          f"its cost at N = {rows[0].subscribers} (target <= {TARGET:g}x: "
          f"{'met' if met else 'NOT met'})")


def _csv_ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mqtt",
                                     description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="(internal) the server under test")
    serve_parser.add_argument("--broker", help="mqtt://127.0.0.1:PORT (default: none)")
    serve_parser.add_argument("--qos", type=int, default=1)
    defaults = Settings()
    parser.add_argument("--subscribers", type=_csv_ints, default=None,
                        help="numbers of subscribers, comma-separated (default "
                             + ",".join(map(str, defaults.subscribers)) + ")")
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"rounds (medians over them; default {defaults.rounds})")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"the measurement window (default {defaults.seconds:g})")
    parser.add_argument("--warmup", type=float, default=None,
                        help=f"seconds of updates before it (default {defaults.warmup:g})")
    parser.add_argument("--rate", type=float, default=None,
                        help=f"property updates a second (default {defaults.rate:g})")
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=None,
                        help="the server's [server.mqtt] qos (default 1)")
    parser.add_argument("--subscriber-qos", type=int, choices=(0, 1), default=None,
                        help="the QoS the MQTT subscribers ask for (default 0)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes of each load generator (default: CPUs - 1)")
    parser.add_argument("--paths", default=None,
                        help="mqtt,websocket (default both)")
    parser.add_argument("--quick", action="store_true",
                        help="10 subscribers, 1 s windows, 1 round (a smoke run); "
                             "writes nothing")
    parser.add_argument("--jsonl", type=Path, help="also write every measurement here")
    parser.add_argument("--write", type=Path, metavar="PAGE",
                        help="also write the figures as the MQTT section of PAGE "
                             "(docs/benchmarks.md), keeping the rest of it")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.broker, args.qos)
        return 0
    settings = QUICK if args.quick else defaults
    overrides: dict[str, Any] = {
        "subscribers": args.subscribers, "rounds": args.rounds, "seconds": args.seconds,
        "warmup": args.warmup, "rate": args.rate, "qos": args.qos,
        "subscriber_qos": args.subscriber_qos,
        "workers": args.workers if args.workers is not None else max(
            1, (os.cpu_count() or 2) - 1),
        "paths": None if args.paths is None else tuple(
            p for p in PATHS if p in args.paths.split(",")),
    }
    settings = attrs.evolve(settings, **{k: v for k, v in overrides.items() if v is not None})
    if not settings.paths:
        parser.error("--paths: choose mqtt, websocket or both")
    started = time.monotonic()
    print(f"MQTT fan-out beside WebSocket: {settings.rate:g} updates/s, N = "
          f"{', '.join(map(str, settings.subscribers))}, {settings.rounds} round(s) of "
          f"{settings.seconds:g} s windows; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    measurements = run(settings, progress=lambda line: print(line, flush=True))
    rows = summarize(measurements)
    _print_table(rows)
    if args.jsonl is not None:
        import json

        args.jsonl.write_text("".join(json.dumps(m.to_json()) + "\n" for m in measurements))
    if args.write is not None and not args.quick:
        from benchmarks.page import replace_section

        python = os.path.relpath(sys.executable)
        command = " ".join([python if not python.startswith("..") else "python",
                            "-m", "benchmarks.mqtt", *argv])
        section = _section(rows, measurements, settings, command,
                           time.monotonic() - started)
        args.write.write_text(replace_section(
            args.write.read_text() if args.write.exists() else "", "mqtt", section))
        print(f"wrote the MQTT section of {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
