"""How old the values are that a slow reader gets: ``python -m benchmarks.staleness``.

The fan-out model promises that a client reading slower than a property changes gets
the latest value of it, not a backlog. A backlog can hide where the Outbox cannot see
it: in the kernel, between the server's socket and the reader. This measures it. The
benchmark server updates ``tick`` (``{"n", "t"}``, ``t`` the time of the update)
``--rate`` times a second; each reader observes it over a plain socket with the kernel's
default buffers and takes one message every ``1/read_rate`` seconds, no more (it reads a
frame's header, then exactly its payload, so no buffer of its own hides anything; it
answers a ping at once, as any RFC 6455 client does, and that costs it no turn). Each
message's age is the time it is read minus its ``t``. The table gives the ages over the
second half of the run (the steady state), and whether the server dropped the reader.

Everything runs on 127.0.0.1; the run is bounded by ``--seconds``. Machines here are
shared and noisy: compare the figures of two versions from one sitting.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from collections.abc import Sequence

import attrs
import orjson

from benchmarks import rawws
from benchmarks.messages import PROPERTY, subscribe_request
from benchmarks.procs import start_server
from benchmarks.targets import TRIO_THINGS

__all__ = ["Reading", "main", "read_slowly"]


@attrs.frozen
class Reading:
    """What one reader saw."""

    read_rate: float
    ages: tuple[float, ...]
    """Age in seconds of each value read in the second half of the run."""
    dropped: bool
    """Whether the server closed the connection before the run ended."""


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def _next_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One whole frame (opcode, payload), taking no byte more from the socket."""
    head = _receive_exactly(sock, 2)
    length = head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(_receive_exactly(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(_receive_exactly(sock, 8), "big")
    return head[0] & 0x0F, _receive_exactly(sock, length)


def read_slowly(port: int, path: str, read_rate: float, seconds: float) -> Reading:
    """Observe ``tick`` and read one message every ``1 / read_rate`` s for ``seconds``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = rawws.new_key()
    sock.sendall(rawws.handshake_request("127.0.0.1", port, path, key,
                                         "webthingprotocol"))
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)  # byte by byte: not one byte past the handshake
    rawws.check_handshake_response(response, key)
    sock.sendall(rawws.masked_frame(rawws.TEXT, subscribe_request(PROPERTY)))
    ages: list[float] = []
    start = time.monotonic()
    dropped = False
    index = 0
    try:
        while (now := time.monotonic()) < start + seconds:
            time.sleep(max(0.0, start + index / read_rate - now))
            index += 1
            opcode, payload = _next_frame(sock)
            while opcode == rawws.PING:  # answered at once, as RFC 6455 asks of a client
                sock.sendall(rawws.masked_frame(rawws.PONG, payload))
                opcode, payload = _next_frame(sock)
            if opcode != rawws.TEXT:
                continue
            value = orjson.loads(payload).get("value")
            if isinstance(value, dict) and "t" in value and now > start + seconds / 2:
                ages.append(time.time() - value["t"])
    except (ConnectionError, OSError):
        dropped = True
    finally:
        sock.close()
    return Reading(read_rate=read_rate, ages=tuple(ages), dropped=dropped)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.staleness",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="updates per second")
    parser.add_argument("--read-rates", default="20,50",
                        help="messages per second each reader takes (comma-separated)")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    read_rates = [float(r) for r in args.read_rates.split(",")]
    with start_server(TRIO_THINGS.name, TRIO_THINGS.argv()) as server:
        server.request({"op": "start", "plan": {"kind": PROPERTY, "rate": args.rate,
                                                "count": None}})
        results: list[Reading] = []
        threads = [threading.Thread(target=lambda r=r: results.append(
            read_slowly(server.port, TRIO_THINGS.path, r, args.seconds))) for r in read_rates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        server.request({"op": "stop"})
    print(f"value age in seconds (second half of {args.seconds:g} s; {args.rate:g} updates/s)")
    print(f"{'reader':>10}  {'median':>7}  {'p99':>7}  {'max':>7}  dropped")
    for reading in sorted(results, key=lambda r: r.read_rate):
        ages = sorted(reading.ages) or [float("nan")]
        p99 = ages[min(len(ages) - 1, int(len(ages) * 0.99))]
        print(f"{reading.read_rate:>6g}/s  {statistics.median(ages):7.2f}  {p99:7.2f}  "
              f"{ages[-1]:7.2f}  {'yes' if reading.dropped else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
