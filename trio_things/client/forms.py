"""Choosing forms from a Thing Description: where and how to perform an operation.

The client is driven by the TD, never by URL patterns of a particular server. The rules
are the ones generic WoT consumers follow (``docs/design.md``, "Thing Description"), and
TD 1.1 defines:

* "When a Form Element has multiple operation types, ... [consumers] select the first
  Form whose op matches": we take the first form whose ``op`` lists the operation and
  whose ``href`` scheme (and ``subprotocol``) we speak. We speak ``http``/``https``
  without a subprotocol (read, write, invoke, query, cancel) and ``ws``/``wss`` with
  ``"subprotocol": "webthingprotocol"`` (everything the Web Thing Protocol serves,
  observe and subscribe included), and ``mqtt``/``mqtts`` forms of the WoT MQTT binding
  template (read, observe and subscribe with a ``subscribe`` control packet; write and
  invoke with a ``publish``).
* TD 1.1 section 5.3.4.2: an ``op`` missing from a form defaults by affordance kind
  (``readproperty`` and ``writeproperty`` for a property, ``invokeaction`` for an action,
  ``subscribeevent`` and ``unsubscribeevent`` for an event); a string means one op.
* "If ``base`` is present, all relative URIs ... are resolved against it"; without it,
  relative hrefs resolve against the URL the TD was fetched from (RFC 3986 section 5).
* The HTTP binding's default methods (GET to read, PUT to write, POST to invoke, GET to
  query, DELETE to cancel) unless the form names one in ``htv:methodName``.
* The MQTT binding template puts the topic in ``mqv:topic`` (to publish to) or
  ``mqv:filter`` (to subscribe to); node-wot reads it from the ``href``'s path. We take
  ``mqv:topic``/``mqv:filter`` and fall back to the path.

Which binding performs an operation when a TD offers several is
:func:`choose_binding`'s rule: the caller's preference (``ClientOptions.prefer``) if
it names one that has a form, else TD order, as generic consumers do.

Pure functions on JSON: no I/O, no trio.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, cast

import attrs

__all__ = [
    "BINDINGS",
    "HTTP_SCHEMES",
    "MQTT_SCHEMES",
    "SUBPROTOCOL",
    "WS_SCHEMES",
    "Binding",
    "Form",
    "Kind",
    "affordance_forms",
    "base_url",
    "bindings",
    "choose_binding",
    "expand_uri_template",
    "form_for",
    "http_form",
    "labthings_invoke_first",
    "mqtt_form",
    "thing_forms",
    "wtp_form",
]

#: The WebSocket subprotocol whose messages we speak (``docs/design.md``, "WebSocket
#: dialects").
SUBPROTOCOL: Final = "webthingprotocol"
HTTP_SCHEMES: Final = frozenset({"http", "https"})
WS_SCHEMES: Final = frozenset({"ws", "wss"})
MQTT_SCHEMES: Final = frozenset({"mqtt", "mqtts"})

Kind = Literal["properties", "actions", "events"]

#: The protocol bindings the client speaks: plain HTTP(S), the Web Thing Protocol over
#: WebSocket, MQTT through a broker. The names ``ClientOptions.prefer`` takes.
Binding = Literal["http", "websocket", "mqtt"]
BINDINGS: Final[tuple[Binding, ...]] = ("http", "websocket", "mqtt")

#: The MQTT control packet that performs each operation we perform over MQTT (the WoT
#: MQTT binding template): a read takes the retained value a subscription brings.
_CONTROL_PACKETS: Final = {
    "readproperty": "subscribe", "observeproperty": "subscribe",
    "subscribeevent": "subscribe", "writeproperty": "publish", "invokeaction": "publish",
}

#: TD 1.1 section 5.3.4.2, the default ``op`` values by affordance kind.
_DEFAULT_OPS: Final[dict[str | None, tuple[str, ...]]] = {
    "properties": ("readproperty", "writeproperty"),
    "actions": ("invokeaction",),
    "events": ("subscribeevent", "unsubscribeevent"),
    None: (),
}

#: The HTTP binding's default methods (WoT Binding Templates, HTTP, section 3.2).
_DEFAULT_METHODS: Final = {
    "readproperty": "GET", "writeproperty": "PUT", "invokeaction": "POST",
    "readallproperties": "GET", "readmultipleproperties": "GET",
    "writeallproperties": "PUT", "writemultipleproperties": "PUT",
    "queryaction": "GET", "cancelaction": "DELETE", "queryallactions": "GET",
    "observeproperty": "GET", "subscribeevent": "GET",
}


@attrs.frozen(kw_only=True)
class Form:
    """One form, its ``href`` resolved to an absolute URL (URI template variables such
    as ``{id}`` left in place until :meth:`expand`).

    Read from any server's TD, so not the server's own :class:`trio_things.model.
    description.Form`, which the client may not import (it builds TDs, this reads them)."""

    href: str
    op: tuple[str, ...]
    method: str | None = None
    subprotocol: str | None = None
    topic: str | None = None
    """MQTT: the topic to publish to (``mqv:topic``) or the filter to subscribe to
    (``mqv:filter``), else the ``href``'s path; None for other forms."""
    control_packet: str | None = None
    """MQTT: ``mqv:controlPacket`` (``publish``, ``subscribe``, ``unsubscribe``)."""
    qos: int | None = None
    """MQTT: ``mqv:qos`` (0, 1 or 2), if the form names a valid one."""

    @property
    def scheme(self) -> str:
        """The href's scheme, lower-case."""
        return urllib.parse.urlsplit(self.href).scheme.lower()

    @property
    def is_http(self) -> bool:
        """A plain HTTP(S) form: one request, one response."""
        return self.scheme in HTTP_SCHEMES and self.subprotocol is None

    @property
    def is_wtp(self) -> bool:
        """A WebSocket form speaking the Web Thing Protocol."""
        return self.scheme in WS_SCHEMES and self.subprotocol == SUBPROTOCOL

    @property
    def is_mqtt(self) -> bool:
        """An MQTT form (WoT MQTT binding template) naming a topic."""
        return self.scheme in MQTT_SCHEMES and bool(self.topic)

    @property
    def binding(self) -> Binding | None:
        """The binding this form is spoken in, or None for one the client does not
        speak (an SSE or long-poll form, CoAP...)."""
        if self.is_http:
            return "http"
        if self.is_wtp:
            return "websocket"
        if self.is_mqtt:
            return "mqtt"
        return None

    def method_for(self, operation: str) -> str:
        """The HTTP method of ``operation`` on this form."""
        return self.method or _DEFAULT_METHODS.get(operation, "GET")

    def expand(self, **variables: str) -> str:
        """The href with ``{name}`` URI template variables (RFC 6570 level 1) replaced
        by their percent-encoded values."""
        href = self.href
        for name, value in variables.items():
            href = href.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
        return href


#: A URI template expression (RFC 6570): its operator, if any, and its variables.
_EXPRESSION: Final = re.compile(r"\{([+#./;?&]?)([^}]*)\}")


def expand_uri_template(href: str, variables: Mapping[str, str | int]) -> str:
    """``href`` with its URI template expressions (RFC 6570) expanded: ``{name}`` (level
    1) and the form-style query ``{?a,b}`` and continuation ``{&a,b}`` (level 3), as WoT
    Discovery's listing form has them (``things{?offset,limit,format}``). A variable not
    in ``variables`` is left out, and so is an expression with none defined; values are
    percent-encoded. Other operators are left as they are."""
    def expand(match: re.Match[str]) -> str:
        operator, names = match.group(1), match.group(2).split(",")
        defined = [(name, str(variables[name])) for name in names if name in variables]
        if operator == "":
            return ",".join(urllib.parse.quote(value, safe="") for _, value in defined)
        if operator not in "?&":
            return match.group(0)
        if not defined:
            return ""
        return operator + "&".join(f"{name}={urllib.parse.quote(value, safe='')}"
                                   for name, value in defined)
    return _EXPRESSION.sub(expand, href)


def base_url(td: Mapping[str, Any], td_url: str) -> str:
    """What relative hrefs in ``td`` resolve against: its ``base`` (itself resolved
    against the TD's URL), else the TD's URL."""
    base = td.get("base")
    return urllib.parse.urljoin(td_url, base) if isinstance(base, str) and base else td_url


def _forms(raw: Any, kind: Kind | None, base: str) -> list[Form]:
    forms: list[Form] = []
    if not isinstance(raw, list):
        return forms
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("href"), str):
            continue
        op = entry.get("op")
        if isinstance(op, str):
            ops: tuple[str, ...] = (op,)
        elif isinstance(op, list):
            ops = tuple(o for o in op if isinstance(o, str))
        else:
            ops = _DEFAULT_OPS[kind]
        method = entry.get("htv:methodName")
        subprotocol = entry.get("subprotocol")
        # urljoin would percent-encode nothing, and keeps "{id}" as it is; an absolute
        # mqtt:// href (another scheme than the base's) comes back as it is.
        href = urllib.parse.urljoin(base, entry["href"])
        mqtt: dict[str, Any] = {}
        if urllib.parse.urlsplit(href).scheme.lower() in MQTT_SCHEMES:
            mqtt = _mqtt_terms(entry, href)
        forms.append(Form(
            href=href, op=ops,
            method=method.upper() if isinstance(method, str) else None,
            subprotocol=subprotocol if isinstance(subprotocol, str) else None, **mqtt))
    return forms


def _mqtt_terms(entry: Mapping[str, Any], href: str) -> dict[str, Any]:
    """An MQTT form's topic, control packet and QoS. The topic is ``mqv:topic`` or
    ``mqv:filter`` (the one its control packet uses first), else the href's path
    (percent-decoded, without its leading ``/``), where node-wot looks for it."""
    packet = entry.get("mqv:controlPacket")
    packet = packet if isinstance(packet, str) else None
    order = ("mqv:filter", "mqv:topic") if packet in ("subscribe", "unsubscribe") \
        else ("mqv:topic", "mqv:filter")
    topic = next((entry[key] for key in order if isinstance(entry.get(key), str)
                  and entry[key]), None)
    if topic is None:
        topic = urllib.parse.unquote(urllib.parse.urlsplit(href).path.removeprefix("/"))
    qos = entry.get("mqv:qos")
    qos = int(qos) if isinstance(qos, str | int) and str(qos) in ("0", "1", "2") else None
    return {"topic": topic or None, "control_packet": packet, "qos": qos}


def affordance_forms(td: Mapping[str, Any], td_url: str, kind: Kind, name: str
                     ) -> list[Form] | None:
    """The forms of the affordance ``name`` of ``kind``; ``None`` if the TD has no such
    affordance."""
    affordances = td.get(kind)
    if not isinstance(affordances, dict) or not isinstance(affordances.get(name), dict):
        return None
    return _forms(affordances[name].get("forms"), kind, base_url(td, td_url))


def thing_forms(td: Mapping[str, Any], td_url: str) -> list[Form]:
    """The TD's top-level forms (``readallproperties``, ...)."""
    return _forms(td.get("forms"), None, base_url(td, td_url))


def http_form(forms: Sequence[Form], operation: str) -> Form | None:
    """The first plain HTTP(S) form listing ``operation``."""
    return next((f for f in forms if operation in f.op and f.is_http), None)


def wtp_form(forms: Sequence[Form], operation: str) -> Form | None:
    """The first Web Thing Protocol WebSocket form listing ``operation``."""
    return next((f for f in forms if operation in f.op and f.is_wtp), None)


def mqtt_form(forms: Sequence[Form], operation: str) -> Form | None:
    """The first MQTT form listing ``operation`` whose control packet (if it names
    one) is the one that performs it: ``subscribe`` to read, observe or subscribe,
    ``publish`` to write or invoke. None for an operation we do not perform over MQTT."""
    return next((f for f in forms if _performs(f, operation) == "mqtt"), None)


def _performs(form: Form, operation: str) -> Binding | None:
    """The binding in which ``form`` performs ``operation``, if it does."""
    if operation not in form.op:
        return None
    binding = form.binding
    if binding == "mqtt":
        packet = _CONTROL_PACKETS.get(operation)
        if packet is None or form.control_packet not in (None, packet):
            return None
    return binding


def form_for(forms: Sequence[Form], operation: str, binding: Binding) -> Form | None:
    """The first form of ``binding`` that performs ``operation``."""
    return next((f for f in forms if _performs(f, operation) == binding), None)


def bindings(value: str | Iterable[str]) -> tuple[Binding, ...]:
    """``value`` (one binding's name, or several) as a tuple of bindings;
    :exc:`ValueError` naming the known ones for anything else. ``ClientOptions.prefer``
    converts with it."""
    names = (value,) if isinstance(value, str) else tuple(value)
    unknown = [name for name in names if name not in BINDINGS]
    if unknown:
        raise ValueError(f"unknown binding(s) {', '.join(map(repr, unknown))}: the client "
                         f"speaks {', '.join(map(repr, BINDINGS))}")
    return cast(tuple[Binding, ...], names)


def choose_binding(forms: Sequence[Form], operation: str, *, speaks: Collection[Binding],
                   prefer: Sequence[Binding] = (), established: Sequence[Binding] = ()
                   ) -> Binding | None:
    """Which binding performs ``operation``, among the forms of one affordance (or the
    Thing's own); None if no form of a binding in ``speaks`` performs it.

    1. The first binding of ``prefer`` (the caller's, ``ClientOptions.prefer``) that
       has a form for it.
    2. Else the binding of the first such form in TD order, as generic consumers
       choose: a TD that lists its MQTT forms first is used over MQTT.
    3. Except between HTTP and WebSocket, whose choice predates MQTT and stays as it
       was: when the first form is one of theirs, ``established`` (the operation's
       order of the two: reads and writes over HTTP, one request each; invocations
       over WebSocket, pushed) picks between them. So a trio-things TD, which lists
       HTTP, then WebSocket, then MQTT forms, is used as it was before MQTT.
    """
    in_order = [binding for f in forms
                if (binding := _performs(f, operation)) is not None and binding in speaks]
    if not in_order:
        return None
    for binding in prefer:
        if binding in in_order:
            return binding
    first = in_order[0]
    if first in established:
        return next(binding for binding in established if binding in in_order)
    return first


def labthings_invoke_first(forms: Sequence[Form], td_url: str, action: str) -> list[Form]:
    """The HTTP ``invokeaction`` forms, the LabThings one first.

    A TD does not say which form answers with the invocation rather than the output.
    LabThings servers answer ``POST {TD URL}/{action}`` with 201 and the invocation (its
    id, status and links), which is what a live handle needs; so a form at exactly that
    URL goes first, the others follow in TD order. What a form actually answered is
    judged from the response, so a wrong guess costs nothing but liveness.
    """
    candidates = [f for f in forms if "invokeaction" in f.op and f.is_http]
    convention = urllib.parse.urljoin(td_url if td_url.endswith("/") else td_url + "/",
                                      urllib.parse.quote(action, safe=""))
    return sorted(candidates, key=lambda f: f.href.rstrip("/") != convention.rstrip("/"))
