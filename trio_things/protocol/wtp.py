"""The W3C Web Thing Protocol (``webthingprotocol``), sans-IO.

Follows the Community Group draft of the WebSocket sub-protocol (2025): every message is
a JSON object with common members, and each operation adds its own.

"The top level JSON object MUST contain a ``thingID`` member ... If the Thing Description
of the Web Thing contains an ``id`` member then the value of that ``id`` member MUST be
used", "a ``messageID`` member with the value set to a unique identifier for the current
message in UUIDv4 format", "a ``messageType`` member, with its value set to one of
``request``, ``response`` or ``notification``", "an ``operation`` member".

"If a request message contains a ``correlationID`` member then any response and
notification messages which correspond to the same operation MUST also include a
``correlationID`` member with the same value." When a request has none we echo its
``messageID`` instead, as existing clients expect (``docs/design.md``, "WebSocket
dialects").

Where we go past the draft, on purpose:

* after an ``observeproperty`` (or ``observeallproperties``) response, the current value
  follows as a notification, so an observer never has to race a read;
* the invoking connection is pushed the action's status as ``invokeaction``
  notifications (``status`` holds an ActionStatus object), so nobody has to poll
  ``queryaction``; ``state`` may also be ``cancelled``;
* an ActionStatus object carries ``log``, the lines the action logged (as the HTTP
  invocation object does, :mod:`trio_things.protocol.invocation_json`), once there is
  one: the draft has no member for an action's progress. In a reply, every line kept;
  in a notification, only the lines since the previous notification, and ``logFrom``,
  how many lines the action logged before the first of them (a notification is sent as
  lines are logged, so the whole log in each would grow quadratically);
* a notification is encoded once for all observers, so observers of the same change
  receive the same ``messageID`` (each still sees every id once);
* every notification carries ``eventID``, its id (:mod:`trio_things.fanout.history`);
  a ``subscribeevent`` or ``subscribeallevents`` request may carry ``lastEventID``, the
  last one its client saw before it lost the connection: the events it missed follow
  the response, oldest first, then the live ones. If the server no longer holds all of
  them (or restarted), a notification with a ``gap`` member (RFC 9457 problem details,
  and ``resumeID``, the id to come back with now) comes first: a gap is never silent.
  Their response carries ``eventID`` too, the newest id when the subscription was made,
  so a client that receives nothing before it loses its connection misses nothing.
  The draft says nothing of resuming; these members are ours;
* ``queryallactions`` answers the newest :data:`~trio_things.protocol.routes.INVOCATION_PAGE_SIZE`
  (100) invocations of the Thing, not every one kept (up to 1000 a Thing): the draft has
  no pages, and one answer must stay small; the HTTP listing pages through them all.

Where the draft is inconsistent we accept both spellings (a request whose
``messageType`` is missing is taken as a request; ``names`` may be a comma-separated
string).
"""

from __future__ import annotations

import datetime
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any, Final, assert_never

import attrs
import orjson

from trio_things.errors import BadRequest, NotFound, RemoteProtocolError
from trio_things.model.affordances import Affordances
from trio_things.model.invocation import Invocation, LogEntry
from trio_things.protocol import commands as c
from trio_things.protocol.dialects import MessageError, Request
from trio_things.protocol.problems import ProblemDetails, notifications_missed
from trio_things.protocol.routes import INVOCATION_PAGE_SIZE

__all__ = ["Envelope", "WebThingProtocol", "action_status", "encode_notification"]

_DUMPS_OPTIONS: Final = orjson.OPT_UTC_Z
#: Operations that name one affordance in ``name``.
_NAMED: Final = frozenset({
    "readproperty", "writeproperty", "observeproperty", "unobserveproperty",
    "invokeaction", "subscribeevent", "unsubscribeevent",
})
#: Operations that name an invocation in ``actionID``.
_BY_ACTION_ID: Final = frozenset({"queryaction", "cancelaction"})
_THING_WIDE: Final = frozenset({
    "readallproperties", "readmultipleproperties", "writeallproperties",
    "writemultipleproperties", "observeallproperties", "unobserveallproperties",
    "queryallactions", "subscribeallevents", "unsubscribeallevents",
})
#: Common members that must be strings when present.
_STRING_MEMBERS: Final = ("thingID", "messageID", "operation", "name", "correlationID")
#: Every operation we serve, for the error that lists them.
OPERATIONS: Final = _NAMED | _BY_ACTION_ID | _THING_WIDE


@attrs.frozen(kw_only=True)
class Envelope:
    """What a reply to a message echoes: known as soon as the message is parsed, even
    when the request itself turns out to be unusable."""

    thing_id: str | None = None
    operation: str | None = None
    name: str | None = None
    correlation_id: str | None = None


#: RFC 9562 section 5.4: the version field (bits 48-51) is 0b0100, the variant field
#: (bits 64-65) 0b10; the other 122 bits are random.
_UUID4_CLEAR: Final = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_SET: Final = (0x4 << 76) | (0x2 << 62)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_DUMPS_OPTIONS)


#: Message ids need to be unique, not secret (unlike invocation ids, which grant a
#: cancel): a Mersenne Twister seeded from the OS is ~4x cheaper than ``uuid.uuid4()``,
#: which reads the OS's randomness each time, and one is drawn per notification.
_random_bits = random.Random(os.urandom(32)).getrandbits


def _message_id() -> str:
    """A fresh RFC 9562 version 4 UUID, as the draft asks of ``messageID``."""
    bits = _random_bits(128) & _UUID4_CLEAR | _UUID4_SET
    hex_ = f"{bits:032x}"
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


def action_status(invocation: Invocation,
                  log: tuple[LogEntry, ...] | None = None) -> dict[str, Any]:
    """The draft's ActionStatus object: ``actionID``, ``state``, times, output, error;
    and our ``log`` (``timestamp``, ``level``, ``message`` per line): the lines in
    ``log``, with ``logFrom`` (how many came before them), or else every line kept."""
    status: dict[str, Any] = {
        "actionID": invocation.id,
        "state": invocation.status.value,
        "timeRequested": invocation.time_requested,
    }
    if invocation.time_completed is not None:
        status["timeEnded"] = invocation.time_completed
    if invocation.output is not None:
        status["output"] = invocation.output
    if invocation.error is not None:
        status["error"] = ProblemDetails.from_status(
            invocation.error.status, invocation.error.detail).to_json() | {
            "title": invocation.error.title}
    lines = invocation.log_lines() if log is None else log
    if lines:
        status["log"] = [{"timestamp": entry.timestamp, "level": entry.level,
                          "message": entry.message} for entry in lines]
        if log is not None:
            status["logFrom"] = lines[0].number - 1
    return status


def encode_notification(notification: c.Notification) -> bytes:
    """A notification without its tail (``operation``, ``thingID``, ``correlationID``):
    the same bytes for every observer. Ends without the closing brace."""
    body: dict[str, Any] = {"messageID": _message_id(), "messageType": "notification"}
    match notification:
        case c.PropertyChanged(name=name, value=value, timestamp=timestamp, id=event_id):
            body |= {"name": name, "value": value, "timestamp": timestamp,
                     "eventID": event_id}
        case c.EventEmitted(name=name, data=data, timestamp=timestamp, id=event_id):
            body |= {"name": name, "data": data, "timestamp": timestamp, "eventID": event_id}
        case c.ActionStatusChanged(invocation=invocation, timestamp=timestamp,
                                   new_log=new_log, id=event_id):
            body |= {"name": invocation.action, "status": action_status(invocation, new_log),
                     "timestamp": timestamp, "eventID": event_id}
        case c.NotificationsMissed(last_event_id=last, resume_id=resume, detail=detail):
            body |= {"gap": notifications_missed(detail, last_event_id=last, resume_id=resume),
                     "eventID": resume, "timestamp": _now()}
        case c.FramePublished():
            c.frame_for_no_dialect(notification)
        case _:
            assert_never(notification)
    return _dumps(body)[:-1]


class WebThingProtocol:
    """One connection's Web Thing Protocol codec.

    ``things``: the Things served, by name; ``thing_ids``: each one's TD ``id`` as this
    connection's client sees it (it depends on the ``Host`` it used); ``default_thing``:
    the Thing a message without ``thingID`` addresses (on ``/{thing}/ws``), else None.
    Any Thing of the server may be addressed on any endpoint: one socket can serve
    several Things, as the draft allows.
    """

    encode_notification = staticmethod(encode_notification)

    def __init__(self, *, things: Mapping[str, Affordances], thing_ids: Mapping[str, str],
                 default_thing: str | None = None) -> None:
        self._things = things
        self._thing_ids = thing_ids
        self._names_by_id = {thing_id: name for name, thing_id in thing_ids.items()}
        self._default_thing = default_thing

    # ------------------------------------------------------------------ decoding

    def decode(self, message: str | bytes) -> Sequence[Request]:
        """The one request in ``message``; :class:`MessageError` (with the envelope
        parsed so far) if it is not one we can serve."""
        if isinstance(message, bytes):
            raise MessageError(BadRequest(
                "binary messages are not part of the Web Thing Protocol; send JSON text"))
        try:
            data = orjson.loads(message)
        except orjson.JSONDecodeError as error:
            raise MessageError(BadRequest(f"the message is not valid JSON: {error}")) from None
        if not isinstance(data, dict):
            raise MessageError(BadRequest("a message must be a JSON object"))
        envelope = Envelope(
            thing_id=_string(data, "thingID"),
            operation=_string(data, "operation"),
            name=_string(data, "name"),
            correlation_id=_string(data, "correlationID") or _string(data, "messageID"),
        )
        try:
            for key in _STRING_MEMBERS:
                if data.get(key) is not None and not isinstance(data[key], str):
                    raise BadRequest(f"{key} must be a string, not {type(data[key]).__name__}")
            thing = self._thing(envelope.thing_id)
            envelope = attrs.evolve(envelope, thing_id=self._thing_ids[thing])
            return [self._request(data, envelope, thing)]
        except RemoteProtocolError as error:
            raise MessageError(error, envelope) from None

    def _request(self, data: dict[str, Any], envelope: Envelope, thing: str) -> Request:
        message_type = data.get("messageType", "request")
        if message_type != "request":
            raise BadRequest(f"messageType must be 'request', not {message_type!r}")
        operation = envelope.operation
        if operation is None:
            raise BadRequest("the message has no operation")
        name = envelope.name
        if operation in _NAMED and name is None:
            raise BadRequest(f"{operation} needs a name")
        command: c.Command
        match operation:
            case "readproperty":
                command = c.ReadProperty(thing=thing, name=_str(name))
            case "writeproperty":
                if "value" not in data:
                    raise BadRequest("writeproperty needs a value")
                command = c.WriteProperty(thing=thing, name=_str(name), value=data["value"])
            case "readallproperties":
                command = c.ReadAllProperties(thing=thing)
            case "readmultipleproperties":
                command = c.ReadMultipleProperties(thing=thing, names=_names(data))
            case "writemultipleproperties" | "writeallproperties":
                values = data.get("values")
                if not isinstance(values, dict) or not values:
                    raise BadRequest(f"{operation} needs values: a non-empty object")
                if operation == "writeallproperties":
                    writable = {n for n, s in self._things[thing].properties.items()
                                if not s.readonly}
                    if missing := sorted(writable - set(values)):
                        raise BadRequest(f"writeallproperties needs a value for every "
                                         f"writable property; missing {missing}")
                command = c.WriteMultipleProperties(thing=thing, values=values)
            case "observeproperty":
                command = c.ObserveProperty(thing=thing, name=_str(name))
            case "unobserveproperty":
                command = c.UnobserveProperty(thing=thing, name=_str(name))
            case "observeallproperties":
                command = c.ObserveAllProperties(thing=thing)
            case "unobserveallproperties":
                command = c.UnobserveAllProperties(thing=thing)
            case "invokeaction":
                command = c.InvokeAction(thing=thing, name=_str(name),
                                         input=data.get("input"))
            case "queryaction":
                command = c.QueryAction(invocation_id=_action_id(data))
            case "cancelaction":
                command = c.CancelAction(invocation_id=_action_id(data), wait=False)
            case "queryallactions":
                command = c.QueryAllActions(thing=thing)
            case "subscribeevent":
                command = c.SubscribeEvent(thing=thing, name=_str(name),
                                           after=_last_event_id(data))
            case "unsubscribeevent":
                command = c.UnsubscribeEvent(thing=thing, name=_str(name))
            case "subscribeallevents":
                command = c.SubscribeAllEvents(thing=thing, after=_last_event_id(data))
            case "unsubscribeallevents":
                command = c.UnsubscribeAllEvents(thing=thing)
            case _:
                raise BadRequest(f"unknown operation {operation!r}; expected one of "
                                 f"{sorted(OPERATIONS)}")
        return Request(command=command, context=envelope, tail=self._tail(envelope))

    def _thing(self, thing_id: str | None) -> str:
        if thing_id is None:
            if self._default_thing is None:
                raise BadRequest("the message has no thingID")
            return self._default_thing
        name = self._names_by_id.get(thing_id)
        if name is None:
            # Lenient: the Thing's name, or the URL of its TD, name it too.
            candidate = thing_id.rstrip("/").rsplit("/", 1)[-1]
            if candidate in self._things:
                name = candidate
        if name is None:
            raise NotFound(f"no Thing with thingID {thing_id!r} on this server")
        return name

    @staticmethod
    def _tail(envelope: Envelope) -> bytes:
        """What ends each notification of this request's observation: ``,"operation":
        ...,"thingID":...,"correlationID":...}``."""
        members = {"operation": envelope.operation, "thingID": envelope.thing_id}
        if envelope.correlation_id is not None:
            members["correlationID"] = envelope.correlation_id
        return b"," + _dumps(members)[1:]

    # ------------------------------------------------------------------ encoding

    def encode_reply(self, request: Request, reply: c.Reply) -> bytes | None:
        """The response to ``request``: the envelope's members plus the operation's own."""
        envelope: Envelope = request.context
        members: dict[str, Any] = {}
        match request.command, reply:
            case (c.ReadProperty(name=name), c.ValueReply(value=value)):
                members = {"name": name, "value": value}
            case (c.WriteProperty(name=name, value=value), _):
                members = {"name": name, "value": value}
            case (c.ReadAllProperties() | c.ReadMultipleProperties(), c.ValueReply(value=value)):
                members = {"values": value}
            case (c.WriteMultipleProperties(values=values), _):
                members = {"values": values}
            case (c.InvokeAction(name=name), c.InvocationReply(invocation=invocation)):
                members = {"name": name, "status": action_status(invocation)}
            case (c.QueryAction(), c.InvocationReply(invocation=invocation)):
                members = {"name": invocation.action, "status": action_status(invocation)}
            case (c.CancelAction(invocation_id=invocation_id), _):
                members = {"actionID": invocation_id}
            case (c.QueryAllActions(thing=thing), c.InvocationListReply(invocations=invs)):
                statuses: dict[str, list[dict[str, Any]]] = {
                    name: [] for name in self._things[thing or ""].actions}
                # Newest first, as the draft asks; only the newest page of them.
                for invocation in reversed(invs[-INVOCATION_PAGE_SIZE:]):
                    statuses.setdefault(invocation.action, []).append(
                        action_status(invocation))
                members = {"statuses": statuses}
            case _:
                if envelope.name is not None:
                    members = {"name": envelope.name}
                if isinstance(reply, c.SubscribedReply) and reply.event_id is not None:
                    members["eventID"] = reply.event_id  # where to resume from, if need be
        return self._message(envelope, members)

    def encode_error(self, context: Any, problem: ProblemDetails) -> bytes:
        """A response with an ``error`` member holding RFC 9457 problem details."""
        envelope = context if isinstance(context, Envelope) else Envelope()
        members: dict[str, Any] = {"name": envelope.name} if envelope.name else {}
        return self._message(envelope, members | {"error": problem.to_json()})

    @staticmethod
    def _message(envelope: Envelope, members: dict[str, Any]) -> bytes:
        message: dict[str, Any] = {}
        if envelope.thing_id is not None:
            message["thingID"] = envelope.thing_id
        message["messageID"] = _message_id()
        message["messageType"] = "response"
        if envelope.operation is not None:
            message["operation"] = envelope.operation
        message |= members
        message["timestamp"] = _now()
        if envelope.correlation_id is not None:
            message["correlationID"] = envelope.correlation_id
        return _dumps(message)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _string(data: dict[str, Any], key: str) -> str | None:
    """``data[key]`` if it is a string, else None (the type is checked separately, so
    that the error reply can still echo the members that are right)."""
    value = data.get(key)
    return value if isinstance(value, str) else None


def _str(value: str | None) -> str:
    assert value is not None
    return value


def _names(data: dict[str, Any]) -> tuple[str, ...]:
    names = data.get("names")
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    if (not isinstance(names, list) or not names
            or not all(isinstance(n, str) for n in names)):
        raise BadRequest("readmultipleproperties needs names: a non-empty array of strings")
    return tuple(names)


def _last_event_id(data: dict[str, Any]) -> str | None:
    last = data.get("lastEventID")
    if last is not None and not isinstance(last, str):
        raise BadRequest(f"lastEventID must be a string, not {type(last).__name__}")
    return last


def _action_id(data: dict[str, Any]) -> str:
    action_id = data.get("actionID")
    if not isinstance(action_id, str) or not action_id:
        raise BadRequest("this operation needs an actionID (a string)")
    return action_id
