"""Server-Sent Events (``trio_things/bindings/sse.py``) in the real server, end to end over
in-memory streams: the five stream kinds, ``Accept`` negotiation, ``HEAD``, ids and
resuming with ``Last-Event-ID`` (with and without a gap), consumers that leave, are
quiet or fall behind, and who may open a stream at all.

The consumer is :class:`tests.helpers.sse.SseClient`, which reads only when told to.
No test sleeps: a subscription is known to be in place when its first message came (a
property's current value) or when every task has blocked (``wait_until``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_things as tt
from tests.helpers.servers import observer_count
from tests.helpers.sse import Comment, Message, SseClient, open_sse, wait_until
from trio_things.config import ServerConfig
from trio_things.protocol.access import AccessPolicy
from trio_things.protocol.limits import HttpLimits
from trio_things.server import ThingServer
from trio_things.testing import InMemoryServer, in_memory

GAP_TYPE = "tag:trio-things,2026:notifications-missed"
#: Seconds a test may take before it is a hang (never reached when all is well).
TIMEOUT = 30


class Beacon(tt.Thing):
    """Properties of every kind, two events, and an action that logs and waits."""

    level: int = tt.property(default=0)
    label: str = tt.property(default="off")
    serial: str = tt.property(default="B-1", readonly=True)
    hidden: int = tt.property(default=0, observable=False)

    flashed: tt.Event[int] = tt.event(int)
    dimmed: tt.Event[str] = tt.event(str)

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()

    @tt.action
    async def hold(self, context: tt.ActionContext, note: str = "") -> str:
        """Log, wait until the test sets ``release``, log again, return ``note``."""
        context.log(f"holding {note}")
        await self.release.wait()
        context.log("released")
        return note


@asynccontextmanager
async def serving(**config: Any) -> AsyncIterator[tuple[InMemoryServer, Beacon]]:
    """A server with one Beacon, ``ServerConfig(**config)``, reached in memory."""
    server = ThingServer(ServerConfig(**config))
    beacon = Beacon()
    server.add_thing("beacon", beacon)
    with trio.fail_after(TIMEOUT):
        async with server.running(), in_memory(server) as served:
            yield served, beacon


@pytest.fixture
async def served() -> AsyncIterator[InMemoryServer]:
    async with serving() as (served, _):
        yield served


def beacon_of(served: InMemoryServer) -> Beacon:
    beacon = served.server.things["beacon"]
    assert isinstance(beacon, Beacon)
    return beacon


def parse_id(event_id: str | None) -> tuple[str, int]:
    """``<epoch>.<n>`` as (epoch, n)."""
    assert event_id is not None
    epoch, dot, sequence = event_id.partition(".")
    assert dot and epoch and sequence.isdigit(), event_id
    return epoch, int(sequence)


async def subscribed(served: InMemoryServer, count: int = 1) -> None:
    """Wait until the server holds ``count`` observer memberships."""
    await wait_until(lambda: observer_count(served.server) == count)


def assert_gap(message: Message, last_event_id: str) -> dict[str, Any]:
    assert message.event == "resume-gap"
    problem = message.json()
    assert problem["type"] == GAP_TYPE
    assert problem["status"] == 409
    assert problem["lastEventID"] == last_event_id
    assert problem["resumeID"] == message.id
    return dict(problem)


# ------------------------------------------------------------------ the five stream kinds


async def test_a_property_stream_sends_the_current_value_first_then_each_change(
        served: InMemoryServer) -> None:
    beacon = beacon_of(served)
    beacon.level = 3
    async with open_sse(served, "/beacon/level") as sse:
        assert sse.status == 200
        assert sse.headers["content-type"] == "text/event-stream"
        assert sse.headers["transfer-encoding"] == "chunked"
        assert sse.headers["cache-control"] == "no-cache, no-transform"
        first = await sse.next_message()
        assert (first.event, first.json()) == (None, 3)
        assert first.id is not None
        for value in (4, 5, 7):
            beacon.level = value
            message = await sse.next_message()
            assert (message.event, message.json()) == (None, value)
        beacon.label = "on"  # another property: not on this stream
        beacon.level = 8
        assert (await sse.next_message()).json() == 8


async def test_the_next_href_with_event_stream_accept_is_the_same_stream(
        served: InMemoryServer) -> None:
    beacon = beacon_of(served)
    async with open_sse(served, "/beacon/level/next") as sse:
        assert (await sse.next_message()).json() == 0
        beacon.level = 1
        assert (await sse.next_message()).json() == 1


async def test_the_all_properties_stream_names_each_message_after_its_property(
        served: InMemoryServer) -> None:
    beacon = beacon_of(served)
    beacon.label = "dim"
    async with open_sse(served, "/beacon/properties") as sse:
        initial = await sse.messages(3)  # the observable ones: not "hidden"
        assert {m.event: m.json() for m in initial} == {
            "level": 0, "label": "dim", "serial": "B-1"}
        beacon.label = "bright"
        beacon.hidden = 5  # not observable: never on the stream
        beacon.level = 2
        assert [(m.event, m.json()) for m in await sse.messages(2)] == [
            ("label", "bright"), ("level", 2)]


async def test_an_event_stream_sends_that_event_s_data_unnamed(
        served: InMemoryServer) -> None:
    beacon = beacon_of(served)
    async with open_sse(served, "/beacon/events/flashed") as sse:
        await subscribed(served)
        beacon.flashed.emit(1)
        beacon.dimmed.emit("not this one")
        beacon.flashed.emit(2)
        messages = await sse.messages(2)
        assert [(m.event, m.json()) for m in messages] == [(None, 1), (None, 2)]


async def test_the_all_events_stream_names_each_message_after_its_event(
        served: InMemoryServer) -> None:
    beacon = beacon_of(served)
    async with open_sse(served, "/beacon/events") as sse:
        await subscribed(served, 2)  # one membership per event
        beacon.flashed.emit(1)
        beacon.dimmed.emit("half")
        beacon.flashed.emit(2)
        assert [(m.event, m.json()) for m in await sse.messages(3)] == [
            ("flashed", 1), ("dimmed", "half"), ("flashed", 2)]


async def read_statuses_until_ended(sse: SseClient) -> list[dict[str, Any]]:
    statuses = []
    while not statuses or statuses[-1]["status"] in ("pending", "running"):
        message = await sse.next_message()
        assert message.event is None
        statuses.append(message.json())
    return statuses


def assert_log_pieces_fit(statuses: list[dict[str, Any]], first_log_from: int = 0) -> list[str]:
    """Each message carries only the lines logged since the one before (``logFrom`` is
    how many came before them); joined, they are the whole log, each line once."""
    lines: list[str] = []
    for status in statuses:
        assert status["logFrom"] == first_log_from + len(lines), statuses
        lines += [entry["message"] for entry in status["log"]]
    return lines


async def test_an_action_stream_sends_each_status_of_every_invocation(
        served: InMemoryServer) -> None:
    beacon = beacon_of(served)
    async with open_sse(served, "/beacon/hold") as sse, served.http() as http:
        await subscribed(served)
        invoked = await http.post("/beacon/hold", {"note": "a"})
        assert invoked.status == 201
        first = await sse.next_message()
        assert first.json()["id"] == invoked.json()["id"]
        assert first.json()["status"] == "pending"
        beacon.release.set()
        statuses = [first.json(), *await read_statuses_until_ended(sse)]
        assert statuses[-1]["status"] == "completed"
        assert statuses[-1]["output"] == "a"
        assert {s["id"] for s in statuses} == {invoked.json()["id"]}
        assert assert_log_pieces_fit(statuses) == ["holding a", "released"]
        # A second invocation is on the same stream.
        again = await http.post("/beacon/hold", {"note": "b"})
        statuses = await read_statuses_until_ended(sse)
        assert {s["id"] for s in statuses} == {again.json()["id"]}
        assert statuses[-1]["output"] == "b"


# ------------------------------------------------------------------ Accept and HEAD


@pytest.mark.parametrize("path", [
    "/beacon/", "/beacon/hidden", "/beacon/actions",
    "/action_invocations/", "/things/", "/.well-known/wot",
])
async def test_an_event_stream_of_a_resource_without_one_is_406(
        served: InMemoryServer, path: str) -> None:
    async with open_sse(served, path) as sse:
        assert sse.status == 406, sse.body
        assert sse.headers["content-type"] == "application/problem+json"
        assert sse.json()["status"] == 406
    assert observer_count(served.server) == 0


@pytest.mark.parametrize("accept", [
    "*/*", "text/*", "application/json", "text/event-stream;q=0", None])
async def test_without_event_stream_by_name_a_get_is_the_plain_resource(
        served: InMemoryServer, accept: str | None) -> None:
    beacon_of(served).level = 9
    async with open_sse(served, "/beacon/level", accept=accept) as sse:
        assert sse.status == 200
        assert sse.headers["content-type"] == "application/json"
        assert sse.json() == 9
    async with open_sse(served, "/beacon/events", accept=accept) as sse:
        assert sse.status == 406  # all events: a stream only
    assert observer_count(served.server) == 0


async def test_event_stream_among_other_media_types_is_a_stream(
        served: InMemoryServer) -> None:
    async with open_sse(served, "/beacon/level",
                        accept="text/html, TEXT/Event-Stream;q=0.5, */*;q=0.1") as sse:
        assert sse.is_stream
        assert (await sse.next_message()).json() == 0


@pytest.mark.parametrize("path", [
    "/beacon/level", "/beacon/properties", "/beacon/events", "/beacon/events/flashed",
    "/beacon/hold"])
async def test_head_of_a_stream_is_its_head_alone_and_subscribes_nothing(
        served: InMemoryServer, path: str) -> None:
    async with open_sse(served, path, method="HEAD") as sse:
        assert sse.status == 200
        assert sse.headers["content-type"] == "text/event-stream"
        assert sse.body == b""
        await trio.testing.wait_all_tasks_blocked()
        assert observer_count(served.server) == 0
        # Nothing follows the head, and the server ends the connection.
        assert await sse.read_to_end() == []
        assert sse.closed
    beacon = beacon_of(served)
    beacon.level = 1
    beacon.flashed.emit(1)
    await wait_until(lambda: served.open_connections == 0)


# ------------------------------------------------------------------ ids


async def test_ids_increase_across_properties_events_and_actions(
        served: InMemoryServer) -> None:
    beacon = beacon_of(served)
    async with (open_sse(served, "/beacon/properties") as properties,
                open_sse(served, "/beacon/events") as events,
                open_sse(served, "/beacon/hold") as actions,
                served.http() as http):
        initial = await properties.messages(3)
        assert len({m.id for m in initial}) == 1  # the state as of one moment
        await subscribed(served, 3 + 2 + 1)
        beacon.level = 1
        beacon.flashed.emit(1)
        beacon.label = "x"
        beacon.dimmed.emit("y")
        assert (await http.post("/beacon/hold", {})).status == 201
        beacon.level = 2
        received = [*await properties.messages(3), *await events.messages(2),
                    *await actions.messages(3)]  # pending, running, the first log line
    ids = sorted(parse_id(m.id) for m in received)
    assert len({epoch for epoch, _ in ids}) == 1
    sequences = [n for _, n in ids]
    assert len(set(sequences)) == len(sequences)  # no two notifications share one
    assert min(sequences) > parse_id(initial[0].id)[1]
    # Each stream's own ids increase in the order it is sent them.
    for stream in (properties, events, actions):
        own = [parse_id(m.id)[1] for m in stream.items if isinstance(m, Message)]
        assert own == sorted(own)


# ------------------------------------------------------------------ resume


async def test_resume_without_a_gap_sends_exactly_what_was_missed_once_then_live(
        served: InMemoryServer) -> None:
    beacon = beacon_of(served)
    async with open_sse(served, "/beacon/events/flashed") as sse:
        await subscribed(served)
        beacon.flashed.emit(1)
        last = await sse.next_message()
    await subscribed(served, 0)
    beacon.flashed.emit(2)
    beacon.dimmed.emit("not wanted")
    beacon.flashed.emit(3)
    async with open_sse(served, "/beacon/events/flashed", {"last-event-id": last.id or ""}
                        ) as sse:
        missed = await sse.messages(2)
        assert [m.json() for m in missed] == [2, 3]
        assert all(m.event is None for m in missed)
        beacon.flashed.emit(4)
        live = await sse.next_message()
        assert live.json() == 4  # not 2 or 3 again, and no gap message anywhere
        assert parse_id(last.id) < parse_id(missed[0].id) < parse_id(missed[1].id) < parse_id(
            live.id)


async def test_resume_on_the_all_events_stream_sends_every_event_missed_named(
        served: InMemoryServer) -> None:
    beacon = beacon_of(served)
    async with open_sse(served, "/beacon/events") as sse:
        await subscribed(served, 2)
        beacon.dimmed.emit("before")
        last = await sse.next_message()
    await subscribed(served, 0)
    beacon.flashed.emit(1)
    beacon.dimmed.emit("while away")
    async with open_sse(served, "/beacon/events", {"last-event-id": last.id or ""}) as sse:
        assert [(m.event, m.json()) for m in await sse.messages(2)] == [
            ("flashed", 1), ("dimmed", "while away")]


async def test_resume_after_the_ring_dropped_some_starts_with_a_gap() -> None:
    async with serving(replay_size=2) as (served, beacon):
        async with open_sse(served, "/beacon/events/flashed") as sse:
            await subscribed(served)
            beacon.flashed.emit(0)
            last = await sse.next_message()
        await subscribed(served, 0)
        for n in range(1, 6):  # the ring keeps the newest two: 4 and 5
            beacon.flashed.emit(n)
        async with open_sse(served, "/beacon/events/flashed",
                            {"last-event-id": last.id or ""}) as sse:
            gap, *held = await sse.messages(3)
            problem = assert_gap(gap, last.id or "")
            assert [m.json() for m in held] == [4, 5]
            # The resume id is just before what the ring holds: coming back with it
            # misses nothing more.
            assert parse_id(problem["resumeID"])[1] == parse_id(held[0].id)[1] - 1
        async with open_sse(served, "/beacon/events/flashed",
                            {"last-event-id": problem["resumeID"]}) as sse:
            assert [m.json() for m in await sse.messages(2)] == [4, 5]  # no gap now
            beacon.flashed.emit(6)
            assert (await sse.next_message()).json() == 6


async def test_resume_with_an_id_of_another_run_is_a_gap_then_all_the_ring_holds() -> None:
    async with serving() as (earlier, beacon):
        async with open_sse(earlier, "/beacon/events/flashed") as sse:
            await subscribed(earlier)
            beacon.flashed.emit(1)
            other_run = (await sse.next_message()).id or ""
    async with serving() as (served, beacon):  # a restart: a new epoch, an empty ring
        beacon.flashed.emit(10)
        beacon.dimmed.emit("not wanted")
        beacon.flashed.emit(11)
        async with open_sse(served, "/beacon/events/flashed",
                            {"last-event-id": other_run}) as sse:
            gap, *held = await sse.messages(3)
            assert "no id of this server's run" in assert_gap(gap, other_run)["detail"]
            assert [m.json() for m in held] == [10, 11]
            assert parse_id(gap.id)[0] != parse_id(other_run)[0]


@pytest.mark.parametrize("garbage", [
    "garbage", "0", ".", "..", "abc.", ".5", "x.y.z", "%00", "1e9", "-1",
    "00000000.99999999999999999999999", "deadbeef.-1", "7",
    "x" * 4000,
])
async def test_a_last_event_id_that_is_no_id_is_a_gap_never_a_crash(
        served: InMemoryServer, garbage: str) -> None:
    beacon = beacon_of(served)
    beacon.flashed.emit(1)
    async with open_sse(served, "/beacon/events/flashed",
                        {"last-event-id": garbage}) as sse:
        assert sse.is_stream
        gap, held = await sse.messages(2)
        assert_gap(gap, garbage.strip())  # h11 trims the header's outer whitespace
        assert held.json() == 1
        beacon.flashed.emit(2)
        assert (await sse.next_message()).json() == 2


async def test_a_replay_larger_than_the_stream_outbox_is_sent_whole_before_anything_live(
) -> None:
    """The ring may hold more than a stream's Outbox: a consumer coming back is sent it
    all (once, the replay was put in the Outbox and overflowed it: the stream ended
    before it began, and the consumer, coming back with the same id, never resumed).
    Lockstep streams hold the replay's write until the consumer reads, so the live
    events emitted meanwhile wait, and come after it."""
    async with serving(replay_size=8, http=HttpLimits(stream_outbox_size=2)) as (
            served, beacon):
        async with open_sse(served, "/beacon/events/flashed") as sse:
            await subscribed(served)
            beacon.flashed.emit(0)
            last = (await sse.next_message()).id or ""
        await subscribed(served, 0)
        for n in range(1, 11):  # the ring keeps 3 to 10: a gap, then eight
            beacon.flashed.emit(n)
        async with open_sse(served, "/beacon/events/flashed", {"last-event-id": last},
                            stream_pair=trio.testing.lockstep_stream_pair) as sse:
            await trio.testing.wait_all_tasks_blocked()  # the replay's write waits
            beacon.flashed.emit(11)
            beacon.flashed.emit(12)
            gap, *rest = await sse.messages(11)
            assert_gap(gap, last)
            assert [m.json() for m in rest] == list(range(3, 13))
            beacon.flashed.emit(13)
            assert (await sse.next_message()).json() == 13


async def test_a_last_event_id_of_this_run_but_from_the_future_is_a_gap(
        served: InMemoryServer) -> None:
    beacon = beacon_of(served)
    async with open_sse(served, "/beacon/level") as sse:
        epoch, sequence = parse_id((await sse.next_message()).id)
    future = f"{epoch}.{sequence + 1000}"
    beacon.flashed.emit(1)
    async with open_sse(served, "/beacon/events", {"last-event-id": future}) as sse:
        gap, held = await sse.messages(2)
        assert_gap(gap, future)
        assert (held.event, held.json()) == ("flashed", 1)


async def test_a_property_stream_ignores_last_event_id_and_sends_the_current_value(
        served: InMemoryServer) -> None:
    beacon_of(served).level = 4
    async with open_sse(served, "/beacon/level", {"last-event-id": "garbage"}) as sse:
        first = await sse.next_message()
        assert (first.event, first.json()) == (None, 4)


async def test_an_action_stream_resumes_with_the_statuses_missed() -> None:
    async with serving() as (served, beacon), served.http() as http:
        async with open_sse(served, "/beacon/hold") as sse:
            await subscribed(served)
            invoked = (await http.post("/beacon/hold", {"note": "r"})).json()
            seen = await sse.messages(3)  # pending, running, "holding r"
            assert [m.json()["status"] for m in seen] == ["pending", "running", "running"]
        await subscribed(served, 0)
        beacon.release.set()
        assert (await http.get(invoked["href"])).json()["status"] == "completed"
        last = seen[-1].id or ""
        async with open_sse(served, "/beacon/hold", {"last-event-id": last}) as sse:
            missed = await read_statuses_until_ended(sse)
        assert {m["id"] for m in missed} == {invoked["id"]}
        assert missed[-1]["status"] == "completed"
        assert missed[-1]["output"] == "r"
        # The log lines not yet seen, each once, from where the stream left off.
        assert assert_log_pieces_fit(missed, first_log_from=1) == ["released"]
        # A status snapshot is what it was then, not the invocation as it is now.
        assert [s["status"] for s in missed][:-1] == ["running"] * (len(missed) - 1)


async def test_an_action_stream_after_a_gap_says_so_first() -> None:
    async with serving(replay_size=1) as (served, beacon), served.http() as http:
        async with open_sse(served, "/beacon/hold") as sse:
            await subscribed(served)
            await http.post("/beacon/hold", {})
            last = (await sse.next_message()).id or ""  # pending
        await subscribed(served, 0)
        beacon.release.set()
        async with open_sse(served, "/beacon/hold", {"last-event-id": last}) as sse:
            gap, held = await sse.messages(2)
            assert_gap(gap, last)
            assert held.json()["status"] == "completed"  # the newest, all the ring holds


# ------------------------------------------------------------------ consumers that leave


@pytest.mark.parametrize("path", ["/beacon/level", "/beacon/properties",
                                  "/beacon/events", "/beacon/hold"])
async def test_a_consumer_that_disconnects_mid_stream_leaves_no_observer(
        served: InMemoryServer, path: str) -> None:
    beacon = beacon_of(served)
    async with open_sse(served, path) as sse, served.http() as http:
        await wait_until(lambda: observer_count(served.server) > 0)
        assert (await http.post("/beacon/hold", {})).status == 201
        beacon.level = 1
        beacon.flashed.emit(1)
        await sse.next_item()
        beacon.level = 2
        beacon.flashed.emit(2)  # pending for the consumer, unread, when it goes
    await wait_until(lambda: observer_count(served.server) == 0)
    await wait_until(lambda: served.open_connections == 0)


async def test_a_consumer_that_disconnects_while_the_server_writes_leaves_no_observer(
        served: InMemoryServer) -> None:
    """Lockstep streams have no buffer: the relay's write waits for the consumer to
    read, and it closes instead."""
    beacon = beacon_of(served)
    async with open_sse(served, "/beacon/events/flashed",
                        stream_pair=trio.testing.lockstep_stream_pair):
        await subscribed(served)
        beacon.flashed.emit(1)
        await trio.testing.wait_all_tasks_blocked()  # the relay waits in send_all
        beacon.flashed.emit(2)
        assert observer_count(served.server) == 1
    await wait_until(lambda: observer_count(served.server) == 0)
    await wait_until(lambda: served.open_connections == 0)


async def test_a_quiet_stream_gets_a_comment_every_heartbeat(
        autojump_clock: trio.testing.MockClock) -> None:
    async with serving(http=HttpLimits(stream_heartbeat=5.0)) as (served, beacon):
        async with open_sse(served, "/beacon/events/flashed", timeout=60) as sse:
            start = trio.current_time()
            assert await sse.next_item() == Comment("keep-alive")
            assert 5.0 <= trio.current_time() - start < 5.5
            await trio.sleep(3.0)  # quiet time on the mock clock, not a synchronisation
            beacon.flashed.emit(1)
            emitted = trio.current_time()
            assert (await sse.next_message()).json() == 1
            # The heartbeat counts quiet seconds: from the message, not the last comment.
            assert await sse.next_item() == Comment("keep-alive")
            assert 5.0 <= trio.current_time() - emitted < 5.5
            assert sse.wire.endswith(b"e\r\n: keep-alive\n\n\r\n")  # a chunk of its own


async def test_a_stream_whose_outbox_overflows_ends_with_a_comment_and_the_last_chunk(
) -> None:
    async with serving(http=HttpLimits(stream_outbox_size=4)) as (served, beacon):
        async with open_sse(served, "/beacon/events/flashed") as sse:
            await subscribed(served)
            beacon.flashed.emit(0)
            last = await sse.next_message()
            for n in range(1, 6):  # five at once, with no chance to write one
                beacon.flashed.emit(n)
            rest = await sse.read_to_end()
            assert rest == [Comment("closing: too slow: more than 4 messages pending")]
            assert sse.ended  # the last chunk came: the server ended it on purpose
            assert sse.wire.endswith(
                b": closing: too slow: more than 4 messages pending\n\n\r\n0\r\n\r\n")
        await wait_until(lambda: observer_count(served.server) == 0)
        # Coming back with the last id, nothing is lost.
        async with open_sse(served, "/beacon/events/flashed",
                            {"last-event-id": last.id or ""}) as sse:
            assert [m.json() for m in await sse.messages(5)] == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------ who may open a stream

FULL, VIEWER = "full-token-0123456789", "viewer-token-0123456789"


async def test_a_stream_takes_its_token_from_the_query_and_401_without() -> None:
    access = AccessPolicy(tokens=[FULL], readonly_tokens=[VIEWER])
    async with serving(access=access) as (served, _):
        for token in (FULL, VIEWER):
            async with open_sse(served, f"/beacon/level?access_token={token}") as sse:
                assert sse.is_stream
                assert (await sse.next_message()).json() == 0
        async with open_sse(served, "/beacon/level",
                            {"authorization": f"Bearer {VIEWER}"}) as sse:
            assert (await sse.next_message()).json() == 0
        for path in ("/beacon/level", "/beacon/events?access_token=wrong",
                     "/beacon/events/flashed?access_token="):
            async with open_sse(served, path) as sse:
                assert sse.status == 401, path
                assert sse.headers["www-authenticate"].startswith("Bearer")
                assert sse.headers["content-type"] == "application/problem+json"
        # A plain GET may not carry its token in the URL.
        async with open_sse(served, f"/beacon/level?access_token={FULL}", accept=None) as sse:
            assert sse.status == 401
            assert "Authorization header" in sse.json()["detail"]
        await trio.testing.wait_all_tasks_blocked()
        assert observer_count(served.server) == 0


async def test_a_stream_from_a_page_of_another_site_is_403() -> None:
    access = AccessPolicy(cors_origins=["https://lab.example"])
    async with serving(access=access) as (served, _):
        async with open_sse(served, "/beacon/level",
                            {"origin": "https://evil.example"}) as sse:
            assert sse.status == 403
            assert "https://evil.example" in sse.json()["detail"]
        await trio.testing.wait_all_tasks_blocked()
        assert observer_count(served.server) == 0
        for origin in ("https://lab.example", "http://testserver"):
            async with open_sse(served, "/beacon/level", {"origin": origin}) as sse:
                assert sse.is_stream, origin
                assert (await sse.next_message()).json() == 0
        async with open_sse(served, "/beacon/level", {"origin": "https://lab.example"}) as sse:
            assert sse.headers["access-control-allow-origin"] == "https://lab.example"


# ------------------------------------------------------------------ a quiet stream's position


async def test_a_quiet_event_stream_still_resumes_from_where_it_began(
        served: InMemoryServer) -> None:
    """A stream that carried no event before it dropped has a last id all the same (a
    message with an id and no data, which dispatches nothing): nothing emitted while the
    consumer is away is lost."""
    beacon = beacon_of(served)
    async with open_sse(served, "/beacon/events/flashed") as sse:
        position = await sse.read_until_positioned()
        assert [item for item in sse.items if isinstance(item, Message)] == []
    await subscribed(served, 0)
    beacon.flashed.emit(7)
    async with open_sse(served, "/beacon/events/flashed", {"last-event-id": position}) as sse:
        [missed] = await sse.messages(1)
        assert missed.json() == 7 and missed.event is None
        assert parse_id(missed.id) > parse_id(position)
