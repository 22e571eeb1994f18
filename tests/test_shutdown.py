"""Shutdown with clients connected and actions running.

Extends ``tests/test_server.py::test_shutdown_cancels_running_actions`` (one async action,
no clients) and ``tests/test_websockets.py::
test_server_shutdown_closes_websockets_with_1001_over_loopback`` (one observer, no
actions) to everything at once: async and worker-thread actions invoked over HTTP and
over WebSocket, observers in both dialects, idle and waiting HTTP connections.

What shutdown promises (docs/security.md "Failing Thing code", docs/configuration.md
"Stopping the server", docs/fanout.md "Server shutdown", docs/things.md "Cancellation"):

* every WebSocket client is sent close code 1001, the server waiting at most
  ``close_timeout`` for its answer; Ctrl-C ends ``serve`` within a second;
* every running action is cancelled and recorded ``cancelled``: an async action at its
  next ``await``, a worker thread where it calls ``context.sleep()`` or
  ``context.check_cancelled()``. A thread cannot be interrupted: one that does not check
  runs to its end, is recorded ``completed``, and shutdown waits for it;
* then the Things are exited, after nothing uses them.

Nothing promises the invoker a final ``cancelled`` notification at shutdown, and today
none arrives: the action and the connection are cancelled at the same moment, and once
cancelled the connection's relay writes nothing more; only the close frame (written
under a shield) goes out. The tests check that no notification contradicts the record.

Rules as in ``tests/helpers/wsclient.py``: memory streams unless a test says loopback, the
autojump clock for anything timed, every wait under ``trio.fail_after``, no sleeps.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
import orjson
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events

import trio_things as tt
from tests.helpers.httpclient import HttpClient
from tests.helpers.servers import demo_server, serve_on_loopback
from tests.helpers.wsclient import RawWebSocket, receive, request, send
from trio_things.demo import Reading
from trio_things.model.invocation import Invocation
from trio_things.protocol.dialects import SUBPROTOCOL
from trio_things.server import ThingServer

WTP: Final = [SUBPROTOCOL]
#: Inputs of actions that would run far longer than any test: 130,000 virtual seconds...
LONG_RAMP: Final = {"to": 150, "rate": 0.001}
#: ... and 17 minutes of real time (the most the demo allows) in a worker thread, which
#: checks for cancellation every 50 ms (inside ``context.sleep``).
LONG_COUNT: Final = {"n": 100, "delay": 10}


# --------------------------------------------------------------------------- harness


@attrs.define(eq=False)
class Serving:
    """A server run as ``ThingServer.serve`` runs it, on streams the test makes: the
    connections in a nursery inside ``running()``, everything in one cancel scope."""

    server: ThingServer
    connections: trio.Nursery
    scope: trio.CancelScope
    stopped: trio.Event
    ended: list[trio.Event] = attrs.field(factory=list)
    """One per connection, set when the server is done with it."""

    def connect(self, pair: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]
                = trio.testing.memory_stream_pair) -> trio.abc.Stream:
        """A new connection; the server serves its other end."""
        client_stream, server_stream = pair()
        ended = trio.Event()
        self.ended.append(ended)

        async def handle() -> None:
            try:
                await self.server.handle_connection(server_stream)
            finally:
                ended.set()

        self.connections.start_soon(handle)
        return client_stream


async def serve_on_streams(server: ThingServer, *,
                           task_status: trio.TaskStatus[Serving]) -> None:
    """Serve ``server`` until the returned :class:`Serving`'s scope is cancelled (what
    Ctrl-C does to ``trio-things serve``)."""
    scope = trio.CancelScope()
    stopped = trio.Event()
    try:
        with scope:
            async with server.running(), trio.open_nursery() as connections:
                task_status.started(Serving(server=server, connections=connections,
                                            scope=scope, stopped=stopped))
                await trio.sleep_forever()
    finally:
        stopped.set()


async def hold_the_clock(until: Callable[[], bool], *, real_seconds: float = 10.0) -> None:
    """Keep a task runnable, so that the autojump clock cannot jump, until ``until()``.

    The autojump clock jumps to the next deadline whenever no task can run, and a worker
    thread's work (real time) is invisible to it: while a thread action has yet to notice
    its cancellation, virtual time would race through every deadline, and "within one
    virtual second" would prove nothing. Held still meanwhile, virtual time measures
    exactly the waits on timers. Fails after ``real_seconds`` of real time, so that a
    thread that never ends fails the test instead of hanging it.
    """
    deadline = time.monotonic() + real_seconds
    while not until():
        assert time.monotonic() < deadline, "worker threads did not end in real time"
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class Received:
    """Everything a WebSocket client received after setup, and how it was closed."""

    messages: list[Any] = attrs.field(factory=list)
    close: trio_websocket.CloseReason | None = None
    done: trio.Event = attrs.field(factory=trio.Event)


async def collect(ws: trio_websocket.WebSocketConnection, received: Received) -> None:
    try:
        while True:
            received.messages.append(orjson.loads(await ws.get_message()))
    except trio_websocket.ConnectionClosed as closed:
        received.close = closed.reason
    finally:
        received.done.set()


@attrs.define(eq=False)
class Eof:
    """The bytes an HTTP client received until the server closed the connection."""

    data: bytes = b""
    done: trio.Event = attrs.field(factory=trio.Event)


async def read_to_eof(stream: trio.abc.Stream, eof: Eof) -> None:
    try:
        while chunk := await stream.receive_some():
            eof.data += chunk
    finally:
        eof.done.set()


def raw_request(method: str, target: str, body: Any = None) -> bytes:
    data = b"" if body is None else orjson.dumps(body)
    return (f"{method} {target} HTTP/1.1\r\nHost: testserver\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data)


async def running_invocations(ws: trio_websocket.WebSocketConnection, count: int) -> set[str]:
    """Read LabThings messages until ``count`` invocations were reported running."""
    ids: set[str] = set()
    while len(ids) < count:
        message = await receive(ws)
        if message["messageType"] == "actionStatus" and message["data"]["status"] == "running":
            ids.add(message["data"]["id"])
    return ids


async def running_notification(ws: trio_websocket.WebSocketConnection, action_id: str) -> None:
    """Read Web Thing Protocol messages until ``action_id`` is reported running."""
    while True:
        message = await receive(ws)
        status = message.get("status", {})
        if status.get("actionID") == action_id and status.get("state") == "running":
            return


def action_states(messages: list[Any]) -> dict[str, list[str]]:
    """Every action status in ``messages`` (either dialect), by invocation id."""
    states: dict[str, list[str]] = {}
    for message in messages:
        if message.get("messageType") == "actionStatus":
            states.setdefault(message["data"]["id"], []).append(message["data"]["status"])
        elif isinstance(message.get("status"), dict) and "actionID" in message["status"]:
            status = message["status"]
            states.setdefault(status["actionID"], []).append(status["state"])
    return states


# --------------------------------------------------------------------------- tests


async def test_shutdown_with_everything_running_takes_under_a_virtual_second(
        autojump_clock: trio.testing.MockClock) -> None:
    """Five long actions (async ``ramp`` and worker-thread ``count_slowly``, invoked over
    HTTP, over HTTP waiting for the output, and over WebSocket in the Web Thing Protocol),
    four WebSocket clients (two per dialect, observing properties, events and actions),
    two idle HTTP connections and a pending long-poll; then the server is cancelled.

    Proven: shutdown ends within one virtual second (virtual time held still while the
    worker threads notice their cancellation, which takes real time), so no shutdown path
    waits on a long timer; every invocation is recorded ``cancelled``; no client was told
    otherwise; every WebSocket client got close code 1001; every HTTP connection was
    closed, the waiting ones unanswered; every observer set is empty and every
    invocation's own set forgotten."""
    server = demo_server(long_poll_timeout=30.0)
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        serving: Serving = await nursery.start(serve_on_streams, server)
        dispatcher = server._dispatcher
        assert dispatcher is not None
        observers, invocations = dispatcher.observers, dispatcher._invocations

        def threads_ended() -> bool:
            return stopping.is_set() and all(
                i.status.ended for i in invocations.list(action="count_slowly"))

        nursery.start_soon(hold_the_clock, threads_ended)

        async def websocket(path: str, subprotocols: list[str]
                            ) -> trio_websocket.WebSocketConnection:
            return await trio_websocket.wrap_client_stream(
                nursery, serving.connect(), "testserver", path, subprotocols=subprotocols)

        # LabThings observers first: they see every invocation start.
        labthings_counter = await websocket("/counter/ws", [])
        await send(labthings_counter, {"messageType": "addPropertyObservation",
                                       "data": {"count": True}})
        assert (await receive(labthings_counter))["data"] == {"count": 0}
        labthings_thermometer = await websocket("/thermometer/ws", [])
        await send(labthings_thermometer, {"messageType": "addPropertyObservation",
                                           "data": {"setpoint": True}})
        assert (await receive(labthings_thermometer))["data"] == {"setpoint": 20.0}
        for ws, action in ((labthings_counter, "count_slowly"),
                           (labthings_thermometer, "ramp")):
            await send(ws, {"messageType": "addActionObservation", "data": {action: True}})
        await send(labthings_thermometer, {"messageType": "addEventObservation",
                                           "data": {"overheated": True}})
        for ws in (labthings_counter, labthings_thermometer):  # a round trip: all in place
            await send(ws, {"messageType": "nonsense"})
            assert (await receive(ws))["messageType"] == "error"

        # Web Thing Protocol clients, each invoking an action.
        wtp_thermometer = await websocket("/thermometer/ws", WTP)
        await request(wtp_thermometer, "observeproperty", thing=None, name="setpoint")
        assert (await receive(wtp_thermometer))["value"] == 20.0
        await request(wtp_thermometer, "subscribeevent", thing=None, name="overheated")
        ramp = await request(wtp_thermometer, "invokeaction", thing=None, name="ramp",
                             input=LONG_RAMP)
        await running_notification(wtp_thermometer, ramp["status"]["actionID"])
        wtp_server = await websocket("/ws", WTP)
        await request(wtp_server, "observeallproperties", thing="counter")
        assert (await receive(wtp_server))["value"] == 0
        count = await request(wtp_server, "invokeaction", thing="counter",
                              name="count_slowly", input=LONG_COUNT)
        await running_notification(wtp_server, count["status"]["actionID"])

        # HTTP: two invocations on kept-alive connections, one invoke-and-wait, one
        # long-poll.
        http_ramp = HttpClient(serving.connect())
        assert (await http_ramp.post("/thermometer/ramp", LONG_RAMP)).status == 201
        http_count = HttpClient(serving.connect())
        assert (await http_count.post("/counter/count_slowly", LONG_COUNT)).status == 201
        waiting = serving.connect()
        await waiting.send_all(raw_request("POST", "/counter/actions/count_slowly", LONG_COUNT))
        polling = serving.connect()
        await polling.send_all(raw_request("GET", "/thermometer/events/overheated"))

        counting = await running_invocations(labthings_counter, 3)
        ramping = await running_invocations(labthings_thermometer, 2)
        records: list[Invocation] = invocations.list()
        assert {r.id for r in records} == counting | ramping
        assert {ramp["status"]["actionID"], count["status"]["actionID"]} <= counting | ramping
        assert [r.status.value for r in records] == ["running"] * 5
        assert sum(len(s) for s in observers) > 0

        clients = {"labthings counter": labthings_counter,
                   "labthings thermometer": labthings_thermometer,
                   "wtp thermometer": wtp_thermometer, "wtp server": wtp_server}
        received = {name: Received() for name in clients}
        for name, ws in clients.items():
            nursery.start_soon(collect, ws, received[name])
        http = {"idle ramp": http_ramp.stream, "idle count": http_count.stream,
                "waiting": waiting, "polling": polling}
        eofs = {name: Eof() for name in http}
        for name, stream in http.items():
            nursery.start_soon(read_to_eof, stream, eofs[name])

        start = trio.current_time()
        with trio.fail_after(1):
            stopping.set()
            serving.scope.cancel()
            await serving.stopped.wait()
            for done in [r.done for r in received.values()] + [e.done for e in eofs.values()]:
                await done.wait()
        elapsed = trio.current_time() - start

    assert elapsed < 1
    assert [r.status.value for r in records] == ["cancelled"] * 5
    assert all(r.output is None for r in records)
    for name, got in received.items():
        assert got.close is not None, name
        assert (got.close.code, got.close.reason) == (1001, "server shutting down"), name
        for invocation_id, states in action_states(got.messages).items():
            assert set(states) <= {"running", "cancelled"}, (name, invocation_id, states)
    assert {name: eof.data for name, eof in eofs.items()} == dict.fromkeys(http, b"")
    assert sum(len(s) for s in observers) == 0
    assert all(observers.invocation_if_observed(r.id) is None for r in records)
    assert all(ended.is_set() for ended in serving.ended)


async def test_shutdown_does_not_wait_for_a_websocket_client_that_stopped_reading(
        autojump_clock: trio.testing.MockClock) -> None:
    """A client that stopped reading (its socket buffer full: a lockstep stream nobody
    reads) while events are queued for it, and shutdown cancels the relay's write.

    Proven: shutdown still ends within one virtual second (neither the write timeout nor
    a close handshake with a peer that does not read is waited out), the client is
    removed from every observer set, and the connection is then closed: reading again,
    the client gets whole frames, in order, then the end of the connection without a
    close frame (after a cancelled write the server never writes again)."""
    server = demo_server()
    async with trio.open_nursery() as nursery:
        serving: Serving = await nursery.start(serve_on_streams, server)
        dispatcher = server._dispatcher
        assert dispatcher is not None
        observers = dispatcher.observers
        client = RawWebSocket(serving.connect(trio.testing.lockstep_stream_pair))
        events = client.events

        await client.send_request("/thermometer/ws", WTP)
        await client.read_until(lambda events: bool(events))
        assert isinstance(events[0], wsproto.events.AcceptConnection)
        await client.send({
            "messageID": "1", "operation": "subscribeevent", "name": "overheated"})
        await client.read_until(lambda events: len(events) == 2)
        assert isinstance(events[1], wsproto.events.TextMessage)
        assert "error" not in orjson.loads(events[1].data)
        assert sum(len(s) for s in observers) == 1

        thermometer = server.things["thermometer"]
        for degrees in range(20):  # the client reads none of these
            thermometer.overheated.emit(reading(degrees))  # type: ignore[attr-defined]
        await trio.testing.wait_all_tasks_blocked()  # the relay is stuck in its write

        start = trio.current_time()
        with trio.fail_after(1):
            serving.scope.cancel()
            await serving.stopped.wait()
        assert trio.current_time() - start < 1
        assert sum(len(s) for s in observers) == 0

        with trio.fail_after(1):  # now the client reads again: whole frames, then the end
            await client.read_until(lambda events: False)
        *frames, end = events[2:]
        # The end of file without a close frame (wsproto reports it as 1006): after a
        # cancelled write the server writes nothing more, not even 1001.
        assert isinstance(end, wsproto.events.CloseConnection) and end.code == 1006, end
        texts = [f for f in frames if isinstance(f, wsproto.events.TextMessage)]
        assert texts == frames  # nothing but whole text frames
        temperatures = [orjson.loads(f.data)["data"]["temperature"] for f in texts]
        assert temperatures == [100.0 + d for d in range(len(temperatures))]  # in order
        await client.stream.aclose()


def reading(degrees: int) -> Reading:
    """An ``overheated`` payload."""
    return Reading(temperature=100.0 + degrees,
                   time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))


class Stubborn(tt.Thing):
    """A driver whose blocking calls ignore cancellation until the hardware answers
    (here: until the test sets ``release``)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.journal: list[str] = []

    async def __aexit__(self, *exc: object) -> None:
        self.journal.append("exit")

    @tt.action
    def block_then_check(self, context: tt.ActionContext) -> str:
        """Block (not checking for cancellation), then check, like a careful driver."""
        self.started.release()
        self.release.wait(timeout=10)
        context.check_cancelled()
        self.journal.append("checked and went on")
        return "finished"

    @tt.action
    def block_and_never_check(self) -> str:
        """Block, then return, never checking for cancellation."""
        self.started.release()
        self.release.wait(timeout=10)
        self.journal.append("returned")
        return "finished"


async def test_shutdown_waits_for_a_thread_that_ignores_cancellation() -> None:
    """A worker thread cannot be abandoned: the server can only wait until it checks for
    cancellation or returns (``abandon_on_cancel=False`` in ``trio_things/runtime/actions.py``; see
    docs/things.md "Cancellation"). Real time here: the actions block on a
    ``threading.Event`` the test controls.

    Proven: while the threads are blocked, shutdown closes every connection (the
    WebSocket client gets 1001) but goes no further: the invocations are still
    ``running`` and the Thing is not exited. Once released, the thread that checks is
    recorded ``cancelled`` (and stops there), the one that never checks ``completed``
    with its output; only then is the Thing exited."""
    server = ThingServer()
    stubborn = Stubborn()
    server.add_thing("stubborn", stubborn)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            serving: Serving = await nursery.start(serve_on_streams, server)
            dispatcher = server._dispatcher
            assert dispatcher is not None
            invocations = dispatcher._invocations
            ws = await trio_websocket.wrap_client_stream(
                nursery, serving.connect(), "testserver", "/stubborn/ws", subprotocols=WTP)
            checking = await request(ws, "invokeaction", thing=None, name="block_then_check")
            http = HttpClient(serving.connect())
            never = await http.post("/stubborn/block_and_never_check")
            assert never.status == 201
            for _ in range(2):
                assert await trio.to_thread.run_sync(stubborn.started.acquire, True, 5)
            records = {i.action: i for i in invocations.list()}
            assert records["block_then_check"].id == checking["status"]["actionID"]
            received = Received()
            nursery.start_soon(collect, ws, received)

            serving.scope.cancel()
            await received.done.wait()
            for ended in serving.ended:
                await ended.wait()
            await trio.testing.wait_all_tasks_blocked()  # all that is left waits on threads
            assert received.close is not None and received.close.code == 1001
            assert not serving.stopped.is_set()
            assert [r.status.value for r in records.values()] == ["running", "running"]
            assert stubborn.journal == []  # not exited while its actions run

            stubborn.release.set()
            await serving.stopped.wait()
    assert records["block_then_check"].status.value == "cancelled"
    assert records["block_and_never_check"].status.value == "completed"
    assert records["block_and_never_check"].output == "finished"
    assert stubborn.journal == ["returned", "exit"]  # the checking one stopped at its check


async def test_shutdown_over_loopback_closes_both_dialects_and_cancels_actions() -> None:
    """The same over real sockets (``serve`` on 127.0.0.1, port 0, real time): a worker
    thread action invoked over the Web Thing Protocol, a LabThings observer, an async
    action invoked over HTTP. The time bound is only a hang guard.

    Proven: both WebSocket clients get 1001, the HTTP connection is closed, both
    invocations are recorded ``cancelled``, and the observer sets are empty."""
    server = demo_server(port=0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, serve_on_loopback(server) as served:
            port = served.port
            dispatcher = server._dispatcher
            assert dispatcher is not None
            observers, invocations = dispatcher.observers, dispatcher._invocations
            url = f"ws://127.0.0.1:{port}/counter/ws"
            async with trio_websocket.open_websocket_url(url, subprotocols=WTP) as wtp, \
                    trio_websocket.open_websocket_url(url) as labthings:
                await send(labthings, {"messageType": "addPropertyObservation",
                                       "data": {"count": True}})
                assert (await receive(labthings))["data"] == {"count": 0}
                count = await request(wtp, "invokeaction", name="count_slowly",
                                      input=LONG_COUNT)
                await running_notification(wtp, count["status"]["actionID"])
                http = HttpClient(await trio.open_tcp_stream("127.0.0.1", port))
                assert (await http.post("/thermometer/ramp", LONG_RAMP)).status == 201
                records = invocations.list()
                assert len(records) == 2
                received = {"wtp": Received(), "labthings": Received()}
                nursery.start_soon(collect, wtp, received["wtp"])
                nursery.start_soon(collect, labthings, received["labthings"])
                eof = Eof()
                nursery.start_soon(read_to_eof, http.stream, eof)
                served.scope.cancel()
                for done in (received["wtp"].done, received["labthings"].done, eof.done):
                    await done.wait()
            await http.stream.aclose()
    assert {name: r.close.code if r.close else None for name, r in received.items()} == {
        "wtp": 1001, "labthings": 1001}
    assert eof.data == b""
    assert [r.status.value for r in records] == ["cancelled", "cancelled"]
    assert sum(len(s) for s in observers) == 0

