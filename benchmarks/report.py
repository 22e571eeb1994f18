"""For people: Markdown tables (``docs/benchmarks.md``), a plot (``docs/benchmarks.png``)
and the description of the machine the figures come from.

Every table is built from :class:`benchmarks.summary.Records`: medians over runs, and
ratios between servers paired by run. The page is generated whole; edit this module,
not the page.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.scenarios import Settings
from benchmarks.summary import Records, paired_ratio, select
from benchmarks.targets import LIMITS, TARGETS

__all__ = ["SSE_TARGET", "TRANSPORTS", "describe_machine", "markdown", "plot", "sse_ratio"]

_PACKAGES = ("trio-things", "trio", "trio-websocket", "wsproto", "h11", "orjson", "attrs",
             "cattrs", "websockets", "matplotlib")
_REFERENCES = ("naive", "broadcast")
_SUBJECT = "trio-things"
#: The limits trio-things' max-rate figures are read against, and how the page names the
#: fraction: always columns of their own (``-`` where a record set has no limit figures).
_LIMITS = {"python-limit": "fraction of the Python limit", "c-limit": "fraction of the C limit"}
_LIMIT_NAMES = frozenset(t.name for t in LIMITS)
#: Other work using this share of a core during a window is worth a note beside a figure.
BUSY_OTHERS = 0.25
#: The ``transport`` of an ``sse`` record, as the page names it.
TRANSPORTS = {"websocket": "WebSocket", "sse": "SSE"}
#: SSE over WebSocket deliveries/s that trio-things aims at (the page says whether it
#: was met; nothing fails on it).
SSE_TARGET = 0.8


def describe_machine() -> dict[str, Any]:
    """What a reader needs to judge the figures: CPUs, memory, kernel, versions, load."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
            memory_gib = round(kib / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    versions: dict[str, str | None] = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": memory_gib,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


# ---------------------------------------------------------------------- formatting


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.1f}k"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} us"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _flags(records: Records, **match: Any) -> str:
    """Why a figure may understate the server: the load generator or the machine."""
    chosen = select(records.all, **match)
    notes = []
    saturated = sum(bool(r.get("loadgen_saturated")) for r in chosen)
    starved = sum(bool(r.get("server_starved")) for r in chosen)
    busy = sum((r.get("other_cpu_share") or 0) >= BUSY_OTHERS for r in chosen)
    if saturated:
        notes.append(f"load generator saturated ({saturated}/{len(chosen)})")
    if starved:
        notes.append(f"server short of CPU ({starved}/{len(chosen)})")
    if busy:
        notes.append(f"others used the CPU ({busy}/{len(chosen)})")
    return "; ".join(notes)


# ---------------------------------------------------------------------- sections


def _servers(records: Records) -> list[str]:
    present = {r["server"] for r in records.all}
    return [name for name in TARGETS if name in present]


def _clients(records: Records, scenario: str) -> list[int]:
    return sorted({r["clients"] for r in records.all if r["scenario"] == scenario})


def _headline(records: Records, settings: Settings) -> list[str]:
    servers = [s for s in _servers(records) if s not in _LIMIT_NAMES]
    refs = [ref for ref in _REFERENCES if ref in servers]
    subject = _SUBJECT in servers
    header = ["figure", *servers] + [f"{_SUBJECT} / {ref}" for ref in refs if subject]
    header += list(_LIMITS.values()) if subject else []
    rows: list[list[str]] = []

    def row(label: str, field: str, scenario: str, clients: int,
            fmt: Callable[[float | None], str], *, limits: bool = False,
            **extra: Any) -> None:
        if not records.count(scenario=scenario, clients=clients, **extra):
            return
        cells = [fmt(records.median(field, scenario=scenario, clients=clients, server=s,
                                    **extra)) for s in servers]
        if subject:
            cells += [_ratio(records.ratio(field, scenario, clients, _SUBJECT, ref, **extra))
                      for ref in refs]
            cells += [_ratio(records.ratio(field, scenario, clients, _SUBJECT, limit, **extra))
                      if limits else "-" for limit in _LIMITS]
        rows.append([label, *cells])

    for clients in _clients(records, "max-rate"):
        row(f"max-rate deliveries/s, C = {clients}", "deliveries_per_s", "max-rate", clients,
            _rate, limits=True)
    for clients in _clients(records, "max-rate"):
        row(f"max-rate server CPU per delivery, C = {clients}", "server_cpu_per_delivery_us",
            "max-rate", clients, _us)
    rate = f"{settings.fixed_rate:g} Hz"
    for clients in _clients(records, "fixed-rate"):
        row(f"{rate} p99 latency, C = {clients}", "latency_p99_ms", "fixed-rate", clients,
            _ms)
    for clients in _clients(records, "events"):
        row(f"events deliveries/s, C = {clients}", "deliveries_per_s", "events", clients,
            _rate)
        row(f"events lost, C = {clients}", "lost", "events", clients,
            lambda v: _number(v, 0))
    if records.count(scenario="isolation"):
        cells = [_ratio(records.isolation_ratio(s)) for s in servers]
        rows.append(["isolation: others' throughput with a stalled client / without",
                     *cells] + ["" for _ in [*refs, *_LIMITS] if subject])
    for clients in _clients(records, "memory"):
        row(f"RSS per idle observer, C = {clients}", "kib_per_connection", "memory", clients,
            lambda v: "-" if v is None else f"{v:.1f} KiB")
    for clients in _clients(records, "admission"):
        row(f"seconds for {clients:,} clients to connect and observe, producer at full "
            "speed", "connect_s", "admission", clients, _seconds)
    return _table(header, rows)


#: The columns of a max-rate row after its first ones (C, server or transport).
_RATE_COLUMNS = ["deliveries/s", "updates/s", "missed per observer",
                 "server CPU per delivery", "server CPU", "load gen CPU (busiest worker)",
                 "others' CPU", "notes"]


def _rate_figures(records: Records, match: dict[str, object]) -> list[str]:
    """The medians of one max-rate row, in the order of ``_RATE_COLUMNS``."""
    return [
        _rate(records.median("deliveries_per_s", **match)),
        _rate(records.median("updates_per_s", **match)),
        _percent(records.median("miss_mean", **match)),
        _us(records.median("server_cpu_per_delivery_us", **match)),
        _percent(records.median("server_cpu_share", **match)),
        _percent(records.median("loadgen_cpu_share", **match)),
        _percent(records.median("other_cpu_share", **match)),
        _flags(records, **match),
    ]


def _max_rate(records: Records) -> list[str]:
    rows = []
    for clients in _clients(records, "max-rate"):
        for server in _servers(records):
            match: dict[str, object] = {"scenario": "max-rate", "clients": clients,
                                        "server": server}
            if records.count(**match):
                rows.append([str(clients), server, *_rate_figures(records, match)])
    return _table(["C", "server", *_RATE_COLUMNS], rows)


def _ratios(records: Records, scenario: str, field: str) -> list[str]:
    """trio-things over each reference and each limit, and the Python limit over the C
    one (how much of the machine pure Python can use), paired by run; a limit not
    measured (older records, no compiler) shows ``-``."""
    servers = _servers(records)
    if _SUBJECT not in servers:
        return []
    refs = [ref for ref in _REFERENCES if ref in servers]
    python, c = _LIMITS
    rows = [[str(clients)]
            + [_ratio(records.ratio(field, scenario, clients, _SUBJECT, ref)) for ref in refs]
            + [_ratio(records.ratio(field, scenario, clients, _SUBJECT, limit))
               for limit in _LIMITS]
            + [_ratio(records.ratio(field, scenario, clients, python, c))]
            for clients in _clients(records, scenario)]
    return _table(["C"] + [f"{_SUBJECT} / {ref}" for ref in [*refs, *_LIMITS]]
                  + [f"{python} / {c}"], rows)


def _skipped(records: Records, scenario: str) -> list[str]:
    lines = []
    for record in records.skipped():
        if record["scenario"] == scenario:
            lines.append(f"Skipped: {record['scenario']} C = {record['clients']} "
                         f"({record['server']}, run {record['run'] + 1}): "
                         f"{record['skipped']}.")
    return [*lines, ""] if lines else []


def sse_ratio(records: Records, field: str, clients: int) -> float | None:
    """SSE over WebSocket on ``field`` in the ``sse`` scenario at C = ``clients``, paired
    by run (one server serves both: trio-things)."""
    match = {"scenario": "sse", "clients": clients, "server": _SUBJECT}
    return paired_ratio(records.all, field, match | {"transport": "sse"},
                        match | {"transport": "websocket"})


def _sse_headline(records: Records) -> list[str]:
    clients = _clients(records, "sse")
    ratios = [(c, sse_ratio(records, "deliveries_per_s", c)) for c in clients]
    ratios = [(c, r) for c, r in ratios if r is not None]
    if not ratios:
        return []
    figures = ", ".join(f"{_ratio(r)} at C = {c}" for c, r in ratios)
    return [f"Over Server-Sent Events, trio-things' deliveries/s are its WebSocket figure "
            f"times {figures} (paired by run; the target is {SSE_TARGET:g}x or more): see "
            "[Server-Sent Events](#server-sent-events).", ""]


def _sse(records: Records) -> list[str]:
    rows = []
    for clients in _clients(records, "sse"):
        for transport, name in TRANSPORTS.items():
            match: dict[str, object] = {"scenario": "sse", "clients": clients,
                                        "server": _SUBJECT, "transport": transport}
            if records.count(**match):
                rows.append([str(clients), name, *_rate_figures(records, match)])
    lines = _table(["C", "transport", *_RATE_COLUMNS], rows)
    ratios = []
    for clients in _clients(records, "sse"):
        deliveries = sse_ratio(records, "deliveries_per_s", clients)
        ratios.append([
            str(clients), _ratio(deliveries),
            "-" if deliveries is None else ("yes" if deliveries >= SSE_TARGET else "**no**"),
            _ratio(sse_ratio(records, "server_cpu_per_delivery_us", clients)),
        ])
    lines += ["SSE over WebSocket, paired by run:", ""]
    lines += _table(["C", "deliveries/s", f"at least {SSE_TARGET:g}x", "server CPU per delivery"],
                    ratios)
    return lines


def _fixed_rate(records: Records) -> list[str]:
    rows = []
    for clients in _clients(records, "fixed-rate"):
        for server in _servers(records):
            match = {"scenario": "fixed-rate", "clients": clients, "server": server}
            if not records.count(**match):
                continue
            rows.append([
                str(clients), server,
                _ms(records.median("latency_p50_ms", **match)),
                _ms(records.median("latency_p99_ms", **match)),
                _ms(records.median("latency_max_ms", **match)),
                _percent(records.median("miss_mean", **match)),
                _rate(records.median("updates_per_s", **match)),
                _rate(records.median("deliveries_per_s", **match)),
                _percent(records.median("server_cpu_share", **match)),
                _percent(records.median("loadgen_cpu_share", **match)),
                _flags(records, **match),
            ])
    return _table(["C", "server", "p50", "p99", "max", "missed per observer", "updates/s",
                   "deliveries/s", "server CPU", "load gen CPU", "notes"], rows)


def _events(records: Records) -> list[str]:
    rows = []
    for clients in _clients(records, "events"):
        for server in _servers(records):
            match = {"scenario": "events", "clients": clients, "server": server}
            if not records.count(**match):
                continue
            lost = [r.get("lost") for r in records.all
                    if all(r.get(k) == v for k, v in match.items()) and "error" not in r]
            rows.append([
                str(clients), server,
                _number(records.median("events", **match), 0),
                _rate(records.median("deliveries_per_s", **match)),
                ", ".join(str(n) for n in lost),
                _number(records.median("closed", **match), 0),
                _us(records.median("server_cpu_per_delivery_us", **match)),
                _percent(records.median("loadgen_cpu_share", **match)),
                _flags(records, **match),
            ])
    return _table(["C", "server", "events per run", "deliveries/s", "lost (each run)",
                   "clients closed", "server CPU per delivery", "load gen CPU", "notes"], rows)


def _isolation(records: Records) -> list[str]:
    rows = []
    for server in _servers(records):
        with_stall = {"scenario": "isolation", "server": server, "stalled": True}
        without = {"scenario": "isolation", "server": server, "stalled": False}
        if not records.count(**with_stall):
            continue
        closes = [r.get("stalled_closed_after_s") for r in records.all
                  if all(r.get(k) == v for k, v in with_stall.items()) and "error" not in r]
        closed = ", ".join("not closed" if c is None else f"{c:.1f} s" for c in closes)
        rows.append([
            server,
            _rate(records.median("deliveries_per_s", **without)),
            _rate(records.median("deliveries_per_s", **with_stall)),
            _ratio(records.isolation_ratio(server)),
            closed,
            _ratio(records.isolation_ratio(server, "deliveries_per_s_after_close")),
            _number(records.median("server_rss_growth_kib", **with_stall), 0),
        ])
    return _table(["server", "others' deliveries/s without", "with a stalled client",
                   "ratio", "stalled client closed after (each run)",
                   "ratio once it was closed", "server RSS growth (KiB)"], rows)


def _memory(records: Records) -> list[str]:
    rows = []
    for clients in _clients(records, "memory"):
        for server in _servers(records):
            match = {"scenario": "memory", "clients": clients, "server": server}
            if not records.count(**match):
                continue
            rows.append([
                str(clients), server,
                _number(records.median("rss_before_kib", **match), 0),
                _number(records.median("rss_after_kib", **match), 0),
                _number(records.median("kib_per_connection", **match)),
                _number(records.median("connect_s", **match)),
            ])
    return _table(["C", "server", "RSS before (KiB)", "RSS with C idle observers (KiB)",
                   "KiB per connection", "seconds to connect all"], rows) + _skipped(
                       records, "memory")


def _admission(records: Records) -> list[str]:
    rows = []
    for clients in _clients(records, "admission"):
        for server in _servers(records):
            match = {"scenario": "admission", "clients": clients, "server": server}
            if not records.count(**match):
                continue
            times = [r.get("connect_s") for r in select(records.all, **match)]
            rows.append([
                str(clients), server,
                _seconds(records.median("connect_s", **match)),
                ", ".join(_seconds(t) for t in times),
                _rate(records.median("connections_per_s", **match)),
                _rate(records.median("updates_per_s", **match)),
                _percent(records.median("server_cpu_share", **match)),
                _percent(records.median("loadgen_cpu_share", **match)),
                _flags(records, **match),
            ])
    return _table(["C", "server", "seconds to connect all", "each run", "connections/s",
                   "updates/s meanwhile", "server CPU", "load gen CPU", "notes"], rows) + (
                       _skipped(records, "admission"))


def _workers(records: Records) -> str:
    counts = {r["loadgen_workers"] for r in records.all if "loadgen_workers" in r}
    return ", ".join(str(n) for n in sorted(counts)) or "-"


def _sources(records: Records) -> str:
    sources = sorted({r["trio_things_source"] for r in records.all
                      if r.get("trio_things_source")})
    return ", ".join(f"`{s}`" for s in sources) or "unknown"


def _machine(machine: dict[str, Any]) -> list[str]:
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items()
                         if version)
    load = ", ".join(str(x) for x in machine["load_average"])
    return [
        f"- CPUs: {machine['cpus']} x {machine['cpu_model']}; memory "
        f"{machine['memory_gib']} GiB",
        f"- {machine['kernel']}, {machine['python']}",
        f"- {packages}",
        f"- load average when the run began: {load}",
        "",
    ]


def markdown(records: Records, *, machine: dict[str, Any], command: str, settings: Settings,
             started: datetime.datetime, elapsed: float, figure: str | None) -> str:
    """The whole page."""
    rate = f"{settings.fixed_rate:g} Hz"
    lines = [
        "# Fan-out benchmarks",
        "",
        "How fast trio-things pushes property changes and events to WebSocket observers, "
        "beside two reference servers measured in the same invocation, with the same load "
        "generator and payload. Every comparison is a ratio between servers measured in "
        "this invocation (the median of per-run ratios: each run measures every server back "
        "to back); absolute figures are medians over runs, for scale only, since this is a "
        "shared, noisy machine.",
        "",
        "Generated by `python -m benchmarks.fanout` (`make bench`); `make bench-quick` runs "
        "a small version in under a minute and writes nothing here; `python -m "
        "benchmarks.fanout --render docs/benchmarks.jsonl` rebuilds this page from the saved "
        "records. The figures came from:",
        "",
        "```sh",
        command,
        "```",
        "",
        f"on {started:%Y-%m-%d %H:%M} UTC, taking {elapsed / 60:.1f} minutes; "
        f"{settings.runs} run(s) of every figure. The raw records are in "
        "`docs/benchmarks.jsonl` (one JSON object per measurement).",
        "",
        "## Headline",
        "",
        "Medians over runs; the last columns are trio-things' figure over the reference's, "
        "paired by run. Above 1 is better for deliveries/s and worse for CPU, latency, "
        "memory and time. The two *fraction of the limit* columns read trio-things' deliveries/s "
        "against the fastest fan-out pure Python can do and against the same in C (see "
        "[Property at full speed](#property-at-full-speed)); `-` where a limit was not "
        "measured.",
        "",
        *_headline(records, settings),
        *_sse_headline(records),
    ]
    if figure:
        lines += [f"![Deliveries per second at full speed, and p99 latency at {rate}, "
                  f"against the number of observers]({figure})", ""]
    sources = sorted({r["trio_things_source"] for r in records.all
                      if r.get("trio_things_source")})
    if len(sources) > 1:
        lines[lines.index("## Headline"):lines.index("## Headline")] = [
            f"**Warning: the trio_things sources changed during this invocation** "
            f"({len(sources)} versions: {', '.join(sources)}), so these figures mix them. "
            "Measure again on a tree nobody is editing.", ""]
    errors = records.errors()
    if errors:
        lines += ["Measurements that failed (not in the tables):", ""]
        lines += [f"- {e['scenario']} C = {e['clients']} {e['server']} run {e['run']}: "
                  f"{e['error'].splitlines()[0]}" for e in errors]
        lines += [""]
    lines += [
        "## The servers",
        "",
        *[f"- **{t.name}**: {t.description}." for t in TARGETS.values()
          if t.name in _servers(records)],
        "",
        "Every one serves `ws://127.0.0.1:PORT/...` with the subprotocol `webthingprotocol`, "
        "takes one `observeproperty` (or `subscribeevent`) request and answers it, then "
        "pushes "
        'text frames whose value is `{"n": counter, "t": publish time}`. trio-things sends '
        "Web Thing Protocol notifications of its benchmark Thing "
        "(`benchmarks/things.py`); the references send the same JSON structure with ids of "
        "the same length, encoded once per update. Each server is a separate process with one "
        "thread. The two limits (`benchmarks/servers/python_limit.py`, `c_limit.c`) are no "
        "servers one would deploy: they take part in the full-speed scenario only, to show "
        "how far from the limit of Python, and of the machine, every other figure is.",
        "",
        "## Property at full speed",
        "",
        "The producer updates the property as fast as the server accepts (trio-things and the "
        "naive server yield to their scheduler after each update; broadcast after each "
        "`broadcast()`). *Missed per observer* is 1 - frames received / updates made: "
        "trio-things coalesces (an observer that is behind gets the latest value), the "
        "naive server makes the producer wait for every client, broadcast buffers without "
        "bound. *Server CPU per delivery* is the server's CPU time over frames received.",
        "",
        "The limits: *python-limit* is one `selectors` loop whose producer builds each "
        "update's frame once and calls a bare non-blocking `sock.send(frame)` for each "
        "client in turn; *c-limit* is the same in C (`cc -O2`, epoll, `send`), built by the "
        "benchmark when a C compiler is present. Neither has any backpressure (a client "
        "whose socket buffer is full misses the update) or anything else per delivery; both "
        "set `TCP_NODELAY`, as asyncio and Trio do, so every frame goes out at once. The C "
        "limit's cost per delivery is almost all the kernel's.",
        "",
        *_max_rate(records),
        *_skipped(records, "max-rate"),
        "Ratios of deliveries/s, paired by run (the last column: how much of the machine's "
        "limit pure Python reaches):",
        "",
        *_ratios(records, "max-rate", "deliveries_per_s"),
    ]
    if records.count(scenario="sse"):
        lines += [
            "## Server-Sent Events",
            "",
            "The full-speed scenario for trio-things alone, with C WebSocket observers and "
            "with C consumers of the property's event stream (`GET /bench/tick`, `Accept: "
            "text/event-stream`), back to back in each run (a fresh server each; which goes "
            "first alternates by run). Both go through the same fan-out (encode once per "
            "update, the Outbox, the fast-path write); an SSE message is `id: <id>` and "
            "`data: <the bare value>`, one HTTP chunk, where a WebSocket frame carries a "
            "whole Web Thing Protocol notification, so SSE writes fewer bytes per delivery.",
            "",
            *_sse(records),
        ]
    lines += [
        f"## Property at {rate}",
        "",
        "Latency is receive time minus the publish time the frame carries (both this "
        "machine's clock), over a sample of frames (at most about "
        f"{settings.latency_samples_per_s:,} a second); *max* is the largest sampled. "
        f"*updates/s* is the rate the producer achieved: a server that cannot deliver "
        f"{rate} to every observer coalesces (trio-things: *missed*) or, when the producer "
        "waits for every client (naive), publishes less often.",
        "",
        *_fixed_rate(records),
        "## Events",
        "",
        "The producer emits a fixed number of events as fast as the server accepts; events "
        "are history, so every observer must receive every one. *deliveries/s* counts from "
        "the first emit to the last frame received.",
        "",
        *_events(records),
        "## A client that never reads",
        "",
        "The full-speed scenario, once as it is and once with one more client that subscribes "
        "and then never reads (a 4 KiB receive buffer). The throughput is the other "
        "observers', from the first update on, over "
        f"{settings.isolation_window:g} s. trio-things runs with "
        f"`write_timeout = {settings.isolation_write_timeout:g}` s here (its default is 10 s) "
        "so that the close falls in the window; the references have no such setting. "
        "*Closed after* is when the server's count of open descriptors dropped.",
        "",
        *_isolation(records),
        "## Memory",
        "",
        "The server's resident memory (`VmRSS`) before any client connects and a second after "
        "C clients have observed the property (nothing is published), over C.",
        "",
        *_memory(records),
    ]
    if records.count(scenario="admission"):
        lines += [
            "## Connecting while the producer runs flat out",
            "",
            "The producer updates the property as fast as the server accepts, from before the "
            "first client connects; then C clients connect and observe it, at most 32 "
            "handshakes in flight per load-generator process (as in every scenario). The time "
            "is from the first connection attempt until every client has its "
            "acknowledgement. Each client observes from then on, so the later ones are "
            "admitted while the server fans every update out to hundreds of others: a server "
            "that admits connections only between two fan-outs is slow here, one that does "
            "not let the producer run in between makes few *updates meanwhile*.",
            "",
            *_admission(records),
        ]
    lines += [
        "## Machine",
        "",
        *_machine(machine)[:-1],
        f"- trio_things sources measured (a digest of `trio_things/**/*.py` but the client): "
        f"{_sources(records)}",
        "",
        "## How it is measured",
        "",
        f"- **Load generator** (`benchmarks/loadgen.py`): {_workers(records)} separate "
        "process(es) (by default one fewer than the CPUs, so the server keeps a core), each "
        "running "
        "raw non-blocking sockets on one `epoll`. It writes the handshake and a masked "
        "subscribe frame itself, then parses frame headers only, counting messages per "
        "connection, and decodes the JSON of a sample of frames for their latency. In the "
        "scenarios without latency it sets `SO_RCVLOWAT` "
        f"({settings.rcvlowat} bytes) so each `recv` takes many frames: the kernel's cost per "
        "`recv` is most of its cost per frame. Each snapshot drains every socket, so counts "
        "are exact.",
        *(["- **SSE consumers** (the same load generator): a plain HTTP/1.1 `GET` with "
           "`Accept: text/event-stream`; after the response head, the client walks chunk "
           "sizes and counts the `data:` lines in each chunk (`benchmarks/rawsse.py`), so a "
           "heartbeat comment counts for nothing; the first message (the current value) "
           "stands for the acknowledgement."] if records.count(scenario="sse") else []),
        "- **Who was the limit**: each table gives the server's CPU (100 % = one core) and "
        "the busiest load-generator worker's. *load generator saturated* marks runs where a "
        "worker used 90 % of a core or more: there the load generator, not the server, was "
        "the limit, and the server's figure is a lower bound. *server short of CPU* marks "
        "runs where the machine was full while the server had under 90 % of a core. "
        "*others' CPU* is what the rest of the machine used in the window (other jobs, and "
        "kernel work charged to no process).",
        "- **Windows**: every figure is measured over a window that opens after "
        f"{settings.warmup:g} s of load and lasts {settings.window:g} s; each server runs in a "
        "fresh process per measurement, and the clients connect (and are acknowledged) "
        "before the producer starts.",
        "",
    ]
    return "\n".join(lines)


def plot(records: Records, path: Path, *, rate: float) -> None:
    """Deliveries/s at full speed and p99 latency at ``rate`` against C, a line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for server in _servers(records):
        clients = [c for c in _clients(records, "max-rate")
                   if records.median("deliveries_per_s", scenario="max-rate", clients=c,
                                     server=server) is not None]
        if clients:
            limit = server in _LIMIT_NAMES  # a ceiling, not a server: drawn apart
            left.plot(clients, [records.median("deliveries_per_s", scenario="max-rate",
                                               clients=c, server=server) for c in clients],
                      marker="^" if limit else "o", linestyle=":" if limit else "-",
                      color=("0.35" if server == "python-limit" else "0.6") if limit else None,
                      label=server)
        if server == _SUBJECT:
            match = {"scenario": "sse", "server": server, "transport": "sse"}
            clients = [c for c in _clients(records, "sse")
                       if records.median("deliveries_per_s", clients=c, **match) is not None]
            if clients:
                left.plot(clients, [records.median("deliveries_per_s", clients=c, **match)
                                    for c in clients],
                          marker="s", linestyle="--", label=f"{server} (SSE)")
        clients = [c for c in _clients(records, "fixed-rate")
                   if records.median("latency_p99_ms", scenario="fixed-rate", clients=c,
                                     server=server) is not None]
        if not clients:  # the limits take part in the full-speed scenario only
            continue
        right.plot(clients, [records.median("latency_p99_ms", scenario="fixed-rate",
                                            clients=c, server=server) for c in clients],
                   marker="o", label=server)
    left.set(xlabel="observers (C)", ylabel="deliveries per second",
             title="Property at full speed: deliveries/s")
    right.set(xlabel="observers (C)", ylabel="p99 latency (ms)",
              title=f"Property at {rate:g} Hz: p99 latency")
    for axes in (left, right):
        if not any(len(line.get_xdata()) for line in axes.get_lines()):  # not run
            axes.text(0.5, 0.5, "not measured in this run", ha="center",
                      transform=axes.transAxes)
            continue
        axes.set(xscale="log", yscale="log")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
