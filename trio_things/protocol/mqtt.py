"""The W3C WoT MQTT binding, sans-IO: the configuration, the topic layout, what is
published for each notification, and what a message on a command topic means.

Topics (``docs/scaling-out.md``), one per affordance as the WoT MQTT Binding Template
designs them, under the configured ``topic_prefix`` (``things`` by default)::

    {prefix}/{thing}/properties/{name}                a property's value; retained
    {prefix}/{thing}/properties/{name}/writeproperty  write it (JSON value)
    {prefix}/{thing}/actions/{name}                   invoke it (JSON input, or empty)
    {prefix}/{thing}/actions/{name}/status            each status change of its invocations
    {prefix}/{thing}/events/{name}                    each emission
    {prefix}/{thing}/missed                           notifications the broker never got

Payloads are bare JSON, as on an SSE stream: a property's value, an event's data, an
invocation as ``GET /action_invocations/{id}`` answers it (with only the lines logged
since its previous status). Every publication carries the MQTT 5 content type and the
notification's id (``eventID``, a user property: the id SSE and the Web Thing Protocol
resume from). Thing names and affordance names contain no ``/``, ``+`` or ``#``
(:func:`trio_things.config.check_thing_name`, Python identifiers), so every topic is
valid as it is.

Publications travel the fan-out path as Outbox frames (one notification, one frame,
encoded once): :func:`pack` and :func:`unpack` are that frame's layout.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import urllib.parse
from pathlib import Path
from typing import Any, Final, Literal, assert_never

import attrs
import orjson

from trio_things.errors import BadRequest, LocalProtocolError
from trio_things.protocol import commands as c
from trio_things.protocol.invocation_json import invocation_json, status_change_json
from trio_things.protocol.problems import notifications_missed

__all__ = [
    "DEFAULT_PORTS",
    "JSON",
    "MQTT_CONTEXT",
    "PASSWORD_VARIABLE",
    "PROBLEM_JSON",
    "BrokerUrl",
    "CommandTopic",
    "MqttConfig",
    "Publication",
    "Topics",
    "decode_command",
    "encode",
    "invocation_payload",
    "pack",
    "unpack",
]

#: The TD context entry that declares the ``mqv:`` prefix (the WoT MQTT Binding
#: Template's vocabulary).
MQTT_CONTEXT: Final = {"mqv": "https://www.w3.org/2019/wot/mqtt#"}
JSON: Final = "application/json"
PROBLEM_JSON: Final = "application/problem+json"
#: The environment variable that holds the broker password, so that the file need not.
PASSWORD_VARIABLE: Final = "TRIO_THINGS_MQTT_PASSWORD"
#: The brokers' ports when a URL names none (IANA: 1883 for MQTT, 8883 over TLS).
DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}


@attrs.frozen(kw_only=True)
class BrokerUrl:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` (TLS), nothing more."""

    scheme: Literal["mqtt", "mqtts"]
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        """Raises :exc:`ValueError` with a sentence for anything but a broker's URL."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"broker must be an mqtt:// or mqtts:// URL, not {url!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("put the broker's credentials in username and password "
                             "(or TRIO_THINGS_MQTT_PASSWORD), not in its URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"broker {url!r} must have no path: topics are set with "
                             "topic_prefix")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"broker {url!r} has no valid port") from None
        if not parts.hostname:
            raise ValueError(f"broker {url!r} names no host")
        scheme: Literal["mqtt", "mqtts"] = "mqtts" if parts.scheme == "mqtts" else "mqtt"
        return cls(scheme=scheme, host=parts.hostname,
                   port=port if port is not None else DEFAULT_PORTS[scheme])

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _broker(_instance: object, _attribute: object, value: str) -> None:
    BrokerUrl.parse(value)


def _optional_broker(_instance: object, _attribute: object, value: str | None) -> None:
    if value is not None:
        BrokerUrl.parse(value)


def _prefix(_instance: object, _attribute: object, value: str) -> None:
    if not value or any(ch in value for ch in "+#\0") or value.startswith(("/", "$")) \
            or value.endswith("/") or "//" in value:
        raise ValueError(f"topic_prefix {value!r} must be topic levels such as "
                         "'things' or 'site/lab3': no '+', '#', leading '$' or empty level")


def default_client_id() -> str:
    """``trio-things-<host>-<pid>``: unique per process on a site, as a broker needs
    (a second client with the same id takes the first one's session)."""
    host = "".join(ch for ch in socket.gethostname().split(".")[0] if ch.isalnum() or ch == "-")
    return f"trio-things-{host or 'host'}-{os.getpid()}"


@attrs.frozen(kw_only=True)
class MqttConfig:
    """``[server.mqtt]``: publish the Things through an MQTT broker
    (``docs/scaling-out.md``)."""

    broker: str = attrs.field(validator=_broker)
    """``mqtt://host:port`` (1883 by default) or ``mqtts://host:port`` (TLS; 8883)."""
    advertised_broker: str | None = attrs.field(default=None, validator=_optional_broker)
    """The broker's URL as consumers reach it, in the TD's forms; default ``broker``."""
    client_id: str = attrs.field(factory=default_client_id)
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    """Better kept in ``TRIO_THINGS_MQTT_PASSWORD`` than in the file."""
    ca_certificates: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path))
    """PEM file of the CAs that sign an ``mqtts://`` broker's certificate; default the
    system's."""
    topic_prefix: str = attrs.field(default="things", validator=_prefix)
    qos: int = attrs.field(default=1, validator=attrs.validators.in_((0, 1, 2)))
    """The QoS of every publication and subscription; the TD's ``mqv:qos``."""
    commands: bool = True
    """Take writes and invocations from the broker (the command topics); false: publish
    only, and the TD offers no MQTT form to write or invoke."""
    outbox_size: int = attrs.field(default=1024, validator=attrs.validators.gt(0))
    """Events and action-status changes that may wait while the broker is backed up."""
    max_command_bytes: int = attrs.field(default=1024 * 1024,
                                         validator=attrs.validators.gt(0))
    """A write's or an invocation's payload, at most (more is answered 413)."""
    in_flight: int = attrs.field(default=256, validator=attrs.validators.gt(0))
    """Publications handed to the connection and not yet acknowledged, at most."""
    keepalive: int = attrs.field(default=30, validator=attrs.validators.ge(5))
    connect_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    reconnect_delay: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    """The first wait before reconnecting; it doubles (with jitter) up to
    ``max_reconnect_delay``."""
    max_reconnect_delay: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))

    @property
    def broker_url(self) -> BrokerUrl:
        """:attr:`broker`, parsed."""
        return BrokerUrl.parse(self.broker)

    @property
    def advertised_url(self) -> BrokerUrl:
        """Where consumers reach the broker."""
        return BrokerUrl.parse(self.advertised_broker or self.broker)

    @property
    def topics(self) -> Topics:
        """The topic layout under :attr:`topic_prefix`."""
        return Topics(self.topic_prefix)

    def with_environment(self) -> MqttConfig:
        """This configuration with the password from ``TRIO_THINGS_MQTT_PASSWORD``, if
        set."""
        password = os.environ.get(PASSWORD_VARIABLE)
        return self if password is None else attrs.evolve(self, password=password)

    def tls_context(self) -> ssl.SSLContext | None:
        """For ``mqtts://``: a client context that checks the broker's certificate and
        name. :class:`~trio_things.errors.LocalProtocolError` for a CA file that cannot
        be used."""
        if self.broker_url.scheme != "mqtts":
            return None
        try:
            return ssl.create_default_context(
                cafile=None if self.ca_certificates is None else str(self.ca_certificates))
        except (OSError, ssl.SSLError) as error:
            raise LocalProtocolError(f"[server.mqtt]: cannot use ca_certificates "
                                     f"{str(self.ca_certificates)!r}: {error}") from None


# ---------------------------------------------------------------------------- topics

CommandKind = Literal["writeproperty", "invokeaction"]


@attrs.frozen
class CommandTopic:
    """What a message on a command topic asks for."""

    kind: CommandKind
    thing: str
    name: str


@attrs.frozen
class Topics:
    """The topic layout under one prefix (see the module docstring)."""

    prefix: str

    def property(self, thing: str, name: str) -> str:
        return f"{self.prefix}/{thing}/properties/{name}"

    def write(self, thing: str, name: str) -> str:
        return f"{self.prefix}/{thing}/properties/{name}/writeproperty"

    def action(self, thing: str, name: str) -> str:
        return f"{self.prefix}/{thing}/actions/{name}"

    def status(self, thing: str, name: str) -> str:
        return f"{self.prefix}/{thing}/actions/{name}/status"

    def event(self, thing: str, name: str) -> str:
        return f"{self.prefix}/{thing}/events/{name}"

    def missed(self, thing: str) -> str:
        return f"{self.prefix}/{thing}/missed"

    def all_properties(self, thing: str) -> str:
        """The filter of every property value of ``thing`` (and no write topic)."""
        return f"{self.prefix}/{thing}/properties/+"

    def all_events(self, thing: str) -> str:
        return f"{self.prefix}/{thing}/events/+"

    def command_filters(self) -> tuple[str, str]:
        """What the server subscribes to, to take writes and invocations."""
        return (f"{self.prefix}/+/properties/+/writeproperty", f"{self.prefix}/+/actions/+")

    def parse_command(self, topic: str) -> CommandTopic | None:
        """The command a topic matched by :meth:`command_filters` names; None for any
        other topic."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        levels = topic[len(head):].split("/")
        if len(levels) == 4 and levels[1] == "properties" and levels[3] == "writeproperty":
            return CommandTopic("writeproperty", levels[0], levels[2])
        if len(levels) == 3 and levels[1] == "actions":
            return CommandTopic("invokeaction", levels[0], levels[2])
        return None


# ---------------------------------------------------------------------------- publications


@attrs.frozen(kw_only=True)
class Publication:
    """One PUBLISH the server makes: where, what, whether the broker keeps it for
    subscribers to come, and the id of the notification it carries."""

    topic: str
    payload: bytes
    retain: bool = False
    event_id: str = ""
    content_type: str = JSON


_HEADER: Final = struct.Struct("!?HHH")


def pack(publication: Publication) -> bytes:
    """``publication`` as one Outbox frame's bytes (:func:`unpack` reverses it)."""
    topic = publication.topic.encode()
    event_id = publication.event_id.encode()
    content_type = publication.content_type.encode()
    return b"".join((_HEADER.pack(publication.retain, len(topic), len(event_id),
                                  len(content_type)), topic, event_id, content_type,
                     publication.payload))


def unpack(frame: bytes) -> Publication:
    """The :class:`Publication` :func:`pack` made ``frame`` of."""
    retain, topic_size, id_size, type_size = _HEADER.unpack_from(frame)
    start = _HEADER.size
    topic = frame[start:start + topic_size].decode()
    start += topic_size
    event_id = frame[start:start + id_size].decode()
    start += id_size
    content_type = frame[start:start + type_size].decode()
    return Publication(topic=topic, payload=frame[start + type_size:], retain=retain,
                       event_id=event_id, content_type=content_type)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def encode(topics: Topics, notification: c.Notification) -> bytes:
    """The packed :class:`Publication` of ``notification``: the Outbox frame the MQTT
    binding's observer is sent (its :data:`~trio_things.fanout.observers.Encoder`)."""
    match notification:
        case c.PropertyChanged(thing=thing, name=name, value=value, id=event_id):
            publication = Publication(topic=topics.property(thing, name), payload=_dumps(value),
                                      retain=True, event_id=event_id)
        case c.EventEmitted(thing=thing, name=name, data=data, id=event_id):
            publication = Publication(topic=topics.event(thing, name), payload=_dumps(data),
                                      event_id=event_id)
        case c.ActionStatusChanged(invocation=invocation, id=event_id):
            publication = Publication(
                topic=topics.status(invocation.thing, invocation.action),
                payload=_dumps(status_change_json(notification)), event_id=event_id)
        case c.NotificationsMissed(thing=thing, resume_id=resume_id):
            publication = Publication(
                topic=topics.missed(thing), event_id=resume_id, content_type=PROBLEM_JSON,
                payload=_dumps(notifications_missed(
                    notification.detail, last_event_id=notification.last_event_id,
                    resume_id=resume_id)))
        case c.FramePublished():
            c.frame_for_no_dialect(notification)
        case _:
            assert_never(notification)
    return pack(publication)


# ---------------------------------------------------------------------------- commands


def decode_command(command: CommandTopic, payload: bytes
                   ) -> c.WriteProperty | c.InvokeAction:
    """The command a message on a command topic carries; :class:`~trio_things.errors.
    BadRequest` for a payload that is no JSON (an invocation's may be empty: no input)."""
    if command.kind == "invokeaction" and not payload.strip():
        return c.InvokeAction(thing=command.thing, name=command.name, input=None)
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        what = "a value to write" if command.kind == "writeproperty" else "the action's input"
        raise BadRequest(f"the payload must be JSON ({what}): {error}") from None
    if command.kind == "writeproperty":
        return c.WriteProperty(thing=command.thing, name=command.name, value=value)
    return c.InvokeAction(thing=command.thing, name=command.name, input=value)


def invocation_payload(invocation: Any) -> bytes:
    """A reply that carries an invocation, as ``GET /action_invocations/{id}``."""
    return _dumps(invocation_json(invocation))
