"""Server configuration: a frozen :class:`ServerConfig`, read from TOML or LabThings JSON.

TOML (the native format)::

    [server]
    host = "127.0.0.1"
    port = 8000
    invocation_retention = 300     # seconds an ended invocation stays queryable
    max_connections_per_client = 128

    [server.http]
    max_body_bytes = 1048576

    [server.websocket]
    outbox_size = 1024             # events/action status a slow client may lag by
    write_timeout = 10.0

    [server.access]
    tokens = ["..."]               # bearer tokens; or TRIO_THINGS_TOKENS in the environment
    readonly_tokens = ["..."]      # may read, observe, subscribe and query only
    allowed_origins = ["https://lab.example"]   # web pages that may open WebSockets
    cors_origins = ["https://lab.example"]      # web pages that may call the HTTP API

    [things.thermometer]
    class = "trio_things.demo:Thermometer"

    [things.counter]
    class = "trio_things.demo:Counter"
    start = 5                      # every other key is a keyword argument

LabThings-FastAPI JSON (``{"things": {"counter": "module:Class"}}``, or a value of
``{"class": "module:Class", "kwargs": {...}}``) is accepted too, so existing
configurations keep working.

Every mistake raises :class:`ConfigError` with one line that names the file, the Thing
and the cause; the command line prints it and exits with status 2.
"""

from __future__ import annotations

import difflib
import importlib
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from trio_things.errors import LocalProtocolError, unknown_names
from trio_things.model.thing import Thing
from trio_things.protocol.access import AccessPolicy
from trio_things.protocol.limits import HttpLimits, WebSocketLimits

__all__ = [
    "DEMO_THINGS",
    "ConfigError",
    "ServerConfig",
    "ThingConfig",
    "load_config",
    "load_thing_class",
]

#: Thing names are a single path segment; these are taken by the server's own routes.
RESERVED_THING_NAMES: Final = frozenset(
    {"things", "thing_descriptions", "action_invocations", "ws", ".well-known"})
_THING_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class ConfigError(LocalProtocolError):
    """The configuration cannot be used; the message is one line, fit to print."""


def check_thing_name(name: str) -> str:
    """Return ``name`` if it can be a Thing's path segment; else raise ConfigError."""
    if not _THING_NAME.match(name):
        raise ConfigError(f"thing {name!r}: names must start with a letter and use only "
                          "letters, digits, '_' and '-'")
    if name in RESERVED_THING_NAMES:
        raise ConfigError(f"thing {name!r}: the name is taken by the server's own routes")
    return name


@attrs.frozen(kw_only=True)
class ThingConfig:
    """One Thing to serve: its name (first path segment), class and keyword arguments."""

    name: str = attrs.field(validator=lambda _i, _a, v: check_thing_name(v))
    class_path: str
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)

    def create(self) -> Thing:
        """Import the class and instantiate it; ConfigError names the Thing on failure."""
        cls = load_thing_class(self.class_path, thing=self.name)
        try:
            return cls(**self.kwargs)
        except Exception as error:
            raise ConfigError(f"thing {self.name!r}: {self.class_path}("
                              f"{', '.join(self.kwargs)}) failed: "
                              f"{type(error).__name__}: {error}") from error


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Everything ``trio-things serve`` needs. Defaults are safe for a lab bench:
    loopback only, limits on every size and time."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=[attrs.validators.ge(0),
                                                     attrs.validators.le(65535)])
    things: tuple[ThingConfig, ...] = ()
    http: HttpLimits = attrs.field(factory=HttpLimits)
    websocket: WebSocketLimits = attrs.field(factory=WebSocketLimits)
    access: AccessPolicy = attrs.field(factory=AccessPolicy)
    #: Seconds an ended invocation stays queryable before it is forgotten.
    invocation_retention: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    #: Seconds an HTTP long-poll for an event waits before answering 204.
    long_poll_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    #: Connections one client address may have open at once (HTTP and WebSocket alike);
    #: ``serve`` answers one more with 429 and closes it.
    max_connections_per_client: int = attrs.field(default=128,
                                                  validator=attrs.validators.gt(0))


#: The Things ``trio-things serve`` runs without a configuration file.
DEMO_THINGS: Final = (
    ThingConfig(name="thermometer", class_path="trio_things.demo:Thermometer"),
    ThingConfig(name="counter", class_path="trio_things.demo:Counter"),
)


_ABSENT: Final = object()


def load_thing_class(class_path: str, *, thing: str) -> type[Thing]:
    """Import ``"package.module:Class"``; ConfigError names the Thing on failure."""
    module_name, _, attribute = class_path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"thing {thing!r}: class must look like 'package.module:Class', "
                          f"not {class_path!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name + ".").startswith(error.name + "."):
            raise ConfigError(
                f"thing {thing!r}: no module {error.name!r} on the Python path; run "
                f"trio-things serve from the folder that holds it (or name that folder "
                f"with --app-dir), add the folder to PYTHONPATH, or install its package "
                f"(pip install -e /path/to/project)") from error
        raise ConfigError(f"thing {thing!r}: importing {module_name!r} failed: "
                          f"{type(error).__name__}: {error}") from error
    except Exception as error:
        raise ConfigError(f"thing {thing!r}: importing {module_name!r} failed: "
                          f"{type(error).__name__}: {error}") from error
    cls: Any = module
    for part in attribute.split("."):
        found = getattr(cls, part, _ABSENT)
        if found is _ABSENT:
            classes = [name for name, value in vars(cls).items()
                       if isinstance(value, type) and issubclass(value, Thing)
                       and value is not Thing]
            near = difflib.get_close_matches(part, classes or list(vars(cls)), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            listed = (f"; its Thing classes: {', '.join(sorted(classes))}" if classes
                      else "; it defines no Thing class")
            raise ConfigError(f"thing {thing!r}: {getattr(cls, '__name__', module_name)!r} "
                              f"has no {part!r}{hint}{listed}")
        cls = found
    if not (isinstance(cls, type) and issubclass(cls, Thing)):
        kind = "a class" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise ConfigError(f"thing {thing!r}: {class_path!r} is {kind}, not a subclass of "
                          "trio_things.Thing")
    return cls


def load_config(path: Path) -> ServerConfig:
    """Read a TOML (``.toml``) or LabThings JSON (``.json``) configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        if path.suffix == ".json":
            return _from_labthings(json.loads(text))
        return _from_toml(tomllib.loads(text))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper() or 'TOML'}: "
                          f"{error}") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _from_toml(data: dict[str, Any]) -> ServerConfig:
    unknown = set(data) - {"server", "things"}
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; expected [server], [things]")
    things = []
    for name, table in _table(data, "things").items():
        if not isinstance(table, dict) or not isinstance(table.get("class"), str):
            raise ConfigError(f"thing {name!r}: needs class = \"package.module:Class\"")
        kwargs = {k: v for k, v in table.items() if k != "class"}
        things.append(_thing(name, table["class"], kwargs))
    server = dict(_table(data, "server"))
    http = _table(server, "http")
    websocket = _table(server, "websocket")
    access = _table(server, "access")
    for table in ("http", "websocket", "access"):
        server.pop(table, None)
    tables: tuple[tuple[str, Mapping[str, Any], type], ...] = (
        ("[server]", server, ServerConfig), ("[server.http]", http, HttpLimits),
        ("[server.websocket]", websocket, WebSocketLimits),
        ("[server.access]", access, AccessPolicy))
    for name, table, cls in tables:
        known = {field.alias or field.name for field in attrs.fields(cls)} - {"things"}
        if cls is ServerConfig:
            known |= {"http", "websocket", "access"}
        message = unknown_names(table, known)
        if message:
            raise ConfigError(f"{name}: {message}")
    try:
        return ServerConfig(things=tuple(things), http=HttpLimits(**http),
                            websocket=WebSocketLimits(**websocket),
                            access=AccessPolicy(**access), **server)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"[server]: {error}") from None


def _from_labthings(data: Any) -> ServerConfig:
    if not isinstance(data, dict) or not isinstance(data.get("things"), dict):
        raise ConfigError('expected {"things": {"name": "module:Class", ...}}')
    things = []
    for raw_name, value in data["things"].items():
        name = raw_name.strip("/")
        if isinstance(value, str):
            things.append(_thing(name, value, {}))
        elif isinstance(value, dict) and isinstance(value.get("class"), str):
            things.append(_thing(name, value["class"], value.get("kwargs") or {}))
        else:
            raise ConfigError(f"thing {name!r}: expected \"module:Class\" or "
                              '{"class": "module:Class", "kwargs": {...}}')
    return ServerConfig(things=tuple(things))


def _thing(name: str, class_path: str, kwargs: Mapping[str, Any]) -> ThingConfig:
    check_thing_name(name)
    return ThingConfig(name=name, class_path=class_path, kwargs=dict(kwargs))


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table")
    return value
