"""The server-wide connection cap (``[server] max_connections``: 503 beyond it), the
open-file limit (raised to the hard limit at start; ``max_connections`` kept below it),
accept() failing for want of file descriptors (EMFILE: waited out, one log line per
10 s, the open connections served on), accepting in bursts, and the sans-IO counts
behind them (``trio_things.transport.admission``)."""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio
import trio.testing

from trio_things.config import ServerConfig
from trio_things.demo import Counter
from trio_things.errors import TooManyRequests
from trio_things.server import ThingServer, _connection_limit, _Door
from trio_things.testing import HttpConnection
from trio_things.transport import listeners
from trio_things.transport.admission import ConnectionCap, RefusalTally
from trio_things.transport.listeners import ServedStream, _Acceptor, _raise_open_file_limit

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


class ScriptedSocket(socket.socket):
    """A listening socket (a duplicate of a real one, so that Trio can wait on it) whose
    ``accept()`` first fails ``failures`` times with ``error``, then returns the
    connections queued in ``waiting`` (from 192.0.2.7), then accepts for real.
    ``accepts`` counts the calls."""

    def __init__(self, listener: trio.SocketListener, *, failures: int = 0,
                 error: int = errno.EMFILE) -> None:
        super().__init__(fileno=os.dup(listener.socket.fileno()))
        self.failures = failures
        self.error = error
        self.waiting: list[socket.socket] = []
        self.accepts = 0

    def accept(self) -> tuple[socket.socket, object]:
        self.accepts += 1
        if self.failures:
            self.failures -= 1
            raise OSError(self.error, os.strerror(self.error))
        if self.waiting:
            return self.waiting.pop(0), ("192.0.2.7", 5000)
        return super().accept()


async def loopback_listener() -> trio.SocketListener:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    return listener


async def echo(stream: ServedStream, address: str) -> None:
    async with stream:
        async for data in stream:
            await stream.send_all(data)


async def test_out_of_descriptors_accept_waits_logs_once_per_interval_and_serves_on(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    """Trio's serve_listeners alone logs an ERROR with a traceback at every failed
    accept(), ten a second; here one line per 10 s says how many failed, and the
    connection already open is served meanwhile, the new one waiting in the backlog."""
    caplog.set_level(logging.INFO)
    listener = await loopback_listener()
    port = listener.socket.getsockname()[1]
    sock = ScriptedSocket(listener)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_Acceptor(listener, sock=sock).serve, echo, nursery)
        open_one = await trio.open_tcp_stream("127.0.0.1", port)
        await open_one.send_all(b"ping")
        assert await open_one.receive_some() == b"ping"
        sock.failures = 300  # 30 s of retries, one each 0.1 s
        waiting = await trio.open_tcp_stream("127.0.0.1", port)
        await waiting.send_all(b"waited")
        for _ in range(25):  # while accept() fails, the open connection is served
            await open_one.send_all(b"ping")
            assert await open_one.receive_some() == b"ping"
            await trio.sleep(1)
        with trio.fail_after(TIMEOUT):
            assert await waiting.receive_some() == b"waited"  # accepted at last
        assert sock.failures == 0
        nursery.cancel_scope.cancel()
    assert sock.fileno() == -1  # the duplicate is closed with the acceptor
    records = [r for r in caplog.records if r.name == "trio_things.server"]
    errors = [r for r in records if r.levelno == logging.ERROR]
    assert len(errors) == 3  # at 0 s, 10 s and 20 s
    assert all(r.exc_info is None for r in errors)
    assert errors[0].getMessage().startswith(
        "cannot accept more connections: EMFILE (Too many open files: the open-file "
        "limit, ulimit -n, is ")
    [recovered] = [r for r in records if r.levelno == logging.WARNING]
    assert "accepting connections again" in recovered.getMessage()
    assert sum(r.args[1] for r in errors) + recovered.args[0] == 300  # type: ignore[index]


async def test_one_wake_up_accepts_every_waiting_connection_up_to_the_burst() -> None:
    """Accepting takes no checkpoint between connections (so it does not admit one per
    scheduler round): one call accepts all that wait, up to the burst, and starts a
    handler for each; a connection that went away before accept() is skipped; a lack of
    descriptors stops the burst, and is returned to be waited out."""
    listener = await loopback_listener()
    sock = ScriptedSocket(listener)
    acceptor = _Acceptor(listener, sock=sock, burst=4)
    ends = [socket.socketpair() for _ in range(11)]
    sock.waiting = [server_end for server_end, _ in ends[:10]]
    started: list[str] = []

    async def handler(stream: ServedStream, address: str) -> None:
        started.append(address)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        accepted = []
        for _ in range(3):
            before = len(nursery.child_tasks)
            assert acceptor._accept_waiting(handler, nursery) is None
            accepted.append(len(nursery.child_tasks) - before)
        assert accepted == [4, 4, 2]  # and the third call found none left waiting
        assert sock.accepts == 4 + 4 + 3
        await trio.testing.wait_all_tasks_blocked()
        assert started == ["192.0.2.7"] * 10
        for _, client_end in ends[:10]:
            assert client_end.recv(1) == b""  # served (here: closed by the handler)

        sock.failures, sock.error = 1, errno.ECONNABORTED
        sock.waiting = [ends[10][0]]
        assert acceptor._accept_waiting(handler, nursery) is None
        await trio.testing.wait_all_tasks_blocked()
        assert len(started) == 11  # the aborted one skipped, the next one accepted

        sock.failures, sock.error = 1, errno.EMFILE
        failed = acceptor._accept_waiting(handler, nursery)
        assert isinstance(failed, OSError) and failed.errno == errno.EMFILE
    sock.close()
    await listener.aclose()
    for server_end, client_end in ends:
        server_end.close()
        client_end.close()


# ------------------------------------------------------------------ the real server


@contextmanager
def open_file_limit(soft: int) -> Iterator[None]:
    """Set this process's open-file soft limit for the block; then set it back."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@contextmanager
def descriptors_but(free: int) -> Iterator[None]:
    """Take every descriptor the open-file limit leaves but ``free`` for the block."""
    taken: list[int] = []
    try:
        while True:
            try:
                taken.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as error:
                assert error.errno == errno.EMFILE
                break
        for _ in range(free):
            os.close(taken.pop())
        yield
    finally:
        for fd in taken:
            os.close(fd)


def test_the_open_file_limit_is_raised_to_the_hard_limit(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_things.server")
    limits = {"now": (1024, 524288)}
    monkeypatch.setattr(resource, "getrlimit", lambda _: limits["now"])

    def setrlimit(_: int, value: tuple[int, int]) -> None:
        if value[0] > 1_048_576:
            raise ValueError("not allowed")
        limits["now"] = value

    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    _raise_open_file_limit()
    assert limits["now"] == (524288, 524288)
    assert caplog.messages == [
        "raised the open-file limit (ulimit -n) from 1024 to 524288 (the hard limit: 524288)"]
    _raise_open_file_limit()  # nothing left to raise
    assert caplog.messages[-1] == (
        "the open-file limit (ulimit -n) is 524288, the most the hard limit allows")
    limits["now"] = (1024, resource.RLIM_INFINITY)  # unlimited: as far as Linux allows
    _raise_open_file_limit()
    assert limits["now"] == (1 << 20, resource.RLIM_INFINITY)
    assert caplog.messages[-1] == (
        "raised the open-file limit (ulimit -n) from 1024 to 1048576 (the hard limit: "
        "unlimited)")
    monkeypatch.setattr(listeners, "_UNLIMITED_NOFILE", 1 << 30)
    limits["now"] = (1024, resource.RLIM_INFINITY)
    _raise_open_file_limit()
    assert limits["now"] == (1024, resource.RLIM_INFINITY)
    assert caplog.messages[-1].startswith(
        "the open-file limit (ulimit -n) stays 1024: raising it to 1073741824 failed")


async def test_serve_raises_the_open_file_limit_before_sizing_the_cap(
        caplog: pytest.LogCaptureFixture) -> None:
    """A server started with a low soft limit raises it to the hard limit, and only then
    keeps ``max_connections`` below it: started at 256, a hard limit of 8,192 or more
    leaves the default 4,096 as it is."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 8192:
        pytest.fail(f"this test needs an open-file hard limit of 8192 or more, not {hard}")
    caplog.set_level(logging.INFO, logger="trio_things.server")
    server = ThingServer(ServerConfig(port=0))
    server.add_thing("counter", Counter())
    with open_file_limit(256), trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            assert soft >= 8192
            assert soft == hard or hard == resource.RLIM_INFINITY
            nursery.cancel_scope.cancel()
    assert any(m.startswith("raised the open-file limit (ulimit -n) from 256 to ")
               for m in caplog.messages)
    assert not [m for m in caplog.messages if "serving at most" in m]


async def test_at_the_open_file_limit_the_server_says_so_once_and_serves_the_open_ones(
        caplog: pytest.LogCaptureFixture) -> None:
    """With no descriptor left for accept(), a new client waits in the backlog, one
    ERROR line names the cause (EMFILE, the open-file limit), and a client already
    connected is served; once descriptors are free again, the waiting one is served too,
    and a WARNING says accepting works again."""
    caplog.set_level(logging.INFO, logger="trio_things.server")
    server = ThingServer(ServerConfig(port=0))
    server.add_thing("counter", Counter())
    said = trio.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.ERROR:
                said.set()

    watch = Watch()
    logging.getLogger("trio_things.server").addHandler(watch)
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                listeners_ = await nursery.start(server.serve)
                host, port = listeners_[0].socket.getsockname()[:2]
                authority = f"{host}:{port}"
                first = HttpConnection(await trio.open_tcp_stream(host, port),
                                       host=authority)
                assert (await first.get("/counter/count")).status == 200
                soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
                used = max(int(fd) for fd in os.listdir("/proc/self/fd"))
                answered: list[int] = []
                done = trio.Event()

                async def ask(waiting: HttpConnection) -> None:
                    answered.append((await waiting.get("/counter/count")).status)
                    done.set()

                with open_file_limit(min(soft, used + 64)):
                    with descriptors_but(1):  # for the client's socket: none for accept()
                        waiting = HttpConnection(await trio.open_tcp_stream(host, port),
                                                 host=authority)
                        nursery.start_soon(ask, waiting)
                        await said.wait()
                        assert (await first.get("/counter/count")).status == 200
                        assert not answered  # it waits in the backlog
                await done.wait()  # accepted within a retry (0.1 s) of their return
                assert answered == [200]
                await first.stream.aclose()
                await waiting.stream.aclose()
                nursery.cancel_scope.cancel()
    finally:
        logging.getLogger("trio_things.server").removeHandler(watch)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert errors[0].getMessage().startswith(
        "cannot accept more connections: EMFILE (Too many open files: the open-file "
        "limit, ulimit -n, is ")
    assert "serving the connections already open" in errors[0].getMessage()
    assert [r.getMessage().split(",")[0] for r in caplog.records
            if r.levelno == logging.WARNING] == ["accepting connections again"]
