"""What the WebSocket dialects share (``trio_things.protocol.dialects``): the choice of
subprotocol, the error a bad message raises, the request a message decodes into, and the
protocol every dialect implements. Each dialect's own decoding and encoding is tested in
test_wtp.py and test_labthings.py."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_things.demo import Counter
from trio_things.errors import (
    BadRequest,
    Conflict,
    InvalidValue,
    NotFound,
    RemoteProtocolError,
)
from trio_things.protocol import commands as c
from trio_things.protocol.dialects import (
    SUBPROTOCOL,
    Dialect,
    MessageError,
    Request,
    choose_subprotocol,
)
from trio_things.protocol.labthings import LabThingsDialect
from trio_things.protocol.problems import ProblemDetails
from trio_things.protocol.wtp import WebThingProtocol

# --------------------------------------------------------------------------- subprotocol


def test_the_subprotocol_is_the_web_thing_protocols_name() -> None:
    assert SUBPROTOCOL == "webthingprotocol"


@pytest.mark.parametrize(("offered", "chosen"), [
    pytest.param(["webthingprotocol"], "webthingprotocol", id="only-ours"),
    pytest.param(["chat", "webthingprotocol", "mqtt"], "webthingprotocol", id="among-several"),
    pytest.param(["webthingprotocol", "chat"], "webthingprotocol", id="first-of-several"),
    pytest.param(["chat", "webthingprotocol"], "webthingprotocol", id="last-of-several"),
    pytest.param(("mqtt", "webthingprotocol"), "webthingprotocol", id="a-tuple"),
    pytest.param(["webthingprotocol", "webthingprotocol"], "webthingprotocol", id="twice"),
    pytest.param([], None, id="none-offered"),
    pytest.param(["chat"], None, id="one-other"),
    pytest.param(["chat", "mqtt", "wamp"], None, id="several-others"),
    # A browser fails the handshake unless the echo is, byte for byte, one it offered:
    # a near miss is not ours.
    pytest.param(["WebThingProtocol"], None, id="other-case"),
    pytest.param(["webthingprotocol2"], None, id="longer"),
    pytest.param(["webthing"], None, id="prefix"),
    pytest.param(["webthingprotocol, chat"], None, id="unsplit-header"),
])
def test_choose_subprotocol(offered: list[str], chosen: str | None) -> None:
    assert choose_subprotocol(offered) == chosen


@given(st.lists(st.sampled_from(["webthingprotocol", "chat", "mqtt", "WebThingProtocol"])
                | st.lists(st.text(max_size=20))))
def test_choose_subprotocol_echoes_only_what_was_offered(offered: list[str]) -> None:
    chosen = choose_subprotocol(offered)
    if SUBPROTOCOL in offered:
        assert chosen == SUBPROTOCOL
    else:
        assert chosen is None


# --------------------------------------------------------------------------- MessageError


@pytest.mark.parametrize("error", [
    BadRequest("a message must be a JSON object"),
    NotFound("Thing 'nope' is not served here"),
    InvalidValue("expected an integer", path="count"),
    Conflict("not now"),
    RemoteProtocolError("teapot", status=418),
], ids=type)
def test_message_error_keeps_the_status_and_detail_of_its_error(
        error: RemoteProtocolError) -> None:
    wrapped = MessageError(error)
    assert isinstance(wrapped, RemoteProtocolError)
    assert wrapped.status == error.status
    assert wrapped.detail == error.detail
    assert str(wrapped) == error.detail
    assert repr(wrapped) == f"MessageError({error.detail!r}, status={error.status})"


def test_message_error_without_context() -> None:
    assert MessageError(BadRequest("bad")).context is None


def test_message_error_carries_its_context() -> None:
    context: dict[str, Any] = {"correlationID": "c-1", "operation": "readproperty"}
    error = MessageError(NotFound("no property 'nope'"), context)
    assert error.context is context
    assert MessageError(NotFound("no property 'nope'"), context=context).context is context


def test_message_error_is_raised_and_caught_as_a_peers_mistake() -> None:
    context = object()
    with pytest.raises(RemoteProtocolError) as info:
        raise MessageError(NotFound("gone"), context)
    assert isinstance(info.value, MessageError)
    assert info.value.context is context
    assert info.value.status == 404


def test_message_error_does_not_change_its_error() -> None:
    error = InvalidValue("too big", path="setpoint")
    MessageError(error, {"name": "setpoint"})
    assert (error.status, error.detail, error.path) == (422, "setpoint: too big", "setpoint")
    assert not hasattr(error, "context")


@pytest.mark.parametrize(("error", "title"), [
    (NotFound("no Thing named 'nope'"), "Not Found"),
    (InvalidValue("too big"), "Unprocessable Content"),
    (BadRequest("not JSON"), "Bad Request"),
])
def test_message_error_is_answered_with_its_errors_problem(
        error: RemoteProtocolError, title: str) -> None:
    # The dialects answer a MessageError with ProblemDetails.from_error: its title
    # follows the wrapped error's status, not MessageError's own class.
    problem = ProblemDetails.from_error(MessageError(error, "ctx"))
    assert problem == ProblemDetails.from_error(error)
    assert (problem.status, problem.title, problem.detail) == (error.status, title, error.detail)


def test_message_error_needs_an_error() -> None:
    with pytest.raises(TypeError):
        MessageError()  # type: ignore[call-arg]


# --------------------------------------------------------------------------- Request


def test_request_defaults() -> None:
    command = c.ReadProperty(thing="counter", name="count")
    request = Request(command=command)
    assert request.command is command
    assert request.context is None
    assert request.tail == b""


def test_request_is_a_frozen_value() -> None:
    command = c.ObserveProperty(thing="counter", name="count")
    request = Request(command=command, context={"correlationID": "x"}, tail=b',"x":1}')
    assert request == Request(command=c.ObserveProperty(thing="counter", name="count"),
                              context={"correlationID": "x"}, tail=b',"x":1}')
    assert request != attrs.evolve(request, tail=b"")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.tail = b""  # type: ignore[misc]


def test_request_fields_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Request(c.ListThings(base="http://h/"))  # type: ignore[misc]


# --------------------------------------------------------------------------- Dialect

#: Dialect's members, as the connection uses them.
DIALECT_MEMBERS = {"encode_notification", "decode", "encode_reply", "encode_error"}


def test_dialect_protocol_members() -> None:
    assert {name for name in vars(Dialect) if not name.startswith("_")} == DIALECT_MEMBERS


@pytest.mark.parametrize("dialect", [
    WebThingProtocol(things={"counter": Counter.affordances},
                     thing_ids={"counter": "urn:uuid:c"}, default_thing=None),
    LabThingsDialect(thing="counter", affordances=Counter.affordances),
], ids=type)
def test_every_dialect_implements_the_protocol(dialect: Dialect) -> None:
    for name in DIALECT_MEMBERS:
        assert callable(getattr(dialect, name)), name
    # decode answers a sequence of Requests, or raises MessageError: nothing else.
    with pytest.raises(MessageError):
        dialect.decode("{not json")
    with pytest.raises(MessageError):
        dialect.decode(b"\x00binary")
    body = dialect.encode_error(None, ProblemDetails.from_status(404, "nope"))
    assert isinstance(body, bytes)
    body.decode("utf-8")
