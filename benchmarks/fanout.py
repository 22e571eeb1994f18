"""Fan-out benchmark: trio-things beside two reference servers, same machine, same run
(and trio-things' Server-Sent Events beside its WebSocket: the ``sse`` scenario), and
beside two limits in the ``max-rate`` scenario: the fastest fan-out in pure Python and
the same in C (``python-limit``, ``c-limit``: :mod:`benchmarks.targets`; ``--quick``
measures them at C = 100 only, ``--limit-clients`` chooses).

Run from the repository root::

    python -m benchmarks.fanout            # full: every scenario, median of 3 runs;
                                           # writes docs/benchmarks.{md,png,jsonl}
    python -m benchmarks.fanout --quick    # under a minute; prints its tables only
    python -m benchmarks.fanout --render docs/benchmarks.jsonl   # page from saved records

Progress goes to stderr; the Markdown tables to stdout at the end (``--jsonl -`` prints
the JSON records there instead). See :mod:`benchmarks.scenarios` for what each scenario
measures and :mod:`benchmarks.loadgen` for the load generator.

Resource handling: every server and load-generator process is started by this command
and ended by its PID before it returns (also on Ctrl-C). Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import attrs
import orjson

from benchmarks import report
from benchmarks.loadgen import LoadGenerator
from benchmarks.page import carry_sections
from benchmarks.scenarios import SCENARIOS, Bench, Settings, TooFewOpenFiles
from benchmarks.summary import Records
from benchmarks.targets import TARGETS, Target

__all__ = ["FULL", "QUICK", "Invocation", "main", "render", "run", "write_outputs"]

ROOT: Final = Path(__file__).resolve().parents[1]
FULL: Final = Settings()
QUICK: Final = Settings(
    runs=1, warmup=0.3, window=1.0, max_rate_clients=(1, 10, 100), limit_clients=(100,),
    sse_clients=(100,),
    fixed_rate_clients=(100,), event_count=300, isolation_window=2.5, isolation_write_timeout=1.0,
    memory_clients=(1000,), admission_clients=(500,))

Record = dict[str, Any]


@attrs.frozen(kw_only=True)
class Step:
    """What one run measures of one server: a scenario at C clients."""

    scenario: str
    clients: int

    def measure(self, bench: Bench, target: Target, run: int) -> list[Record]:
        """One record, or two for isolation (without, then with, the stalled client) and
        for sse (over WebSocket and over SSE): back to back, so their ratio is taken
        seconds apart."""
        match self.scenario:
            case "max-rate":
                return [bench.max_rate(target, self.clients, run)]
            case "sse":
                return bench.sse(target, self.clients, run)
            case "fixed-rate":
                return [bench.fixed_rate(target, self.clients, run)]
            case "events":
                return [bench.events(target, self.clients, run)]
            case "isolation":
                return [bench.isolation(target, self.clients, run, stalled=False),
                        bench.isolation(target, self.clients, run, stalled=True)]
            case "memory":
                return [bench.memory(target, self.clients, run)]
            case "admission":
                return [bench.admission(target, self.clients, run)]
        raise ValueError(f"unknown scenario {self.scenario!r}")


def _steps(settings: Settings, scenarios: Sequence[str]) -> list[Step]:
    sizes: dict[str, tuple[int, ...]] = {
        "max-rate": settings.max_rate_clients,
        "sse": settings.sse_clients,
        "fixed-rate": settings.fixed_rate_clients,
        "events": (settings.event_clients,),
        "isolation": (settings.isolation_clients,),
        "memory": settings.memory_clients,
        "admission": settings.admission_clients,
    }
    return [Step(scenario=scenario, clients=clients)
            for scenario in SCENARIOS if scenario in scenarios
            for clients in sizes[scenario]]


def _plan(settings: Settings, scenarios: Sequence[str], targets: Sequence[Target],
          ) -> list[tuple[int, Step, Target]]:
    """Runs outermost, so drift over the invocation touches every figure alike; then
    steps; the servers innermost, so each comparison is measured back to back. The
    ``sse`` steps go to the servers that serve an event stream only; each server takes
    the scenarios it takes part in (``Target.scenarios``), and the limits only the C of
    ``settings.limit_clients``."""
    steps = _steps(settings, scenarios)
    limit_clients = (settings.max_rate_clients if settings.limit_clients is None
                     else settings.limit_clients)

    def measured(step: Step, target: Target) -> bool:
        if step.scenario == "sse" and target.sse_path is None:
            return False
        if target.limit and step.clients not in limit_clients:
            return False
        return target.takes_part(step.scenario)

    return [(run, step, target) for run in range(settings.runs) for step in steps
            for target in targets if measured(step, target)]


def _brief(record: Record) -> str:
    """One line of progress for one record."""
    if "error" in record:
        return "FAILED: " + str(record["error"]).splitlines()[0]
    if "skipped" in record:
        return "skipped: " + str(record["skipped"])
    scenario = record["scenario"]
    if scenario == "memory":
        return f"{record['kib_per_connection']:.1f} KiB per connection"
    if scenario == "admission":
        return (f"{record['clients']} connected in {record['connect_s']:.2f} s, "
                f"{record['updates_per_s']:,.0f} updates/s meanwhile, server CPU "
                f"{record['server_cpu_share'] * 100:.0f} %, load gen "
                f"{record['loadgen_cpu_share'] * 100:.0f} %")
    parts = [f"{record['deliveries_per_s']:,.0f} deliveries/s"]
    if scenario == "fixed-rate" and record.get("latency_p99_ms") is not None:
        parts.append(f"p99 {record['latency_p99_ms']:.2f} ms")
    if scenario == "events":
        parts.append(f"lost {record['lost']}")
    if scenario == "isolation" and record["stalled"]:
        closed = record["stalled_closed_after_s"]
        parts.append("stalled client " + ("not closed" if closed is None
                                          else f"closed after {closed:.1f} s"))
    if record.get("miss_mean") is not None and scenario in ("max-rate", "sse", "fixed-rate"):
        parts.append(f"missed {record['miss_mean'] * 100:.0f} %")
    parts.append(f"server CPU {record['server_cpu_share'] * 100:.0f} %")
    parts.append(f"load gen {record['loadgen_cpu_share'] * 100:.0f} %")
    if record.get("loadgen_saturated"):
        parts.append("LOAD GENERATOR SATURATED")
    return ", ".join(parts)


def run(settings: Settings, *, scenarios: Sequence[str], targets: Sequence[Target],
        workers: int, progress: TextIO = sys.stderr,
        on_record: Callable[[Record], None] = lambda record: None) -> list[Record]:
    """Measure every step of ``settings`` for every target; return the records.

    A measurement that fails is recorded with an ``error`` (and reported) and the run
    goes on: one server's failure must not lose the others' figures.

    A server that cannot run on this machine (``Target.unavailable``: the C reference
    with no C compiler) is recorded as ``skipped``, with the reason, and reported.
    """
    plan = _plan(settings, scenarios, targets)
    records: list[Record] = []
    began = time.monotonic()
    reasons: dict[str, str | None] = {}
    with LoadGenerator(workers) as loadgen:
        bench = Bench(loadgen, settings)
        for index, (run_index, step, target) in enumerate(plan, 1):
            if target.name not in reasons:
                reasons[target.name] = (target.unavailable() if target.unavailable
                                        else None)
            measured: list[Record]
            try:
                if reasons[target.name] is not None:
                    measured = [{"scenario": step.scenario, "server": target.name,
                                 "clients": step.clients, "run": run_index,
                                 "skipped": f"unavailable: {reasons[target.name]}"}]
                else:
                    measured = step.measure(bench, target, run_index)
            except TooFewOpenFiles as error:  # this machine cannot hold C connections
                measured = [{"scenario": step.scenario, "server": target.name,
                             "clients": step.clients, "run": run_index,
                             "skipped": str(error)}]
            except Exception as error:
                measured = [{"scenario": step.scenario, "server": target.name,
                             "clients": step.clients, "run": run_index,
                             "error": f"{type(error).__name__}: {error}"}]
            elapsed = time.monotonic() - began
            remaining = elapsed / index * (len(plan) - index)
            for record in measured:
                source = record.get("trio_things_source")
                if source and records and source != records[-1].get("trio_things_source",
                                                                     source):
                    print(f"WARNING: the trio_things sources changed ({source}); the "
                          "figures from here on measure different code", file=progress)
                records.append(record)
                on_record(record)
                variant = ""
                if "stalled" in record:
                    variant = " with a stalled client" if record["stalled"] else " alone"
                if "transport" in record:
                    variant = " over " + report.TRANSPORTS[record["transport"]]
                print(f"[{index:>3}/{len(plan)} {elapsed:5.0f} s, ~{remaining:4.0f} s left] "
                      f"{step.scenario} C={step.clients} {target.name}{variant} "
                      f"run {run_index + 1}/{settings.runs}: {_brief(record)}",
                      file=progress, flush=True)
    return records


def _csv_ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _csv_names(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(x.strip() for x in text.split(",") if x.strip())
        unknown = [n for n in names if n not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(choices)}")
        return names
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, one run, under a minute; writes no files")
    parser.add_argument("--runs", type=int, help="runs of every figure (median taken)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="load-generator processes (default: CPUs - 1, leaving the "
                             "server a core)")
    parser.add_argument("--servers", type=_csv_names(list(TARGETS)), default=tuple(TARGETS))
    parser.add_argument("--scenarios", type=_csv_names(SCENARIOS), default=SCENARIOS)
    parser.add_argument("--clients", type=_csv_ints,
                        help="C values for the full-speed and fixed-rate scenarios")
    parser.add_argument("--limit-clients", type=_csv_ints,
                        help="C values of the full-speed scenario at which the limits "
                             "(python-limit, c-limit) are measured too (default: --quick "
                             "100, else every C; with --clients, every one of those)")
    parser.add_argument("--sse-clients", type=_csv_ints,
                        help="C values for the sse scenario (WebSocket beside SSE)")
    parser.add_argument("--event-clients", type=int)
    parser.add_argument("--event-count", type=int)
    parser.add_argument("--isolation-clients", type=int)
    parser.add_argument("--isolation-window", type=float)
    parser.add_argument("--memory-clients", type=_csv_ints)
    parser.add_argument("--admission-clients", type=_csv_ints,
                        help="C values for the admission scenario (clients connecting "
                             "while the producer runs flat out)")
    parser.add_argument("--warmup", type=float, help="seconds of load before a window")
    parser.add_argument("--window", type=float, help="seconds each window lasts")
    parser.add_argument("--out", type=Path,
                        help="write benchmarks.md, .png and .jsonl here (default: docs/ in "
                             "full mode, nowhere with --quick)")
    parser.add_argument("--jsonl", help="also write the JSON records here ('-': stdout, "
                                        "instead of the tables)")
    parser.add_argument("--render", type=Path, metavar="JSONL",
                        help="measure nothing: rebuild benchmarks.md and .png from a "
                             "benchmarks.jsonl (into --out, default its directory)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = QUICK if args.quick else FULL
    overrides: dict[str, Any] = {
        "runs": args.runs, "max_rate_clients": args.clients, "fixed_rate_clients": args.clients,
        "sse_clients": args.sse_clients,
        "event_clients": args.event_clients, "event_count": args.event_count,
        "isolation_clients": args.isolation_clients,
        "isolation_window": args.isolation_window, "memory_clients": args.memory_clients,
        "admission_clients": args.admission_clients,
        "warmup": args.warmup, "window": args.window,
    }
    settings = attrs.evolve(settings, **{k: v for k, v in overrides.items() if v is not None})
    if args.limit_clients is not None or args.clients is not None:
        settings = attrs.evolve(settings, limit_clients=args.limit_clients)
    return settings


def _command(argv: Sequence[str]) -> str:
    python = os.path.relpath(sys.executable)
    if python.startswith(".."):
        python = "python"
    return shlex.join([python, "-m", "benchmarks.fanout", *argv])


@attrs.frozen(kw_only=True)
class Invocation:
    """What the page says about the run besides its records."""

    machine: dict[str, Any]
    command: str
    settings: Settings
    started: datetime.datetime
    elapsed: float

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "command": self.command,
                "settings": attrs.asdict(self.settings), "started": self.started.isoformat(),
                "elapsed_s": self.elapsed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Invocation:
        settings: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data["settings"].items()}
        return cls(machine=data["machine"], command=data["command"],
                   settings=Settings(**settings),
                   started=datetime.datetime.fromisoformat(data["started"]),
                   elapsed=data["elapsed_s"])


def write_outputs(out: Path | None, records: list[Record], invocation: Invocation) -> str:
    """Write ``benchmarks.jsonl`` (a header line, then the records), ``.png`` and ``.md``
    into ``out`` (if given); return the page."""
    summary = Records(records)
    figure = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "benchmarks.jsonl", "w") as raw:
            raw.write(orjson.dumps(invocation.to_json()).decode() + "\n")
            for record in records:
                raw.write(orjson.dumps(record).decode() + "\n")
        report.plot(summary, out / "benchmarks.png", rate=invocation.settings.fixed_rate)
        figure = "benchmarks.png"
    page = report.markdown(summary, machine=invocation.machine, command=invocation.command,
                           settings=invocation.settings, started=invocation.started,
                           elapsed=invocation.elapsed, figure=figure)
    if out is not None:
        existing = out / "benchmarks.md"
        if existing.exists():  # sections other benchmarks keep there (benchmarks/page.py)
            page = carry_sections(existing.read_text(), page)
        existing.write_text(page)
        print(f"wrote {out / 'benchmarks.md'}, benchmarks.png and benchmarks.jsonl",
              file=sys.stderr)
    return page


def render(path: Path, out: Path) -> str:
    """Rebuild the page and plot from a ``benchmarks.jsonl`` without measuring again
    (after a change to the report); the command, machine and figures stay those of the
    run that wrote it."""
    lines = path.read_text().splitlines()
    invocation = Invocation.from_json(orjson.loads(lines[0]))
    records = [orjson.loads(line) for line in lines[1:] if line.strip()]
    return write_outputs(out, records, invocation)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.render is not None:
        page = render(args.render, args.out or args.render.parent)
        print(page)
        return 0
    settings = _settings(args)
    out: Path | None = args.out if args.out is not None else (
        None if args.quick else ROOT / "docs")
    targets = [TARGETS[name] for name in args.servers]
    machine = report.describe_machine()
    started = datetime.datetime.now(datetime.UTC)
    began = time.monotonic()
    jsonl = sys.stdout if args.jsonl == "-" else (
        open(args.jsonl, "w") if args.jsonl else None)
    try:
        def emit(record: Record) -> None:
            if jsonl is not None:
                jsonl.write(orjson.dumps(record).decode() + "\n")
                jsonl.flush()

        print(f"benchmarks.fanout: {'quick' if args.quick else 'full'} mode, "
              f"{args.workers} load-generator process(es), {machine['cpus']} CPUs",
              file=sys.stderr, flush=True)
        records = run(settings, scenarios=args.scenarios, targets=targets,
                      workers=args.workers, on_record=emit)
    finally:
        if jsonl is not None and jsonl is not sys.stdout:
            jsonl.close()
    invocation = Invocation(machine=machine, command=_command(argv), settings=settings,
                            started=started, elapsed=time.monotonic() - began)
    page = write_outputs(out, records, invocation)
    if args.jsonl != "-":
        print(page)
    return 1 if Records(records).errors() else 0


if __name__ == "__main__":
    sys.exit(main())
