"""Where a delivery's time goes: trio-things at full speed, under a sampling profiler.

``python -m benchmarks.profile_fanout [--clients 100,1000] [--runs 3] [--seconds 8]
[--servers trio-things,python-limit]``

The fan-out benchmark (:mod:`benchmarks.fanout`) says how fast each server is; the layer
benchmark (:mod:`benchmarks.fastpath`) what trio-things' own calls cost with the kernel
taken out. This one says where the time goes on the real path, kernel included: it
starts the trio-things server, attaches the load generator's C observers (as the
``max-rate`` scenario does), lets the producer run at full speed, and samples the
server with `py-spy <https://github.com/benfred/py-spy>`_ (``--native``, so the C frames
show: the system call under ``os.write``, the garbage collector, ``bytes.join``). Each
sample's stack goes to one bucket (:func:`classify`):

===============  ==========================================================================
GC               the cyclic garbage collector (``gc_collect_main`` anywhere in the stack)
syscalls         the process is in a system call (the leaf is libc's ``write``, ``send``,
                 ``epoll_wait``, ``recv``...), split by who made it
frame splicing   putting each observer's frame together: the per-observer frame tuple and
                 header in ``ObserverSet._deliver``, and the ``b"".join`` of the parts
encoding         the notification to JSON bytes, once per update (the dialect's encoder,
                 orjson, message ids, timestamps)
fast path        the rest of the fan-out loop: ``publish``, ``_deliver``, ``put_latest``,
                 ``write_now``, ``write_nowait`` around the write
relay            the relay task and its writes: ``relay_notifications_to_websocket``,
                 ``take``, ``send_all``, the doorbell that wakes it
scheduler        Trio's run loop and task switches (``trio/_core``), or the selector loop
                 of the pure-Python limit
Thing update     the producer's side: the property's setter, validation, the notifier
other            anything else (the top stacks are listed)
===============  ==========================================================================

A stack is walked from its leaf up; the first frame that belongs to a bucket decides
(so the ``write`` under ``os.write`` is a syscall, not the fast path). Native frames, and
frames of no bucket, belong to whoever called them (Trio's channels and sockets,
trio-websocket, attrs' generated methods, the standard library, a helper of the
notifier); but a sample whose stack reaches Trio's run loop through a frame of the
project's own code of no bucket (a connection's processor, the control pipe) is
*other*, not the scheduler's.
The shares are of samples taken while the server ran or waited for a CPU (py-spy leaves
out samples of a thread asleep), and times per delivery are those shares of the server's
CPU time per delivery measured during the same window.

Why py-spy and not cProfile: cProfile instruments every Python call, which is most of
what a delivery is here (a dozen calls of well under a microsecond each); it would
inflate exactly the part we want to weigh against the system call, and it sees neither
the system call nor the collector. py-spy samples from outside the process (it pauses
it briefly for each sample, 100 times a second by default): the program runs unmodified,
and the figures printed beside each table compare its throughput with and without the
profiler attached (at C = 1,000 the pauses cost trio-things a fifth or more of its
throughput, several times what they cost the pure-Python limit).

py-spy is not a dependency of the project: ``.venv/bin/pip install py-spy`` (``make
bench-profile`` does). The parsing and the buckets are plain functions on py-spy's
``--format raw`` text (:func:`parse_raw`, :func:`classify`, :func:`aggregate`), tested on
synthetic profiles.

Resource handling: the server and the load generator are started by this command and
ended by their PIDs before it returns; py-spy runs for a fixed duration against the
server's PID only. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from benchmarks.loadgen import LoadGenerator
from benchmarks.messages import PROPERTY
from benchmarks.procs import start_server
from benchmarks.scenarios import HOST, Settings, _snapshot, _throughput
from benchmarks.servers.control import Plan
from benchmarks.summary import median
from benchmarks.targets import PYTHON_LIMIT, TARGETS, TRIO_THINGS, Target

__all__ = ["BUCKETS", "Breakdown", "Frame", "Rules", "aggregate", "classify", "main",
           "parse_raw", "profile", "render"]

GC: Final = "GC"
SYSCALLS: Final = "syscalls"
SPLICING: Final = "frame splicing"
ENCODING: Final = "encoding"
FAST_PATH: Final = "fast path"
RELAY: Final = "relay"
SCHEDULER: Final = "scheduler"
THING: Final = "Thing update"
OTHER: Final = "other"
#: In the order tables list them.
BUCKETS: Final = (FAST_PATH, RELAY, SCHEDULER, GC, SPLICING, SYSCALLS, ENCODING, THING, OTHER)

#: libc entry points of the system calls a server makes (glibc's names and aliases).
_SYSCALL_NAMES: Final = frozenset({
    "write", "__write", "__libc_write", "writev", "__writev",
    "send", "__send", "__libc_send", "sendto", "__libc_sendto", "sendmsg", "__libc_sendmsg",
    "recv", "__recv", "__libc_recv", "recvfrom", "__libc_recvfrom", "read", "__read",
    "__libc_read", "epoll_wait", "__epoll_wait", "epoll_pwait", "epoll_ctl", "accept4",
    "__libc_accept4", "close", "__close", "__libc_close", "getsockopt", "setsockopt",
    "syscall",
})
_GC_NAMES: Final = ("gc_collect_main", "gc_collect_with_callback", "gc_collect_generations",
                    "gc_collect_impl", "collect")
_FAST_PATH_FUNCTIONS: Final = frozenset({
    "ObserverSet.publish", "ObserverSet._deliver", "Outbox.put_latest", "Outbox.put",
    "UpgradeStream.write_now", "UpgradeStream.write_nowait", "UpgradeStream._with_ping",
    "LimitServer.publish",  # the pure-Python limit's whole fan-out loop
})
_RELAY_FUNCTIONS: Final = frozenset({
    "relay_notifications_to_websocket", "SocketWriter.write", "SocketWriter.wait_for_credit",
    "SocketWriter.close", "UpgradeStream.send_all_while", "UpgradeStream.send_all",
    "Outbox.take", "Outbox._ring", "Keepalive.due", "Keepalive.deadline",
})
_ENCODING_FILES: Final = ("trio_things/protocol/wtp.py", "trio_things/protocol/labthings.py",
                          "trio_things/protocol/dialects.py", "trio_things/protocol/sse.py",
                          "benchmarks/messages.py", "uuid.py", "datetime.py")
_THING_FILES: Final = ("trio_things/model/", "trio_things/fanout/notifier.py",
                       "trio_things/fanout/bridge.py", "benchmarks/things.py")
_SCHEDULER_FILES: Final = ("trio/_core/", "selectors.py", "benchmarks/servers/python_limit.py")
#: The project's own code: a frame here of no bucket is a task's own work (a connection's
#: processor, the control pipe), where a library's frame belongs to its caller.
_OWN_FILES: Final = ("trio_things/", "benchmarks/")
_JOIN_NATIVE: Final = ("bytes_join", "stringlib_bytes_join", "_PyBytes_Join", "s_pack")


@attrs.frozen
class Frame:
    """One frame of a py-spy stack: a Python function with its file and line, or a
    native function with its library (``line`` 0)."""

    name: str
    file: str
    line: int = 0

    @property
    def python(self) -> bool:
        return self.file.endswith(".py") or self.file.startswith("<")

    @property
    def function(self) -> str:
        """The bare function name (py-spy writes ``Class.method`` for methods)."""
        return self.name

    @classmethod
    def parse(cls, text: str) -> Frame:
        """``name (file:line)``, ``name (library)`` or ``0xADDR (library)``."""
        match = re.fullmatch(r"(.*) \((.*)\)", text.strip())
        if match is None:
            return cls(text.strip(), "")
        name, where = match.groups()
        file, _, line = where.rpartition(":")
        if file and line.isdigit():
            return cls(name, file, int(line))
        return cls(name, where)


def parse_raw(text: str) -> list[tuple[tuple[Frame, ...], int]]:
    """py-spy's ``--format raw`` output (collapsed stacks, root first, then the count)."""
    stacks = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stacks.append((tuple(Frame.parse(f) for f in stack.split(";")), int(count)))
    return stacks


@attrs.frozen(kw_only=True)
class Rules:
    """The source lines whose Python-level samples count as frame splicing: those of
    ``ObserverSet._deliver`` that build an observer's frame (its size, header and parts)
    and the ``b"".join`` of the parts (``write_now``, the relay). Found in the source
    (:meth:`from_source`), so an edit that moves them moves the rules with it."""

    splice_lines: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def from_source(cls) -> Rules:
        from trio_things import websockets
        from trio_things.fanout import observers
        from trio_things.transport import upgrade

        found: set[tuple[str, int]] = set()
        for function, patterns in (
                (observers.ObserverSet._deliver, ("size = ", "header", "frame: Frame =")),
                (upgrade.UpgradeStream.write_now, ('b"".join',)),
                (websockets.relay_notifications_to_websocket, ('b"".join',))):
            lines, first = inspect.getsourcelines(function)
            path = _relative(inspect.getsourcefile(function) or "")
            for offset, text in enumerate(lines):
                if any(p in text for p in patterns) and not text.lstrip().startswith("#"):
                    found.add((path, first + offset))
        return cls(splice_lines=frozenset(found))


def _relative(path: str) -> str:
    """``.../trio_things/x.py`` as py-spy writes it: ``trio_things/x.py``."""
    parts = Path(path).parts
    for anchor in ("trio_things", "benchmarks", "trio"):
        if anchor in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor):])
    return path


def _in(file: str, prefixes: Iterable[str]) -> bool:
    return any(file.startswith(p) or f"/{p}" in file for p in prefixes)


def classify(stack: Sequence[Frame], rules: Rules) -> tuple[str, str | None]:
    """The bucket of one sample, and for a system call what it was for (``write``: the
    fast path's; ``send``: the relay's; ``epoll_wait``: the scheduler's...)."""
    if any(f.name.startswith(_GC_NAMES) and not f.python for f in stack):
        return GC, None
    leaf = stack[-1] if stack else Frame("", "")
    if not leaf.python and leaf.file.startswith("libc") and leaf.name in _SYSCALL_NAMES:
        owner = _owner(stack[:-1], rules)
        return SYSCALLS, f"{leaf.name.lstrip('_').removeprefix('libc_')} ({owner})"
    return _owner(stack, rules), None


def _owner(stack: Sequence[Frame], rules: Rules) -> str:
    unknown = False  # a Python frame of no bucket: a task's own code, unless one is above
    for frame in reversed(stack):
        if not frame.python:
            if frame.name.startswith(_JOIN_NATIVE):
                return SPLICING
            if "orjson" in frame.file:
                return ENCODING
            continue
        if (frame.file, frame.line) in rules.splice_lines or frame.name == "text_frame_header":
            return SPLICING
        if _in(frame.file, _ENCODING_FILES) or frame.name in ("encode_notification",
                                                                "reference_notification"):
            return ENCODING
        if frame.name in _FAST_PATH_FUNCTIONS:
            return FAST_PATH
        if frame.name in _RELAY_FUNCTIONS:
            return RELAY
        if _in(frame.file, _SCHEDULER_FILES):
            return OTHER if unknown else SCHEDULER
        if _in(frame.file, _THING_FILES):
            return THING
        if frame.file.startswith(_OWN_FILES):
            unknown = True
    return OTHER


@attrs.frozen(kw_only=True)
class Breakdown:
    """Samples per bucket (and per system call), the hottest lines of trio-things' own
    code, and the stacks left in ``other``."""

    samples: int
    buckets: dict[str, int]
    syscalls: dict[str, int]
    other: list[tuple[str, int]]
    lines: list[tuple[str, int]] = attrs.field(factory=list)
    """The Python lines (``function file:line``) nearest the leaf of the samples in
    neither a system call nor GC, most sampled first: where the Python part goes."""

    def share(self, bucket: str) -> float:
        return self.buckets.get(bucket, 0) / self.samples if self.samples else 0.0


def aggregate(stacks: Iterable[tuple[Sequence[Frame], int]], rules: Rules) -> Breakdown:
    buckets: Counter[str] = Counter()
    syscalls: Counter[str] = Counter()
    other: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    total = 0
    for stack, count in stacks:
        bucket, syscall = classify(stack, rules)
        total += count
        buckets[bucket] += count
        if syscall is not None:
            syscalls[syscall] += count
        elif bucket != GC:
            python = next((f for f in reversed(stack) if f.python), None)
            if python is not None:
                lines[f"{python.name} {python.file.rpartition('/')[2]}:{python.line}"] += count
        if bucket == OTHER:
            leaf = " <- ".join(f"{f.name}" for f in reversed(stack[-3:]))
            other[leaf] += count
    return Breakdown(samples=total, buckets=dict(buckets), syscalls=dict(syscalls),
                     other=other.most_common(5), lines=lines.most_common(8))


# ---------------------------------------------------------------------- measuring


@attrs.frozen(kw_only=True)
class Profile:
    """One server at one C: the breakdown, and the throughput with and without py-spy."""

    server: str
    clients: int
    breakdown: Breakdown
    plain: dict[str, Any]
    """The max-rate figures of the window before py-spy attached (same server, clients)."""
    profiled: dict[str, Any]
    """The same, while py-spy sampled."""


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile(target: Target, clients: int, *, seconds: float, warmup: float, rate: int,
            loadgen: LoadGenerator, py_spy: str, keep: Path | None = None) -> Profile:
    """Run ``target`` at full speed with ``clients`` observers; measure a plain window,
    then one under py-spy; classify the samples."""
    settings = Settings()
    with start_server(target.name, target.argv()) as server:
        try:
            loadgen.open(host=HOST, port=server.port, path=target.path, kind=PROPERTY,
                         clients=clients, rcvlowat=settings.rcvlowat,
                         timeout=max(30.0, clients / 50))
            server.request({"op": "start", "plan": Plan(kind=PROPERTY).to_json()})
            time.sleep(warmup)
            first = _snapshot(server, loadgen)
            time.sleep(seconds)
            middle = _snapshot(server, loadgen)
            with tempfile.TemporaryDirectory(prefix="profile-fanout-") as folder:
                raw = Path(folder) / "raw.txt"
                command = [py_spy, "record", "--pid", str(server.pid), "--native",
                           "--format", "raw", "--rate", str(rate),
                           "--duration", str(max(1, round(seconds))), "--output", str(raw)]
                started = _snapshot(server, loadgen)
                result = subprocess.run(command, capture_output=True, text=True,
                                        timeout=seconds + 60, check=False)
                last = _snapshot(server, loadgen)
                if result.returncode != 0 or not raw.exists():
                    raise RuntimeError(f"py-spy failed ({result.returncode}): "
                                       f"{result.stderr.strip()[-500:]}")
                text = raw.read_text()
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    (keep / f"{target.name}-{clients}.txt").write_text(text)
            server.request({"op": "stop"})
        finally:
            loadgen.close_clients()
    return Profile(server=target.name, clients=clients,
                   breakdown=aggregate(parse_raw(text), Rules.from_source()),
                   plain=_throughput(first, middle), profiled=_throughput(started, last))


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} us"


def render(profiles: Sequence[Profile], command: str) -> str:
    """A Markdown table per C: each bucket's share of the samples and of the server's CPU
    time per delivery (medians over runs), then per server the throughput with and
    without py-spy, the system calls by caller, the hottest lines, and what was left in
    ``other`` (samples of every run together)."""
    lines: list[str] = []
    for clients in sorted({p.clients for p in profiles}):
        groups: dict[str, list[Profile]] = {}
        for p in profiles:
            if p.clients == clients:
                groups.setdefault(p.server, []).append(p)
        runs = max(len(group) for group in groups.values())
        lines += [f"C = {clients}" + (f", medians of {runs} runs" if runs > 1 else "") + ":",
                  ""]
        header = (["bucket"] + [f"{server}: share" for server in groups]
                  + [f"{server}: per delivery" for server in groups])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for bucket in BUCKETS:  # all of them: a bucket with no sample is a finding too
            shares = [_percent(median(p.breakdown.share(bucket) for p in group))
                      for group in groups.values()]
            times = [_us(median(_per_delivery(p, p.breakdown.share(bucket)) for p in group))
                     for group in groups.values()]
            lines.append(f"| {bucket} | " + " | ".join(shares + times) + " |")
        lines.append("| **total** | " + " | ".join(
            [f"{sum(p.breakdown.samples for p in group)} samples" for group in groups.values()]
            + [f"**{_us(median(_per_delivery(p, 1.0) for p in group))}**"
               for group in groups.values()]) + " |")
        lines.append("")
        for server, group in groups.items():
            lines.append(_summary(server, group))
        lines.append("")
    lines += ["```sh", command, "```", ""]
    return "\n".join(lines)


def _summary(server: str, group: Sequence[Profile]) -> str:
    """One line on a server's profiles at one C."""
    samples = sum(p.breakdown.samples for p in group) or 1
    calls: Counter[str] = Counter()
    hot: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for p in group:
        calls.update(p.breakdown.syscalls)
        hot.update(dict(p.breakdown.lines))
        other.update(dict(p.breakdown.other))

    def figure(field: str, window: str) -> float:
        return median(getattr(p, window).get(field) for p in group) or 0.0

    ratios = median(p.profiled["deliveries_per_s"] / p.plain["deliveries_per_s"]
                    for p in group if p.plain.get("deliveries_per_s"))
    return (
        f"- {server}: {figure('deliveries_per_s', 'profiled'):,.0f} deliveries/s under "
        f"py-spy ({'-' if ratios is None else f'{ratios:.2f}x'} of the "
        f"{figure('deliveries_per_s', 'plain'):,.0f} measured just before without it), "
        f"server CPU {figure('server_cpu_share', 'profiled') * 100:.0f} %, "
        f"{figure('server_cpu_per_delivery_us', 'profiled'):.2f} us per delivery "
        f"({figure('server_cpu_per_delivery_us', 'plain'):.2f} us without py-spy: "
        f"{figure('server_user_per_delivery_us', 'plain'):.2f} us in user space, "
        f"{figure('server_system_per_delivery_us', 'plain'):.2f} us in the kernel); "
        "system calls: " + (", ".join(f"{name} {n / samples * 100:.1f} %"
                                      for name, n in calls.most_common()) or "none")
        + "; hottest lines outside them: "
        + ", ".join(f"`{line}` {n / samples * 100:.1f} %" for line, n in hot.most_common(5))
        + (f"; other: {', '.join(f'{s} ({n})' for s, n in other.most_common(3))}"
           if other else ""))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _per_delivery(p: Profile, share: float) -> float | None:
    cost = p.profiled.get("server_cpu_per_delivery_us")
    return None if cost is None or not math.isfinite(cost) else cost * share


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_fanout",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="100,1000",
                        help="C values, comma-separated (default 100,1000)")
    parser.add_argument("--servers", default=f"{TRIO_THINGS.name},{PYTHON_LIMIT.name}",
                        help="servers to profile, comma-separated (default: trio-things "
                             "and, to read it against, the pure-Python limit)")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="seconds of each window (plain, then profiled)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rate", type=int, default=100,
                        help="py-spy samples a second (each pauses the server briefly)")
    parser.add_argument("--runs", type=int, default=1,
                        help="profiles of each server at each C (the tables give medians)")
    parser.add_argument("--workers", type=int, default=1, help="load-generator processes")
    parser.add_argument("--keep", type=Path, help="keep the raw py-spy profiles here")
    args = parser.parse_args(argv)
    py_spy = _py_spy()
    if py_spy is None:
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    targets = [TARGETS[name.strip()] for name in args.servers.split(",") if name.strip()]
    profiles = []
    with LoadGenerator(args.workers) as loadgen:
        # Runs outermost and the servers innermost, as in benchmarks.fanout: each server's
        # profile at a C is taken right beside the other's, so drift falls on both alike.
        for run in range(args.runs):
            for c in clients:
                for target in targets:
                    print(f"run {run + 1}/{args.runs}: profiling {target.name} at C = {c}...",
                          file=sys.stderr, flush=True)
                    keep = None if args.keep is None else args.keep / f"run{run + 1}"
                    profiles.append(profile(target, c, seconds=args.seconds,
                                            warmup=args.warmup, rate=args.rate,
                                            loadgen=loadgen, py_spy=py_spy, keep=keep))
    command = shlex.join(["python", "-m", "benchmarks.profile_fanout",
                          *(sys.argv[1:] if argv is None else argv)])
    print(render(profiles, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
