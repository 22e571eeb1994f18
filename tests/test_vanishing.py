"""Clients that vanish at the worst moment: mid-request, mid-notification, mid-action.

After each, the server must hold nothing of the dead connection: no observer set holds
its Outbox, the task serving it has returned by itself (never cancelled by the test) and
closed its stream, and a fresh client is served correctly. The connection task runs in a
nursery of its own (:func:`serve_one`), so "returned" is checked, not assumed.

Rules, as in ``tests/test_websockets.py``: in-memory streams (lockstep where a write must
be in progress), loopback only where a test says so (a real FIN or RST), every wait under
``trio.fail_after``, no sleeps to synchronise. The mid-handshake case is in
``tests/test_websockets.py`` (``test_a_client_that_vanishes_mid_handshake_leaves_nothing``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trio_websocket

import trio_things as tt
from tests.helpers.httpclient import connect
from tests.helpers.servers import observer_count
from tests.helpers.sockets import reset_on_close
from tests.helpers.wsclient import RawWebSocket, open_ws, receive, request
from tests.soak.probes import KINDS, run_soak
from trio_things.config import ServerConfig
from trio_things.fanout.outbox import Outbox
from trio_things.server import ThingServer
from trio_things.transport.http import HttpRequest, HttpResponse

WTP = ["webthingprotocol"]


class Gate(tt.Thing):
    """A property, an event, and an action that runs until the test releases it."""

    level: int = tt.property(default=0)
    tick = tt.event(int)

    def __init__(self) -> None:
        super().__init__()
        self.started = trio.Event()
        self.release = trio.Event()

    @tt.action
    async def hold(self) -> int:
        """Run until released; return 42."""
        self.started.set()
        await self.release.wait()
        return 42


@pytest.fixture
async def server() -> AsyncIterator[ThingServer]:
    server = ThingServer(ServerConfig(invocation_retention=600.0))
    server.add_thing("gate", Gate())
    async with server.running():
        yield server


def gate_of(server: ThingServer) -> Gate:
    gate = server.things["gate"]
    assert isinstance(gate, Gate)
    return gate


# --------------------------------------------------------------------------- helpers


class WatchedStream(trio.abc.HalfCloseableStream):
    """A stream that delegates everything and records what the server did with it:
    whether a ``send_all`` is in progress, and whether it was closed."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self._stream = stream
        self.sending = 0
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sending += 1
        try:
            await self._stream.send_all(data)
        finally:
            self.sending -= 1

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        self.closed = True
        await self._stream.aclose()


@attrs.define(eq=False)
class Served:
    """One server-side connection, ``server.handle_connection(stream)``, run by a test."""

    nursery: trio.Nursery
    stream: trio.abc.Stream
    done: trio.Event = attrs.field(factory=trio.Event)

    async def ended(self, within: float = 10.0) -> None:
        """Wait for the connection task to return by itself (at most ``within``
        seconds); check it closed its stream and left no task behind."""
        with trio.fail_after(within):
            await self.done.wait()
        await trio.lowlevel.checkpoint()  # let the task finish exiting after its finally
        assert not self.nursery.child_tasks, self.nursery.child_tasks
        if isinstance(self.stream, WatchedStream):
            assert self.stream.closed
        else:
            assert isinstance(self.stream, trio.SocketStream)
            assert self.stream.socket.fileno() == -1  # the server closed the socket


@asynccontextmanager
async def serve_one(server: ThingServer, stream: trio.abc.Stream) -> AsyncIterator[Served]:
    """Run ``server.handle_connection(stream)`` in a nursery holding nothing else."""
    async with trio.open_nursery() as nursery:
        served = Served(nursery=nursery, stream=stream)

        async def run() -> None:
            try:
                await server.handle_connection(stream)
            finally:
                served.done.set()

        nursery.start_soon(run, name="the connection under test")
        yield served


StreamPair = Callable[[], tuple[trio.StapledStream[Any, Any], trio.StapledStream[Any, Any]]]


def memory_pair(pair: StreamPair = trio.testing.memory_stream_pair
                ) -> tuple[trio.abc.Stream, WatchedStream]:
    """In-memory (client, server) ends, the server's watched."""
    client_stream, server_stream = pair()
    return client_stream, WatchedStream(server_stream)


@asynccontextmanager
async def loopback_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """A real TCP connection on 127.0.0.1: (client, server) ends."""
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        client_stream = await trio.open_tcp_stream("127.0.0.1", port)
        server_stream = await listener.accept()
        yield client_stream, server_stream


@asynccontextmanager
async def client_and_server(*, loopback: bool
                            ) -> AsyncIterator[tuple[trio.abc.Stream, trio.abc.Stream]]:
    """(client, server) ends of a loopback TCP connection or of in-memory streams."""
    if not loopback:
        yield memory_pair()
        return
    async with loopback_pair() as pair:
        yield pair


def observed_outboxes(server: ThingServer) -> set[Outbox]:
    """Every Outbox any observer set holds."""
    assert server._dispatcher is not None
    return {outbox for observers in server._dispatcher.observers for outbox in observers}


def assert_forgotten(server: ThingServer, outbox: Outbox) -> None:
    """The dead connection's Outbox is closed and in no observer set."""
    assert server._dispatcher is not None
    assert outbox.closed
    assert not server._dispatcher.observers.memberships(outbox)
    assert all(outbox not in s for s in server._dispatcher.observers)
    assert outbox not in observed_outboxes(server)


async def assert_serves_a_fresh_client(server: ThingServer) -> None:
    """A new HTTP client can write and read; a new WebSocket client observes a change."""
    gate = gate_of(server)
    with trio.fail_after(10):
        async with connect(server) as http:
            assert (await http.put("/gate/level", gate.level + 1)).status == 204
            assert (await http.get("/gate/level")).json() == gate.level
        async with open_ws(server, "/gate/ws", WTP) as ws:
            await request(ws, "observeproperty", thing=None, name="level")
            assert (await receive(ws))["value"] == gate.level
            gate.level += 1
            assert (await receive(ws))["value"] == gate.level
    assert observer_count(server) == 0


# --------------------------------------------------------------------------- HTTP requests

#: (what the client sends before it vanishes, a name for the test id)
PARTIAL_REQUESTS = [
    pytest.param(b"PUT /gate/level HTTP/1.1\r\nHost: testserver\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                 b"1234567890", id="mid-body"),
    pytest.param(b"PUT /gate/level HTTP/1.1\r\nHost: testserver\r\n"
                 b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"2\r\n12\r\n5\r\n34", id="mid-chunked-body"),
    pytest.param(b"PUT /gate/level HTTP/1.1\r\nHost: testserver\r\nContent-Le",
                 id="mid-head"),
]


@pytest.mark.parametrize("partial", PARTIAL_REQUESTS)
@pytest.mark.parametrize("vanish", ["memory-close", "loopback-fin", "loopback-rst"])
async def test_a_client_vanishing_mid_request_never_reaches_the_handler(
        server: ThingServer, monkeypatch: pytest.MonkeyPatch, partial: bytes,
        vanish: str) -> None:
    """A request whose client goes (closed in memory, or a real FIN or RST) before its
    head or body is complete is never handed to the request handler; the connection
    task returns by itself, and the server goes on serving."""
    handled: list[HttpRequest] = []
    handle = server._handle_request

    async def recording(request: HttpRequest) -> HttpResponse:
        handled.append(request)
        return await handle(request)

    monkeypatch.setattr(server, "_handle_request", recording)
    with trio.fail_after(10):
        async with client_and_server(loopback=vanish != "memory-close") as (
                client_stream, server_stream):
            async with serve_one(server, server_stream) as served:
                await client_stream.send_all(partial)
                if vanish == "loopback-rst":
                    assert isinstance(client_stream, trio.SocketStream)
                    reset_on_close(client_stream)
                await client_stream.aclose()
                await served.ended()
    assert handled == []
    assert gate_of(server).level == 0
    assert observer_count(server) == 0
    await assert_serves_a_fresh_client(server)
    assert [r.method for r in handled] == ["PUT", "GET"]  # the fresh client's, handled


async def test_a_client_vanishing_after_a_whole_request_still_gets_it_run(
        server: ThingServer) -> None:
    """The contrast to the above: a complete request whose client leaves before reading
    the answer is served (the write fails quietly) and the connection task returns."""
    client_stream, server_stream = memory_pair()
    with trio.fail_after(10):
        async with serve_one(server, server_stream) as served:
            await client_stream.send_all(
                b"PUT /gate/level HTTP/1.1\r\nHost: testserver\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1\r\n\r\n7")
            await client_stream.aclose()
            await served.ended()
    assert gate_of(server).level == 7
    await assert_serves_a_fresh_client(server)


# --------------------------------------------------------------------------- notifications


@pytest.mark.parametrize("read_before_vanishing", [0, 3])
async def test_an_observer_whose_stream_breaks_mid_write_is_forgotten(
        server: ThingServer, read_before_vanishing: int) -> None:
    """An observer whose connection breaks while the server is writing notifications to
    it (a write in progress; in one case with part of a frame already on the wire) is
    removed from every observer set and its connection task returns, while another
    observer receives every change, before and after the break, in order."""
    gate = gate_of(server)
    with trio.fail_after(10):
        async with open_ws(server, "/gate/ws", WTP) as healthy:
            await request(healthy, "subscribeevent", thing=None, name="tick")
            [healthy_outbox] = observed_outboxes(server)

            client_stream, server_stream = memory_pair(trio.testing.lockstep_stream_pair)
            async with serve_one(server, server_stream) as served:
                doomed = RawWebSocket(client_stream)
                await doomed.handshake("/gate/ws", WTP)
                await doomed.send({"messageID": "1", "messageType": "request",
                                   "operation": "subscribeevent", "name": "tick"})
                assert (await doomed.receive())["messageType"] == "response"
                [doomed_outbox] = observed_outboxes(server) - {healthy_outbox}

                for i in range(5):
                    gate.tick.emit(i)
                await trio.testing.wait_all_tasks_blocked()
                # The relay is blocked in its write: lockstep, and the client reads nothing.
                assert server_stream.sending == 1
                if read_before_vanishing:  # a few bytes of a frame reach the client
                    assert len(await client_stream.receive_some(read_before_vanishing)) > 0
                    await trio.testing.wait_all_tasks_blocked()
                    assert server_stream.sending == 1  # the rest of the write still waits
                await client_stream.aclose()
                await served.ended()
            assert_forgotten(server, doomed_outbox)
            assert observed_outboxes(server) == {healthy_outbox}

            for i in range(5, 10):
                gate.tick.emit(i)
            assert [(await receive(healthy))["data"] for _ in range(10)] == list(range(10))
    await assert_serves_a_fresh_client(server)


async def test_a_client_vanishing_mid_frame_is_forgotten(server: ThingServer) -> None:
    """A WebSocket client that sends half a frame (the header announces 100 bytes, 10
    come), then its stream closes: the connection task returns and its observations go."""
    client_stream, server_stream = memory_pair()
    with trio.fail_after(10):
        async with serve_one(server, server_stream) as served:
            raw = RawWebSocket(client_stream)
            await raw.handshake("/gate/ws", WTP)
            await raw.send({"messageID": "1", "operation": "observeproperty", "name": "level"})
            assert (await raw.receive())["messageType"] == "response"
            [outbox] = observed_outboxes(server)
            # FIN, text, masked, 100 bytes of payload; then a mask key and 10 bytes.
            await client_stream.send_all(b"\x81\xe4" + b"\x00" * 4 + b"{" * 10)
            await client_stream.aclose()
            await served.ended()
    assert_forgotten(server, outbox)
    assert observer_count(server) == 0
    await assert_serves_a_fresh_client(server)


# --------------------------------------------------------------------------- actions


@pytest.mark.parametrize("how", ["close-handshake", "stream-aborted"])
async def test_a_websocket_invoker_leaving_mid_action_leaves_the_action_to_finish(
        server: ThingServer, how: str) -> None:
    """docs/fanout.md: however a connection ends, it leaves every observer set,
    "the invocations it started" included. The action itself runs on (nothing says a
    disconnect cancels it), ends ``completed`` and stays queryable, and the
    invocation's observer set is forgotten once it has ended."""
    gate = gate_of(server)
    assert server._dispatcher is not None
    observers = server._dispatcher.observers
    client_stream, server_stream = memory_pair()
    with trio.fail_after(10):
        async with serve_one(server, server_stream) as served:
            async with trio.open_nursery() as client:
                ws = await trio_websocket.wrap_client_stream(
                    client, client_stream, "testserver", "/gate/ws", subprotocols=WTP)
                response = await request(ws, "invokeaction", thing=None, name="hold")
                action_id = response["status"]["actionID"]
                assert (await receive(ws))["status"]["state"] == "running"
                await gate.started.wait()
                invocation_set = observers.invocation_if_observed(action_id)
                assert invocation_set is not None
                [outbox] = observed_outboxes(server)
                assert outbox in invocation_set
                if how == "close-handshake":
                    await ws.aclose()
                client.cancel_scope.cancel()
            await trio.aclose_forcefully(client_stream)
            await served.ended()
        assert_forgotten(server, outbox)
        assert len(invocation_set) == 0
        async with connect(server) as http:
            running = (await http.get(f"/action_invocations/{action_id}")).json()
            assert running["status"] == "running"  # the action did not notice
            gate.release.set()
            await trio.testing.wait_all_tasks_blocked()
            ended = (await http.get(f"/action_invocations/{action_id}")).json()
        assert ended["status"] == "completed"
        assert ended["output"] == 42
        assert observers.invocation_if_observed(action_id) is None  # forgotten
    assert observer_count(server) == 0
    await assert_serves_a_fresh_client(server)


@pytest.mark.parametrize("path", [
    pytest.param("/gate/hold", id="invoke-201"),
    pytest.param("/gate/actions/hold", id="invoke-and-wait"),
])
async def test_an_http_invoker_leaving_mid_action_leaves_the_action_to_finish(
        server: ThingServer, path: str) -> None:
    """A client that POSTs to an action and closes before reading the answer: the
    action runs to its end and its invocation is recorded ``completed``; the connection
    task returns, and no observer set was made for it.

    docs/http.md: ``POST /{thing}/{action}`` answers at once, so its connection ends while
    the action still runs. ``POST /{thing}/actions/{action}`` answers when the action
    ends; requests are read whole and nothing reads the socket while the handler waits,
    so the server learns that the client has gone only when that answer's write fails:
    the connection task (and its socket) lasts as long as the action.
    """
    gate = gate_of(server)
    assert server._dispatcher is not None
    client_stream, server_stream = memory_pair()
    with trio.fail_after(10):
        async with serve_one(server, server_stream) as served:
            await client_stream.send_all(
                f"POST {path} HTTP/1.1\r\nHost: testserver\r\n"
                "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".encode())
            await gate.started.wait()
            await client_stream.aclose()  # before reading a byte of the answer
            if path == "/gate/hold":
                await served.ended()  # the action still runs
            async with connect(server) as http:
                [invocation] = (await http.get("/action_invocations/")).json()
                assert invocation["status"] == "running"
                gate.release.set()
                await served.ended()
                ended = (await http.get(f"/action_invocations/{invocation['id']}")).json()
    assert ended["status"] == "completed"
    assert ended["output"] == 42
    assert server._dispatcher.observers.invocation_if_observed(invocation["id"]) is None
    assert observer_count(server) == 0
    await assert_serves_a_fresh_client(server)


# --------------------------------------------------------------------------- cycles


async def test_a_few_hundred_connect_disconnect_cycles_leave_nothing_behind() -> None:
    """The soak's cycles (tests/soak), briefly, over loopback: HTTP GETs, clean and
    abrupt WebSocket observers, abandoned bodies. Afterwards no connection object, task
    or observer membership is left beyond the witness's, and the witness got every event."""
    with trio.fail_after(30):
        figures = await run_soak(cycles=240, warmup=60, batch=20)
    assert set(figures.kinds.values()) == {300 // len(KINDS)}
    for name, count in figures.after.objects.items():
        assert count <= figures.before.objects[name], (name, figures.report())
    assert figures.before.objects["Outbox"] == 1  # the witness's, and only it
    assert figures.after.server_tasks == figures.before.server_tasks
    assert (figures.after.connections, figures.after.observers) == (1, 1)
    assert figures.ticks > 0
    assert (figures.idle_connections, figures.idle_observers, figures.idle_outboxes,
            figures.idle_admitted) == (0, 0, 0, 0)
