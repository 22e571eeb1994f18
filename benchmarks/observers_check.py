"""Loopback check: N WebSocket observers of the demo thermometer's temperature.

Starts ``trio-things serve`` (the demo Things) in a child process on 127.0.0.1 and a free
port, connects N Web Thing Protocol clients from this process, has each observe
``thermometer.temperature`` (which the demo changes every 100 ms), and reports after
``--seconds``:

* whether every observer received every change (the same sequence of notification
  timestamps, none missing, none reordered);
* the interval between consecutive notifications (median, p99), per observer;
* the delivery latency: receive time minus the change's timestamp (p50, p99, max).
  Both clocks are this machine's wall clock.

Run: ``python -m benchmarks.observers_check --clients 100 --seconds 10``. Bounded in
count and time; it ends the server it started (by its PID) when done.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid

import orjson
import trio
import trio_websocket


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _observe(url: str, seconds: float, out: list[list[tuple[float, str]]],
                   ready: trio.Event) -> None:
    received: list[tuple[float, str]] = []
    async with trio_websocket.open_websocket_url(url, subprotocols=["webthingprotocol"]) as ws:
        await ws.send_message(orjson.dumps({
            "messageID": str(uuid.uuid4()), "messageType": "request",
            "operation": "observeproperty", "name": "temperature"}).decode())
        ready.set()
        with trio.move_on_after(seconds):
            while True:
                message = orjson.loads(await ws.get_message())
                if message.get("messageType") == "notification":
                    received.append((time.time(), message["timestamp"]))
    out.append(received)


async def _run(port: int, clients: int, seconds: float) -> list[list[tuple[float, str]]]:
    url = f"ws://127.0.0.1:{port}/thermometer/ws"
    results: list[list[tuple[float, str]]] = []
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            ready = trio.Event()
            nursery.start_soon(_observe, url, seconds, results, ready)
            await ready.wait()
    return results


def _report(results: list[list[tuple[float, str]]], seconds: float) -> int:
    # Compare over the window every observer covers: from the latest first notification
    # (the last to connect) to the earliest last one.
    first = max(r[1][1] for r in results)  # skip each observer's current-value message
    last = min(r[-1][1] for r in results)
    sequences = [[stamp for _, stamp in r if first <= stamp <= last] for r in results]
    reference = max(sequences, key=len)
    complete = sum(seq == reference for seq in sequences)
    intervals, latencies = [], []
    for r in results:
        times = [t for t, _ in r[1:]]
        intervals += [b - a for a, b in itertools.pairwise(times)]
        for received, stamp in r[1:]:
            sent = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            latencies.append(received - sent)
    print(f"observers: {len(results)}, window: {len(reference)} changes "
          f"(~{seconds:.0f} s at 100 ms)")
    print(f"observers that received every change in the window, in order: "
          f"{complete}/{len(results)}")
    print(f"interval between notifications: median {statistics.median(intervals) * 1e3:.1f} ms,"
          f" p99 {_quantile(intervals, 0.99) * 1e3:.1f} ms")
    print(f"latency (change -> received): p50 {_quantile(latencies, 0.5) * 1e3:.2f} ms, "
          f"p99 {_quantile(latencies, 0.99) * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms")
    return 0 if complete == len(results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "trio_things.cli", "serve", "--port", "0",
         "--log-level", "WARNING"],
        stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            print(f"the server did not start: {line!r}", file=sys.stderr)
            return 2
        results = trio.run(_run, int(match.group(1)), args.clients, args.seconds)
        return _report(results, args.seconds)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
