"""Event subscriptions across a lost connection: resumed from the last ``eventID``, each
event once and in order; a gap (``NotificationsMissed``) where the server no longer holds
what was missed, or restarted; ``trio-things subscribe`` printing it. Over memory
streams, with the autojump clock driving the backoff; no sleeps."""

from __future__ import annotations

import datetime
import errno
import functools
import logging
import os
from collections.abc import AsyncIterator

import attrs
import orjson
import pytest
import trio
import trio.testing
from trio.testing import MockClock

import trio_things.client as ttc
from tests.client.conftest import FAST, LAB, Lab, MemoryNetwork, Reading, make_server
from trio_things.cli import _parser
from trio_things.client import command_line, connect
from trio_things.config import ServerConfig
from trio_things.server import ThingServer

GAP_TYPE = "tag:trio-things,2026:notifications-missed"


def lab_of(server: ThingServer) -> Lab:
    lab = server.things["lab"]
    assert isinstance(lab, Lab)
    return lab


def sequence(event_id: str | None) -> tuple[str, int]:
    assert event_id is not None
    epoch, dot, tail = event_id.rpartition(".")
    assert dot and tail.isdigit(), event_id
    return epoch, int(tail)


def reading(level: int) -> Reading:
    return Reading(level=level, time=datetime.datetime(2026, 1, 3, tzinfo=datetime.UTC))


@attrs.define
class Restartable:
    """An OpenStream to whichever server runs now. :meth:`stop` drops its connections,
    stops it and refuses connections until :meth:`start` serves the next one: a server
    restarted on the same port. ``refusing`` can hold connections off after a start."""

    network: MemoryNetwork | None = None
    scope: trio.CancelScope | None = None
    refusing: bool = False

    async def start(self, nursery: trio.Nursery, server: ThingServer) -> None:
        await nursery.start(self._serve, server)

    async def _serve(self, server: ThingServer, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self.scope:
            async with server.running(), trio.open_nursery() as connections:
                self.network = MemoryNetwork(server=server, nursery=connections)
                task_status.started()
                await trio.sleep_forever()

    async def stop(self) -> None:
        assert self.network is not None and self.scope is not None
        network, self.network = self.network, None
        await network.break_all()
        self.scope.cancel()

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        if self.network is None or self.refusing:
            raise ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
        return await self.network(host, port, tls=tls)


@pytest.fixture
async def small_ring() -> AsyncIterator[tuple[ThingServer, MemoryNetwork]]:
    """The test server keeping only the newest 2 events of a Thing."""
    server = make_server(ServerConfig(invocation_retention=60.0, replay_size=2))
    async with server.running(), trio.open_nursery() as nursery:
        yield server, MemoryNetwork(server=server, nursery=nursery)
        nursery.cancel_scope.cancel()


async def test_events_emitted_while_disconnected_arrive_once_and_in_order(
        autojump_clock: MockClock, server: ThingServer, network: MemoryNetwork) -> None:
    lab = lab_of(server)
    with trio.fail_after(10):
        async with connect(LAB, open_stream=network, options=FAST) as thing:
            async with thing.subscribe("tick", int) as ticks:
                changes = ticks.changes()
                lab.tick.emit(1)
                first = await changes.__anext__()
                assert first.value == 1 and first.event_id is not None
                await network.break_all()
                for n in (2, 3, 4):  # while nobody is connected: kept in the ring
                    lab.tick.emit(n)
                resumed = [await changes.__anext__() for _ in range(3)]
                assert [change.value for change in resumed] == [2, 3, 4]
                ids = [sequence(change.event_id) for change in [first, *resumed]]
                assert ids == sorted(ids) and len(set(ids)) == 4
                # Then live again, and nothing repeated between (5 comes next).
                lab.tick.emit(5)
                assert await ticks.__anext__() == 5
                # A second loss resumes from the newest event, not the first one.
                await network.break_all()
                lab.tick.emit(6)
                assert await ticks.__anext__() == 6
                lab.tick.emit(7)
                assert await ticks.__anext__() == 7


async def test_a_lone_subscription_without_events_resumes_from_its_response(
        autojump_clock: MockClock, server: ThingServer, network: MemoryNetwork) -> None:
    """``alarm``, alone on its socket, has received nothing when the connection drops:
    an alarm emitted while disconnected still arrives (the subscription's response named
    the newest id), and one emitted before the subscription never does."""
    lab = lab_of(server)
    with trio.fail_after(10):
        async with connect(LAB, open_stream=network, options=FAST) as thing:
            lab.alarm.emit(reading(0))  # before anyone subscribed: not for us
            async with thing.subscribe("alarm", Reading) as alarms:
                await network.break_all()
                lab.alarm.emit(reading(1))
                assert await alarms.__anext__() == reading(1)
                lab.alarm.emit(reading(2))
                assert await alarms.__anext__() == reading(2)


async def test_a_gap_when_the_ring_no_longer_holds_what_was_missed(
        autojump_clock: MockClock, small_ring: tuple[ThingServer, MemoryNetwork]) -> None:
    server, network = small_ring
    lab = lab_of(server)
    with trio.fail_after(10):
        async with connect(LAB, open_stream=network, options=FAST) as thing:
            async with thing.subscribe("tick", int) as ticks:
                changes = ticks.changes()
                lab.tick.emit(1)
                first = await changes.__anext__()
                await network.break_all()
                for n in range(2, 7):  # 5 events; the ring keeps 5 and 6
                    lab.tick.emit(n)
                with pytest.raises(ttc.NotificationsMissed) as info:
                    await changes.__anext__()
                gap = info.value
                assert gap.name == "tick"
                assert gap.last_event_id == first.event_id
                assert gap.problem is not None and gap.problem.type == GAP_TYPE
                assert gap.status == 409
                assert "keeps the newest 2" in str(gap)
                # The subscription goes on, from the same iterator: what the ring held.
                after = [await changes.__anext__() for _ in range(2)]
                assert [change.value for change in after] == [5, 6]
                assert sequence(gap.resume_id) < sequence(after[0].event_id)
                lab.tick.emit(7)
                assert await ticks.__anext__() == 7  # the plain iterator too


async def test_a_server_restart_is_a_gap(autojump_clock: MockClock) -> None:
    """A new server (a new epoch) cannot know what the old one sent: a gap, then the
    events the new one emitted before the client came back, then live ones."""
    opener = Restartable()
    first, second = make_server(), make_server()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await opener.start(nursery, first)
            async with connect(LAB, open_stream=opener, options=FAST) as thing:
                async with thing.subscribe("tick", int) as ticks:
                    changes = ticks.changes()
                    lab_of(first).tick.emit(1)
                    before = await changes.__anext__()
                    await opener.stop()
                    opener.refusing = True
                    await opener.start(nursery, second)
                    lab_of(second).tick.emit(2)  # before the client is back
                    opener.refusing = False
                    with pytest.raises(ttc.NotificationsMissed) as info:
                        await changes.__anext__()
                    gap = info.value
                    assert gap.last_event_id == before.event_id
                    assert "no id of this server's run" in str(gap)
                    assert sequence(gap.resume_id)[0] != sequence(before.event_id)[0]
                    assert (await changes.__anext__()).value == 2
                    lab_of(second).tick.emit(3)
                    assert await ticks.__anext__() == 3
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("json_lines", [False, True])
async def test_subscribe_prints_a_gap_as_one_line_and_goes_on(
        autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, json_lines: bool) -> None:
    """``trio-things subscribe`` in this trio.run (its connections over memory streams,
    its lines caught as printed), across a server restart."""
    caplog.set_level(logging.WARNING, logger="trio_things.client")
    opener = Restartable()
    first, second = make_server(), make_server()
    printed_send, printed = trio.open_memory_channel[str](100)
    monkeypatch.setattr(command_line, "_print", printed_send.send_nowait)
    monkeypatch.setattr(command_line, "connect", functools.partial(
        connect, open_stream=opener))
    args = _parser().parse_args(["subscribe", LAB, "tick", "--count", "3",
                                 *(["--json"] if json_lines else [])])
    statuses: list[int] = []
    done = trio.Event()

    async def subscribe() -> None:
        statuses.append(await command_line._main(args))
        done.set()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await opener.start(nursery, first)
            nursery.start_soon(subscribe)
            await trio.testing.wait_all_tasks_blocked()  # subscribed, waiting for ticks
            lab_of(first).tick.emit(1)
            lines = [await printed.receive()]
            await opener.stop()
            opener.refusing = True
            await opener.start(nursery, second)
            lab_of(second).tick.emit(2)
            opener.refusing = False
            lines += [await printed.receive() for _ in range(2)]  # the gap, then 2
            lab_of(second).tick.emit(3)
            lines.append(await printed.receive())
            await done.wait()  # --count 3: the gap is no event, 3 is the third
            nursery.cancel_scope.cancel()
    assert statuses == [command_line.EXIT_OK]
    if json_lines:
        events = [orjson.loads(line) for line in lines]
        assert [(e["name"], e.get("data")) for e in events] == [
            ("tick", 1), ("tick", None), ("tick", 2), ("tick", 3)]
        gap = events[1]["gap"]
        assert (gap["type"], gap["status"]) == (GAP_TYPE, 409)
        assert "no id of this server's run" in gap["detail"]
        assert gap["lastEventID"] and gap["resumeID"]
    else:
        assert lines[0] == "tick: 1" and lines[2:] == ["tick: 2", "tick: 3"]
        assert lines[1].startswith("tick: gap: events were missed: '")
        assert "is no id of this server's run (it restarted" in lines[1]
        assert "\n" not in lines[1]
