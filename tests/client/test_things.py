"""ConsumedThing end to end: the real server over memory streams, every call happy and
failing, under fail_after (the autojump clock runs the async actions)."""

from __future__ import annotations

import datetime
import errno
import itertools
import logging
import os
import ssl
from typing import Any

import attrs
import pytest
import trio
from trio.testing import MockClock

import trio_things.client as ttc
from tests.client.conftest import FAST, LAB, Lab, MemoryNetwork, Reading, make_server
from tests.helpers.servers import observer_count
from trio_things.client import State, connect
from trio_things.client.errors import InvocationLost, NotAThing
from trio_things.client.streams import Endpoint, connect_stream
from trio_things.config import ServerConfig
from trio_things.demo import Counter
from trio_things.errors import LocalProtocolError
from trio_things.protocol.access import AccessPolicy
from trio_things.server import ThingServer


def lab_of(server: ThingServer) -> Lab:
    lab = server.things["lab"]
    assert isinstance(lab, Lab)
    return lab


# --------------------------------------------------------------------------- description


async def test_connect_fetches_the_td(autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            assert lab.title == "Lab"
            assert lab.id is not None and lab.id.startswith("urn:uuid:")
            assert set(lab.properties) == {"level", "mode", "label", "serial", "last"}
            assert set(lab.actions) == {"climb", "wait", "explode", "emit"}
            assert set(lab.events) == {"tick", "alarm"}
            assert lab.url == LAB


async def test_connect_to_a_missing_thing_raises_not_found(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5), pytest.raises(ttc.NotFound) as info:
        async with connect("http://testserver/nothing/", open_stream=network, options=FAST):
            pass  # pragma: no cover
    assert info.value.problem is not None and info.value.problem.status == 404


async def test_an_error_inside_the_block_comes_out_unwrapped(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5), pytest.raises(ttc.NotFound):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            await lab.read("nothing")


# --------------------------------------------------------------------------- properties


async def test_read_and_write(
        autojump_clock: MockClock, server: ThingServer, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            assert await lab.read("level") == 0
            await lab.write("level", 42)
            assert lab_of(server).level == 42
            assert await lab.read("level", int) == 42
            await lab.write("mode", "fast")
            assert await lab.read("mode") == "fast"
            assert await lab.read_all() == {
                "level": 42, "mode": "fast", "label": "lab", "serial": 7,
                "last": {"level": 0, "time": "2026-01-01T00:00:00+00:00"}}
    # Every request went over one kept-alive connection.
    assert network.opened == 1


async def test_values_are_structured_into_the_callers_type(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            reading = Reading(level=3, time=datetime.datetime(2026, 5, 1, tzinfo=datetime.UTC))
            await lab.write("last", reading)
            assert await lab.read("last", Reading) == reading
            assert await lab.read("last") == {"level": 3, "time": "2026-05-01T00:00:00+00:00"}
            with pytest.raises(ttc.InvalidValue, match="does not fit Reading"):
                await lab.read("mode", Reading)


@pytest.mark.parametrize(("call", "error", "status"), [
    (lambda lab: lab.read("nothing"), ttc.NotFound, None),
    (lambda lab: lab.write("nothing", 1), ttc.NotFound, None),
    (lambda lab: lab.write("serial", 8), ttc.NotWritable, None),
    (lambda lab: lab.write("level", 200), ttc.InvalidValue, 422),
    (lambda lab: lab.write("level", "high"), ttc.InvalidValue, 422),
    (lambda lab: lab.invoke("nothing"), ttc.NotFound, None),
    (lambda lab: lab.invoke("climb", to=1000), ttc.InvalidValue, 422),
    (lambda lab: lab.invoke("climb"), ttc.InvalidValue, 422),
])
async def test_failures_are_specific_errors(
        autojump_clock: MockClock, network: MemoryNetwork, call, error, status
                                            ) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            with pytest.raises(error) as info:
                await call(lab)
    assert info.value.status == status
    if status is not None:
        assert info.value.problem is not None
        assert info.value.problem.detail  # the server's words, e.g. "level: 200 is ..."


async def test_invalid_value_names_the_field(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            with pytest.raises(ttc.InvalidValue) as info:
                await lab.write("level", 200)
    assert info.value.problem is not None
    assert info.value.problem.detail == "level: 200 is greater than the maximum 100"
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- observe


async def test_observe_gets_the_current_value_then_each_change(autojump_clock: MockClock,
        server: ThingServer, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            async with lab.observe("level", int) as values:
                assert await values.__anext__() == 0
                for expected in (1, 2, 3):
                    lab_of(server).level = expected
                    assert await values.__anext__() == expected
                assert observer_count(server) == 1
            # Leaving the block unobserved it on the server.
            assert observer_count(server) == 0


async def test_observe_changes_carry_names_and_timestamps(autojump_clock: MockClock,
        server: ThingServer, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            async with lab.observe("last", Reading) as values:
                changes = values.changes()
                first = await changes.__anext__()
                assert first.name == "last"
                assert first.value == Reading(
                    level=0, time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
                assert first.timestamp is not None and first.timestamp.endswith("Z")


async def test_observe_errors(autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            with pytest.raises(ttc.NotFound):
                lab.observe("nothing")
            with pytest.raises(ttc.UnsupportedOperation, match="not observable"):
                lab.observe("label")
            observation = lab.observe("level")
            with pytest.raises(LocalProtocolError, match="async with"):
                await observation.__anext__()


async def test_many_observers_share_one_socket_and_one_server_observation(autojump_clock: MockClock,
        server: ThingServer, network: MemoryNetwork) -> None:
    """Twenty observers of the same property and one of another property: one
    WebSocket, two observations on the server, every observer sees every change."""
    lab_thing = lab_of(server)
    with trio.fail_after(10):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            seen: dict[int, list[int]] = {}
            ready = trio.Semaphore(0)
            done = trio.Event()

            async def watch(index: int, task_status: trio.TaskStatus[None]) -> None:
                async with lab.observe("level", int) as values:
                    task_status.started()
                    seen[index] = []
                    async for value in values:
                        seen[index].append(value)
                        if value == 3:
                            ready.release()
                            await done.wait()
                            return

            async with trio.open_nursery() as nursery:
                for index in range(20):
                    await nursery.start(watch, index)
                async with lab.observe("mode") as modes:
                    assert await modes.__anext__() == "precise"
                    assert observer_count(server) == 2
                    for value in (1, 2, 3):
                        lab_thing.level = value
                        await trio.testing.wait_all_tasks_blocked()
                    for _ in range(20):
                        await ready.acquire()
                    done.set()
            assert all(values[-1] == 3 and values == sorted(set(values))
                       for values in seen.values())
            assert len(seen) == 20
    # One HTTP connection for the TD, one for the WebSocket.
    assert network.opened == 2


async def test_concurrent_requests_are_correlated(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    """Requests over the shared socket (a read on a TD without HTTP forms) answered in
    any order reach their own callers."""
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            async with lab.observe("level"):  # opens the socket
                session = lab._session_for  # type: ignore[attr-defined]
                assert session is not None
                ws = session("ws://testserver/lab/ws")
                results: dict[str, object] = {}

                async def read(name: str) -> None:
                    message = await ws.request("readproperty", thing_id=lab.id, name=name)
                    results[name] = message.body["value"]

                async with trio.open_nursery() as nursery:
                    for name in ("level", "mode", "label", "serial"):
                        nursery.start_soon(read, name)
            assert results == {"level": 0, "mode": "precise", "label": "lab", "serial": 7}


# --------------------------------------------------------------------------- subscribe


async def test_subscribe_gets_every_event_in_order(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            async with lab.subscribe("tick", int) as ticks, lab.subscribe(
                    "alarm", Reading) as alarms:
                invocation = await lab.invoke("emit", n=5)
                assert [await ticks.__anext__() for _ in range(5)] == [1, 2, 3, 4, 5]
                alarm = await alarms.__anext__()
                assert alarm.level == 5
                assert await invocation.result() == 5


async def test_subscribe_to_a_missing_event(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            with pytest.raises(ttc.NotFound, match="its events: tick, alarm"):
                lab.subscribe("nothing")


async def test_a_subscriber_that_falls_behind_is_told(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    options = ttc.ClientOptions(timeout=5.0, event_buffer=3)
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=options) as lab:
            async with lab.subscribe("tick", int) as ticks:
                invocation = await lab.invoke("emit", n=10)
                await invocation.result()
                await trio.testing.wait_all_tasks_blocked()
                assert [await ticks.__anext__() for _ in range(3)] == [1, 2, 3]
                with pytest.raises(ttc.FellBehind):
                    await ticks.__anext__()


# --------------------------------------------------------------------------- actions over WebSocket


async def test_invoke_over_websocket_pushes_live_status(autojump_clock: MockClock,
        server: ThingServer, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            invocation = await lab.invoke("climb", to=3)
            assert invocation.id
            states = [status.state async for status in invocation.updates()]
            assert states[-1] is State.COMPLETED
            assert states == sorted(states, key=lambda s: s.rank)
            assert await invocation.result() == 3
            assert await invocation.result(int) == 3
            assert lab_of(server).level == 3
            # Already ended: nothing to cancel.
            assert await invocation.cancel() is False


async def test_observe_a_property_while_an_action_runs(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    """The example of docs/client.md, in miniature."""
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            async with lab.observe("level", int) as levels:
                invocation = await lab.invoke("climb", to=4)
                seen = []
                async for level in levels:
                    seen.append(level)
                    if level == 4:
                        break
                assert seen == [0, 1, 2, 3, 4]
                assert await invocation.result() == 4


async def test_a_failed_action_raises_with_its_problem(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            invocation = await lab.invoke("explode")
            with pytest.raises(ttc.ActionFailed) as info:
                await invocation.result()
    problem = info.value.problem
    assert problem is not None
    assert (problem.title, problem.detail) == ("ZeroDivisionError", "division by zero")
    assert invocation.status.state is State.FAILED


async def test_cancel_over_websocket(
        autojump_clock: MockClock, server: ThingServer, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            invocation = await lab.invoke("wait", seconds=100)
            async for status in invocation.updates():
                if status.state is State.RUNNING:
                    break
            assert await invocation.cancel() is True
            with pytest.raises(ttc.ActionCancelled):
                await invocation.result()
            assert invocation.status.state is State.CANCELLED


# --------------------------------------------------------------------------- actions over HTTP


async def test_without_websocket_observe_is_unsupported(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST, websocket=False) as lab:
            with pytest.raises(ttc.UnsupportedOperation, match="WebSocket is disabled"):
                lab.observe("level")
            await lab.write("level", 5)
            assert await lab.read("level") == 5


async def test_invoke_over_http_polls_the_invocation(
        server: ThingServer, network: MemoryNetwork) -> None:
    """Without WebSocket, the LabThings form answers 201 with the invocation; the
    handle polls queryaction and sees the action's log (worker-thread action: real
    time, so the counter sleeps zero)."""
    with trio.fail_after(5):
        async with connect("http://testserver/counter/", open_stream=network, options=FAST,
                           websocket=False) as counter:
            invocation = await counter.invoke("count_slowly", n=3, delay=0)
            assert invocation.status.href == (
                f"http://testserver/action_invocations/{invocation.id}")
            final = None
            async for status in invocation.updates():
                final = status
            assert final is not None and final.state is State.COMPLETED
            assert [line.message for line in final.log] == [
                "counted 1 of 3", "counted 2 of 3", "counted 3 of 3"]
            assert await invocation.result() == 3
    thing = server.things["counter"]
    assert isinstance(thing, Counter) and thing.count == 3


async def test_cancel_over_http(autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST, websocket=False) as lab:
            invocation = await lab.invoke("wait", seconds=100)
            assert invocation.status.state in (State.PENDING, State.RUNNING)
            assert await invocation.cancel() is True
            assert invocation.status.state is State.CANCELLED
            with pytest.raises(ttc.ActionCancelled):
                await invocation.result()


async def test_failed_action_over_http(autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with connect(LAB, open_stream=network, options=FAST, websocket=False) as lab:
            invocation = await lab.invoke("explode")
            with pytest.raises(ttc.ActionFailed, match="ZeroDivisionError: division by zero"):
                await invocation.result()


async def test_a_form_answering_the_output_gives_an_ended_handle(autojump_clock: MockClock,
        network: MemoryNetwork) -> None:
    """A TD whose only HTTP invoke form answers with the bare output (what node-wot
    expects): the handle holds the result at once."""
    with trio.fail_after(5):
        async with ttc.open_client(open_stream=network, options=FAST,
                                   websocket=False) as client:
            lab = await client.consume(LAB)
            forms = lab.td["actions"]["climb"]["forms"]
            lab.td["actions"]["climb"]["forms"] = [f for f in forms  # type: ignore[index]
                                                   if "actions/" in f["href"]]
            invocation = await lab.invoke("climb", to=2)
            assert invocation.status.state is State.COMPLETED
            assert invocation.id == ""
            assert await invocation.result() == 2
            assert await invocation.cancel() is False


async def test_actions_over_http_is_preferred_when_asked(network: MemoryNetwork) -> None:
    """With WebSocket forms available, ``actions_over="http"`` still invokes over HTTP
    (a pollable invocation that brings the action's log)."""
    options = ttc.ClientOptions(timeout=5.0, poll_interval=0.01, actions_over="http")
    with trio.fail_after(5):
        async with connect("http://testserver/counter/", open_stream=network,
                           options=options) as counter:
            invocation = await counter.invoke("count_slowly", n=1, delay=0)
            assert invocation.status.href is not None
            assert await invocation.result() == 1
            assert [line.message for line in invocation.status.log] == ["counted 1 of 1"]


async def test_a_token_is_sent_to_the_tds_host_and_required_by_the_server(
        autojump_clock: MockClock) -> None:
    server = make_server(ServerConfig(access=AccessPolicy(tokens=("full-token-1",),
                                                          readonly_tokens=("read-token-1",))))
    async with server.running(), trio.open_nursery() as nursery:
        network = MemoryNetwork(server=server, nursery=nursery)
        with trio.fail_after(5):
            with pytest.raises(ttc.ServerError) as info:
                async with connect(LAB, open_stream=network, options=FAST):
                    pass  # pragma: no cover
            assert info.value.status == 401
            async with connect(LAB, open_stream=network, options=FAST, token="full-token-1") as lab:
                await lab.write("level", 4)
                async with lab.observe("level") as levels:  # the handshake has it too
                    assert await levels.__anext__() == 4
            async with connect(LAB, open_stream=network, options=FAST, token="read-token-1") as lab:
                with pytest.raises(ttc.ServerError) as info:
                    await lab.write("level", 5)
                assert info.value.status == 403
        nursery.cancel_scope.cancel()


async def test_the_token_never_goes_to_other_hosts(autojump_clock: MockClock,
                                                   network: MemoryNetwork) -> None:
    """A TD's forms (or a redirect) may name any host: the token only goes to the host
    and port of the TD URL the caller gave."""
    with trio.fail_after(5):
        async with ttc.open_client(open_stream=network, options=FAST,
                                   token="full-token-1") as client:
            await client.consume(LAB)
            credentials = client._credentials  # type: ignore[attr-defined]
            assert credentials(Endpoint.from_url("ws://testserver/lab/ws")) == [
                ("authorization", "Bearer full-token-1")]
            assert credentials(Endpoint.from_url("http://elsewhere/lab/")) == []
            assert credentials(Endpoint.from_url("http://testserver:8080/lab/")) == []


async def test_a_server_failure_is_a_server_error(network: MemoryNetwork) -> None:
    """(Real clock: the getter runs in a worker thread.)"""
    with trio.fail_after(5):
        async with connect("http://testserver/broken/", open_stream=network,
                           options=FAST) as broken:
            with pytest.raises(ttc.ServerError) as info:
                await broken.read("reading")
            assert info.value.status == 500
            with pytest.raises(ttc.ServerError):
                await broken.read_all()


def only_websocket_forms(td: dict[str, Any]) -> None:
    """Drop every HTTP form, so the client must use the Web Thing Protocol."""
    for kind in ("properties", "actions", "events"):
        for affordance in td.get(kind, {}).values():
            affordance["forms"] = [f for f in affordance["forms"]
                                   if f["href"].startswith("ws")]
    td["forms"] = [f for f in td["forms"] if f["href"].startswith("ws")]


async def test_a_td_with_only_websocket_forms(autojump_clock: MockClock, server: ThingServer,
                                              network: MemoryNetwork) -> None:
    """Reads, writes, read_all, invoke, query and cancel over the Web Thing Protocol."""
    with trio.fail_after(5):
        async with ttc.open_client(open_stream=network, options=FAST) as client:
            lab = await client.consume(LAB)
            only_websocket_forms(lab.td)  # type: ignore[arg-type]
            await lab.write("level", 8)
            assert await lab.read("level") == 8
            with pytest.raises(ttc.InvalidValue, match="greater than the maximum"):
                await lab.write("level", 101)
            with pytest.raises(ttc.NotWritable):
                await lab.write("serial", 1)
            assert (await lab.read_all())["level"] == 8
            invocation = await lab.invoke("wait", seconds=100)
            assert await invocation.cancel() is True
            with pytest.raises(ttc.ActionCancelled):
                await invocation.result()
            http_connections = network.opened
            await lab.read("mode")
            assert network.opened == http_connections  # no HTTP at all


async def test_read_all_without_a_form_reads_each_property(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(5):
        async with ttc.open_client(open_stream=network, options=FAST) as client:
            lab = await client.consume(LAB)
            lab.td["forms"].clear()  # type: ignore[attr-defined]
            assert (await lab.read_all())["serial"] == 7


# --------------------------------------------------------------------------- a server that dies


@attrs.define
class MortalServer:
    """The test server in a nursery of its own, reached over memory streams (an
    OpenStream): :meth:`kill` drops every connection (so nothing more reaches the
    client, as when a process dies) and cancels the server; ``refusals`` refuses that
    many connections, then serves again (a short outage)."""

    server: ThingServer = attrs.Factory(make_server)
    alive: trio.CancelScope = attrs.Factory(trio.CancelScope)
    network: MemoryNetwork | None = None
    refusals: float = 0
    refused: int = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        with self.alive:
            async with self.server.running(), trio.open_nursery() as connections:
                self.network = MemoryNetwork(server=self.server, nursery=connections)
                task_status.started()
                await trio.sleep_forever()

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        if self.network is None or self.alive.cancel_called or self.refusals > 0:
            self.refusals -= 1
            self.refused += 1
            raise ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
        return await self.network(host, port, tls=tls)

    async def kill(self) -> None:
        assert self.network is not None
        await self.network.break_all()
        self.alive.cancel()

    async def drop(self, refusals: int) -> None:
        assert self.network is not None
        self.refusals = refusals
        await self.network.break_all()


async def running(invocation: ttc.Invocation) -> None:
    async for status in invocation.updates():
        if status.state is State.RUNNING:
            return


@pytest.mark.parametrize("actions_over", ["websocket", "http"])
async def test_an_invocation_whose_server_died_gives_up_after_reconnect_for(
        autojump_clock: MockClock, caplog: pytest.LogCaptureFixture,
        actions_over: str) -> None:
    """Pushed (WebSocket) or polled (HTTP): once the server has been unreachable for
    ``reconnect_for``, ``result()`` raises InvocationLost naming the invocation's URL,
    after a warning that says it is reconnecting."""
    caplog.set_level(logging.WARNING, logger="trio_things.client")
    options = attrs.evolve(FAST, reconnect_for=3.0, actions_over=actions_over)
    mortal = MortalServer()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(mortal.run)
            async with connect(LAB, open_stream=mortal, options=options) as lab:
                invocation = await lab.invoke("wait", seconds=600)
                await running(invocation)
                await mortal.kill()
                killed = trio.current_time()
                with pytest.raises(ttc.ConnectionLost) as info:
                    await invocation.result()
                gave_up = trio.current_time()
            nursery.cancel_scope.cancel()
    error = info.value
    href = f"http://testserver/action_invocations/{invocation.id}"
    assert isinstance(error, InvocationLost)
    assert (error.href, error.invocation_id) == (href, invocation.id)
    assert str(error).startswith(f"gave up on invocation {invocation.id} of 'wait' after "
                                 f"3 s without reaching the server (cannot reach testserver")
    assert str(error).endswith(f"it may still be running: ask for it later at {href}")
    # The bound holds: from the first failed poll (at most a poll interval and the
    # time to notice the loss after the kill) exactly reconnect_for.
    assert 3.0 <= gave_up - killed <= 3.0 + 2 * FAST.poll_interval
    assert mortal.refused >= 2  # it did keep trying
    assert (f"lost the server while following invocation {invocation.id} of 'wait' "
            f"(cannot reach testserver: Connection refused); reconnecting for up to 3 s"
            in caplog.messages)
    # updates() raises the same error; the status stays the last one known.
    with pytest.raises(InvocationLost):
        async for _ in invocation.updates():
            pass
    assert invocation.status.state is State.RUNNING


async def test_an_invocation_survives_a_short_outage(
        autojump_clock: MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_things.client")
    options = attrs.evolve(FAST, reconnect_for=3.0, actions_over="http")
    mortal = MortalServer()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(mortal.run)
            async with connect(LAB, open_stream=mortal, options=options) as lab:
                invocation = await lab.invoke("wait", seconds=10)
                await running(invocation)
                await mortal.drop(refusals=3)
                assert await invocation.result() == "done"
            nursery.cancel_scope.cancel()
    assert mortal.refused == 3
    assert any(message.startswith("lost the server while following invocation")
               for message in caplog.messages)
    assert (f"reached the server again; following invocation {invocation.id} of 'wait'"
            in caplog.messages)


async def test_without_reconnect_for_an_invocation_keeps_trying(
        autojump_clock: MockClock, caplog: pytest.LogCaptureFixture) -> None:
    """``reconnect_for=None``: no giving up (the caller bounds the wait), but the loss
    is still said."""
    caplog.set_level(logging.WARNING, logger="trio_things.client")
    mortal = MortalServer()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(mortal.run)
            async with connect(LAB, open_stream=mortal, options=FAST) as lab:
                invocation = await lab.invoke("wait", seconds=600)
                await running(invocation)
                await mortal.kill()
                with trio.move_on_after(30) as waiting:
                    await invocation.result()
            nursery.cancel_scope.cancel()
    assert waiting.cancelled_caught
    assert mortal.refused > 5
    assert any(message.endswith("(cannot reach testserver: Connection refused); "
                                "reconnecting") for message in caplog.messages)


# --------------------------------------------------------------------------- the log over WebSocket


async def test_the_log_comes_over_websocket(server: ThingServer,
                                            network: MemoryNetwork) -> None:
    """The Web Thing Protocol's status carries the action's log (our extension); an
    invocation made over WebSocket also knows its URL over HTTP. (Real clock: a
    worker-thread action.)"""
    with trio.fail_after(5):
        async with connect("http://testserver/counter/", open_stream=network,
                           options=FAST) as counter:
            invocation = await counter.invoke("count_slowly", n=3, delay=0)
            assert invocation.status.href == (
                f"http://testserver/action_invocations/{invocation.id}")
            statuses = [status async for status in invocation.updates()]
            http_requests = network.opened
    assert http_requests == 2  # the TD, and the WebSocket: no polling
    assert statuses[-1].state is State.COMPLETED
    assert [line.message for line in statuses[-1].log] == [
        "counted 1 of 3", "counted 2 of 3", "counted 3 of 3"]
    assert all(line.level == "INFO" and line.timestamp is not None
               for line in statuses[-1].log)
    # Each status's log extends the previous one's.
    for earlier, later in itertools.pairwise(statuses):
        assert later.log[:len(earlier.log)] == earlier.log


async def test_a_late_status_does_not_shorten_the_log() -> None:
    invocation = ttc.Invocation(action="count", channel=None,  # type: ignore[arg-type]
                                options=FAST, spawn=lambda task: None)
    line = ttc.LogLine(timestamp="t", level="INFO", message="counted 1")
    invocation.update(ttc.ActionStatus(id="a", action="count", state=State.RUNNING,
                                       log=(line,)))
    invocation.update(ttc.ActionStatus(id="a", action="count", state=State.RUNNING))
    assert invocation.status.log == (line,)
    final = ttc.ActionStatus(id="a", action="count", state=State.COMPLETED, output=1)
    invocation.update(final)
    assert invocation.status == attrs.evolve(final, log=(line,))


def test_a_status_overtaken_by_a_notification_still_gives_its_url() -> None:
    """Over WebSocket the ``running`` notification may be routed before the response
    to invokeaction (``pending``, to which the client adds the HTTP URL)."""
    invocation = ttc.Invocation(action="wait", channel=None,  # type: ignore[arg-type]
                                options=FAST, spawn=lambda task: None)
    invocation.update(ttc.ActionStatus(id="a", action="wait", state=State.RUNNING))
    invocation.update(ttc.ActionStatus(id="a", action="wait", state=State.PENDING,
                                       href="http://h/action_invocations/a"))
    assert (invocation.status.state, invocation.status.href) == (
        State.RUNNING, "http://h/action_invocations/a")
    invocation.update(ttc.ActionStatus(id="a", action="wait", state=State.COMPLETED))
    assert invocation.status.href == "http://h/action_invocations/a"


# --------------------------------------------------------------------------- wrong URLs


@pytest.mark.parametrize(("url", "message", "thing", "kind", "name"), [
    ("http://testserver/",
     "http://testserver/ is a server, not a Thing; its Things are: http://testserver/lab/, "
     "http://testserver/broken/, http://testserver/counter/, http://testserver/thermometer/",
     None, None, None),
    ("http://testserver/counter/count",
     "http://testserver/counter/count is property 'count' of the Thing "
     "http://testserver/counter/, not a Thing Description",
     "http://testserver/counter/", "property", "count"),
    ("http://testserver/lab/last",  # an object value: no TD either
     "http://testserver/lab/last is property 'last' of the Thing http://testserver/lab/, "
     "not a Thing Description", "http://testserver/lab/", "property", "last"),
    ("http://testserver/lab/actions/climb/",
     "http://testserver/lab/actions/climb/ is action 'climb' of the Thing "
     "http://testserver/lab/, not a Thing Description", "http://testserver/lab/",
     "action", "climb"),
])
async def test_a_url_that_is_no_things_says_which_to_use(
        autojump_clock: MockClock, network: MemoryNetwork, url: str, message: str,
        thing: str | None, kind: str | None, name: str | None) -> None:
    with trio.fail_after(5), pytest.raises(ttc.NotFound) as info:
        async with connect(url, open_stream=network, options=FAST):
            pass  # pragma: no cover
    error = info.value
    assert isinstance(error, NotAThing)
    assert str(error) == message
    assert (error.thing_url, error.kind, error.name) == (thing, kind, name)
    assert error.things == (() if thing else (
        "http://testserver/lab/", "http://testserver/broken/", "http://testserver/counter/",
        "http://testserver/thermometer/"))


async def test_any_other_answer_is_still_no_td(autojump_clock: MockClock,
                                               network: MemoryNetwork) -> None:
    with trio.fail_after(5), pytest.raises(ttc.ServerError,
                                           match="answered with no Thing Description"):
        async with connect("http://testserver/lab/properties", open_stream=network,
                           options=FAST):
            pass  # pragma: no cover


def openssl_error(kind: type[ssl.SSLError], reason: str | None, text: str) -> ssl.SSLError:
    """An SSLError as OpenSSL raises it, its ``reason`` set."""
    error = kind(1, text)
    error.reason = reason  # type: ignore[assignment]
    return error


@pytest.mark.parametrize(("url", "error", "message"), [
    ("https://h:8000/lab/", openssl_error(ssl.SSLError, "WRONG_VERSION_NUMBER", "wrong"),
     "the TLS handshake with h:8000 failed (WRONG_VERSION_NUMBER): the server speaks "
     "plain http, not https; try http://h:8000/lab/"),
    ("wss://h/lab/ws", openssl_error(ssl.SSLError, "RECORD_LAYER_FAILURE", "record"),
     "the TLS handshake with h failed (RECORD_LAYER_FAILURE): the server speaks plain ws, "
     "not wss; try ws://h:443/lab/ws"),
    ("https://h/", openssl_error(ssl.SSLEOFError, None, "EOF in violation of protocol"),
     "the TLS handshake with h failed (EOF in violation of protocol); if the server "
     "speaks plain http, try http://h:443/"),
])
async def test_a_failed_tls_handshake_says_what_to_try(url: str, error: ssl.SSLError,
                                                       message: str) -> None:
    async def refuse(host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        assert tls
        raise error

    with trio.fail_after(5), pytest.raises(ttc.Unreachable) as info:
        await connect_stream(refuse, Endpoint.from_url(url))
    assert str(info.value) == message
