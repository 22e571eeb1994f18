"""trio-things: serve W3C Web of Things devices from Python classes, on Trio.

Describe a device as a :class:`Thing` with :func:`property` (or :func:`setting`, kept
on disk), :func:`action` and :func:`event`; serve it with :class:`ThingServer` or
``trio-things serve``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trio_things.errors import (
    InvalidValue,
    LocalProtocolError,
    RemoteProtocolError,
    ThingDefinitionError,
    ThingsError,
)
from trio_things.model.affordances import ActionContext
from trio_things.model.blob import JPEG, PNG, Blob
from trio_things.model.declarations import (
    Event,
    action,
    event,
    frame_stream,
    property,
    setting,
)
from trio_things.model.schema import Schema
from trio_things.model.thing import Thing
from trio_things.protocol.limits import HttpLimits, WebSocketLimits

if TYPE_CHECKING:
    from trio_things.config import ConfigError, ServerConfig, ThingConfig, TlsConfig
    from trio_things.server import ThingServer

__all__ = [
    "JPEG",
    "PNG",
    "ActionContext",
    "Blob",
    "ConfigError",
    "Event",
    "HttpLimits",
    "InvalidValue",
    "LocalProtocolError",
    "RemoteProtocolError",
    "Schema",
    "ServerConfig",
    "Thing",
    "ThingConfig",
    "ThingDefinitionError",
    "ThingServer",
    "ThingsError",
    "TlsConfig",
    "WebSocketLimits",
    "action",
    "event",
    "frame_stream",
    "property",
    "setting",
]

__version__ = "0.1.0"

#: Imported on first use (PEP 562), so that ``import trio_things.client`` (a consumer
#: of other servers' Things) does not load the server, trio-websocket and h11.
_LAZY = {"ConfigError": "trio_things.config", "ServerConfig": "trio_things.config",
         "ThingConfig": "trio_things.config", "TlsConfig": "trio_things.config",
         "ThingServer": "trio_things.server"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trio_things' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
