"""The shared WebSocket: losing it, getting it back, giving up. Over memory streams, with
the autojump clock driving the backoff; tests/client/test_loopback.py restarts a real
server on a real port."""

from __future__ import annotations

import logging

import attrs
import pytest
import trio
from trio.testing import MockClock

import trio_things.client as ttc
from tests.client.conftest import FAST, LAB, Lab, MemoryNetwork
from trio_things.client import State, connect
from trio_things.server import ThingServer


def lab_of(server: ThingServer) -> Lab:
    lab = server.things["lab"]
    assert isinstance(lab, Lab)
    return lab


async def test_observations_are_restored_after_the_connection_drops(
        autojump_clock: MockClock, server: ThingServer, network: MemoryNetwork,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_things.client")
    with trio.fail_after(10):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            async with lab.observe("level", int) as levels, lab.subscribe("tick", int) as ticks:
                assert await levels.__anext__() == 0
                await network.break_all()
                lab_of(server).level = 9  # changed while nobody is connected
                # The restored observation starts again from the current value.
                assert await levels.__anext__() == 9
                lab_of(server).level = 10
                assert await levels.__anext__() == 10
                await (await lab.invoke("emit", n=2)).result()
                assert [await ticks.__anext__() for _ in range(2)] == [1, 2]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("lost the WebSocket connection to ws://testserver/lab/ws")
               and "restore 2 observation(s)" in m for m in messages), messages
    assert any(m == "reconnected to ws://testserver/lab/ws; restoring 2 observation(s)"
               for m in messages), messages
    # No tick had arrived, yet the subscription resumes from its response's eventID
    # (tests/client/test_resume.py has what that restores).
    assert not any(m.startswith("no event id to resume") for m in messages), messages


async def test_a_request_in_flight_when_the_connection_drops_raises_connection_lost(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(10):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            async with lab.observe("level"):
                session = lab._session_for("ws://testserver/lab/ws")  # type: ignore[misc]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(network.break_all)
                    with pytest.raises(ttc.ConnectionLost):
                        # A response that cannot come: the socket breaks under it.
                        await session.request("queryaction", thing_id=lab.id,
                                              members={"actionID": "x"})


async def test_reconnecting_gives_up_after_reconnect_for(
        autojump_clock: MockClock, server: ThingServer, network: MemoryNetwork,
        caplog: pytest.LogCaptureFixture) -> None:
    options = ttc.ClientOptions(timeout=1.0, backoff_initial=0.1, backoff_max=1.0,
                                reconnect_for=5.0)
    refusing = False

    async def open_stream(host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        if refusing:
            raise ConnectionRefusedError(111, "Connection refused")
        return await network(host, port, tls=tls)

    with trio.fail_after(30):
        async with connect(LAB, open_stream=open_stream, options=options) as lab:
            async with lab.observe("level") as levels:
                assert await levels.__anext__() == 0
                refusing = True
                await network.break_all()
                started = trio.current_time()
                with pytest.raises(ttc.ConnectionLost, match="no connection for 5 s"):
                    await levels.__anext__()
                assert 5.0 <= trio.current_time() - started < 7.0
    assert "giving up on ws://testserver/lab/ws" in caplog.text


async def test_a_websocket_invocation_polls_after_the_connection_drops(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    """Its status was pushed on the lost connection; afterwards the handle queries it
    (over HTTP here) until it ends."""
    with trio.fail_after(10):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            invocation = await lab.invoke("climb", to=5, delay=1.0)
            await network.break_all()
            assert await invocation.result() == 5
            assert invocation.status.state is State.COMPLETED


async def test_the_session_ends_when_nothing_is_observed_and_restarts_on_use(
        autojump_clock: MockClock, network: MemoryNetwork) -> None:
    with trio.fail_after(10):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            async with lab.observe("level") as levels:
                await levels.__anext__()
            session = lab._session_for("ws://testserver/lab/ws")  # type: ignore[misc]
            assert session.observation_count == 0
            await network.break_all()
            await trio.testing.wait_all_tasks_blocked()
            assert not session.connected
            # Next use: a new connection.
            async with lab.observe("level") as levels:
                assert await levels.__anext__() == 0
                assert session.connected


async def test_observing_again_right_after_leaving_is_not_lost(
        autojump_clock: MockClock, server: ThingServer, network: MemoryNetwork) -> None:
    """The unobserve of the first observation lands before the second observe, so the
    server does not end the second one."""
    with trio.fail_after(10):
        async with connect(LAB, open_stream=network, options=FAST) as lab:
            for _ in range(3):
                async with lab.observe("level", int) as levels:
                    assert await levels.__anext__() == lab_of(server).level
            async with lab.observe("level", int) as levels:
                await levels.__anext__()
                lab_of(server).level = 77
                assert await levels.__anext__() == 77


async def test_a_refused_handshake_is_an_error(autojump_clock: MockClock,
                                               network: MemoryNetwork) -> None:
    """A TD whose WebSocket form points nowhere: the server refuses the handshake with
    404 problem details."""
    with trio.fail_after(10):
        async with ttc.open_client(open_stream=network, options=FAST) as client:
            lab = await client.consume(LAB)
            for affordance in lab.td["properties"].values():
                for form in affordance["forms"]:
                    form["href"] = form["href"].replace("/lab/ws", "/nowhere/ws")
            with pytest.raises(ttc.NotFound) as info:
                async with lab.observe("level"):
                    pass  # pragma: no cover
    assert info.value.status == 404


class _Muted(trio.abc.Stream):
    """A client's end of a connection that, once muted, hears nothing more from the
    server (a peer that vanished without a FIN: no pong ever comes back)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.muted = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.muted:
            await trio.sleep_forever()
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_the_first_connection_going_silent_is_reconnected_not_fatal(
        autojump_clock: MockClock, server: ThingServer, network: MemoryNetwork) -> None:
    """A ping that gets no answer on the first connection the session made is a lost
    connection like any other: the observations are restored, nothing raises."""
    streams: list[_Muted] = []

    async def open_stream(host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        streams.append(_Muted(await network(host, port, tls=tls)))
        return streams[-1]

    options = attrs.evolve(FAST, keepalive_interval=1.0, timeout=1.0)
    with trio.fail_after(30):
        async with connect(LAB, open_stream=open_stream, options=options) as lab:
            async with lab.observe("level", int) as levels:
                assert await levels.__anext__() == 0
                for stream in streams:
                    stream.muted = True
                lab_of(server).level = 4
                assert await levels.__anext__() == 4  # over a new connection
    assert len(streams) >= 2
