"""Observing over plain HTTP on real loopback sockets: Server-Sent Events with consumers
that stall or vanish by the thousand, and long-polls (``docs/observing-over-http.md``).

Sockets, because what a stalled consumer fills is the kernel's buffers, and what a
vanished one sends is a FIN or a reset: memory streams have neither. The clock is the
real one, so every wait is under ``trio.fail_after``; a condition the server reaches
by itself (an observer forgotten) is waited for by :func:`eventually`, which lets the
loop run (and poll its sockets) between tries, never by a sleep.
"""

from __future__ import annotations

import resource
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import pytest
import trio
import trio.lowlevel

import trio_things as tt
from tests.helpers.servers import LoopbackServer, observer_count, serve_on_loopback
from tests.helpers.sockets import reset_on_close
from tests.helpers.sse import ACCEPT_SSE, SseClient
from trio_things.config import ServerConfig
from trio_things.fanout.outbox import Outbox
from trio_things.protocol.limits import HttpLimits
from trio_things.server import ThingServer
from trio_things.testing import HttpConnection, Response

HOST = "127.0.0.1"
GAP_TYPE = "tag:trio-things,2026:notifications-missed"


class Beacon(tt.Thing):
    level: int = tt.property(default=0)
    blob: str = tt.property(default="")
    flashed: tt.Event[int] = tt.event(int)


@attrs.frozen
class Served:
    loopback: LoopbackServer
    server: ThingServer
    beacon: Beacon

    @property
    def port(self) -> int:
        return self.loopback.port

    def observers(self) -> int:
        return observer_count(self.server)


@asynccontextmanager
async def loopback(**config: Any) -> AsyncIterator[Served]:
    """A server with one Beacon on a free loopback port, ``ServerConfig(**config)``."""
    server = ThingServer(ServerConfig(port=0, **config))
    beacon = Beacon()
    server.add_thing("beacon", beacon)
    async with serve_on_loopback(server) as served:
        yield Served(served, server, beacon)


async def eventually(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds; between tries the loop runs every task and
    polls the sockets. Bounded by the caller's ``fail_after``."""
    while not condition():
        await trio.lowlevel.checkpoint()


async def sse_client(port: int, path: str, *, receive_buffer: int | None = None,
                     read_head: bool = True) -> SseClient:
    """An event stream consumer of ``path``; with ``receive_buffer``, its socket's
    receive buffer is that small (set before connecting, so the window is small from
    the start); without ``read_head``, the request is sent and nothing read."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect((HOST, port))
    client = SseClient(trio.SocketStream(sock), host=f"{HOST}:{port}")
    if read_head:
        await client.request(path, ACCEPT_SSE)
        assert client.is_stream, (client.status, client.body)
    else:
        await client.stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode())
    return client


def outboxes(server: ThingServer) -> set[Outbox]:
    """Every Outbox any observer set holds."""
    assert server._dispatcher is not None
    return {outbox for observers in server._dispatcher.observers for outbox in observers}


# ------------------------------------------------------------------ SSE consumers

WRITE_TIMEOUT = 1.0


async def test_a_stalled_consumer_is_dropped_within_the_write_timeout_and_others_go_on(
) -> None:
    """One consumer never reads its socket (a small receive buffer, soon full); another
    reads every value, each set only once the one before has arrived. The stalled one
    is dropped ``stream_write_timeout`` after its writes stopped making progress; the
    other misses nothing, before, during and after."""
    async with loopback(http=HttpLimits(stream_write_timeout=WRITE_TIMEOUT)) as served:
        with trio.fail_after(30):
            reader = await sse_client(served.port, "/beacon/blob")
            assert (await reader.next_message()).json() == ""
            stalled = await sse_client(served.port, "/beacon/blob", receive_buffer=4096,
                                       read_head=False)
            await eventually(lambda: served.observers() == 2)
            received: list[str] = []
            stalled_at = dropped_at = None
            n = after_drop = 0
            while after_drop < 20:  # values the reader gets after the drop
                n += 1
                after_drop += dropped_at is not None
                served.beacon.blob = f"{n}:" + "x" * 65536
                received.append((await reader.next_message()).json())
                # The reader's Outbox is empty once it has the value; one that holds
                # a value still is the stalled consumer's, whose write cannot finish.
                if stalled_at is None and any(
                        o.statistics().pending_latest for o in outboxes(served.server)):
                    stalled_at = trio.current_time()
                if dropped_at is None and served.observers() == 1:
                    dropped_at = trio.current_time()
                assert n < 100_000, "the stalled consumer was never dropped"
            assert stalled_at is not None and dropped_at is not None
            assert dropped_at - stalled_at < WRITE_TIMEOUT + 0.5
            assert [value.partition(":")[0] for value in received] == [
                str(i) for i in range(1, n + 1)]
            # Only the reader is left; the stalled one's connection was closed.
            assert len(outboxes(served.server)) == 1
            await stalled.stream.aclose()
            await reader.stream.aclose()


CLIENTS = 1000


def allow_open_files(needed: int) -> None:
    """Raise the soft open-file limit to ``needed``; fail, saying why, if the hard one
    does not allow it (never a silent skip)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"needs {needed} open files; the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_a_thousand_consumers_that_vanish_leave_no_observer_behind() -> None:
    allow_open_files(2 * CLIENTS + 200)  # both ends of each connection, in this process
    async with loopback(max_connections_per_client=CLIENTS + 10) as served:
        with trio.fail_after(120):
            clients: list[SseClient] = []

            async def consume() -> None:
                client = await sse_client(served.port, "/beacon/level")
                assert (await client.next_message()).json() == 0
                clients.append(client)

            for _ in range(CLIENTS // 100):
                async with trio.open_nursery() as nursery:
                    for _ in range(100):
                        nursery.start_soon(consume)
            assert served.observers() == CLIENTS
            for i, client in enumerate(clients):  # half crash (RST), half close (FIN)
                assert isinstance(client.stream, trio.SocketStream)
                if i % 2:
                    reset_on_close(client.stream)
                await trio.aclose_forcefully(client.stream)
            served.beacon.level = 1  # published to whoever is still thought there
            await eventually(lambda: served.observers() == 0)
            assert outboxes(served.server) == set()
            # And the server serves the next one as the first.
            fresh = await sse_client(served.port, "/beacon/level")
            assert (await fresh.next_message()).json() == 1
            served.beacon.level = 2
            assert (await fresh.next_message()).json() == 2
            await fresh.stream.aclose()


# ------------------------------------------------------------------ long-poll


async def http_client(port: int) -> HttpConnection:
    return HttpConnection(await trio.open_tcp_stream(HOST, port), host=f"{HOST}:{port}",
                          timeout=None)


@attrs.define
class Poll:
    """A request answered in a task of its own."""

    response: Response | None = None
    error: BaseException | None = None
    done: trio.Event = attrs.Factory(trio.Event)


def start_poll(nursery: trio.Nursery, client: HttpConnection, path: str,
               headers: dict[str, str] | None = None, method: str = "GET") -> Poll:
    poll = Poll()

    async def run() -> None:
        try:
            poll.response = await client.request(method, path, headers=headers)
        except (ConnectionError, trio.BrokenResourceError, h11.RemoteProtocolError) as error:
            poll.error = error
        finally:
            poll.done.set()

    nursery.start_soon(run)
    return poll


async def waiting_poll(served: Served, nursery: trio.Nursery, client: HttpConnection,
                       path: str, headers: dict[str, str] | None = None) -> Poll:
    """A long-poll started, and known to wait: its observer is in place."""
    before = served.observers()
    poll = start_poll(nursery, client, path, headers)
    await eventually(lambda: served.observers() > before)
    assert poll.response is None
    return poll


def parse_id(event_id: str) -> tuple[str, int]:
    epoch, _, sequence = event_id.partition(".")
    return epoch, int(sequence)


async def test_a_property_long_poll_answers_at_the_next_change() -> None:
    async with loopback() as served:
        with trio.fail_after(10):
            client = await http_client(served.port)
            async with trio.open_nursery() as nursery:
                poll = await waiting_poll(served, nursery, client, "/beacon/level/next")
                served.beacon.level = 5
            response = poll.response
            assert response is not None
            assert response.status == 200
            assert response.json() == 5
            assert response.headers["content-type"] == "application/json"
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["etag"].startswith('"')
            parse_id(response.headers["last-event-id"])
            assert served.observers() == 0
            # The connection is kept alive: the next poll waits for the next change.
            async with trio.open_nursery() as nursery:
                poll = await waiting_poll(served, nursery, client, "/beacon/level/next")
                served.beacon.level = 6
            assert poll.response is not None and poll.response.json() == 6
            assert parse_id(poll.response.headers["last-event-id"]) > parse_id(
                response.headers["last-event-id"])


async def test_if_none_match_answers_at_once_unless_it_is_the_current_value() -> None:
    async with loopback() as served:
        with trio.fail_after(10):
            client = await http_client(served.port)
            # An ETag of no value: the current one is newer, sent at once.
            current = await client.get("/beacon/level/next",
                                       headers={"if-none-match": '"not-this"'})
            assert (current.status, current.json()) == (200, 0)
            etag0 = current.headers["etag"]
            # The current value's ETag (also weakly, or in a list, or *): wait for news.
            etag = etag0
            for tag in ("{}", "W/{}", '"other", {}', "*"):
                async with trio.open_nursery() as nursery:
                    poll = await waiting_poll(served, nursery, client, "/beacon/level/next",
                                              {"if-none-match": tag.format(etag)})
                    served.beacon.level += 1
                assert poll.response is not None
                assert poll.response.json() == served.beacon.level, tag
                assert poll.response.headers["etag"] != etag
                etag = poll.response.headers["etag"]
            # A stale ETag: the value changed since, so it is sent at once.
            stale = await client.get("/beacon/level/next", headers={"if-none-match": etag0})
            assert (stale.status, stale.json()) == (200, served.beacon.level)
            # The ETag is the value's: the same value has the same one.
            served.beacon.level = 0
            again = await client.get("/beacon/level/next", headers={"if-none-match": '"x"'})
            assert again.headers["etag"] == etag0
            assert served.observers() == 0


async def test_an_event_long_poll_answers_the_next_event_and_resumes_at_once() -> None:
    async with loopback() as served:
        with trio.fail_after(10):
            client = await http_client(served.port)
            async with trio.open_nursery() as nursery:
                poll = await waiting_poll(served, nursery, client, "/beacon/events/flashed")
                served.beacon.flashed.emit(1)
            assert poll.response is not None
            assert (poll.response.status, poll.response.json()) == (200, 1)
            last = poll.response.headers["last-event-id"]
            served.beacon.flashed.emit(2)  # while nobody polls
            served.beacon.flashed.emit(3)
            # Each missed event at once, oldest first, by its successor's id.
            for expected in (2, 3):
                missed = await client.get("/beacon/events/flashed",
                                          headers={"last-event-id": last})
                assert (missed.status, missed.json()) == (200, expected)
                assert parse_id(missed.headers["last-event-id"]) > parse_id(last)
                last = missed.headers["last-event-id"]
            # Nothing missed after the last: wait for the next.
            async with trio.open_nursery() as nursery:
                poll = await waiting_poll(served, nursery, client, "/beacon/events/flashed",
                                          {"last-event-id": last})
                served.beacon.flashed.emit(4)
            assert poll.response is not None and poll.response.json() == 4
            assert served.observers() == 0


async def test_an_event_long_poll_past_the_ring_is_409_with_a_resume_id() -> None:
    async with loopback(replay_size=2) as served:
        with trio.fail_after(10):
            client = await http_client(served.port)
            async with trio.open_nursery() as nursery:
                poll = await waiting_poll(served, nursery, client, "/beacon/events/flashed")
                served.beacon.flashed.emit(0)
            assert poll.response is not None
            last = poll.response.headers["last-event-id"]
            for n in range(1, 6):  # the ring keeps 4 and 5
                served.beacon.flashed.emit(n)
            gap = await client.get("/beacon/events/flashed", headers={"last-event-id": last})
            assert gap.status == 409
            assert gap.headers["content-type"] == "application/problem+json"
            problem = gap.json()
            assert problem["type"] == GAP_TYPE
            assert problem["lastEventID"] == last
            assert gap.headers["last-event-id"] == problem["resumeID"]
            resumed = await client.get("/beacon/events/flashed",
                                       headers={"last-event-id": problem["resumeID"]})
            assert (resumed.status, resumed.json()) == (200, 4)
            # An id of another run (or none of ours) is a gap too.
            for other in ("0badc0de.1", "garbage"):
                refused = await client.get("/beacon/events/flashed",
                                           headers={"last-event-id": other})
                assert refused.status == 409, other
                assert refused.json()["lastEventID"] == other
            assert served.observers() == 0


@pytest.mark.parametrize("path", ["/beacon/level/next", "/beacon/events/flashed"])
async def test_a_long_poll_with_nothing_new_is_204_after_the_timeout(path: str) -> None:
    async with loopback(long_poll_timeout=0.3) as served:
        with trio.fail_after(10):
            client = await http_client(served.port)
            start = trio.current_time()
            response = await client.get(path)
            assert response.status == 204
            assert response.body == b""
            assert trio.current_time() - start >= 0.3
            assert served.observers() == 0
            # The connection goes on.
            assert (await client.get("/beacon/level")).json() == 0


@pytest.mark.parametrize("path", ["/beacon/level/next", "/beacon/events/flashed"])
async def test_head_of_a_long_poll_answers_at_once(path: str) -> None:
    async with loopback(long_poll_timeout=30.0) as served:
        with trio.fail_after(5):
            client = await http_client(served.port)
            response = await client.request("HEAD", path)
            assert response.status == 200
            assert response.headers["content-type"] == "application/json"
            assert response.body == b""
            assert served.observers() == 0
            assert (await client.get("/beacon/level")).json() == 0


@pytest.mark.parametrize("crash", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("path", ["/beacon/level/next", "/beacon/events/flashed"])
async def test_a_long_poll_whose_client_leaves_is_ended_at_once(path: str, crash: bool
                                                                ) -> None:
    """Not at the long-poll's timeout (30 s here): its observer goes with its client."""
    async with loopback(long_poll_timeout=30.0) as served:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(HOST, served.port)
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            await eventually(lambda: served.observers() == 1)
            if crash:
                reset_on_close(stream)
            await stream.aclose()
            await eventually(lambda: served.observers() == 0)
            assert outboxes(served.server) == set()
            # The server goes on: another long-poll gets the next change.
            client = await http_client(served.port)
            async with trio.open_nursery() as nursery:
                poll = await waiting_poll(served, nursery, client, "/beacon/level/next")
                served.beacon.level = 1
            assert poll.response is not None and poll.response.json() == 1


async def test_a_long_poll_that_pipelines_its_next_request_is_still_answered() -> None:
    """A client that sends more while it waits has not left: its poll is answered at
    the change, and the request it sent meanwhile after it."""
    async with loopback(long_poll_timeout=30.0) as served:
        with trio.fail_after(5):
            client = await http_client(served.port)
            stream = client.stream
            await stream.send_all(
                f"GET /beacon/level/next HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
                f"GET /beacon/level HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            await eventually(lambda: served.observers() == 1)
            served.beacon.level = 3
            received = b""
            while received.count(b"HTTP/1.1 200") < 2 or not received.endswith(b"3"):
                data = await stream.receive_some()
                assert data, received
                received += data
            assert received.count(b"\r\n\r\n3") == 2  # both answered, with the value


async def test_a_pending_long_poll_ends_cleanly_when_the_server_stops() -> None:
    async with loopback(long_poll_timeout=30.0) as served:
        with trio.fail_after(5):
            assert served.server._dispatcher is not None
            observers = served.server._dispatcher.observers
            client = await http_client(served.port)
            async with trio.open_nursery() as nursery:
                poll = await waiting_poll(served, nursery, client, "/beacon/level/next")
                [outbox] = outboxes(served.server)
                await served.loopback.stop()
                await poll.done.wait()
            assert poll.response is None
            # Closed unanswered (or reset), not answered 204 or 500.
            assert isinstance(poll.error, ConnectionError | trio.BrokenResourceError
                              | h11.RemoteProtocolError), poll.error
            assert outbox.closed
            assert all(len(s) == 0 for s in observers)


async def test_a_long_poll_that_times_out_says_where_to_come_back_from() -> None:
    """204 carries the id of when the poll began: an event emitted between that answer
    and the next poll is the next poll's answer, at once."""
    async with loopback(long_poll_timeout=0.3) as served:
        with trio.fail_after(10):
            client = await http_client(served.port)
            first = await client.get("/beacon/events/flashed")
            assert first.status == 204
            position = first.headers["last-event-id"]
            served.beacon.flashed.emit(5)  # while nobody polls
            second = await client.get("/beacon/events/flashed",
                                      headers={"last-event-id": position})
            assert (second.status, second.json()) == (200, 5)
            assert parse_id(second.headers["last-event-id"]) > parse_id(position)
            # A property's poll has no such id: its ETag says where it is.
            third = await client.get("/beacon/level/next")
            assert third.status == 204 and "last-event-id" not in third.headers
