"""The client's Web Thing Protocol messages, and problem details from error answers:
plain functions, no trio."""

from __future__ import annotations

import orjson
import pytest

from trio_things.client import errors
from trio_things.client.actions import ActionStatus, State, looks_like_invocation
from trio_things.client.wtp import parse, request


def test_a_request_carries_the_draft_members_and_our_correlation_id() -> None:
    message = orjson.loads(request("writeproperty", thing_id="urn:x", correlation_id="c-1",
                                   name="level", members={"value": 3}))
    assert message.pop("messageID")
    assert message == {"thingID": "urn:x", "messageType": "request",
                       "operation": "writeproperty", "name": "level", "value": 3,
                       "correlationID": "c-1"}


def test_parse_reads_values_events_and_errors_leniently() -> None:
    notification = parse(b'{"messageType": "notification", "name": "tick", "data": 3,'
                         b' "correlationID": "c", "timestamp": "2026-01-01T00:00:00Z"}')
    assert (notification.value, notification.timestamp) == (3, "2026-01-01T00:00:00Z")
    # The draft's other spelling of an event payload.
    assert parse('{"messageType": "notification", "value": 4}').value == 4
    error = parse('{"messageType": "response", "error": {"status": 404, "detail": "no"}}')
    assert error.error is not None
    assert (error.error.status, error.error.title, error.error.detail) == (
        404, "Not Found", "no")
    with pytest.raises(ValueError, match="not JSON"):
        parse("{")
    with pytest.raises(ValueError, match="object"):
        parse("[1]")


@pytest.mark.parametrize(("body", "status", "expected"), [
    ({"status": 422, "title": "Unprocessable Content", "detail": "x: bad"}, 422,
     (422, "Unprocessable Content", "x: bad")),
    ({"detail": "gone"}, 404, (404, "Not Found", "gone")),
    ("plain text", 500, (500, "Internal Server Error", "plain text")),
    (None, 503, (503, "Service Unavailable", "Service Unavailable")),
    ({"status": 999}, None, (500, "Internal Server Error", "{'status': 999}")),
])
def test_problem_details_from_any_body(body: object, status: int | None,
                                       expected: tuple[int, str, str]) -> None:
    problem = errors.problem_from_json(body, status)
    assert (problem.status, problem.title, problem.detail) == expected


@pytest.mark.parametrize(("status", "operation", "kind"), [
    (404, "readproperty", errors.NotFound),
    (405, "writeproperty", errors.NotWritable),
    (405, "observeproperty", errors.ServerError),
    (400, "invokeaction", errors.InvalidValue),
    (422, "writeproperty", errors.InvalidValue),
    (409, "cancelaction", errors.ServerError),
    (500, "readproperty", errors.ServerError),
])
def test_error_classes_by_status(status: int, operation: str,
                                 kind: type[errors.ClientError]) -> None:
    problem = errors.problem_from_json({"detail": "why"}, status)
    error = errors.error_for_problem(problem, operation=operation, what="property 'x'")
    assert type(error) is kind
    assert error.problem is problem and error.status == status
    assert "why" in str(error)


def test_action_status_from_both_shapes() -> None:
    wtp = ActionStatus.from_wtp({"actionID": "a1", "state": "completed", "output": 5,
                                 "timeRequested": "t0", "timeEnded": "t1"}, action="climb")
    assert (wtp.id, wtp.state, wtp.output, wtp.time_ended) == ("a1", State.COMPLETED, 5, "t1")
    http = ActionStatus.from_invocation({
        "id": "a2", "status": "error", "error": {"title": "Boom", "status": 500,
                                                 "detail": "bang"},
        "log": [{"timestamp": "t", "level": "INFO", "message": "hi"}],
        "links": [{"rel": "self", "href": "/action_invocations/a2"}],
    }, action="climb", url="http://h:1/lab/climb")
    assert http.state is State.FAILED  # LabThings says "error"
    assert http.href == "http://h:1/action_invocations/a2"
    assert http.error is not None and http.error.title == "Boom"
    assert [line.message for line in http.log] == ["hi"]
    # Only a Location header: the id is its last segment.
    located = ActionStatus.from_invocation(None, action="climb", url="http://h/",
                                           location="/invocations/a3")
    assert (located.id, located.href, located.state) == (
        "a3", "http://h/invocations/a3", State.RUNNING)


def test_an_invocation_is_told_from_an_output() -> None:
    assert looks_like_invocation({"id": "x", "status": "running", "links": []})
    assert not looks_like_invocation({"id": "x", "status": "tall"})
    assert not looks_like_invocation(5)
    assert State.parse("nonsense") is State.RUNNING
