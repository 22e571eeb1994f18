"""The client's half of the W3C Web Thing Protocol (``webthingprotocol``), sans-IO.

The server's codec (:mod:`trio_things.protocol.wtp`) decodes requests and encodes
responses; the client does the opposite, so it has its own two functions: :func:`request`
builds a request's text, :func:`parse` reads what the server sent.

From the Community Group draft: a request carries ``thingID`` ("the value of that ``id``
member MUST be used" when the TD has one), ``messageID``, ``messageType`` ``request`` and
``operation``; "If a request message contains a ``correlationID`` member then any
response and notification messages which correspond to the same operation MUST also
include a ``correlationID`` member with the same value". We always send one, and route
everything the server sends by it.

Decoding is lenient where the draft is (``docs/design.md``, "WebSocket dialects"): an
event notification may carry its payload in ``value`` instead of ``data``; an error
response carries RFC 9457 problem details in ``error`` whose members may be missing.

Beyond the draft, as trio-things servers speak it (``trio_things.protocol.wtp``): a
notification carries ``eventID``, its id; a ``subscribeevent`` request may carry
``lastEventID`` to be sent what it missed; a notification with a ``gap`` member (problem
details with ``lastEventID`` and ``resumeID``) says the server no longer held all of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import orjson

from trio_things.client.errors import problem_from_json
from trio_things.client.values import JsonValue
from trio_things.protocol.problems import ProblemDetails

__all__ = ["Message", "new_id", "parse", "request"]


def new_id() -> str:
    """A fresh UUIDv4, as the draft asks of ``messageID``."""
    return str(uuid.uuid4())


def request(operation: str, *, thing_id: str | None, correlation_id: str,
            name: str | None = None, members: Mapping[str, JsonValue] | None = None) -> str:
    """A request's JSON text."""
    message: dict[str, Any] = {}
    if thing_id is not None:
        message["thingID"] = thing_id
    message |= {"messageID": new_id(), "messageType": "request", "operation": operation}
    if name is not None:
        message["name"] = name
    message |= dict(members or {})
    message["correlationID"] = correlation_id
    return orjson.dumps(message).decode()


@attrs.frozen(kw_only=True)
class Message:
    """A response or notification from the server; ``body`` is the whole object."""

    message_type: str
    operation: str | None
    name: str | None
    correlation_id: str | None
    body: Mapping[str, Any]
    error: ProblemDetails | None = None

    @property
    def value(self) -> JsonValue:
        """A property value (``value``), or an event's payload (``data``, or ``value``
        where a server follows the draft's other spelling)."""
        value: JsonValue = self.body["data"] if "data" in self.body else self.body.get("value")
        return value

    @property
    def timestamp(self) -> str | None:
        """The server's RFC 3339 timestamp, as sent."""
        return _string(self.body, "timestamp")

    @property
    def event_id(self) -> str | None:
        """The notification's ``eventID`` (``<epoch>.<sequence>`` on trio-things
        servers), if it has one: what to send as ``lastEventID`` to resume after it."""
        return _string(self.body, "eventID")

    @property
    def gap(self) -> Mapping[str, Any] | None:
        """A gap notification's ``gap`` member (problem details), else None."""
        gap = self.body.get("gap")
        return gap if isinstance(gap, dict) else None


def parse(text: str | bytes) -> Message:
    """A message the server sent; ``ValueError`` when it is not a JSON object."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    message_type = data.get("messageType")
    problem = data.get("error")
    return Message(
        message_type=message_type if isinstance(message_type, str) else "",
        operation=_string(data, "operation"),
        name=_string(data, "name"),
        correlation_id=_string(data, "correlationID"),
        body=data,
        error=problem_from_json(problem) if problem is not None else None,
    )


def _string(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None
