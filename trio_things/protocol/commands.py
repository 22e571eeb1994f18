"""What a client asks for and what it is told, whatever the wire.

* **Commands**: one frozen class per TD operation (plus the server's own reads). Every
  binding (HTTP routes, the WebSocket dialects) decodes its messages into these values,
  and :mod:`trio_things.runtime.dispatcher` runs them. Shape is checked when the command is
  decoded; values are checked against the affordance's schema when it runs.
* **Replies**: what running a command answers, protocol-neutral; each binding encodes
  them its own way.
* **Notifications**: what observers are pushed (a property changed, an event was
  emitted, an invocation's status changed), encoded once per dialect by the fan-out.
"""

from __future__ import annotations

import datetime
from typing import Any, NoReturn

import attrs

from trio_things.errors import LocalProtocolError
from trio_things.model.invocation import Invocation, LogEntry

__all__ = [
    "ActionStatusChanged",
    "CancelAction",
    "Command",
    "DescriptionPageReply",
    "Discover",
    "DocumentReply",
    "EventEmitted",
    "FramePublished",
    "InvocationListReply",
    "InvocationReply",
    "InvokeAction",
    "ListThingDescriptions",
    "ListThings",
    "NoContentReply",
    "Notification",
    "NotificationsMissed",
    "ObserveAction",
    "ObserveAllProperties",
    "ObserveProperty",
    "PropertyChanged",
    "QueryAction",
    "QueryAllActions",
    "ReadAllProperties",
    "ReadAllThingDescriptions",
    "ReadMultipleProperties",
    "ReadProperty",
    "ReadThingDescription",
    "Reply",
    "RetrieveThing",
    "SubscribeAllEvents",
    "SubscribeEvent",
    "SubscribedReply",
    "UnobserveAction",
    "UnobserveAllProperties",
    "UnobserveProperty",
    "UnsubscribeAllEvents",
    "UnsubscribeEvent",
    "ValueReply",
    "WatchStream",
    "WriteMultipleProperties",
    "WriteProperty",
    "frame_for_no_dialect",
]


@attrs.frozen(kw_only=True)
class ReadProperty:
    """TD ``readproperty``."""

    thing: str
    name: str


@attrs.frozen(kw_only=True)
class WriteProperty:
    """TD ``writeproperty``: ``value`` is JSON data, not yet validated."""

    thing: str
    name: str
    value: Any


@attrs.frozen(kw_only=True)
class ReadAllProperties:
    """TD ``readallproperties``."""

    thing: str


@attrs.frozen(kw_only=True)
class ReadMultipleProperties:
    """TD ``readmultipleproperties``."""

    thing: str
    names: tuple[str, ...]


@attrs.frozen(kw_only=True)
class WriteMultipleProperties:
    """TD ``writemultipleproperties``: all values are validated before any is written."""

    thing: str
    values: dict[str, Any]


@attrs.frozen(kw_only=True)
class InvokeAction:
    """TD ``invokeaction``. ``wait``: reply with the output once done (synchronous form),
    rather than with the new invocation at once."""

    thing: str
    name: str
    input: Any
    wait: bool = False


@attrs.frozen(kw_only=True)
class QueryAction:
    """TD ``queryaction``. ``output_only``: reply with the bare output. ``wait``: reply
    once the invocation has ended (the MQTT binding's final reply), not at once."""

    invocation_id: str
    output_only: bool = False
    wait: bool = False


@attrs.frozen(kw_only=True)
class CancelAction:
    """TD ``cancelaction``. ``wait``: reply once the action has stopped (HTTP); else at
    once, and observers hear the final status when it comes (WebSocket)."""

    invocation_id: str
    wait: bool = True


@attrs.frozen(kw_only=True)
class QueryAllActions:
    """TD ``queryallactions``: the invocations of one Thing (or all, or of one action)."""

    thing: str | None = None
    action: str | None = None


@attrs.frozen(kw_only=True)
class SubscribeEvent:
    """TD ``subscribeevent``: add the connection (a WebSocket, an SSE stream, a
    long-poll request) to the event's observers."""

    thing: str
    name: str
    after: str | None = None
    """The id of the last notification the consumer saw: it is first sent what it
    missed since (:mod:`trio_things.fanout.history`)."""


@attrs.frozen(kw_only=True)
class UnsubscribeEvent:
    """TD ``unsubscribeevent``."""

    thing: str
    name: str


@attrs.frozen(kw_only=True)
class SubscribeAllEvents:
    """TD ``subscribeallevents``."""

    thing: str
    after: str | None = None
    """As :attr:`SubscribeEvent.after`."""


@attrs.frozen(kw_only=True)
class UnsubscribeAllEvents:
    """TD ``unsubscribeallevents``."""

    thing: str


@attrs.frozen(kw_only=True)
class ObserveProperty:
    """TD ``observeproperty``: push every change of the property, starting with its
    current value."""

    thing: str
    name: str


@attrs.frozen(kw_only=True)
class UnobserveProperty:
    """TD ``unobserveproperty``."""

    thing: str
    name: str


@attrs.frozen(kw_only=True)
class ObserveAllProperties:
    """TD ``observeallproperties``: every observable property of the Thing."""

    thing: str


@attrs.frozen(kw_only=True)
class UnobserveAllProperties:
    """TD ``unobserveallproperties``."""

    thing: str


@attrs.frozen(kw_only=True)
class ObserveAction:
    """Push the status of every invocation of an action (the LabThings dialect's
    ``addActionObservation``; no TD operation says this)."""

    thing: str
    name: str
    after: str | None = None
    """As :attr:`SubscribeEvent.after`: the status changes missed since."""


@attrs.frozen(kw_only=True)
class UnobserveAction:
    """Stop :class:`ObserveAction`."""

    thing: str
    name: str


@attrs.frozen(kw_only=True)
class WatchStream:
    """View a frame stream (``tt.frame_stream``): be sent its newest frame, then each
    new one, coalesced (no TD operation says this; the TD links the stream)."""

    thing: str
    name: str


@attrs.frozen(kw_only=True)
class ReadThingDescription:
    """The TD of one Thing, with hrefs relative to ``base``."""

    thing: str
    base: str


@attrs.frozen(kw_only=True)
class ReadAllThingDescriptions:
    """Every Thing's TD, keyed by name."""

    base: str


@attrs.frozen(kw_only=True)
class ListThings:
    """Every Thing's name and TD path."""

    base: str


@attrs.frozen(kw_only=True)
class Discover:
    """``/.well-known/wot`` (WoT Discovery): the TD of the Thing Description Directory of
    the Things served (:mod:`trio_things.protocol.directory`)."""

    base: str


@attrs.frozen(kw_only=True)
class ListThingDescriptions:
    """The directory's listing (WoT Discovery's ``things``): every Thing's TD, sorted by
    id; ``limit`` of them (``None``: all) from ``offset``."""

    base: str
    offset: int = 0
    limit: int | None = None
    collection: bool = False
    """``format=collection``: the page as a ``ThingCollection`` object, not an array."""


@attrs.frozen(kw_only=True)
class RetrieveThing:
    """The directory's ``retrieveThing``: the TD whose ``id`` is ``id``."""

    id: str
    base: str


Command = (
    ReadProperty | WriteProperty | ReadAllProperties | ReadMultipleProperties
    | WriteMultipleProperties | InvokeAction | QueryAction | CancelAction | QueryAllActions
    | SubscribeEvent | UnsubscribeEvent | SubscribeAllEvents | UnsubscribeAllEvents
    | ObserveProperty | UnobserveProperty | ObserveAllProperties | UnobserveAllProperties
    | ObserveAction | UnobserveAction | WatchStream
    | ReadThingDescription | ReadAllThingDescriptions | ListThings | Discover
    | ListThingDescriptions | RetrieveThing
)


# --------------------------------------------------------------------------- notifications


@attrs.frozen(kw_only=True)
class PropertyChanged:
    """Property ``name`` of Thing ``thing`` now has the JSON ``value``."""

    thing: str
    name: str
    value: Any
    timestamp: datetime.datetime
    id: str = ""
    """The notification's id (:mod:`trio_things.fanout.history`): what a consumer
    coming back says it saw last."""


@attrs.frozen(kw_only=True)
class EventEmitted:
    """Thing ``thing`` emitted event ``name`` with the JSON payload ``data``."""

    thing: str
    name: str
    data: Any
    timestamp: datetime.datetime
    id: str = ""
    """As :attr:`PropertyChanged.id`."""


@attrs.frozen(kw_only=True)
class ActionStatusChanged:
    """An invocation changed status, or logged lines. The record is live: encode it at
    once."""

    invocation: Invocation
    timestamp: datetime.datetime
    new_log: tuple[LogEntry, ...] = ()
    """The lines logged since the previous notification of this invocation: what a
    notification carries of the log (the whole log in each would grow quadratically
    with a chatty action)."""
    id: str = ""
    """As :attr:`PropertyChanged.id`."""


@attrs.frozen(kw_only=True)
class NotificationsMissed:
    """A consumer that came back with the id of the last notification it saw missed
    some that the server no longer holds (a gap): told first, never left to guess."""

    thing: str
    last_event_id: str
    """The id the consumer came back with."""
    resume_id: str
    """The id to come back with from now on: what follows is sent after this one."""
    detail: str
    """Why, in a sentence."""


@attrs.frozen(kw_only=True)
class FramePublished:
    """Thing ``thing`` published ``frame`` (one whole image) on its frame stream
    ``name``. Only a frame stream's viewers are sent it: no dialect subscribes to it."""

    thing: str
    name: str
    frame: bytes


Notification = (PropertyChanged | EventEmitted | ActionStatusChanged | NotificationsMissed
                | FramePublished)


def frame_for_no_dialect(frame: FramePublished) -> NoReturn:
    """What a dialect's encoder does with a frame: refuse it. Frames go to frame-stream
    viewers only, whose encoder is their own; a dialect handed one is a bug."""
    raise LocalProtocolError(f"frame of stream {frame.name!r} handed to a dialect's encoder")


# --------------------------------------------------------------------------- replies


@attrs.frozen(kw_only=True)
class ValueReply:
    """A bare JSON value (a property, an action's output, an event's data)."""

    value: Any


@attrs.frozen(kw_only=True)
class DocumentReply:
    """A JSON document with its own media type (a TD is ``application/td+json``)."""

    document: Any
    content_type: str = "application/json"


@attrs.frozen(kw_only=True)
class DescriptionPageReply:
    """One page of the directory's listing: the TDs from ``offset``, sorted by id, of
    ``total``; ``limit`` and ``collection`` as :class:`ListThingDescriptions` asked."""

    descriptions: tuple[dict[str, Any], ...]
    offset: int
    total: int
    limit: int | None = None
    collection: bool = False
    etag: str = ""
    """The state of the whole collection (its ids, in order)."""


@attrs.frozen(kw_only=True)
class InvocationReply:
    """An invocation; ``created`` when this command started it."""

    invocation: Invocation
    created: bool = False


@attrs.frozen(kw_only=True)
class InvocationListReply:
    """Several invocations, oldest first."""

    invocations: tuple[Invocation, ...]


@attrs.frozen(kw_only=True)
class NoContentReply:
    """Done, nothing to say (a write; a long-poll that timed out; an unobserve)."""


@attrs.frozen(kw_only=True)
class SubscribedReply:
    """An observation or subscription is in place. ``initial`` holds the current values
    of the properties now observed, to be pushed right after the reply; ``missed``, what
    a consumer that came back missed (a gap first, if any), pushed after them."""

    initial: tuple[PropertyChanged, ...] = ()
    missed: tuple[Notification, ...] = ()
    event_id: str | None = None
    """For a subscription to events or action status: the id of the newest notification
    when it was made (:mod:`trio_things.fanout.history`). A consumer that receives
    nothing before it loses its connection comes back with it, and misses nothing."""


Reply = (ValueReply | DocumentReply | InvocationReply | InvocationListReply | NoContentReply
         | SubscribedReply | DescriptionPageReply)
