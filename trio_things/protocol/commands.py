"""What a client asks for, whatever the wire: one frozen class per TD operation.

Every dialect (HTTP routes now, WebSocket dialects next) decodes its messages into
these values, and :mod:`trio_things.dispatch` runs them. Shape is checked when the
command is decoded; values are checked against the affordance's schema when it runs.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = [
    "CancelAction",
    "Command",
    "Discover",
    "InvokeAction",
    "ListThings",
    "QueryAction",
    "QueryAllActions",
    "ReadAllProperties",
    "ReadAllThingDescriptions",
    "ReadMultipleProperties",
    "ReadProperty",
    "ReadThingDescription",
    "SubscribeEvent",
    "WriteMultipleProperties",
    "WriteProperty",
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
    """TD ``queryaction``. ``output_only``: reply with the bare output."""

    invocation_id: str
    output_only: bool = False


@attrs.frozen(kw_only=True)
class CancelAction:
    """TD ``cancelaction``."""

    invocation_id: str


@attrs.frozen(kw_only=True)
class QueryAllActions:
    """TD ``queryallactions``: the invocations of one Thing (or all, or of one action)."""

    thing: str | None = None
    action: str | None = None


@attrs.frozen(kw_only=True)
class SubscribeEvent:
    """TD ``subscribeevent`` over HTTP long-poll: reply with the next emission."""

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
    """``/.well-known/wot`` (WoT Discovery): a directory TD linking every Thing's TD."""

    base: str


Command = (
    ReadProperty | WriteProperty | ReadAllProperties | ReadMultipleProperties
    | WriteMultipleProperties | InvokeAction | QueryAction | CancelAction | QueryAllActions
    | SubscribeEvent | ReadThingDescription | ReadAllThingDescriptions | ListThings | Discover
)
