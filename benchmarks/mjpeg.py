"""Live image streams (MJPEG) fanned out to many viewers: frames per second and server CPU.

``python -m benchmarks.mjpeg [--viewers 1,10,50] [--seconds 5] [--rounds 3] [--quick]``
(``make bench-mjpeg``; about 75 seconds)

A trio-things server in a child process publishes 640x480 JPEG frames (about 50 KB,
drawn once at start from the demo camera's picture with noise) at 30 frames per second
on a frame stream. A second child process opens the viewers: raw sockets that ask for
``/bench/video`` and count parts by their delimiter as the bytes arrive (no parsing, no
copy beyond the read), so that a viewer process is cheap next to the server. For each
number of viewers it reports each viewer's frames per second over the window (median
and minimum) and the server's CPU (a share of one core, from ``/proc``).

The isolation scenario runs the middle number of viewers again with one more that never
reads (its receive buffer shrunk to 4 KiB): its socket fills, the server's writes to it
stop making progress, and it is dropped after ``stream_write_timeout`` (10 s, longer
than the window: the window is all stall). The figure is the ratio of the others'
median frame rate to that of the same viewers without it, measured in the same round;
the claim is that it stays at or above 0.90. Rounds interleave the two, and the report
gives the median of the rounds' ratios: this machine is small and noisy, so ratios
within one run, not absolute figures, are what carries over.

Processes: both children are started and ended here, by PID (``benchmarks.procs``);
everything binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = ["Delimiters", "Figures", "main", "run_viewers"]

#: The frames published per second.
FRAME_RATE: Final = 30.0
#: The Thing and its stream, as the viewers ask for them.
PATH: Final = "/bench/video"
#: Distinct frames the server cycles through (each a different JPEG).
DISTINCT_FRAMES: Final = 30
#: Bytes asked of a viewer's socket per read.
READ_SIZE: Final = 256 * 1024
#: Seconds the viewers watch before the window opens (the stalled viewer's buffers
#: fill meanwhile, and every viewer has had its first frame).
WARMUP: Final = 3.0


# --------------------------------------------------------------------------- the server


def _frames() -> list[bytes]:
    """``DISTINCT_FRAMES`` 640x480 JPEGs: the demo camera's picture at successive times,
    with noise, so that each is about the size of a real camera's frame."""
    from PIL import Image

    from trio_things.demo import Camera

    camera = Camera()
    noise = Image.effect_noise((640, 480), 48).convert("RGB")
    frames = []
    for n in range(DISTINCT_FRAMES):
        camera._start = time.monotonic() - n / FRAME_RATE  # a moment of the picture
        with camera._lock:
            picture = camera._render(10.0)
        buffer = io.BytesIO()
        Image.blend(picture, noise, 0.12).save(buffer, "JPEG", quality=85)
        frames.append(buffer.getvalue())
    return frames


def serve(write_timeout: float | None) -> None:
    """The server under test: prints ``{"port": ...}``, answers ``{"op": "stats"}`` on
    stdin, and stops at the end of its input."""
    import trio

    import trio_things as tt
    from benchmarks.servers.control import raise_open_files_limit
    from benchmarks.servers.trio_things_server import serve_under_control
    from trio_things.config import ServerConfig
    from trio_things.fanout.observers import STREAM
    from trio_things.protocol.limits import HttpLimits
    from trio_things.server import ThingServer

    frames = _frames()

    class Bench(tt.Thing):
        video = tt.frame_stream()

        def __init__(self) -> None:
            super().__init__()
            self.published = 0

        async def background_task(self) -> None:
            start = trio.current_time()
            while True:
                self.video.publish(frames[self.published % len(frames)])
                self.published += 1
                await trio.sleep_until(start + self.published / FRAME_RATE)

    raise_open_files_limit()
    bench = Bench()
    http = HttpLimits() if write_timeout is None else HttpLimits(
        stream_write_timeout=write_timeout)
    server = ThingServer(ServerConfig(host="127.0.0.1", port=0, http=http,
                                      max_connections_per_client=10_000))
    server.add_thing("bench", bench)

    def stats() -> dict[str, Any]:
        assert server._dispatcher is not None
        viewers = len(server._dispatcher.observers.get("bench", STREAM, "video"))
        return {"published": bench.published, "viewers": viewers,
                "frame_bytes": statistics.median(len(f) for f in frames),
                "cpu": time.process_time()}

    try:
        trio.run(serve_under_control, server, lambda _line: stats())
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- the viewers


class Delimiters:
    """Counts part delimiters in a byte stream cut anywhere (a delimiter split across
    two reads is counted once)."""

    def __init__(self, boundary: bytes) -> None:
        self.delimiter = b"--" + boundary + b"\r\n"
        self._tail = b""
        self.count = 0

    def feed(self, data: bytes) -> None:
        joined = self._tail + data
        self.count += joined.count(self.delimiter)
        # Keep what could begin a delimiter; never a whole one (it was counted).
        self._tail = joined[-(len(self.delimiter) - 1):]


def _open_viewer(port: int, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The boundary the response names, and the body bytes read with the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"the server closed the connection: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"not a stream: {head[:200]!r}")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type" and b"boundary=" in value:
            return value.split(b"boundary=", 1)[1].strip().strip(b'"'), rest
    raise RuntimeError(f"no boundary in {head[:200]!r}")


def run_viewers(port: int, viewers: int, stalled: int, warmup: float, seconds: float,
                report: Any = print) -> list[int]:
    """Open ``viewers`` reading viewers and ``stalled`` that never read; watch for
    ``warmup`` seconds, then count each reading viewer's parts for ``seconds``.
    ``report`` is called with ``"start"`` as the window opens and ``"stop"`` as it
    closes, before any viewer leaves; returns the counts."""
    stuck = [_open_viewer(port, receive_buffer=4096) for _ in range(stalled)]
    socks = [_open_viewer(port) for _ in range(viewers)]
    counters: dict[int, Delimiters] = {}
    poller = select.epoll()
    try:
        for sock in socks:
            boundary, rest = _read_head(sock)
            counter = counters[sock.fileno()] = Delimiters(boundary)
            counter.feed(rest)
            sock.setblocking(False)
            poller.register(sock.fileno(), select.EPOLLIN)
        by_fd = {sock.fileno(): sock for sock in socks}
        start = time.monotonic()
        window_start = start + warmup
        end = window_start + seconds
        before: list[int] | None = None
        while (now := time.monotonic()) < end:
            if before is None and now >= window_start:
                before = [counters[sock.fileno()].count for sock in socks]
                report("start")
            timeout = (window_start if before is None else end) - now
            for fd, _ in poller.poll(max(timeout, 0.0)):
                try:
                    data = by_fd[fd].recv(READ_SIZE)
                except BlockingIOError:
                    continue
                if not data:
                    raise RuntimeError("a viewer's stream ended")
                counters[fd].feed(data)
        if before is None:
            before = [counters[sock.fileno()].count for sock in socks]
            report("start")
        counts = [counters[sock.fileno()].count - b for sock, b in zip(socks, before,
                                                                         strict=True)]
        report("stop")
        return counts
    finally:
        poller.close()
        for sock in socks + stuck:
            sock.close()


def view(port: int, viewers: int, stalled: int, warmup: float, seconds: float) -> None:
    """The viewer process: ``{"event": "start"}`` as the window opens, ``"stop"`` as it
    closes (then it waits for a line on stdin before the viewers leave, so that the
    harness can ask the server what it holds), then the counts."""
    def report(event: str) -> None:
        print(json.dumps({"event": event}), flush=True)
        if event == "stop":
            sys.stdin.readline()

    counts = run_viewers(port, viewers, stalled, warmup, seconds, report)
    print(json.dumps({"event": "end", "counts": counts}), flush=True)


# --------------------------------------------------------------------------- the harness


@attrs.frozen(kw_only=True)
class Figures:
    """One scenario's measurement."""

    viewers: int
    stalled: int
    seconds: float
    fps: list[float]
    """Each reading viewer's frames per second over the window."""
    published_fps: float
    server_cpu: float
    """Server CPU seconds per second of the window (1.0: one core)."""
    viewers_at_end: int
    """Viewers the server still held when the window closed (stalled included)."""
    frame_bytes: float

    @property
    def median(self) -> float:
        return statistics.median(self.fps)

    @property
    def minimum(self) -> float:
        return min(self.fps)


def measure(server: Any, viewers: int, stalled: int, seconds: float,
            warmup: float = WARMUP) -> Figures:
    """Run one viewer process against ``server`` (a :class:`benchmarks.procs.ServerProcess`)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.mjpeg", "view", "--port", str(server.port),
         "--count", str(viewers), "--stalled", str(stalled), "--warmup", str(warmup),
         "--seconds", str(seconds)],
        cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdin is not None
        first = json.loads(process.stdout.readline() or "{}")
        if first.get("event") != "start":
            raise RuntimeError(f"the viewers did not start: {first}")
        at_start = server.stats()
        began = time.monotonic()
        stop = json.loads(process.stdout.readline() or "{}")
        at_end = server.stats()
        elapsed = time.monotonic() - began
        if stop.get("event") != "stop":
            raise RuntimeError(f"the viewers did not stop: {stop}")
        process.stdin.write("\n")
        process.stdin.flush()
        last = json.loads(process.stdout.readline() or "{}")
        if last.get("event") != "end":
            raise RuntimeError(f"the viewers did not finish: {last}")
        if process.wait(timeout=30) != 0:
            raise RuntimeError(f"the viewer process exited with {process.returncode}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return Figures(
        viewers=viewers, stalled=stalled, seconds=seconds,
        fps=[count / seconds for count in last["counts"]],
        published_fps=(at_end["published"] - at_start["published"]) / elapsed,
        server_cpu=(server.cpu_seconds_between(at_start, at_end)) / elapsed,
        viewers_at_end=at_end["viewers"],
        frame_bytes=at_end["frame_bytes"])


class _Server:
    """The server process, with CPU read from its control replies."""

    def __init__(self, process: Any) -> None:
        self._process = process
        self.port = process.port

    def stats(self) -> dict[str, Any]:
        return dict(self._process.request({"op": "stats"}))

    @staticmethod
    def cpu_seconds_between(start: dict[str, Any], end: dict[str, Any]) -> float:
        return float(end["cpu"] - start["cpu"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mjpeg",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="(internal) the server under test")
    serve_parser.add_argument("--write-timeout", type=float, default=None)
    view_parser = sub.add_parser("view", help="(internal) the viewer process")
    view_parser.add_argument("--port", type=int, required=True)
    view_parser.add_argument("--count", type=int, required=True)
    view_parser.add_argument("--stalled", type=int, default=0)
    view_parser.add_argument("--warmup", type=float, default=WARMUP)
    view_parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--viewers", default="1,10,50",
                        help="numbers of viewers, comma-separated (default 1,10,50)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="the measurement window of each scenario")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the isolation pair (median of their ratios)")
    parser.add_argument("--warmup", type=float, default=WARMUP,
                        help="seconds the viewers watch before each window")
    parser.add_argument("--write", type=Path, metavar="PAGE",
                        help="also write the figures as the MJPEG section of PAGE "
                             "(docs/benchmarks.md), keeping the rest of it")
    parser.add_argument("--quick", action="store_true",
                        help="1 and 10 viewers, 2 s windows, 1 round (a smoke run)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.write_timeout)
        return 0
    if args.command == "view":
        view(args.port, args.count, args.stalled, args.warmup, args.seconds)
        return 0
    return _bench(args)


def _bench(args: argparse.Namespace) -> int:
    from benchmarks.procs import start_server

    counts = [int(n) for n in args.viewers.split(",")]
    seconds, rounds, warmup = args.seconds, args.rounds, args.warmup
    if args.quick:
        counts, seconds, rounds, warmup = [1, 10], 2.0, 1, 1.5
    middle = counts[len(counts) // 2]
    started = time.time()
    rows: list[tuple[int, Figures]] = []
    with start_server("trio-things-mjpeg", ["-m", "benchmarks.mjpeg", "serve"]) as process:
        server = _Server(process)
        print(f"MJPEG fan-out: 640x480 JPEG at {FRAME_RATE:.0f} frames/s, {seconds:g} s "
              f"windows after {warmup:g} s of warm-up; {os.cpu_count()} CPUs")
        print(f"{'viewers':>8} {'fps median':>11} {'fps min':>8} {'published':>10} "
              f"{'server CPU':>11}")
        for n in counts:
            figures = measure(server, n, 0, seconds, warmup)
            rows.append((n, figures))
            print(f"{n:>8} {figures.median:>11.1f} {figures.minimum:>8.1f} "
                  f"{figures.published_fps:>10.1f} {figures.server_cpu:>10.0%}")
        print(f"frames: median {figures.frame_bytes / 1024:.0f} KiB")
        print(f"\nisolation: {middle} viewers, then the same with one more that never reads")
        rounds_seen = []
        for r in range(rounds):
            alone = measure(server, middle, 0, seconds, warmup)
            stall = measure(server, middle, 1, seconds, warmup)
            rounds_seen.append((alone, stall))
            print(f"  round {r + 1}: fps median {alone.median:.1f} alone, "
                  f"{stall.median:.1f} (min {stall.minimum:.1f}) beside the stalled "
                  f"viewer (still held: {stall.viewers_at_end - middle}); ratio "
                  f"{stall.median / alone.median:.3f}")
        ratio = statistics.median(stall.median / alone.median for alone, stall in rounds_seen)
        verdict = "keep" if ratio >= 0.90 else "do NOT keep"
        print(f"median ratio {ratio:.3f}: the others {verdict} at least 90% of their "
              "frame rate beside a stalled viewer")
    if args.write is not None:
        from benchmarks.page import replace_section

        section = _section(rows, rounds_seen, ratio, middle, seconds, warmup,
                           time.time() - started, " ".join(sys.argv[1:]))
        args.write.write_text(replace_section(
            args.write.read_text() if args.write.exists() else "", "mjpeg", section))
        print(f"wrote the MJPEG section of {args.write}", file=sys.stderr)
    return 0


def _section(rows: list[tuple[int, Figures]], rounds: list[tuple[Figures, Figures]],
             ratio: float, middle: int, seconds: float, warmup: float, elapsed: float,
             arguments: str) -> str:
    """The MJPEG figures as a section of ``docs/benchmarks.md`` (benchmarks/page.py)."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "## Live image streams (MJPEG)",
        "",
        f"640x480 JPEG frames (median {rows[-1][1].frame_bytes / 1024:.0f} KiB) published "
        f"at {FRAME_RATE:.0f} frames/s on a frame stream, to N viewers in another process "
        f"that count parts as the bytes arrive; {seconds:g} s windows after {warmup:g} s "
        f"of warm-up. Generated by `.venv/bin/python -m benchmarks.mjpeg {arguments}` "
        f"(`make bench-mjpeg`) on {when}, taking {elapsed / 60:.1f} minutes.",
        "",
        "| viewers | frames/s per viewer, median | minimum | published | server CPU |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {f.median:.1f} | {f.minimum:.1f} | {f.published_fps:.1f} | "
              f"{f.server_cpu:.0%} |" for n, f in rows]
    lines += [
        "",
        f"Beside a viewer that never reads, {middle} others keep "
        f"**{ratio:.2f}x** their frame rate (median of {len(rounds)} paired rounds; the "
        "target is 0.90x or more): the stalled viewer's writes stop, its Outbox holds "
        "one frame, and it is dropped after `stream_write_timeout`.",
        "",
        "| round | frames/s alone | beside the stalled viewer | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r + 1} | {alone.median:.1f} | {stall.median:.1f} | "
              f"{stall.median / alone.median:.3f} |"
              for r, (alone, stall) in enumerate(rounds)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
