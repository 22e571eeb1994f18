"""The messages every server under test exchanges with the load generator.

All three servers speak the same small slice of the Web Thing Protocol, so the load
generator and the payload are the same for each:

* the client sends one request (``observeproperty`` of ``tick``, or ``subscribeevent``
  of ``ticked``) and counts the first frame it gets back as the acknowledgement;
* the server then pushes text frames whose value is ``{"n": counter, "t": time.time()
  at publish}``: inside ``"value"`` for a property, inside ``"data"`` for an event.

trio-things builds its notifications itself. The reference servers format the same JSON
structure (:func:`reference_notification`), with ids and a timestamp of the same lengths,
so every server sends frames of about the same size and shape.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any, Final, Literal

import orjson

__all__ = [
    "EVENT",
    "PROPERTY",
    "Kind",
    "reference_ack",
    "reference_notification",
    "sent_at",
    "subscribe_request",
]

Kind = Literal["property", "event"]
PROPERTY: Final = "property"
EVENT: Final = "event"

#: The Thing, property and event names (benchmarks.things.BenchThing).
THING: Final = "bench"
PROPERTY_NAME: Final = "tick"
EVENT_NAME: Final = "ticked"
#: What the reference servers put in ``thingID``: a URN as long as trio-things' own.
REFERENCE_THING_ID: Final = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'bench')}"


def _operation(kind: Kind) -> tuple[str, str]:
    if kind == PROPERTY:
        return "observeproperty", PROPERTY_NAME
    return "subscribeevent", EVENT_NAME


def subscribe_request(kind: Kind) -> bytes:
    """One client's request, with ids of its own (as a real client's would be)."""
    operation, name = _operation(kind)
    return orjson.dumps({
        "messageID": str(uuid.uuid4()), "messageType": "request",
        "operation": operation, "name": name, "correlationID": str(uuid.uuid4()),
    })


def reference_ack(request: str | bytes) -> str:
    """A reference server's response to a subscribe request (the client's first frame)."""
    try:
        data = orjson.loads(request)
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return orjson.dumps({
        "thingID": REFERENCE_THING_ID, "messageID": str(uuid.uuid4()),
        "messageType": "response", "operation": data.get("operation"),
        "name": data.get("name"), "timestamp": _now(),
        "correlationID": data.get("correlationID"),
    }, option=orjson.OPT_UTC_Z).decode()


def reference_notification(kind: Kind, n: int, t: float) -> str:
    """The notification a reference server sends for update ``n`` published at ``t``:
    the shape and size of trio-things' own, encoded once for every client."""
    operation, name = _operation(kind)
    member = "value" if kind == PROPERTY else "data"
    return orjson.dumps({
        "messageID": str(uuid.uuid4()), "messageType": "notification", "name": name,
        member: {"n": n, "t": t}, "timestamp": _now(), "operation": operation,
        "thingID": REFERENCE_THING_ID, "correlationID": "00000000-0000-4000-8000-000000000000",
    }, option=orjson.OPT_UTC_Z).decode()


def sent_at(payload: bytes) -> float | None:
    """The publish time ``t`` a notification carries, or ``None`` for any other message
    (the acknowledgement) or one that is not JSON."""
    try:
        message: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    value = message.get("value", message.get("data"))
    if isinstance(value, dict):
        t = value.get("t")
        if isinstance(t, float):
            return t
    return None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
