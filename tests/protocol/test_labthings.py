"""The LabThings dialect, sans-IO: observation messages in, status messages out."""

from __future__ import annotations

import datetime
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_things.demo import Counter, Thermometer
from trio_things.model.invocation import Invocation, InvocationError, InvocationStatus
from trio_things.protocol import commands as c
from trio_things.protocol.dialects import MessageError, Request
from trio_things.protocol.labthings import LabThingsDialect
from trio_things.protocol.problems import ProblemDetails

MESSAGE_TYPES = [
    "addPropertyObservation", "removePropertyObservation", "addActionObservation",
    "removeActionObservation", "addEventObservation", "removeEventObservation",
]


def counter() -> LabThingsDialect:
    return LabThingsDialect(thing="counter", affordances=Counter.affordances)


def thermometer() -> LabThingsDialect:
    return LabThingsDialect(thing="thermometer", affordances=Thermometer.affordances)


def commands(dialect: LabThingsDialect, message: dict[str, Any]) -> list[c.Command]:
    requests = dialect.decode(orjson.dumps(message).decode())
    assert all(r.context is None and r.tail == b"" for r in requests)
    return [r.command for r in requests]


def decode_error(dialect: LabThingsDialect, message: str | bytes) -> MessageError:
    with pytest.raises(MessageError) as info:
        dialect.decode(message)
    return info.value


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(("message_type", "wanted", "expected"), [
    ("addPropertyObservation", True, c.ObserveProperty),
    ("addPropertyObservation", False, c.UnobserveProperty),
    ("removePropertyObservation", True, c.UnobserveProperty),
    ("removePropertyObservation", False, c.UnobserveProperty),
])
def test_property_observation(message_type: str, wanted: bool, expected: type) -> None:
    message = {"messageType": message_type, "data": {"count": wanted}}
    assert commands(counter(), message) == [expected(thing="counter", name="count")]


@pytest.mark.parametrize(("message_type", "wanted", "expected"), [
    ("addActionObservation", True, c.ObserveAction),
    ("addActionObservation", False, c.UnobserveAction),
    ("removeActionObservation", True, c.UnobserveAction),
])
def test_action_observation(message_type: str, wanted: bool, expected: type) -> None:
    message = {"messageType": message_type, "data": {"increment": wanted}}
    assert commands(counter(), message) == [expected(thing="counter", name="increment")]


@pytest.mark.parametrize(("message_type", "wanted", "expected"), [
    ("addEventObservation", True, c.SubscribeEvent),
    ("addEventObservation", False, c.UnsubscribeEvent),
    ("removeEventObservation", True, c.UnsubscribeEvent),
])
def test_event_observation(message_type: str, wanted: bool, expected: type) -> None:
    message = {"messageType": message_type, "data": {"overheated": wanted}}
    assert commands(thermometer(), message) == [expected(thing="thermometer",
                                                         name="overheated")]


def test_one_request_per_name_in_order() -> None:
    message = {"messageType": "addPropertyObservation",
               "data": {"setpoint": True, "temperature": 1, "threshold": 0}}
    assert commands(thermometer(), message) == [
        c.ObserveProperty(thing="thermometer", name="setpoint"),
        c.ObserveProperty(thing="thermometer", name="temperature"),
        c.UnobserveProperty(thing="thermometer", name="threshold"),
    ]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("message", [
    b'{"messageType": "addPropertyObservation", "data": {"count": true}}',
    "{not json",
    "",
    '[{"messageType": "addPropertyObservation", "data": {"count": true}}]',
    "null",
    '{"data": {"count": true}}',
    '{"messageType": "nope", "data": {"count": true}}',
    '{"messageType": 7, "data": {"count": true}}',
    '{"messageType": "addPropertyObservation"}',
    '{"messageType": "addPropertyObservation", "data": {}}',
    '{"messageType": "addPropertyObservation", "data": ["count"]}',
    '{"messageType": "addPropertyObservation", "data": "count"}',
])
def test_bad_messages(message: str | bytes) -> None:
    assert decode_error(counter(), message).status == 400


@pytest.mark.parametrize(("message_type", "name"), [
    ("addPropertyObservation", "nope"),
    ("addPropertyObservation", "increment"),  # an action, not a property
    ("addActionObservation", "count"),
    ("removeEventObservation", "overheated"),  # the Counter has no events
])
def test_unknown_names_are_not_found(message_type: str, name: str) -> None:
    message = {"messageType": message_type, "data": {name: True}}
    error = decode_error(counter(), orjson.dumps(message).decode())
    assert error.status == 404
    assert name in error.detail


def test_one_unknown_name_fails_the_whole_message() -> None:
    message = {"messageType": "addPropertyObservation", "data": {"count": True, "nope": True}}
    assert decode_error(counter(), orjson.dumps(message).decode()).status == 404


@pytest.mark.parametrize("message_type", [[], {}, ["addPropertyObservation"]])
def test_unhashable_message_type_is_a_bad_request(message_type: Any) -> None:
    message = {"messageType": message_type, "data": {"count": True}}
    assert decode_error(counter(), orjson.dumps(message).decode()).status == 400


# --------------------------------------------------------------------------- encoding


def test_encode_reply_is_none() -> None:
    dialect = counter()
    [request] = dialect.decode(
        '{"messageType": "addPropertyObservation", "data": {"count": true}}')
    assert dialect.encode_reply(request, c.SubscribedReply()) is None
    assert dialect.encode_reply(request, c.NoContentReply()) is None


def test_encode_error() -> None:
    problem = ProblemDetails.from_status(404, "Thing 'counter' has no property 'nope'")
    message = orjson.loads(counter().encode_error(None, problem))
    assert message == {"messageType": "error", "error": problem.to_json()}
    assert message["error"]["status"] == 404
    assert isinstance(message["error"]["status"], int)
    assert message["error"]["detail"] == problem.detail


def test_encode_error_for_a_message_error() -> None:
    error = decode_error(counter(), "{not json")
    message = orjson.loads(counter().encode_error(error.context,
                                                  ProblemDetails.from_error(error)))
    assert message["messageType"] == "error"
    assert message["error"]["status"] == 400
    assert message["error"]["detail"] == error.detail


def test_property_notification() -> None:
    body = counter().encode_notification(
        c.PropertyChanged(thing="counter", name="count", value=5, timestamp=now()))
    assert orjson.loads(body) == {"messageType": "propertyStatus", "data": {"count": 5}}


def test_event_notification() -> None:
    data = {"temperature": 101.5, "time": "2025-01-01T00:00:00Z"}
    body = thermometer().encode_notification(
        c.EventEmitted(thing="thermometer", name="overheated", data=data, timestamp=now()))
    assert orjson.loads(body) == {"messageType": "event", "data": {"overheated": data}}


@pytest.mark.parametrize("status", [InvocationStatus.PENDING, InvocationStatus.RUNNING,
                                    InvocationStatus.COMPLETED, InvocationStatus.FAILED])
def test_action_status_notification(status: InvocationStatus) -> None:
    invocation = Invocation(thing="counter", action="increment", input={"by": 2})
    if status is not InvocationStatus.PENDING:
        invocation.start()
    if status is InvocationStatus.COMPLETED:
        invocation.finish(status, output=2)
    elif status is InvocationStatus.FAILED:
        invocation.finish(status, error=InvocationError(title="ValueError", detail="boom"))
    body = counter().encode_notification(
        c.ActionStatusChanged(invocation=invocation, timestamp=now()))
    message = orjson.loads(body)
    assert message["messageType"] == "actionStatus"
    data = message["data"]
    assert data["id"] == invocation.id
    assert data["href"] == f"/action_invocations/{invocation.id}"
    assert data["status"] == status.value
    assert data["action"].endswith("/increment")
    assert {"rel": "self", "href": data["href"]} in data["links"]
    if status is InvocationStatus.COMPLETED:
        assert data["output"] == 2
    if status is InvocationStatus.FAILED:
        assert data["error"]["status"] == 500
        assert data["error"]["detail"] == "boom"


def test_notifications_are_encoded_alike_for_every_connection() -> None:
    assert counter().encode_notification is thermometer().encode_notification


# --------------------------------------------------------------------------- hypothesis

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
NAMES = st.sampled_from(["count", "increment", "count_slowly", "overheated"]) | st.text()
MESSAGES = st.fixed_dictionaries({}, optional={
    "messageType": st.sampled_from(MESSAGE_TYPES) | JSON,
    "data": st.dictionaries(NAMES, JSON, max_size=3) | JSON,
})


def decodes_or_message_error(text: str) -> None:
    try:
        requests = counter().decode(text)
    except MessageError as error:
        assert error.status in (400, 404)
    else:
        assert requests
        assert all(isinstance(r, Request) for r in requests)


@given(JSON)
def test_decode_arbitrary_json(value: Any) -> None:
    decodes_or_message_error(json.dumps(value))


@given(MESSAGES)
def test_decode_message_shaped_json(value: dict[str, Any]) -> None:
    decodes_or_message_error(json.dumps(value))


@given(st.text())
def test_decode_arbitrary_text(text: str) -> None:
    decodes_or_message_error(text)
