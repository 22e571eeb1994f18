"""The Web Thing Protocol dialect, sans-IO: every operation, every error, every reply."""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_things.client import wtp as wtp_client
from trio_things.client.actions import ActionStatus, LogLine, State
from trio_things.client.actions import Invocation as Handle
from trio_things.client.options import ClientOptions
from trio_things.demo import Counter, Thermometer
from trio_things.model.invocation import Invocation, InvocationError, InvocationStatus
from trio_things.protocol import commands as c
from trio_things.protocol.dialects import MessageError, Request
from trio_things.protocol.invocation_json import invocation_json
from trio_things.protocol.problems import ProblemDetails
from trio_things.protocol.wtp import OPERATIONS, Envelope, WebThingProtocol

THINGS = {"counter": Counter.affordances, "thermometer": Thermometer.affordances}
THING_IDS = {"counter": "urn:uuid:c", "thermometer": "urn:uuid:t"}
CORRELATION = "5a4f4e2e-0c39-4c55-b4a5-7f1a0a3a0b01"


def protocol(default_thing: str | None = None) -> WebThingProtocol:
    return WebThingProtocol(things=THINGS, thing_ids=THING_IDS, default_thing=default_thing)


def decode(members: dict[str, Any], default_thing: str | None = None) -> Request:
    message = {"messageType": "request", "thingID": "urn:uuid:c",
               "correlationID": CORRELATION} | members
    requests = protocol(default_thing).decode(orjson.dumps(message).decode())
    assert len(requests) == 1
    return requests[0]


def decode_error(message: str | bytes, default_thing: str | None = None) -> MessageError:
    with pytest.raises(MessageError) as info:
        protocol(default_thing).decode(message)
    return info.value


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def is_uuid(value: Any) -> bool:
    return isinstance(value, str) and str(uuid.UUID(value)) == value


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(("members", "expected"), [
    ({"operation": "readproperty", "name": "count"},
     c.ReadProperty(thing="counter", name="count")),
    ({"operation": "writeproperty", "name": "count", "value": 3},
     c.WriteProperty(thing="counter", name="count", value=3)),
    ({"operation": "writeproperty", "name": "count", "value": None},
     c.WriteProperty(thing="counter", name="count", value=None)),
    ({"operation": "readallproperties"}, c.ReadAllProperties(thing="counter")),
    ({"operation": "readmultipleproperties", "names": ["count", "x"]},
     c.ReadMultipleProperties(thing="counter", names=("count", "x"))),
    ({"operation": "readmultipleproperties", "names": "count,x"},
     c.ReadMultipleProperties(thing="counter", names=("count", "x"))),
    ({"operation": "writemultipleproperties", "values": {"count": 2}},
     c.WriteMultipleProperties(thing="counter", values={"count": 2})),
    ({"operation": "writeallproperties", "values": {"count": 2}},
     c.WriteMultipleProperties(thing="counter", values={"count": 2})),
    ({"operation": "observeproperty", "name": "count"},
     c.ObserveProperty(thing="counter", name="count")),
    ({"operation": "unobserveproperty", "name": "count"},
     c.UnobserveProperty(thing="counter", name="count")),
    ({"operation": "observeallproperties"}, c.ObserveAllProperties(thing="counter")),
    ({"operation": "unobserveallproperties"}, c.UnobserveAllProperties(thing="counter")),
    ({"operation": "invokeaction", "name": "increment", "input": {"by": 2}},
     c.InvokeAction(thing="counter", name="increment", input={"by": 2})),
    ({"operation": "invokeaction", "name": "increment"},
     c.InvokeAction(thing="counter", name="increment", input=None)),
    ({"operation": "queryaction", "actionID": "abc"}, c.QueryAction(invocation_id="abc")),
    ({"operation": "cancelaction", "actionID": "abc"},
     c.CancelAction(invocation_id="abc", wait=False)),
    ({"operation": "queryallactions"}, c.QueryAllActions(thing="counter")),
    ({"operation": "subscribeevent", "name": "e"}, c.SubscribeEvent(thing="counter", name="e")),
    ({"operation": "unsubscribeevent", "name": "e"},
     c.UnsubscribeEvent(thing="counter", name="e")),
    ({"operation": "subscribeallevents"}, c.SubscribeAllEvents(thing="counter")),
    ({"operation": "unsubscribeallevents"}, c.UnsubscribeAllEvents(thing="counter")),
])
def test_decode_operations(members: dict[str, Any], expected: c.Command) -> None:
    request = decode(members)
    assert request.command == expected
    assert request.context == Envelope(thing_id="urn:uuid:c", operation=members["operation"],
                                       name=members.get("name"), correlation_id=CORRELATION)


def test_every_operation_is_decoded() -> None:
    decoded = set()
    for operation in OPERATIONS:
        members = {"operation": operation, "name": "count", "value": 1, "input": None,
                   "names": ["count"], "values": {"count": 1}, "actionID": "abc"}
        decoded.add(type(decode(members).command))
    assert len(decoded) == len(OPERATIONS) - 1  # write-all is write-multiple


def test_thermometer_write_all_needs_every_writable_property() -> None:
    values = {"setpoint": 30, "threshold": 90}
    request = decode({"thingID": "urn:uuid:t", "operation": "writeallproperties",
                      "values": values})
    assert request.command == c.WriteMultipleProperties(thing="thermometer", values=values)
    members = {"thingID": "urn:uuid:t", "operation": "writeallproperties",
               "values": {"setpoint": 30}}
    error = decode_error(orjson.dumps(members).decode())
    assert error.status == 400
    assert "threshold" in error.detail


def test_write_all_does_not_need_read_only_properties() -> None:
    request = decode({"thingID": "urn:uuid:t", "operation": "writeallproperties",
                      "values": {"setpoint": 30, "threshold": 90, "temperature": 1}})
    assert isinstance(request.command, c.WriteMultipleProperties)


def test_missing_message_type_is_a_request() -> None:
    message = {"thingID": "urn:uuid:c", "operation": "readproperty", "name": "count"}
    [request] = protocol().decode(orjson.dumps(message).decode())
    assert request.command == c.ReadProperty(thing="counter", name="count")


@pytest.mark.parametrize("thing_id", [
    "urn:uuid:t", "thermometer", "http://h/thermometer/", "http://h/thermometer",
])
def test_thing_id_spellings(thing_id: str) -> None:
    request = decode({"thingID": thing_id, "operation": "readallproperties"})
    assert request.command == c.ReadAllProperties(thing="thermometer")
    # Replies name the Thing by its TD id, however the request named it.
    assert request.context.thing_id == "urn:uuid:t"


def test_url_ending_in_thing_name() -> None:
    request = decode({"thingID": "http://h/counter/", "operation": "readallproperties"})
    assert request.command == c.ReadAllProperties(thing="counter")


def test_default_thing_is_used_without_thing_id() -> None:
    message = {"operation": "readproperty", "name": "count", "messageID": "m1"}
    [request] = protocol("counter").decode(orjson.dumps(message).decode())
    assert request.command == c.ReadProperty(thing="counter", name="count")
    assert request.context.thing_id == "urn:uuid:c"


@pytest.mark.parametrize("thing_id", ["urn:uuid:c", "counter", "http://h/counter/"])
def test_default_thing_accepts_its_own_id(thing_id: str) -> None:
    request = decode({"thingID": thing_id, "operation": "readallproperties"},
                     default_thing="counter")
    assert request.command == c.ReadAllProperties(thing="counter")


@pytest.mark.parametrize("thing_id", ["urn:uuid:t", "thermometer", "http://h/thermometer/"])
def test_default_thing_does_not_fence_the_endpoint(thing_id: str) -> None:
    # Any Thing of the server may be addressed on any endpoint (the class docstring).
    request = decode({"thingID": thing_id, "operation": "readallproperties"},
                     default_thing="counter")
    assert request.command == c.ReadAllProperties(thing="thermometer")
    assert request.context.thing_id == "urn:uuid:t"


@pytest.mark.parametrize("default_thing", [None, "counter"])
def test_unknown_thing_is_not_found(default_thing: str | None) -> None:
    message = {"thingID": "urn:uuid:nope", "operation": "readallproperties",
               "correlationID": CORRELATION}
    error = decode_error(orjson.dumps(message).decode(), default_thing=default_thing)
    assert error.status == 404
    assert error.context == Envelope(thing_id="urn:uuid:nope", operation="readallproperties",
                                     correlation_id=CORRELATION)


def test_message_id_is_the_correlation_id_when_there_is_none() -> None:
    message = {"thingID": "urn:uuid:c", "messageID": "m1", "operation": "readallproperties"}
    [request] = protocol().decode(orjson.dumps(message).decode())
    assert request.context.correlation_id == "m1"
    both = message | {"correlationID": "c1"}
    [request] = protocol().decode(orjson.dumps(both).decode())
    assert request.context.correlation_id == "c1"


def test_tail_names_the_request() -> None:
    request = decode({"operation": "observeproperty", "name": "count"})
    assert request.tail.startswith(b",")
    assert request.tail.endswith(b"}")
    assert orjson.loads(b"{" + request.tail[1:]) == {
        "operation": "observeproperty", "thingID": "urn:uuid:c", "correlationID": CORRELATION}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("message", [
    b'{"thingID": "urn:uuid:c", "operation": "readallproperties"}',
    "{not json",
    "",
    '[{"thingID": "urn:uuid:c", "operation": "readallproperties"}]',
    '"readallproperties"',
    "null",
])
def test_undecodable_messages(message: str | bytes) -> None:
    error = decode_error(message)
    assert error.status == 400
    assert error.context is None


@pytest.mark.parametrize(("members", "status"), [
    ({"messageType": "response", "operation": "readallproperties"}, 400),
    ({"messageType": "notification", "operation": "readallproperties"}, 400),
    ({}, 400),  # no operation
    ({"operation": "nope"}, 400),
    ({"operation": "readproperty"}, 400),  # no name
    ({"operation": "invokeaction"}, 400),
    ({"operation": "subscribeevent"}, 400),
    ({"operation": "queryaction"}, 400),  # no actionID
    ({"operation": "cancelaction", "actionID": ""}, 400),
    ({"operation": "cancelaction", "actionID": 7}, 400),
    ({"operation": "writeproperty", "name": "count"}, 400),  # no value
    ({"operation": "readmultipleproperties"}, 400),
    ({"operation": "readmultipleproperties", "names": []}, 400),
    ({"operation": "readmultipleproperties", "names": ","}, 400),
    ({"operation": "readmultipleproperties", "names": ["count", 1]}, 400),
    ({"operation": "writemultipleproperties"}, 400),
    ({"operation": "writemultipleproperties", "values": {}}, 400),
    ({"operation": "writemultipleproperties", "values": [1]}, 400),
    ({"operation": "writeallproperties", "values": {"nope": 1}}, 400),
    ({"operation": "readallproperties", "thingID": "urn:uuid:nope"}, 404),
    ({"operation": "readallproperties", "thingID": "http://h/nope/"}, 404),
    ({"operation": "readallproperties", "thingID": None}, 400),  # no default Thing
])
def test_bad_requests_echo_their_envelope(members: dict[str, Any], status: int) -> None:
    message = {"thingID": "urn:uuid:c", "correlationID": CORRELATION} | members
    error = decode_error(orjson.dumps(message).decode())
    assert error.status == status
    assert isinstance(error.context, Envelope)
    assert error.context.correlation_id == CORRELATION
    assert error.context.operation == members.get("operation")


def test_bad_request_echoes_message_id_without_correlation_id() -> None:
    message = {"thingID": "urn:uuid:c", "messageID": "m1", "operation": "readproperty"}
    error = decode_error(orjson.dumps(message).decode())
    assert error.status == 400
    assert error.context == Envelope(thing_id="urn:uuid:c", operation="readproperty",
                                     correlation_id="m1")


@pytest.mark.parametrize("members", [
    {"operation": "readproperty", "name": 7},
    {"operation": "readproperty", "name": ["count"]},
    {"operation": 7},
])
def test_non_string_members_are_bad_requests(members: dict[str, Any]) -> None:
    message = {"thingID": "urn:uuid:c", "correlationID": CORRELATION} | members
    error = decode_error(orjson.dumps(message).decode())
    assert error.status == 400
    assert "must be a string" in error.detail


@pytest.mark.parametrize("members", [
    {"operation": "readproperty", "name": 7},
    {"operation": "readproperty", "name": "count", "thingID": 7},
])
def test_non_string_members_still_echo_the_correlation_id(members: dict[str, Any]) -> None:
    message = {"thingID": "urn:uuid:c", "correlationID": CORRELATION} | members
    error = decode_error(orjson.dumps(message).decode())
    assert isinstance(error.context, Envelope)
    assert error.context.correlation_id == CORRELATION
    assert error.context.operation == "readproperty"


# --------------------------------------------------------------------------- replies


def check_response(body: bytes | None, operation: str) -> dict[str, Any]:
    """The members every response has; returns the parsed message."""
    assert body is not None
    message: dict[str, Any] = orjson.loads(body)
    assert message["messageType"] == "response"
    assert message["thingID"] == "urn:uuid:c"
    assert message["operation"] == operation
    assert message["correlationID"] == CORRELATION
    assert is_uuid(message["messageID"])
    assert message["timestamp"].endswith("Z")
    datetime.datetime.fromisoformat(message["timestamp"])
    return message


def reply_to(members: dict[str, Any], reply: c.Reply) -> dict[str, Any]:
    request = decode(members)
    return check_response(protocol().encode_reply(request, reply), members["operation"])


def test_reply_readproperty() -> None:
    message = reply_to({"operation": "readproperty", "name": "count"}, c.ValueReply(value=5))
    assert message["name"] == "count"
    assert message["value"] == 5


def test_reply_writeproperty_echoes_the_value() -> None:
    message = reply_to({"operation": "writeproperty", "name": "count", "value": 6},
                       c.NoContentReply())
    assert (message["name"], message["value"]) == ("count", 6)


@pytest.mark.parametrize("members", [
    {"operation": "readallproperties"},
    {"operation": "readmultipleproperties", "names": ["count"]},
])
def test_reply_read_several(members: dict[str, Any]) -> None:
    message = reply_to(members, c.ValueReply(value={"count": 1}))
    assert message["values"] == {"count": 1}
    assert "value" not in message


@pytest.mark.parametrize("operation", ["writemultipleproperties", "writeallproperties"])
def test_reply_write_several(operation: str) -> None:
    message = reply_to({"operation": operation, "values": {"count": 2}}, c.NoContentReply())
    assert message["values"] == {"count": 2}


def test_reply_invokeaction() -> None:
    invocation = Invocation(thing="counter", action="increment", input={"by": 2})
    message = reply_to({"operation": "invokeaction", "name": "increment", "input": {"by": 2}},
                       c.InvocationReply(invocation=invocation, created=True))
    assert message["name"] == "increment"
    status = message["status"]
    assert status["actionID"] == invocation.id
    assert status["state"] == "pending"
    assert status["timeRequested"].endswith("Z")
    assert "output" not in status
    assert "timeEnded" not in status


def test_reply_queryaction_completed() -> None:
    invocation = Invocation(thing="counter", action="increment", input={})
    invocation.start()
    invocation.finish(InvocationStatus.COMPLETED, output=3)
    message = reply_to({"operation": "queryaction", "actionID": invocation.id},
                       c.InvocationReply(invocation=invocation))
    assert message["name"] == "increment"
    status = message["status"]
    assert (status["actionID"], status["state"], status["output"]) == (
        invocation.id, "completed", 3)
    assert status["timeEnded"].endswith("Z")


def test_reply_queryaction_failed_carries_problem_details() -> None:
    invocation = Invocation(thing="counter", action="increment", input={})
    invocation.start()
    invocation.finish(InvocationStatus.FAILED,
                      error=InvocationError(title="ValueError", detail="boom", status=422))
    message = reply_to({"operation": "queryaction", "actionID": invocation.id},
                       c.InvocationReply(invocation=invocation))
    status = message["status"]
    assert status["state"] == "failed"
    assert status["error"]["status"] == 422
    assert status["error"]["detail"] == "boom"
    assert status["error"]["title"] == "ValueError"


def test_reply_cancelaction() -> None:
    message = reply_to({"operation": "cancelaction", "actionID": "abc"}, c.NoContentReply())
    assert message["actionID"] == "abc"


def test_reply_queryallactions_newest_first_with_every_action() -> None:
    older = Invocation(thing="counter", action="increment", input={})
    newer = Invocation(thing="counter", action="increment", input={"by": 2})
    newer.start()
    message = reply_to({"operation": "queryallactions"},
                       c.InvocationListReply(invocations=(older, newer)))
    statuses = message["statuses"]
    assert set(statuses) == {"increment", "count_slowly"}
    assert statuses["count_slowly"] == []
    assert [s["actionID"] for s in statuses["increment"]] == [newer.id, older.id]
    assert [s["state"] for s in statuses["increment"]] == ["running", "pending"]


@pytest.mark.parametrize(("members", "name"), [
    ({"operation": "observeproperty", "name": "count"}, "count"),
    ({"operation": "subscribeevent", "name": "e"}, "e"),
    ({"operation": "observeallproperties"}, None),
    ({"operation": "unsubscribeallevents"}, None),
])
def test_reply_subscriptions(members: dict[str, Any], name: str | None) -> None:
    message = reply_to(members, c.SubscribedReply())
    assert message.get("name") == name
    assert not {"value", "values", "status", "error"} & set(message)


def test_reply_without_correlation_id_echoes_the_message_id() -> None:
    raw = {"thingID": "counter", "messageID": "m1", "operation": "readallproperties"}
    [request] = protocol().decode(orjson.dumps(raw).decode())
    message = orjson.loads(protocol().encode_reply(request, c.ValueReply(value={})) or b"")
    assert message["correlationID"] == "m1"
    assert message["thingID"] == "urn:uuid:c"
    assert message["messageID"] != "m1"


def test_every_reply_has_a_fresh_message_id() -> None:
    request = decode({"operation": "readallproperties"})
    bodies = [protocol().encode_reply(request, c.ValueReply(value={})) for _ in range(3)]
    assert len({orjson.loads(b or b"")["messageID"] for b in bodies}) == 3


# --------------------------------------------------------------------------- errors out


def test_encode_error_for_a_message_error() -> None:
    message = {"thingID": "urn:uuid:c", "correlationID": CORRELATION,
               "operation": "readproperty", "name": "count", "messageType": "response"}
    error = decode_error(orjson.dumps(message).decode())
    body = orjson.loads(protocol().encode_error(error.context, ProblemDetails.from_error(error)))
    assert body["messageType"] == "response"
    assert body["correlationID"] == CORRELATION
    assert body["operation"] == "readproperty"
    assert body["name"] == "count"
    assert body["error"]["status"] == 400
    assert isinstance(body["error"]["status"], int)
    assert body["error"]["detail"] == error.detail


def test_encode_error_for_a_failed_request() -> None:
    request = decode({"operation": "readproperty", "name": "nope"})
    problem = ProblemDetails.from_status(404, "no property 'nope'")
    body = check_response(protocol().encode_error(request.context, problem), "readproperty")
    assert body["error"] == problem.to_json()
    assert body["name"] == "nope"


def test_encode_error_without_context() -> None:
    body = orjson.loads(protocol().encode_error(None, ProblemDetails.from_status(400, "bad")))
    assert body["messageType"] == "response"
    assert body["error"]["status"] == 400
    assert is_uuid(body["messageID"])
    assert not {"thingID", "operation", "correlationID"} & set(body)


# --------------------------------------------------------------------------- notifications


def notified(notification: c.Notification, members: dict[str, Any]) -> dict[str, Any]:
    request = decode(members)
    body = protocol().encode_notification(notification)
    message: dict[str, Any] = orjson.loads(body + request.tail)
    assert message["messageType"] == "notification"
    assert message["operation"] == members["operation"]
    assert message["thingID"] == "urn:uuid:c"
    assert message["correlationID"] == CORRELATION
    assert is_uuid(message["messageID"])
    assert message["timestamp"].endswith("Z")
    return message


def test_property_notification() -> None:
    message = notified(
        c.PropertyChanged(thing="counter", name="count", value=5, timestamp=now()),
        {"operation": "observeproperty", "name": "count"})
    assert (message["name"], message["value"]) == ("count", 5)


def test_event_notification() -> None:
    data = {"temperature": 101.5, "time": "2025-01-01T00:00:00Z"}
    message = notified(
        c.EventEmitted(thing="thermometer", name="overheated", data=data, timestamp=now()),
        {"operation": "subscribeevent", "name": "overheated"})
    assert (message["name"], message["data"]) == ("overheated", data)


def test_action_status_notification() -> None:
    invocation = Invocation(thing="counter", action="increment", input={})
    invocation.start()
    message = notified(c.ActionStatusChanged(invocation=invocation, timestamp=now()),
                       {"operation": "invokeaction", "name": "increment"})
    assert message["name"] == "increment"
    assert message["status"]["actionID"] == invocation.id
    assert message["status"]["state"] == "running"


def test_action_status_carries_the_log_as_invocation_json_does() -> None:
    """Our extension: ``log`` in the ActionStatus object, the same lines (and members)
    as the HTTP invocation object; the client reads them back into ActionStatus.log."""
    invocation = Invocation(thing="counter", action="count_slowly", input={"n": 2})
    invocation.start()
    invocation.add_log("INFO", "counted 1 of 2")
    invocation.add_log("WARNING", "slow")
    message = notified(c.ActionStatusChanged(invocation=invocation, timestamp=now(),
                                             new_log=invocation.log_lines()),
                       {"operation": "invokeaction", "name": "count_slowly"})
    assert message["status"]["logFrom"] == 0
    log = message["status"]["log"]
    assert [(line["level"], line["message"]) for line in log] == [
        ("INFO", "counted 1 of 2"), ("WARNING", "slow")]
    assert all(line["timestamp"].endswith("Z") for line in log)
    assert log == orjson.loads(orjson.dumps(invocation_json(invocation)["log"]))
    # The client's half of the dialect.
    status = ActionStatus.from_wtp(wtp_client.parse(orjson.dumps(message)).body["status"],
                                   action="count_slowly")
    assert status.log == tuple(
        LogLine(timestamp=line["timestamp"], level=line["level"], message=line["message"])
        for line in log)
    assert status.state is State.RUNNING
    # A queryaction reply carries it too.
    reply = reply_to({"operation": "queryaction", "actionID": invocation.id},
                     c.InvocationReply(invocation=invocation))
    assert reply["status"]["log"] == log


def test_action_status_has_no_log_until_a_line_is_logged() -> None:
    invocation = Invocation(thing="counter", action="increment", input={})
    message = notified(c.ActionStatusChanged(invocation=invocation, timestamp=now()),
                       {"operation": "invokeaction", "name": "increment"})
    assert "log" not in message["status"]
    assert ActionStatus.from_wtp(message["status"], action="increment").log == ()


def test_every_notification_carries_its_event_id() -> None:
    message = notified(
        c.EventEmitted(thing="counter", name="e", data=1, timestamp=now(), id="ep.41"),
        {"operation": "subscribeevent", "name": "e"})
    assert message["eventID"] == "ep.41"
    message = notified(
        c.PropertyChanged(thing="counter", name="count", value=5, timestamp=now(), id="ep.42"),
        {"operation": "observeproperty", "name": "count"})
    assert message["eventID"] == "ep.42"


def test_a_gap_is_a_notification_of_its_own_with_problem_details() -> None:
    message = notified(
        c.NotificationsMissed(thing="counter", last_event_id="old.3", resume_id="ep.9",
                              detail="the server restarted"),
        {"operation": "subscribeallevents"})
    assert message["eventID"] == "ep.9"
    assert message["gap"] == {
        "type": "tag:trio-things,2026:notifications-missed", "title": "Notifications missed",
        "status": 409, "detail": "the server restarted", "lastEventID": "old.3",
        "resumeID": "ep.9"}
    assert not {"name", "data", "value"} & set(message)


@pytest.mark.parametrize("operation", ["subscribeevent", "subscribeallevents"])
def test_a_subscription_may_come_back_with_the_last_event_id(operation: str) -> None:
    request = decode({"operation": operation, "name": "e", "lastEventID": "ep.7"})
    assert isinstance(request.command, c.SubscribeEvent | c.SubscribeAllEvents)
    assert request.command.after == "ep.7"
    error = decode_error(orjson.dumps({"operation": operation, "name": "e",
                                       "lastEventID": 7}).decode(), default_thing="counter")
    assert error.status == 400 and "lastEventID must be a string" in error.detail


def test_a_subscription_response_names_where_to_resume_from() -> None:
    message = reply_to({"operation": "subscribeevent", "name": "e"},
                       c.SubscribedReply(event_id="ep.12"))
    assert message["eventID"] == "ep.12"
    assert "eventID" not in reply_to({"operation": "observeproperty", "name": "count"},
                                     c.SubscribedReply())


def test_notifications_are_encoded_alike_for_every_connection() -> None:
    # Observer sets group by encoder: one function for every connection of the dialect.
    assert protocol().encode_notification is protocol("counter").encode_notification


# --------------------------------------------------------------------------- hypothesis

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
MESSAGES = st.fixed_dictionaries({}, optional={
    "messageType": st.sampled_from(["request", "response"]) | JSON,
    "thingID": st.sampled_from(["urn:uuid:c", "urn:uuid:t", "counter", "http://h/counter/",
                                "nope"]) | JSON,
    "operation": st.sampled_from(sorted(OPERATIONS)) | JSON,
    "name": st.sampled_from(["count", "increment", "overheated"]) | JSON,
    "correlationID": JSON,
    "messageID": JSON,
    "actionID": JSON,
    "value": JSON,
    "values": st.dictionaries(st.sampled_from(["count", "setpoint", "threshold"]), JSON)
    | JSON,
    "names": st.lists(st.sampled_from(["count", "setpoint"])) | JSON,
    "input": JSON,
})


def decodes_or_message_error(text: str, default_thing: str | None) -> None:
    try:
        requests = protocol(default_thing).decode(text)
    except MessageError as error:
        assert error.status in (400, 404)
    else:
        assert len(requests) == 1
        assert all(isinstance(r, Request) for r in requests)


@given(JSON, st.sampled_from([None, "counter"]))
def test_decode_arbitrary_json(value: Any, default_thing: str | None) -> None:
    decodes_or_message_error(json.dumps(value), default_thing)


@given(MESSAGES, st.sampled_from([None, "counter"]))
def test_decode_message_shaped_json(value: dict[str, Any], default_thing: str | None) -> None:
    decodes_or_message_error(json.dumps(value), default_thing)


@given(st.text(), st.sampled_from([None, "counter"]))
def test_decode_arbitrary_text(text: str, default_thing: str | None) -> None:
    decodes_or_message_error(text, default_thing)


def test_message_ids_are_distinct_version_4_uuids() -> None:
    import uuid

    from trio_things.protocol.wtp import _message_id

    ids = [_message_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_a_notification_carries_only_the_new_lines_and_the_client_joins_them() -> None:
    """Notifications are sent as lines are logged: each carries the lines since the
    previous one and ``logFrom``, and the client's log grows by them, in order. The
    whole log in each would grow quadratically with a chatty action."""
    invocation = Invocation(thing="counter", action="count_slowly", input={"n": 3})
    invocation.start()
    handle = Handle(action="count_slowly", channel=None,  # type: ignore[arg-type]
                    options=ClientOptions(), spawn=lambda *args: None)
    for number in (1, 2, 3):
        invocation.add_log("INFO", f"counted {number} of 3")
        new = invocation.log_lines(after=invocation.log_notified)
        invocation.log_notified = new[-1].number
        message = notified(c.ActionStatusChanged(invocation=invocation, timestamp=now(),
                                                 new_log=new),
                           {"operation": "invokeaction", "name": "count_slowly"})
        assert message["status"]["logFrom"] == number - 1
        assert [line["message"] for line in message["status"]["log"]] == [
            f"counted {number} of 3"]
        handle.update(ActionStatus.from_wtp(
            wtp_client.parse(orjson.dumps(message)).body["status"], action="count_slowly"))
    assert handle.status is not None
    assert [line.message for line in handle.status.log] == [
        "counted 1 of 3", "counted 2 of 3", "counted 3 of 3"]
    # A reply (queryaction) still carries every line kept, without logFrom.
    reply = reply_to({"operation": "queryaction", "actionID": invocation.id},
                     c.InvocationReply(invocation=invocation))
    assert len(reply["status"]["log"]) == 3
    assert "logFrom" not in reply["status"]


def test_log_lines_keep_their_numbers_when_old_ones_are_dropped() -> None:
    from trio_things.model.invocation import MAX_LOG_ENTRIES

    invocation = Invocation(thing="counter", action="count_slowly", input={})
    for number in range(MAX_LOG_ENTRIES + 5):
        invocation.add_log("INFO", str(number))
    kept = invocation.log_lines()
    assert len(kept) == MAX_LOG_ENTRIES
    assert (kept[0].number, kept[-1].number) == (6, MAX_LOG_ENTRIES + 5)
    assert [entry.message for entry in invocation.log_lines(after=MAX_LOG_ENTRIES + 3)] == [
        str(MAX_LOG_ENTRIES + 3), str(MAX_LOG_ENTRIES + 4)]
