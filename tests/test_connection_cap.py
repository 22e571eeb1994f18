"""The server-wide connection cap (``[server] max_connections``: 503 beyond it), accept()
failing for want of file descriptors (EMFILE: waited out, one log line per 10 s, the
open connections served on), and the sans-IO counts behind them
(``trio_things.transport.admission``)."""

from __future__ import annotations

import errno
import logging
import os
import resource

import pytest
import trio
import trio.testing

from trio_things.config import ServerConfig
from trio_things.demo import Counter
from trio_things.errors import TooManyRequests
from trio_things.server import ThingServer, _connection_limit, _Door, _PatientListener
from trio_things.testing import HttpConnection
from trio_things.transport.admission import ConnectionCap, RefusalTally

TIMEOUT = 10


# ------------------------------------------------------------------ sans-IO


def test_the_cap_counts_open_connections_and_refusals_in_flight() -> None:
    cap = ConnectionCap(limit=2, max_refusing=1)
    assert [cap.admit(), cap.admit(), cap.admit()] == [True, True, False]
    assert cap.open == 2
    assert [cap.begin_refusal(), cap.begin_refusal()] == [True, False]
    cap.end_refusal()
    assert cap.begin_refusal()
    cap.release()
    assert cap.admit() and cap.open == 2
    with pytest.raises(ValueError):
        ConnectionCap(limit=0)


def test_refusals_are_reported_once_per_interval_with_their_count() -> None:
    tally = RefusalTally(interval=10)
    assert tally.due is None
    assert [tally.count(now=t) for t in (0.0, 1.0, 2.0, 9.9)] == [1, 0, 0, 0]
    assert tally.due == 10.0 and tally.held == 3
    assert tally.flush(now=9.99) == 0
    assert tally.count(now=10.5) == 4  # the first after the interval reports them all
    assert tally.due is None
    assert tally.count(now=11.0) == 0
    assert tally.flush(now=20.5) == 1 and tally.due is None
    assert tally.count(now=21.0) == 0 and tally.take() == 1 and tally.due is None


# ------------------------------------------------------------------ the cap, on loopback


async def test_a_connection_beyond_max_connections_gets_503_and_the_open_ones_are_served(
        caplog: pytest.LogCaptureFixture) -> None:
    """With ``max_connections = 1``: every other connection is answered 503 problem
    details and closed, unserved, logged in one line (the rest held back for 10 s);
    the one open is served throughout; once it closes, another is served."""
    server = ThingServer(ServerConfig(port=0, max_connections=1))
    server.add_thing("counter", Counter())
    caplog.set_level(logging.INFO, logger="trio_things.server")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            host, port = listeners[0].socket.getsockname()[:2]
            authority = f"{host}:{port}"
            first = HttpConnection(await trio.open_tcp_stream(host, port), host=authority)
            assert (await first.get("/counter/count")).status == 200
            for _ in range(3):
                stream = await trio.open_tcp_stream(host, port)
                refused = await HttpConnection(stream, host=authority).get("/counter/count")
                assert refused.status == 503
                assert refused.headers["connection"] == "close"
                assert refused.headers["content-type"] == "application/problem+json"
                problem = refused.json()
                assert problem["status"] == 503 and problem["title"] == "Service Unavailable"
                assert "1 connections open, the most it serves" in problem["detail"]
                assert await stream.receive_some(1) == b""  # closed by the server
                await stream.aclose()
                assert (await first.get("/counter/count")).status == 200

            refusals = [r for r in caplog.records if "refused" in r.getMessage()]
            assert [(r.levelno, r.getMessage()) for r in refusals] == [(
                logging.WARNING, "refused 1 connection(s) with 503 since the last report: "
                                 "the server serves at most 1 at once (max_connections)")]

            await first.stream.aclose()
            # The server learns of the close asynchronously: retry (bounded by
            # fail_after) rather than sleep.
            while True:
                again = HttpConnection(await trio.open_tcp_stream(host, port), host=authority)
                response = await again.get("/counter/count")
                await again.stream.aclose()
                if response.status != 503:
                    break
                await trio.lowlevel.checkpoint()
            assert response.status == 200
            nursery.cancel_scope.cancel()


async def test_refusals_beyond_max_refusing_are_closed_unanswered() -> None:
    async with trio.open_nursery() as nursery:
        door = _Door(ServerConfig(), nursery)
        door.cap = ConnectionCap(limit=1, max_refusing=1)
        assert door.cap.begin_refusal()  # one refusal is being answered already
        client, server_end = trio.testing.memory_stream_pair()
        with trio.fail_after(TIMEOUT):
            await door.refuse(server_end, TooManyRequests("too many"))
            assert await client.receive_some() == b""  # closed, nothing written
        door.cap.end_refusal()
        client, server_end = trio.testing.memory_stream_pair()
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as refusing:
                refusing.start_soon(door.refuse, server_end, TooManyRequests("too many"))
                assert (await client.receive_some()).startswith(b"HTTP/1.1 429 ")
                await client.aclose()
        assert door.cap.refusing == 0


async def test_held_back_refusals_are_reported_when_their_interval_ends(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_things.server")
    async with trio.open_nursery() as nursery:
        door = _Door(ServerConfig(max_connections=7), nursery)
        for _ in range(5):
            door.note_full()
        await trio.sleep(9.9)
        assert [r.args for r in caplog.records] == [(1, 7)]
        await trio.sleep(0.2)
        assert [r.args for r in caplog.records] == [(1, 7), (4, 7)]
        await trio.testing.wait_all_tasks_blocked()
        assert not door._reporting  # the timer task ended with nothing left to report


# ------------------------------------------------------------------ the open-file limit


def test_max_connections_stays_below_the_open_file_limit(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_things.server")
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    assert _connection_limit(4096) == 1024 - 64
    assert "the open-file limit (ulimit -n) is 1024" in caplog.text
    assert _connection_limit(500) == 500
    monkeypatch.setattr(resource, "getrlimit",
                        lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert _connection_limit(100_000) == 100_000


class OutOfDescriptors(trio.abc.Listener[trio.abc.Stream]):
    """Accepts one connection, then fails ``failures`` times with EMFILE (as accept()
    does at the open-file limit), then accepts one more, and waits for ever."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.accepts = 0
        self.clients: list[trio.abc.Stream] = []
        self.accepted_again = trio.Event()

    async def accept(self) -> trio.abc.Stream:
        if len(self.clients) == 2:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        self.accepts += 1
        if self.accepts > 1 and self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        client, server_end = trio.testing.memory_stream_pair()
        self.clients.append(client)
        if len(self.clients) == 2:
            self.accepted_again.set()
        return server_end

    async def aclose(self) -> None:
        pass


async def echo(stream: trio.abc.Stream) -> None:
    async for data in stream:
        await stream.send_all(data)


async def test_out_of_descriptors_accept_waits_logs_once_per_interval_and_serves_on(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    """Trio's serve_listeners alone logs an ERROR with a traceback at every failed
    accept(), ten a second; through a patient listener, one line per 10 s says how many
    failed, and the connection already open is served meanwhile."""
    caplog.set_level(logging.INFO)
    listener = OutOfDescriptors(failures=300)  # 30 s of retries, one each 0.1 s
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, echo, [_PatientListener(listener)])
        await trio.testing.wait_all_tasks_blocked()
        [open_one] = listener.clients
        for _ in range(25):  # while accept() fails, the open connection is served
            await open_one.send_all(b"ping")
            assert await open_one.receive_some() == b"ping"
            await trio.sleep(1)
        with trio.fail_after(TIMEOUT):
            await listener.accepted_again.wait()
        assert listener.failures == 0
        nursery.cancel_scope.cancel()
    assert not [r for r in caplog.records if r.name == "trio.serve_listeners"]
    records = [r for r in caplog.records if r.name == "trio_things.server"]
    errors = [r for r in records if r.levelno == logging.ERROR]
    assert len(errors) == 3  # at 0 s, 10 s and 20 s
    assert all(r.exc_info is None and "EMFILE" in r.getMessage() for r in errors)
    [recovered] = [r for r in records if r.levelno == logging.WARNING]
    assert "accepting connections again" in recovered.getMessage()
    assert sum(r.args[2] for r in errors) + recovered.args[0] == 300  # type: ignore[index]
