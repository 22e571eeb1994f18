"""Server configuration: a frozen :class:`ServerConfig`, read from TOML or LabThings JSON.

TOML (the native format)::

    [server]
    host = "127.0.0.1"
    port = 8000
    invocation_retention = 300     # seconds an ended invocation stays queryable
    replay_size = 1024             # events/action status a Thing keeps for resuming
    max_connections_per_client = 128
    settings_folder = "settings"   # the Things' settings (tt.setting), beside this file
    blob_memory_bytes = 67108864   # blob outputs kept in memory; beyond, they go to files

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
    allowed_hosts = ["lab.example"]  # names it is reached by, besides localhost and IPs

    [server.tls]                   # https:// and wss:// on the same port
    certificate = "server.pem"     # PEM, the chain after the server's own; relative
    key = "server.key"             # paths are relative to the configuration file

    [server.mqtt]                  # publish through an MQTT broker (docs/scaling-out.md)
    broker = "mqtt://127.0.0.1:1883"   # or mqtts://; the password: TRIO_THINGS_MQTT_PASSWORD
    topic_prefix = "things"

    [server.discovery]             # DNS-SD (multicast DNS) announcement as _wot._tcp
    dns_sd = true                  # default: on unless the server listens on loopback only
    name = "Lab bench 3"           # the instance name; default: the host name

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
import ssl
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from trio_things.errors import LocalProtocolError, unknown_names
from trio_things.model.thing import Thing
from trio_things.protocol.access import AccessPolicy
from trio_things.protocol.dns_sd import DiscoveryConfig
from trio_things.protocol.limits import HttpLimits, WebSocketLimits
from trio_things.protocol.mqtt import MqttConfig
from trio_things.runtime.blobs import DEFAULT_MEMORY_BYTES, DEFAULT_SPILL_BYTES

__all__ = [
    "DEMO_THINGS",
    "ConfigError",
    "ServerConfig",
    "ThingConfig",
    "TlsConfig",
    "load_config",
    "load_thing_class",
]

#: Thing names are a single path segment; these are taken by the server's own routes.
RESERVED_THING_NAMES: Final = frozenset(
    {"things", "thing_descriptions", "action_invocations", "ws", ".well-known", "dashboard",
     "blob"})
_THING_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class ConfigError(LocalProtocolError):
    """The configuration cannot be used; the message is one line, fit to print."""


def _existing_folder(path: Path | None) -> None:
    if path is not None and not path.is_dir():
        raise ValueError(f"blob_folder {str(path)!r} is not an existing folder")


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
class TlsConfig:
    """``[server.tls]``: serve ``https://`` and ``wss://`` on the server's one port.

    Bearer tokens sent over plain HTTP can be read by anyone on the path: off loopback,
    serve with TLS. The files are read when the server is made
    (:meth:`ssl_context`), so a bad one stops ``trio-things serve`` at once, with one
    line that says which file and why.
    """

    certificate: Path = attrs.field(converter=Path)
    """The server's certificate in PEM, followed by any intermediate certificates."""
    key: Path = attrs.field(converter=Path)
    """The certificate's private key in PEM (unencrypted: the server starts unattended)."""

    def resolved(self, folder: Path) -> TlsConfig:
        """The same, with relative paths taken relative to ``folder`` (the configuration
        file's), as a reader of that file expects."""
        return TlsConfig(certificate=folder / self.certificate, key=folder / self.key)

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side TLS context holding the certificate and key (TLS 1.2 or later,
        ALPN ``http/1.1``); :class:`ConfigError` for a file that cannot be read, is not
        PEM, or a key that does not belong to the certificate."""
        for what, path in (("certificate", self.certificate), ("key", self.key)):
            try:
                path.read_bytes()
            except OSError as error:
                raise ConfigError(f"[server.tls]: cannot read the {what} {str(path)!r}: "
                                  f"{error.strerror}") from None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        try:
            context.load_cert_chain(self.certificate, self.key)
        except ssl.SSLError as error:
            reason = error.reason or str(error)
            if reason == "KEY_VALUES_MISMATCH":
                why = "the key does not belong to the certificate"
            else:
                why = (f"the certificate or the key is not valid PEM ({reason}); both "
                       "must be PEM files, the key unencrypted")
            raise ConfigError(f"[server.tls]: {why} (certificate {str(self.certificate)!r}, "
                              f"key {str(self.key)!r})") from None
        return context


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
    tls: TlsConfig | None = None
    """With it, the server speaks ``https`` and ``wss`` only (see :class:`TlsConfig`)."""
    discovery: DiscoveryConfig = attrs.field(factory=DiscoveryConfig)
    """``[server.discovery]``: the DNS-SD announcement (``docs/configuration.md``)."""
    mqtt: MqttConfig | None = None
    """``[server.mqtt]``: publish the Things through an MQTT broker, and take commands
    from it (``docs/scaling-out.md``); None: no MQTT."""
    #: Seconds an ended invocation stays queryable before it is forgotten.
    invocation_retention: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    #: Seconds an HTTP long-poll (the next change of a property, the next event) waits
    #: before answering 204.
    long_poll_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    #: Events and action-status changes each Thing keeps for consumers that come back
    #: with the id of the last notification they saw (0: none; every such consumer is
    #: told of a gap). Memory: this many notifications a Thing, each with its payload.
    replay_size: int = attrs.field(default=1024, validator=attrs.validators.ge(0))
    #: Connections one client address may have open at once (HTTP and WebSocket alike);
    #: ``serve`` answers one more with 429 and closes it.
    max_connections_per_client: int = attrs.field(default=128,
                                                  validator=attrs.validators.gt(0))
    #: Connections the server serves at once, from all clients (HTTP and WebSocket
    #: alike); ``serve`` answers one more with 503 and closes it. Never more than the
    #: open-file limit allows, less a reserve for the Things' own files.
    max_connections: int = attrs.field(default=4096, validator=attrs.validators.gt(0))
    #: Invocations kept (pending, running or ended) per Thing and in all: to make room,
    #: the ended one that ended first is forgotten early; with running ones alone at
    #: the bound, a new invocation is answered 503.
    max_invocations_per_thing: int = attrs.field(default=1000,
                                                 validator=attrs.validators.gt(0))
    max_invocations: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))
    #: Worker threads all thread actions share; apart from those of property getters
    #: and setters, so that actions can never take the threads properties need.
    max_action_threads: int = attrs.field(default=32, validator=attrs.validators.gt(0))
    #: Where the Things' settings (``tt.setting``) are kept, one ``<thing>.json`` each;
    #: created at start when a Thing has settings. In a TOML file, relative to the
    #: file's folder (so is the default, ``settings`` beside it); else to the current one.
    settings_folder: Path = attrs.field(default=Path("settings"), converter=Path)
    #: Bytes the blobs of kept action outputs may hold in memory together; beyond it,
    #: the oldest move to files in ``blob_folder`` before an invocation completes.
    blob_memory_bytes: int = attrs.field(default=DEFAULT_MEMORY_BYTES,
                                         validator=attrs.validators.ge(0))
    #: A blob output larger than this goes to a file at once, whatever the budget.
    blob_spill_bytes: int = attrs.field(default=DEFAULT_SPILL_BYTES,
                                        validator=attrs.validators.ge(0))
    #: An existing folder blobs move to (None: the system's temporary folder, as
    #: ``TMPDIR`` says). In a TOML file, relative to the file's folder.
    blob_folder: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path),
        validator=lambda _instance, _attribute, path: _existing_folder(path))


#: The Things ``trio-things serve`` runs without a configuration file.
DEMO_THINGS: Final = (
    ThingConfig(name="thermometer", class_path="trio_things.demo:Thermometer"),
    ThingConfig(name="counter", class_path="trio_things.demo:Counter"),
    ThingConfig(name="camera", class_path="trio_things.demo:Camera"),
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
        return _from_toml(tomllib.loads(text), folder=path.parent)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper() or 'TOML'}: "
                          f"{error}") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _from_toml(data: dict[str, Any], *, folder: Path = Path(".")) -> ServerConfig:
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
    tls = _table(server, "tls") if "tls" in server else None
    discovery = _table(server, "discovery")
    mqtt = dict(_table(server, "mqtt")) if "mqtt" in server else None
    for table in ("http", "websocket", "access", "tls", "discovery", "mqtt"):
        server.pop(table, None)
    tables: tuple[tuple[str, Mapping[str, Any], type], ...] = (
        ("[server]", server, ServerConfig), ("[server.http]", http, HttpLimits),
        ("[server.websocket]", websocket, WebSocketLimits),
        ("[server.access]", access, AccessPolicy), ("[server.tls]", tls or {}, TlsConfig),
        ("[server.discovery]", discovery, DiscoveryConfig),
        ("[server.mqtt]", mqtt or {}, MqttConfig))
    for name, table, cls in tables:
        known = {field.alias or field.name for field in attrs.fields(cls)} - {"things"}
        message = unknown_names(table, known)
        if message:
            raise ConfigError(f"{name}: {message}")
    if tls is not None and not {"certificate", "key"} <= set(tls):
        raise ConfigError('[server.tls]: needs certificate = "cert.pem" and key = "key.pem"')
    settings_folder = server.get("settings_folder", "settings")
    if not isinstance(settings_folder, str):
        raise ConfigError("[server]: settings_folder must be a string (a folder's path)")
    server["settings_folder"] = folder / settings_folder  # relative to the file, as TLS's
    if isinstance(server.get("blob_folder"), str):
        server["blob_folder"] = folder / server["blob_folder"]  # relative to the file too
    try:
        discovery_config = DiscoveryConfig(**discovery)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"[server.discovery]: {error}") from None
    mqtt_config = None
    if mqtt is not None:
        if "broker" not in mqtt:
            raise ConfigError('[server.mqtt]: needs broker = "mqtt://host:1883"')
        if isinstance(mqtt.get("ca_certificates"), str):
            mqtt["ca_certificates"] = folder / mqtt["ca_certificates"]
        try:
            mqtt_config = MqttConfig(**mqtt)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"[server.mqtt]: {error}") from None
    try:
        return ServerConfig(things=tuple(things), http=HttpLimits(**http),
                            websocket=WebSocketLimits(**websocket),
                            access=AccessPolicy(**access),
                            tls=None if tls is None else TlsConfig(**tls).resolved(folder),
                            discovery=discovery_config, mqtt=mqtt_config, **server)
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
