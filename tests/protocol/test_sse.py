"""Server-Sent Events and long-poll messages, sans-IO (protocol/sse.py, protocol/longpoll.py)."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import orjson
import pytest

from trio_things.model.invocation import Invocation, InvocationStatus, LogEntry
from trio_things.protocol import commands as c
from trio_things.protocol import sse
from trio_things.protocol.longpoll import bare, encode_poll, split_poll
from trio_things.protocol.problems import NOTIFICATIONS_MISSED_TYPE

NOW = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.UTC)
CHANGED = c.PropertyChanged(thing="t", name="temperature", value=20.5, timestamp=NOW,
                            id="e.7")
EMITTED = c.EventEmitted(thing="t", name="overheated", timestamp=NOW, id="e.8",
                         data={"temperature": 101.0, "text": "line\nbreak"})
MISSED = c.NotificationsMissed(thing="t", last_event_id="old.3", resume_id="e.5",
                               detail="the server restarted")


def parse(message: bytes) -> dict[str, str]:
    """One SSE message's fields, as the WHATWG parser reads them (one line each here)."""
    assert message.endswith(b"\n\n")
    fields = {}
    for line in message[:-2].decode().split("\n"):
        name, _, value = line.partition(": ")
        assert name not in fields
        fields[name] = value
    return fields


def test_one_affordance_messages_are_unnamed_with_the_bare_value() -> None:
    assert sse.encode_value(CHANGED) == b"id: e.7\ndata: 20.5\n\n"
    fields = parse(sse.encode_value(EMITTED))
    assert fields.keys() == {"id", "data"}
    # A line feed inside a value stays escaped: data is one line.
    assert orjson.loads(fields["data"]) == EMITTED.data


def test_whole_thing_messages_are_named_after_the_affordance() -> None:
    assert parse(sse.encode_named(CHANGED)) == {"id": "e.7", "event": "temperature",
                                               "data": "20.5"}
    assert parse(sse.encode_named(EMITTED))["event"] == "overheated"


def test_action_status_carries_the_invocation_with_only_its_new_log_lines() -> None:
    invocation = Invocation(thing="counter", action="count", input={"n": 3})
    invocation.start()
    for i in range(3):
        invocation.add_log("INFO", f"line {i + 1}")
    invocation.finish(InvocationStatus.COMPLETED, output=3)
    new_log = invocation.log_lines(after=2)
    notification = c.ActionStatusChanged(invocation=invocation, timestamp=NOW,
                                         new_log=new_log, id="e.9")
    for encode in (sse.encode_value, sse.encode_named):
        fields = parse(encode(notification))
        status = orjson.loads(fields["data"])
        assert status["status"] == "completed" and status["output"] == 3
        assert [line["message"] for line in status["log"]] == ["line 3"]
        assert status["logFrom"] == 2
    assert parse(sse.encode_named(notification))["event"] == "count"
    quiet = c.ActionStatusChanged(invocation=invocation, timestamp=NOW, id="e.10")
    status = orjson.loads(parse(sse.encode_value(quiet))["data"])
    assert status["log"] == [] and status["logFrom"] == 3


@pytest.mark.parametrize("encode", [sse.encode_value, sse.encode_named])
def test_a_gap_is_its_own_named_message_whose_id_is_where_to_resume(
        encode: Callable[[c.Notification], bytes]) -> None:
    fields = parse(encode(MISSED))
    assert fields["event"] == sse.GAP_EVENT == "resume-gap"
    assert not sse.GAP_EVENT.isidentifier()  # no affordance can be named so
    assert fields["id"] == "e.5"
    problem = orjson.loads(fields["data"])
    assert problem == {"type": NOTIFICATIONS_MISSED_TYPE, "title": "Notifications missed",
                       "status": 409, "detail": "the server restarted",
                       "lastEventID": "old.3", "resumeID": "e.5"}


def test_chunks_frame_each_message_for_a_chunked_body() -> None:
    assert sse.chunk(b"id: 1\n\n") == b"7\r\nid: 1\n\n\r\n"
    assert sse.chunk(b"x" * 255).startswith(b"ff\r\n")
    assert sse.HEARTBEAT == sse.chunk(b": keep-alive\n\n")
    assert sse.END == b"0\r\n\r\n"


def test_a_closing_comment_is_one_line() -> None:
    assert sse.closing_comment("too slow:\r\nmore than 5") == sse.chunk(
        b": closing: too slow: more than 5\n\n")


def test_an_error_message_is_named_so_eventsource_does_not_take_it_for_a_lost_link() -> None:
    fields = parse(sse.error_message({"status": 404}))
    assert fields == {"event": "stream-error", "data": '{"status":404}'}


@pytest.mark.parametrize(("accept", "wanted"), [
    ("text/event-stream", True),
    ("Text/Event-Stream; charset=utf-8", True),
    ("application/json, text/event-stream;q=0.5", True),
    ("text/event-stream;q=0", False),
    ("text/event-stream;q=0.0", False),
    ("text/event-stream;q=oops", True),
    ("*/*", False),
    ("text/*", False),
    ("application/json", False),
    ("", False),
    (None, False),
])
def test_only_an_accept_that_names_event_streams_wants_one(
        accept: str | None, wanted: bool) -> None:
    assert sse.wants_event_stream(accept) is wanted


def test_a_long_poll_message_is_the_id_then_the_bare_value() -> None:
    message = encode_poll(EMITTED)
    assert bare(message) is message
    event_id, body = split_poll(message)
    assert event_id == "e.8"
    assert orjson.loads(body) == EMITTED.data
    assert split_poll(encode_poll(CHANGED)) == ("e.7", b"20.5")
    assert split_poll(encode_poll(MISSED)) == ("e.5", b"null")


def test_log_entries_keep_their_numbers_in_a_status() -> None:
    entry = LogEntry(timestamp=NOW, level="INFO", message="m", number=41)
    invocation = Invocation(thing="counter", action="count", input={})
    notification = c.ActionStatusChanged(invocation=invocation, timestamp=NOW,
                                         new_log=(entry,), id="e.1")
    assert orjson.loads(parse(sse.encode_value(notification))["data"])["logFrom"] == 40
