"""The LabThings dialect: what LabThings-FastAPI clients speak on ``/{thing}/ws``, sans-IO.

A connection without a subprotocol on a Thing's own endpoint speaks it, so existing
clients keep working (``docs/design.md``, "WebSocket dialects")::

    -> {"messageType": "addPropertyObservation", "data": {"count": true}}
    <- {"messageType": "propertyStatus", "data": {"count": 81}}
    -> {"messageType": "addActionObservation", "data": {"increment": true}}
    <- {"messageType": "actionStatus", "data": {"id": "...", "href": "...", "status": ...}}

LabThings answers an observation with the changes alone; we also send the current value
at once. What we add, in the same style: ``removePropertyObservation`` and
``removeActionObservation`` (or ``false`` in place of ``true``), the invocation id and
href in every ``actionStatus``, events (``addEventObservation`` ->
``{"messageType": "event", "data": {"overheated": {...}}}``), and an error message for a
bad one (``{"messageType": "error", "error": <RFC 9457 problem details>}``) where
LabThings-FastAPI would drop the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, assert_never

import orjson

from trio_things.errors import BadRequest, NotFound
from trio_things.model.affordances import Affordances
from trio_things.protocol import commands as c
from trio_things.protocol.dialects import MessageError, Request
from trio_things.protocol.invocation_json import invocation_json
from trio_things.protocol.problems import ProblemDetails

__all__ = ["LabThingsDialect", "encode_notification"]

_Observation = Callable[..., c.Command]

#: messageType -> (affordance kind, command when true, command when false or removed).
_OBSERVATIONS: Final[dict[str, tuple[str, _Observation, _Observation]]] = {
    "addPropertyObservation": ("property", c.ObserveProperty, c.UnobserveProperty),
    "removePropertyObservation": ("property", c.UnobserveProperty, c.UnobserveProperty),
    "addActionObservation": ("action", c.ObserveAction, c.UnobserveAction),
    "removeActionObservation": ("action", c.UnobserveAction, c.UnobserveAction),
    "addEventObservation": ("event", c.SubscribeEvent, c.UnsubscribeEvent),
    "removeEventObservation": ("event", c.UnsubscribeEvent, c.UnsubscribeEvent),
}


def encode_notification(notification: c.Notification) -> bytes:
    """The whole message, the same for every LabThings observer."""
    match notification:
        case c.PropertyChanged(name=name, value=value):
            message: dict[str, Any] = {"messageType": "propertyStatus", "data": {name: value}}
        case c.EventEmitted(name=name, data=data):
            message = {"messageType": "event", "data": {name: data}}
        case c.ActionStatusChanged(invocation=invocation):
            message = {"messageType": "actionStatus", "data": invocation_json(invocation)}
        case c.NotificationsMissed():
            # The dialect has no way to come back with an id, so it is never told of a
            # gap; were it told, it would be in a message of a type of its own.
            message = {"messageType": "notificationsMissed", "data": {
                "detail": notification.detail, "resumeID": notification.resume_id}}
        case c.FramePublished():
            c.frame_for_no_dialect(notification)
        case _:
            assert_never(notification)
    return orjson.dumps(message)


class LabThingsDialect:
    """One connection's LabThings codec, for the Thing ``thing``."""

    encode_notification = staticmethod(encode_notification)

    def __init__(self, *, thing: str, affordances: Affordances) -> None:
        self._thing = thing
        self._affordances = affordances

    def decode(self, message: str | bytes) -> Sequence[Request]:
        """One request per name in ``data``; :class:`MessageError` for a bad message."""
        if isinstance(message, bytes):
            raise MessageError(BadRequest("binary messages are not understood; send JSON text"))
        try:
            data = orjson.loads(message)
        except orjson.JSONDecodeError as error:
            raise MessageError(BadRequest(f"the message is not valid JSON: {error}")) from None
        if not isinstance(data, dict):
            raise MessageError(BadRequest("a message must be a JSON object"))
        message_type = data.get("messageType")
        if not isinstance(message_type, str) or message_type not in _OBSERVATIONS:
            raise MessageError(BadRequest(
                f"unknown messageType {message_type!r}; expected one of {sorted(_OBSERVATIONS)}"))
        kind, on, off = _OBSERVATIONS[message_type]
        names = data.get("data")
        if not isinstance(names, dict) or not names:
            raise MessageError(BadRequest(
                f'{message_type} needs data: an object like {{"name": true}}'))
        known: Mapping[str, Any] = {
            "property": self._affordances.properties, "action": self._affordances.actions,
            "event": self._affordances.events}[kind]
        requests = []
        for name, wanted in names.items():
            if name not in known:
                raise MessageError(NotFound(
                    f"Thing {self._thing!r} has no {kind} {name!r}"))
            command = (on if wanted else off)(thing=self._thing, name=name)
            requests.append(Request(command=command))
        return requests

    def encode_reply(self, request: Request, reply: c.Reply) -> bytes | None:
        """Nothing: observations are answered by the notifications themselves."""
        return None

    def encode_error(self, context: Any, problem: ProblemDetails) -> bytes:
        """``{"messageType": "error", "error": <problem details>}``."""
        return orjson.dumps({"messageType": "error", "error": problem.to_json()})
