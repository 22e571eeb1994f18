"""The W3C Thing Description (TD 1.1) of a Thing, built from its specs and its forms.

The model knows *what* a Thing offers; only the protocol bindings know *where*. So the
builder takes :class:`Binding` objects that supply the forms, and a TD lists exactly the
operations some binding serves: a Thing served over HTTP alone advertises no WebSocket
forms, and an affordance with an ``observeproperty`` form is marked ``observable``.

Rules we keep because real consumers depend on them (``docs/design.md``, "Thing
Description"):

* ``@context`` names both the TD 1.0 and 1.1 URIs: node-wot 0.9 rejects a TD whose
  context is the 1.1 URI alone.
* ``op`` is always an array; consumers take the *first* form whose ``op`` lists the
  operation they want, so bindings order their forms by preference.
* ``base`` ends with ``/`` and every ``href`` is relative to it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import attrs

from trio_things.model.affordances import ActionSpec, Affordances, EventSpec, PropertySpec

__all__ = ["STREAM_LINK_TYPE", "TD_CONTEXT", "Binding", "Form", "describe_thing", "thing_id"]

#: TD 1.1 section 5.3.1.1: the 1.0 URI first, then the 1.1 URI.
TD_CONTEXT: Final = ["https://www.w3.org/2019/wot/td/v1", "https://www.w3.org/2022/wot/td/v1.1"]
#: The media type a frame stream (``tt.frame_stream``) is linked with: each frame a part
#: that replaces the one before (``protocol/multipart.py``), what an ``<img>`` shows live.
STREAM_LINK_TYPE: Final = "multipart/x-mixed-replace"


@attrs.frozen(kw_only=True)
class Form:
    """One TD form: where and how to perform some operations."""

    href: str
    op: tuple[str, ...]
    content_type: str | None = "application/json"
    method: str | None = None
    subprotocol: str | None = None
    response_content_type: str | None = None
    terms: tuple[tuple[str, Any], ...] = ()
    """A binding's own vocabulary (``("mqv:qos", "1")``...), after the core terms; its
    prefix is declared by the binding's :attr:`Binding.context`."""

    def to_json(self) -> dict[str, Any]:
        """The form as TD JSON."""
        out: dict[str, Any] = {"href": self.href, "op": list(self.op)}
        if self.content_type is not None:
            out["contentType"] = self.content_type
        if self.method is not None:
            out["htv:methodName"] = self.method
        if self.subprotocol is not None:
            out["subprotocol"] = self.subprotocol
        if self.response_content_type is not None:
            out["response"] = {"contentType": self.response_content_type}
        out.update(self.terms)
        return out


class Binding(Protocol):
    """A protocol binding: the forms it serves for each affordance of a Thing.

    ``thing`` is the Thing's name on this server (its first path segment); ``base`` the
    server's root URL as the client addressed it. Hrefs are relative to ``base`` where
    the scheme allows (a WebSocket binding's cannot be). ``context`` declares the
    prefixes of the binding's own form terms (``{"mqv": ...}``): added to the TD's
    ``@context`` when the binding contributes forms.
    """

    @property
    def context(self) -> Mapping[str, str]: ...

    def property_forms(self, thing: str, spec: PropertySpec, base: str) -> Sequence[Form]: ...
    def action_forms(self, thing: str, spec: ActionSpec, base: str) -> Sequence[Form]: ...
    def event_forms(self, thing: str, spec: EventSpec, base: str) -> Sequence[Form]: ...
    def thing_forms(self, thing: str, affordances: Affordances, base: str
                    ) -> Sequence[Form]: ...


def thing_id(base: str, name: str) -> str:
    """A stable URN for the Thing ``name`` served at ``base`` (same URL, same id)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, base + name)}"


def describe_thing(
    affordances: Affordances,
    *,
    name: str,
    title: str,
    description: str | None,
    base: str,
    bindings: Sequence[Binding],
    security_definitions: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The TD of one Thing as a JSON object.

    ``base`` is the server's root URL and must end with ``/``. ``security_definitions``
    defaults to ``nosec`` (no authentication).
    """
    if not base.endswith("/"):
        raise ValueError(f"base must end with '/', got {base!r}")
    definitions = security_definitions or {"nosec_sc": {"scheme": "nosec"}}
    td: dict[str, Any] = {
        "@context": list(TD_CONTEXT),
        "id": thing_id(base, name),
        "title": title,
    }
    if description:
        td["description"] = description
    td |= {
        "base": base,
        "securityDefinitions": definitions,
        "security": list(definitions),
        "properties": {
            spec.name: _property(
                spec, [f for b in bindings for f in b.property_forms(name, spec, base)])
            for spec in affordances.properties.values()
        },
        "actions": {
            spec.name: _action(
                spec, [f for b in bindings for f in b.action_forms(name, spec, base)])
            for spec in affordances.actions.values()
        },
        "events": {
            spec.name: _event(spec, [f for b in bindings for f in b.event_forms(name, spec, base)])
            for spec in affordances.events.values()
        },
    }
    forms = [f for b in bindings for f in b.thing_forms(name, affordances, base)]
    if forms:
        td["forms"] = [form.to_json() for form in forms]
    extra_context = {prefix: uri for b in bindings for prefix, uri in b.context.items()}
    if extra_context:
        td["@context"].append(extra_context)
    if affordances.streams:
        # Frame streams are no TD affordance (no operation type says "watch"): the TD
        # links each, as a live alternate view of the Thing. Served over HTTP only.
        td["links"] = [{"rel": "alternate", "href": f"{name}/{spec.name}",
                        "type": STREAM_LINK_TYPE} for spec in affordances.streams.values()]
    return td


def _property(spec: PropertySpec, forms: list[Form]) -> dict[str, Any]:
    out = spec.schema.to_json()
    if spec.title:
        out["title"] = spec.title
    out["observable"] = spec.observable and any("observeproperty" in f.op for f in forms)
    out["forms"] = [form.to_json() for form in forms]
    return out


def _action(spec: ActionSpec, forms: list[Form]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.title:
        out["title"] = spec.title
    if spec.description:
        out["description"] = spec.description
    if spec.input_schema is not None:
        out["input"] = spec.input_schema.to_json()
    if spec.output_schema is not None:
        out["output"] = spec.output_schema.to_json()
    out["safe"] = spec.safe
    out["idempotent"] = spec.idempotent
    if any("{id}" in form.href for form in forms):
        out["uriVariables"] = {"id": {"type": "string", "description": "an invocation id"}}
    out["forms"] = [form.to_json() for form in forms]
    return out


def _event(spec: EventSpec, forms: list[Form]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.title:
        out["title"] = spec.title
    if spec.description:
        out["description"] = spec.description
    if spec.schema is not None:
        out["data"] = spec.schema.to_json()
    out["forms"] = [form.to_json() for form in forms]
    return out
