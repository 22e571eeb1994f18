"""trio-things: serve W3C Web of Things devices from Python classes, on Trio.

Describe a device as a :class:`Thing` with :func:`property`, :func:`action` and
:func:`event`; serve it with :class:`ThingServer` or ``trio-things serve``.
"""

from trio_things.config import ConfigError, ServerConfig, ThingConfig
from trio_things.errors import (
    InvalidValue,
    LocalProtocolError,
    RemoteProtocolError,
    ThingDefinitionError,
    ThingsError,
)
from trio_things.model.affordances import ActionContext, Event, action, event, property
from trio_things.model.schema import Schema
from trio_things.model.thing import Thing
from trio_things.server import ThingServer

__all__ = [
    "ActionContext",
    "ConfigError",
    "Event",
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
    "action",
    "event",
    "property",
]

__version__ = "0.1.0"
