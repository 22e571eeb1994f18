"""The scenarios: each call starts one server, loads it, measures, ends it, and returns
one record (a JSON-ready dict; :mod:`benchmarks.summary` takes medians and ratios).

=============== ===========================================================================
``max-rate``    the producer updates a property as fast as the server accepts; C observers
``sse``         ``max-rate`` over WebSocket and over Server-Sent Events, back to back, for
                the servers that serve both (trio-things): field ``transport``
``fixed-rate``  the producer updates it at a fixed rate (100 Hz); latency is sampled
``events``      the producer emits N events as fast as the server accepts; every one must
                arrive (events are lossless)
``isolation``   ``max-rate`` with one more client that never reads, against the same
                run without it
``memory``      C idle observers; the server's resident memory before and after
``admission``   C clients connect and observe while the producer already runs flat out:
                the seconds until every one is acknowledged, and the updates the producer
                made meanwhile (admission must not starve behind the fan-out, nor the
                fan-out behind admission)
=============== ===========================================================================

What every record says about CPU, and why: the machine is shared and small, so a figure
means little unless we know who had the CPU. ``server_cpu_share`` is the server's CPU
seconds per second of window (1.0 = one whole core; every server here is one thread);
``loadgen_cpu_share`` is the busiest load-generator worker's (1.0 = saturated: the load
generator, not the server, was the limit); ``other_cpu_share`` is what the rest of the
machine used meanwhile (other jobs, and kernel work not charged to a process).
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import attrs

from benchmarks.loadgen import (
    SSE,
    WEBSOCKET,
    LoadGenerator,
    Mark,
    Protocol,
    deltas,
    open_stalled_client,
)
from benchmarks.messages import EVENT, PROPERTY, Kind
from benchmarks.procs import ServerProcess, source_digest, start_server
from benchmarks.servers.control import Plan
from benchmarks.summary import percentile
from benchmarks.targets import Target

__all__ = ["SCENARIOS", "Bench", "Settings", "TooFewOpenFiles"]

HOST: Final = "127.0.0.1"
SCENARIOS: Final = ("max-rate", "sse", "fixed-rate", "events", "isolation", "memory",
                     "admission")
#: A worker (or the server) at this share of a core or more counts as saturated.
SATURATED: Final = 0.9
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")

Record = dict[str, Any]


@attrs.frozen(kw_only=True)
class Settings:
    """The sizes of one invocation (``--quick`` and the full run differ only here)."""

    runs: int = 3
    warmup: float = 1.0
    """Seconds of load before a window opens (connections and caches settle)."""
    window: float = 3.0
    max_rate_clients: tuple[int, ...] = (1, 10, 100, 500, 1000, 10_000)
    limit_clients: tuple[int, ...] | None = None
    """The C of ``max-rate`` at which the limits (``python-limit``, ``c-limit``) are
    measured too; ``None``: every C of ``max_rate_clients``."""
    sse_clients: tuple[int, ...] = (100, 500)
    """C of the ``sse`` scenario (WebSocket and SSE, each at C observers)."""
    fixed_rate: float = 100.0
    fixed_rate_clients: tuple[int, ...] = (1, 10, 100, 500, 1000)
    event_clients: int = 100
    event_count: int = 2000
    """Events per run: each of the ``event_clients`` must receive every one."""
    isolation_clients: int = 100
    isolation_window: float = 8.0
    isolation_write_timeout: float = 2.0
    """trio-things' ``write_timeout`` in the isolation scenario (its default is 10 s),
    so the stalled client is dropped well within the window. The references have none."""
    memory_clients: tuple[int, ...] = (1000, 5000, 10_000)
    admission_clients: tuple[int, ...] = (1000,)
    """C of the ``admission`` scenario: clients connecting while the producer runs."""
    rcvlowat: int = 4096
    """``SO_RCVLOWAT`` of the load generator's sockets where no latency is measured
    (see :meth:`benchmarks.loadgen.LoadGenerator.open`)."""
    latency_samples_per_s: int = 20_000
    """About how many frames a second the load generator decodes for their latency."""


@attrs.frozen(kw_only=True)
class Snapshot:
    """The load generator, the server and the machine, read at about the same moment."""

    mark: Mark
    stats: dict[str, Any]
    machine_busy: float
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""


def _machine_busy() -> float:
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def _snapshot(server: ServerProcess, loadgen: LoadGenerator) -> Snapshot:
    busy = _machine_busy()
    mark = loadgen.mark()
    return Snapshot(mark=mark, stats=server.stats(), machine_busy=busy)


def _latency(samples: list[float]) -> Record:
    if not samples:
        return {"latency_samples": 0, "latency_p50_ms": None, "latency_p99_ms": None,
                "latency_max_ms": None}
    ordered = sorted(samples)
    return {"latency_samples": len(ordered),
            "latency_p50_ms": percentile(ordered, 0.50) * 1e3,
            "latency_p99_ms": percentile(ordered, 0.99) * 1e3,
            "latency_max_ms": ordered[-1] * 1e3}


def _throughput(first: Snapshot, last: Snapshot) -> Record:
    """What happened between two snapshots: deliveries, updates, misses, CPU."""
    window = last.mark.time - first.mark.time
    received = deltas(first.mark.counts, last.mark.counts)
    deliveries = sum(received)
    updates = last.stats["updates"] - first.stats["updates"]
    misses = [min(1.0, max(0.0, 1.0 - r / updates)) for r in received] if updates else []
    server_cpu = last.stats["cpu"] - first.stats["cpu"]
    workers_cpu = [b - a for a, b in zip(first.mark.cpu, last.mark.cpu, strict=True)]
    busy = last.machine_busy - first.machine_busy
    loadgen_share = max(workers_cpu) / window
    server_share = server_cpu / window
    return {
        "window_s": window,
        "deliveries": deliveries,
        "deliveries_per_s": deliveries / window,
        "updates": updates,
        "updates_per_s": updates / window,
        "miss_mean": math.fsum(misses) / len(misses) if misses else None,
        "miss_max": max(misses) if misses else None,
        "server_cpu_share": server_share,
        "server_cpu_per_delivery_us": server_cpu / deliveries * 1e6 if deliveries else None,
        # The same split into the kernel's share and the rest (None from the C limit).
        **{f"server_{kind}_per_delivery_us": (
            (last.stats[kind] - first.stats[kind]) / deliveries * 1e6
            if deliveries and kind in last.stats and kind in first.stats else None)
           for kind in ("user", "system")},
        "loadgen_workers": len(workers_cpu),
        "loadgen_cpu_share": loadgen_share,
        "loadgen_cpu_per_delivery_us": (
            math.fsum(workers_cpu) / deliveries * 1e6 if deliveries else None),
        "other_cpu_share": max(0.0, busy - server_cpu - math.fsum(workers_cpu)) / window,
        "closed": last.mark.closed - first.mark.closed,
        "loadgen_saturated": loadgen_share >= SATURATED,
        # The machine was full and the server still had less than a core: it competed
        # for CPU (with the load generator or other jobs), so it was not the only limit.
        "server_starved": (server_share < SATURATED
                           and busy / window >= SATURATED * (os.cpu_count() or 1)),
    }


class TooFewOpenFiles(RuntimeError):
    """The open-files hard limit is too low for a scenario's C connections."""


def _check_open_files(clients: int) -> None:
    """Raise :class:`TooFewOpenFiles` if the hard limit on open files (which the server
    and each load-generator process raise their soft limit to) is below what
    ``clients`` connections need, with a reserve for everything else."""
    needed = clients + 64
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise TooFewOpenFiles(f"the open-files hard limit is {hard}; {clients} "
                              f"connections need about {needed}")


class Bench:
    """Runs scenarios against servers, with one load generator for the whole invocation."""

    def __init__(self, loadgen: LoadGenerator, settings: Settings) -> None:
        self.loadgen = loadgen
        self.settings = settings
        self._source = ""

    @contextmanager
    def _start(self, target: Target, write_timeout: float | None = None,
               ) -> Iterator[ServerProcess]:
        """Start ``target``, noting the digest of the trio_things sources it imports."""
        self._source = source_digest()
        with start_server(target.name, target.argv(write_timeout=write_timeout)) as server:
            yield server

    # ------------------------------------------------------------------ helpers

    @contextmanager
    def _serving(self, target: Target, clients: int, kind: Kind, *, sample_every: int = 0,
                 rcvlowat: int = 0, write_timeout: float | None = None,
                 transport: Protocol = WEBSOCKET) -> Iterator[ServerProcess]:
        """A server with ``clients`` acknowledged observers; all closed on exit."""
        _check_open_files(clients)
        path = target.path
        if transport == SSE:
            if target.sse_path is None:
                raise ValueError(f"{target.name} serves no event stream")
            path = target.sse_path
        with self._start(target, write_timeout) as server:
            try:
                self.loadgen.open(host=HOST, port=server.port, path=path, kind=kind,
                                  clients=clients, sample_every=sample_every,
                                  rcvlowat=rcvlowat, protocol=transport,
                                  timeout=max(30.0, clients / 50))
                yield server
            finally:
                self.loadgen.close_clients()

    def _base(self, scenario: str, target: Target, clients: int, run: int) -> Record:
        return {"scenario": scenario, "server": target.name, "clients": clients, "run": run,
                "time": time.time(), "trio_things_source": self._source}

    def _window(self, server: ServerProcess) -> tuple[Snapshot, Snapshot]:
        time.sleep(self.settings.warmup)
        first = _snapshot(server, self.loadgen)
        time.sleep(self.settings.window)
        return first, _snapshot(server, self.loadgen)

    # ------------------------------------------------------------------ scenarios

    def max_rate(self, target: Target, clients: int, run: int, *,
                 transport: Protocol = WEBSOCKET) -> Record:
        """Updates as fast as the server accepts: throughput, misses, CPU per delivery.
        No latency here: the load generator reads in batches (``rcvlowat``)."""
        with self._serving(target, clients, PROPERTY, rcvlowat=self.settings.rcvlowat,
                           transport=transport) as server:
            server.request({"op": "start", "plan": Plan(kind=PROPERTY).to_json()})
            first, last = self._window(server)
            server.request({"op": "stop"})
        return self._base("max-rate", target, clients, run) | _throughput(first, last)

    def sse(self, target: Target, clients: int, run: int) -> list[Record]:
        """``max-rate`` with C WebSocket observers and with C SSE consumers, back to back
        (a fresh server each), so their ratio is taken seconds apart; which goes first
        alternates by run, so a drift falls on both alike. Records in the order
        measured, scenario ``sse``, ``transport`` ``websocket`` or ``sse``."""
        order: tuple[Protocol, Protocol] = (WEBSOCKET, SSE) if run % 2 == 0 else (SSE, WEBSOCKET)
        return [self.max_rate(target, clients, run, transport=transport)
                | {"scenario": "sse", "transport": transport} for transport in order]

    def fixed_rate(self, target: Target, clients: int, run: int) -> Record:
        """Updates at ``settings.fixed_rate``: latency (publish to receive) and misses."""
        rate = self.settings.fixed_rate
        sample_every = max(1, round(clients * rate / self.settings.latency_samples_per_s))
        with self._serving(target, clients, PROPERTY, sample_every=sample_every) as server:
            server.request({"op": "start", "plan": Plan(kind=PROPERTY, rate=rate).to_json()})
            first, last = self._window(server)
            server.request({"op": "stop"})
        return (self._base("fixed-rate", target, clients, run) | {"rate": rate}
                | _throughput(first, last) | _latency(list(last.mark.samples))
                | {"sample_every": sample_every})

    def events(self, target: Target, clients: int, run: int, *,
               count: int | None = None) -> Record:
        """``count`` events as fast as the server accepts; wait until every client has
        every one (or nothing arrives for 3 s); count what was lost."""
        count = self.settings.event_count if count is None else count
        expected = clients * count
        with self._serving(target, clients, EVENT, rcvlowat=self.settings.rcvlowat) as server:
            first = _snapshot(server, self.loadgen)
            started = time.time()
            server.request({"op": "start", "plan": Plan(kind=EVENT, count=count).to_json()})
            deadline = time.monotonic() + max(30.0, expected / 5000)
            delivered, progressed = 0, time.monotonic()
            while time.monotonic() < deadline:
                time.sleep(0.05)
                mark = self.loadgen.mark()
                received = sum(deltas(first.mark.counts, mark.counts))
                if received >= expected:
                    break
                if received > delivered:
                    delivered, progressed = received, time.monotonic()
                elif time.monotonic() - progressed > 3.0:
                    break
            last = _snapshot(server, self.loadgen)
        record = self._base("events", target, clients, run) | _throughput(first, last)
        per_client = deltas(first.mark.counts, last.mark.counts)
        delivered = sum(per_client)
        elapsed = max(last.mark.last_frame - started, 1e-9)
        record |= {
            "events": count,
            "expected": expected,
            "lost": expected - delivered,
            "clients_missing_events": sum(n != count for n in per_client),
            "deliveries_per_s": delivered / elapsed,
            "elapsed_s": elapsed,
        }
        return record

    def isolation(self, target: Target, clients: int, run: int, *, stalled: bool) -> Record:
        """``max-rate`` from the first update on, with (``stalled``) or without one more
        client that never reads. Records the others' throughput every half second, and
        when the server closed the stalled client (its open descriptors drop by one)."""
        settings = self.settings
        with self._serving(target, clients, PROPERTY, rcvlowat=settings.rcvlowat,
                           write_timeout=settings.isolation_write_timeout) as server:
            sock = (open_stalled_client(host=HOST, port=server.port, path=target.path,
                                        kind=PROPERTY) if stalled else None)
            try:
                time.sleep(0.2)  # let the server register the stalled client
                descriptors, rss = server.open_fds(), server.rss_kib()
                first = _snapshot(server, self.loadgen)
                server.request({"op": "start", "plan": Plan(kind=PROPERTY).to_json()})
                started = time.time()
                closed_after: float | None = None
                timeline: list[tuple[float, float]] = []
                previous = first.mark
                end = time.monotonic() + settings.isolation_window
                next_mark = time.monotonic() + 0.5
                while (now := time.monotonic()) < end:
                    time.sleep(min(0.1, end - now))
                    if sock is not None and closed_after is None and (
                            server.open_fds() < descriptors):
                        closed_after = time.time() - started
                    if time.monotonic() >= next_mark:
                        mark = self.loadgen.mark()
                        rate = sum(deltas(previous.counts, mark.counts)) / (
                            mark.time - previous.time)
                        timeline.append((round(mark.time - started, 2), round(rate)))
                        previous, next_mark = mark, next_mark + 0.5
                last = _snapshot(server, self.loadgen)
                rss_growth = server.rss_kib() - rss
                server.request({"op": "stop"})
                log = [line for line in server.stderr_text().splitlines() if line.strip()]
            finally:
                if sock is not None:
                    sock.close()
        after = [rate for t, rate in timeline if closed_after is not None
                 and t > closed_after + 0.5]
        return self._base("isolation", target, clients, run) | _throughput(first, last) | {
            "stalled": stalled,
            "stalled_closed_after_s": closed_after,
            "deliveries_per_s_after_close": (math.fsum(after) / len(after)) if after else None,
            "timeline": timeline,
            "server_rss_growth_kib": rss_growth,
            "write_timeout_s": (settings.isolation_write_timeout
                                if target.takes_write_timeout else None),
            "server_log": log[:3],
        }

    def admission(self, target: Target, clients: int, run: int) -> Record:
        """C clients connect and observe while the producer updates the property as fast
        as the server accepts (from before the first connects): the seconds until every
        one is acknowledged, and what the producer and the server did meanwhile.

        Every observer acknowledged joins the fan-out at once, so the later ones are
        admitted while the server fans each update out to hundreds of others: a server
        that accepts or completes handshakes only between two fan-outs (one per scheduler
        round) admits slowly, one that does not take turns starves the producer."""
        _check_open_files(clients)
        with self._start(target) as server:
            server.request({"op": "start", "plan": Plan(kind=PROPERTY).to_json()})
            try:
                time.sleep(0.2)  # the producer is running (no observer yet: cheap)
                first = _snapshot(server, self.loadgen)
                started = time.monotonic()
                self.loadgen.open(host=HOST, port=server.port, path=target.path,
                                  kind=PROPERTY, clients=clients, rcvlowat=self.settings.rcvlowat,
                                  timeout=max(60.0, clients / 20))
                connect_s = time.monotonic() - started
                last = _snapshot(server, self.loadgen)
                server.request({"op": "stop"})
            finally:
                self.loadgen.close_clients()
        window = last.mark.time - first.mark.time
        server_cpu = last.stats["cpu"] - first.stats["cpu"]
        workers_cpu = [b - a for a, b in zip(first.mark.cpu, last.mark.cpu, strict=True)]
        return self._base("admission", target, clients, run) | {
            "connect_s": connect_s,
            "connections_per_s": clients / connect_s,
            "updates": last.stats["updates"] - first.stats["updates"],
            "updates_per_s": (last.stats["updates"] - first.stats["updates"]) / window,
            "deliveries": sum(last.mark.counts),
            "server_cpu_share": server_cpu / window,
            "loadgen_workers": len(workers_cpu),
            "loadgen_cpu_share": max(workers_cpu) / window,
            "other_cpu_share": max(0.0, last.machine_busy - first.machine_busy - server_cpu
                                   - math.fsum(workers_cpu)) / window,
        }

    def memory(self, target: Target, clients: int, run: int) -> Record:
        """Resident memory per idle observing connection (nothing is published)."""
        try:
            _check_open_files(clients)
        except TooFewOpenFiles as error:
            return self._base("memory", target, clients, run) | {"skipped": str(error)}
        with self._start(target) as server:
            time.sleep(0.3)
            before = server.rss_kib()
            started = time.monotonic()
            try:
                self.loadgen.open(host=HOST, port=server.port, path=target.path,
                                  kind=PROPERTY, clients=clients,
                                  timeout=max(60.0, clients / 20))
                connect_s = time.monotonic() - started
                time.sleep(1.0)
                after = server.rss_kib()
                descriptors = server.open_fds()
            finally:
                self.loadgen.close_clients()
        return self._base("memory", target, clients, run) | {
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": (after - before) / clients,
            "connect_s": connect_s,
            "server_open_fds": descriptors,
        }
