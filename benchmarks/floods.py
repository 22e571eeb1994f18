"""What frame floods cost the other clients: ``python -m benchmarks.floods``.

A flood of frames that are no messages (empty fragments, pings, pongs) was limited by
nothing: one flooding connection held the server at 100% CPU, other clients' round
trips went from 1 ms to about 1 s (2.1 s p99 with ten flooders), and the server went on
for minutes on frames already buffered after the flooders left. The frame guard
(``trio_things/protocol/frame_guard.py``) closes a flooder with 1008 within a burst of
frames and reads nothing more of it. This measures what is left.

One well-behaved client sends a ``readproperty`` request ``--rate`` times a second and
times each round trip, in three phases of ``--seconds`` each:

1. alone;
2. beside ``--flooders`` connections (in a process of their own) that flood as fast as
   loopback takes it, each reconnecting as soon as it is closed: pings, pongs, or
   endless empty continuation frames, in turn; with ``--paced N``, each sends N frames
   a second instead (below ``max_frames_per_second``, 1000, the flooders the limits
   allow: pings and pongs are never closed, endless fragments are);
3. after the flooders stopped: the server's CPU time then shows whether it is still
   busy with what they sent.

It prints the round trips' median, p99 and max per phase, the server's CPU time, and
how the flooders' connections ended (a close frame with 1008, or a bare TCP close).
Everything runs on 127.0.0.1, bounded by ``--seconds``. Machines here are shared and
noisy: compare two versions' figures from one sitting.
"""

from __future__ import annotations

import argparse
import multiprocessing
import select
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from multiprocessing.synchronize import Event as EventType
from typing import Any, Final

import attrs
import orjson

from benchmarks import rawws
from benchmarks.procs import source_digest, start_server
from benchmarks.targets import TRIO_THINGS

__all__ = ["FLOODS", "Phase", "Report", "flood", "main", "round_trips", "run"]

_MASK: Final = b"\x11\x22\x33\x44"


def _empty_frame(opcode: int, *, fin: bool = True) -> bytes:
    """An empty, masked client frame (with no payload, the mask changes nothing)."""
    return bytes(((0x80 if fin else 0) | opcode, 0x80)) + _MASK


#: name: (what a connection sends first, what it then repeats for as long as it lives).
FLOODS: Final = {
    "pings": (b"", _empty_frame(rawws.PING) * 2048),
    "pongs": (b"", _empty_frame(rawws.PONG) * 2048),
    "empty fragments": (_empty_frame(rawws.TEXT, fin=False),
                        _empty_frame(rawws.CONTINUATION, fin=False) * 2048),
}


def _connect(port: int, path: str) -> socket.socket:
    """A WebSocket connection to the server, handshake done, not one byte past it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = rawws.new_key()
    sock.sendall(rawws.handshake_request("127.0.0.1", port, path, key, "webthingprotocol"))
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        response += chunk
    rawws.check_handshake_response(response, key)
    return sock


# --------------------------------------------------------------------------- flooders


def _flood_one(port: int, path: str, kind: str, paced: float, stop: threading.Event,
               tally: dict[str, int], lock: threading.Lock) -> None:
    """Flood, be closed, reconnect, until ``stop``; count how each connection ended."""
    first, repeat = FLOODS[kind]
    while not stop.is_set():
        try:
            sock = _connect(port, path)
        except OSError:
            outcome = "refused"
        else:
            outcome = _flood_connection(sock, first, repeat, paced, stop)
            sock.close()
        with lock:
            tally[outcome] = tally.get(outcome, 0) + 1


def _flood_connection(sock: socket.socket, first: bytes, repeat: bytes, paced: float,
                      stop: threading.Event) -> str:
    """Send ``first``, then ``repeat`` over and over (``paced`` frames a second, or as
    fast as the socket takes them if 0), reading (and dropping) what the server sends,
    until it closes; how it closed: ``"close <code>"``, ``"reset"`` or ``"stopped"``."""
    sock.setblocking(False)
    pending = memoryview(first + repeat)
    received = b""
    start = time.monotonic()
    sent_bytes = 0
    while not stop.is_set():
        budget = len(pending)
        if paced:  # every frame here is 6 bytes long
            budget = min(budget, int((time.monotonic() - start) * paced) * 6 - sent_bytes)
        readable, writable, _ = select.select(
            [sock], [sock] if budget > 0 else [], [], 0.2 if budget > 0 else 0.005)
        if readable:
            outcome, received = _read_server(sock, received)
            if outcome:
                return outcome
        if writable:
            try:
                sent = sock.send(pending[:budget])
            except BlockingIOError:
                continue
            except OSError:  # a close frame may still be waiting to be read
                sock.setblocking(True)
                sock.settimeout(1.0)
                while True:
                    outcome, received = _read_server(sock, received)
                    if outcome:
                        return outcome
            sent_bytes += sent
            pending = pending[sent:] or memoryview(repeat)
    return "stopped"


def _read_server(sock: socket.socket, received: bytes) -> tuple[str, bytes]:
    """Read once and drop what the server sent but a close frame: ``("close <code>",
    ...)`` for one, ``("reset", ...)`` at the end of the stream or an error, else
    ``("", the unparsed rest)``."""
    try:
        chunk = sock.recv(65536)
    except BlockingIOError:
        return "", received
    except OSError:
        return "reset", received
    if not chunk:
        return "reset", received
    received += chunk
    while (header := rawws.parse_header(received, 0)) is not None:
        if header.opcode == rawws.CLOSE:
            return f"close {int.from_bytes(received[header.start:header.start + 2], 'big')}", b""
        received = received[header.stop:]
    return "", received


def flood(port: int, path: str, connections: int, paced: float, stop: EventType,
          results: Any) -> None:
    """Run ``connections`` flooders (threads of this process) until ``stop`` is set;
    put how their connections ended into ``results`` (a queue)."""
    inner = threading.Event()
    tally: dict[str, int] = {}
    lock = threading.Lock()
    kinds = list(FLOODS)
    threads = [threading.Thread(target=_flood_one, daemon=True,
                                args=(port, path, kinds[n % len(kinds)], paced, inner,
                                      tally, lock))
               for n in range(connections)]
    for thread in threads:
        thread.start()
    stop.wait()
    inner.set()
    for thread in threads:
        thread.join(timeout=15)
    results.put(dict(tally))


# --------------------------------------------------------------------------- the client


def _read_frame(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    while (header := rawws.parse_header(bytes(buffer), 0)) is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        buffer += chunk
    payload = bytes(buffer[header.start:header.stop])
    del buffer[:header.stop]
    return header.opcode, payload


def round_trips(port: int, path: str, rate: float, seconds: float) -> list[float]:
    """Round trips of a ``readproperty`` request, ``rate`` a second for ``seconds``,
    each timed from the request's first byte out to its response's last byte in."""
    sock = _connect(port, path)
    buffer = bytearray()
    times: list[float] = []
    start = time.monotonic()
    index = 0
    try:
        while (now := time.monotonic()) < start + seconds:
            time.sleep(max(0.0, start + index / rate - now))
            index += 1
            correlation = str(uuid.uuid4())
            request = rawws.masked_frame(rawws.TEXT, orjson.dumps({
                "messageID": correlation, "messageType": "request",
                "operation": "readproperty", "name": "tick", "correlationID": correlation}))
            sent = time.perf_counter()
            sock.sendall(request)
            while True:
                opcode, payload = _read_frame(sock, buffer)
                if opcode == rawws.CLOSE:
                    raise ConnectionError(f"closed by the server: {payload[:2].hex()}")
                if opcode == rawws.TEXT and orjson.loads(payload).get(
                        "correlationID") == correlation:
                    break
            times.append(time.perf_counter() - sent)
    finally:
        sock.close()
    return times


# --------------------------------------------------------------------------- the run


@attrs.frozen
class Phase:
    """The well-behaved client's round trips (seconds) in one phase, and the server's
    CPU time meanwhile."""

    name: str
    round_trips: tuple[float, ...]
    server_cpu: float


@attrs.frozen
class Report:
    """What one run measured."""

    phases: tuple[Phase, ...]
    outcomes: dict[str, int]
    """How the flooders' connections ended: ``"close 1008"``, ``"reset"`` (no close
    frame), ``"refused"``, or ``"stopped"`` (still open when the phase ended)."""
    tracebacks: int
    """Tracebacks in the server's log: none is expected."""
    digest: str
    """The sources the server ran (:func:`benchmarks.procs.source_digest`)."""


def run(*, flooders: int, rate: float, seconds: float, paced: float) -> Report:
    """The three phases, against a trio-things server started for them."""
    path = TRIO_THINGS.path
    context = multiprocessing.get_context("spawn")
    digest = source_digest()
    phases = []
    with start_server(TRIO_THINGS.name, TRIO_THINGS.argv()) as server:
        cpu = server.cpu_seconds()
        times = round_trips(server.port, path, rate, seconds)
        phases.append(Phase("alone", tuple(times), server.cpu_seconds() - cpu))

        stop = context.Event()
        results = context.Queue()
        process = context.Process(target=flood, args=(
            server.port, path, flooders, paced, stop, results))
        process.start()
        try:
            cpu = server.cpu_seconds()
            times = round_trips(server.port, path, rate, seconds)
            pace = f" at {paced:g}/s" if paced else ""
            phases.append(Phase(f"{flooders} flooders{pace}", tuple(times),
                                server.cpu_seconds() - cpu))
        finally:
            stop.set()
            try:
                outcomes: dict[str, int] = results.get(timeout=30)
            finally:
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()

        cpu = server.cpu_seconds()
        times = round_trips(server.port, path, rate, seconds)
        phases.append(Phase("after the flooders", tuple(times), server.cpu_seconds() - cpu))
        tracebacks = server.stderr_text().count("Traceback")
    return Report(phases=tuple(phases), outcomes=outcomes, tracebacks=tracebacks,
                  digest=digest)


def _row(phase: Phase, seconds: float) -> str:
    ordered = sorted(phase.round_trips) or [float("nan")]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{phase.name:<22} {len(phase.round_trips):>6} "
            f"{statistics.median(ordered) * 1e3:9.2f} {p99 * 1e3:9.2f} "
            f"{ordered[-1] * 1e3:9.2f} {phase.server_cpu / seconds * 100:9.0f}%")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floods",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--flooders", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50.0,
                        help="the well-behaved client's round trips per second "
                             "(below max_requests_per_second, 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--paced", type=float, default=0.0,
                        help="frames a second each flooder sends (0: as fast as it can)")
    args = parser.parse_args(argv)
    report = run(flooders=args.flooders, rate=args.rate, seconds=args.seconds,
                 paced=args.paced)
    print(f"round trips of a well-behaved client, {args.rate:g}/s, {args.seconds:g} s a "
          f"phase (trio_things {report.digest})")
    print(f"{'phase':<22} {'count':>6} {'median ms':>9} {'p99 ms':>9} {'max ms':>9} "
          f"{'server CPU':>10}")
    for phase in report.phases:
        print(_row(phase, args.seconds))
    print(f"flooders' connections: {sum(report.outcomes.values())} ("
          + ", ".join(f"{outcome}: {n}" for outcome, n in sorted(report.outcomes.items()))
          + ")")
    print(f"tracebacks in the server's log: {report.tracebacks}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
