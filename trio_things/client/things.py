"""A Thing as its Thing Description offers it: read, write, observe, subscribe, invoke.

Every operation looks its forms up in the TD (:mod:`trio_things.client.forms`), picks
the binding to perform it in (:func:`~trio_things.client.forms.choose_binding`), and
uses that binding's first form. Without a preference (``ClientOptions.prefer``), the
binding of the first form in TD order the client speaks wins, except that between
HTTP and WebSocket the choice stays what it was before MQTT: reads and writes over HTTP
(one request, no socket to keep open), invocations over WebSocket (their status is
pushed, nobody polls):

================== ============================================================
operation          forms used, in order of preference
================== ============================================================
read, write        HTTP(S); else the Web Thing Protocol over WebSocket; MQTT
                   where its form comes first in the TD, or is the only one
read_all           HTTP ``readallproperties``; else WebSocket; else one read
                   per property
observe, subscribe WebSocket ``webthingprotocol`` (pushed, one socket for all);
                   MQTT where its form comes first, or is the only one
invoke             WebSocket (status pushed as it changes); else HTTP, the
                   LabThings form first (201 with a pollable invocation); the
                   response decides whether it is an invocation or the output.
                   ``ClientOptions.actions_over="http"`` puts HTTP first. MQTT
                   where its form comes first, or is the only one
query, cancel      for a WebSocket invocation, WebSocket; else HTTP forms, else
                   the invocation's own link (an MQTT invocation too)
================== ============================================================

``ClientOptions.prefer`` puts bindings first: ``prefer=("mqtt",)`` performs every
operation the TD has an MQTT form for through the broker
(:mod:`trio_things.client.mqtt`).

A name the TD does not list raises :class:`~trio_things.client.errors.NotFound`
before anything is sent, naming what the Thing does have.

One module, though long: every operation is the same three steps (find the form, speak
its protocol, type the answer) over the same TD, session and HTTP client.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Literal, TypeVar, overload

import attrs
import orjson

from trio_things.client.actions import (
    ActionStatus,
    Invocation,
    State,
    looks_like_invocation,
)
from trio_things.client.blobs import RemoteBlob, blob_link
from trio_things.client.errors import (
    InvalidValue,
    NotFound,
    NotWritable,
    ServerError,
    UnsupportedOperation,
    error_for_problem,
    problem_from_json,
)
from trio_things.client.forms import (
    Binding,
    Form,
    Kind,
    affordance_forms,
    base_url,
    choose_binding,
    form_for,
    http_form,
    labthings_invoke_first,
    thing_forms,
    wtp_form,
)
from trio_things.client.http import HttpClient, HttpResponse
from trio_things.client.mqtt import Broker, MqttClient, MqttInvocation, MqttSource
from trio_things.client.observation import Observation
from trio_things.client.options import ClientOptions
from trio_things.client.session import Session
from trio_things.client.values import JsonValue, from_json, to_json

__all__ = ["ConsumedThing"]

T = TypeVar("T")
Spawn = Callable[[Callable[[], Awaitable[None]]], None]

_KIND_NAMES: Final[dict[Kind, str]] = {
    "properties": "property", "actions": "action", "events": "event"}
_TEMPLATE: Final = re.compile(r"\{[^}]*\}")
_MISSING: Final[Any] = object()


def _identity(value: JsonValue) -> JsonValue:
    return value


class ConsumedThing:
    """One Thing, consumed through its Thing Description.

    Made by :func:`~trio_things.client.connect` or :meth:`Client.consume`; usable while
    that client is open. Every network wait is bounded by ``ClientOptions.timeout``
    and raises :class:`~trio_things.client.errors.Timeout` past it; for a tighter
    bound on one call, wrap it in ``trio.fail_after``, the Trio way.
    """

    def __init__(self, *, td: Mapping[str, Any], url: str, http: HttpClient,
                 session_for: Callable[[str], Session] | None, spawn: Spawn,
                 options: ClientOptions, mqtt: MqttClient | None = None) -> None:
        self._td = td
        self._url = url
        self._http = http
        self._session_for = session_for
        self._spawn = spawn
        self._options = options
        self._mqtt = mqtt

    # ------------------------------------------------------------------ the description

    @property
    def td(self) -> Mapping[str, Any]:
        """The Thing Description, as fetched."""
        return self._td

    @property
    def url(self) -> str:
        """Where the TD was fetched from (after redirects)."""
        return self._url

    @property
    def title(self) -> str:
        """The TD's ``title`` (or its URL when it has none)."""
        title = self._td.get("title")
        return title if isinstance(title, str) else self._url

    @property
    def id(self) -> str | None:
        """The TD's ``id``, if it has one."""
        identifier = self._td.get("id")
        return identifier if isinstance(identifier, str) else None

    @property
    def properties(self) -> Mapping[str, Mapping[str, Any]]:
        """The TD's property affordances, by name."""
        return self._affordances("properties")

    @property
    def actions(self) -> Mapping[str, Mapping[str, Any]]:
        """The TD's action affordances, by name."""
        return self._affordances("actions")

    @property
    def events(self) -> Mapping[str, Mapping[str, Any]]:
        """The TD's event affordances, by name."""
        return self._affordances("events")

    def _affordances(self, kind: Kind) -> Mapping[str, Mapping[str, Any]]:
        affordances = self._td.get(kind)
        if not isinstance(affordances, dict):
            return {}
        return {k: v for k, v in affordances.items() if isinstance(v, dict)}

    def __repr__(self) -> str:
        return f"<ConsumedThing {self.title!r} at {self._url}>"

    # ------------------------------------------------------------------ properties

    @overload
    async def read(self, name: str) -> JsonValue: ...
    @overload
    async def read(self, name: str, type_: type[T]) -> T: ...

    async def read(self, name: str, type_: type[Any] | None = None) -> Any:
        """The property's value (structured as ``type_`` if given; a blob's link as
        a :class:`~trio_things.client.RemoteBlob` with ``type_=RemoteBlob``).

        Raises:
            NotFound: the Thing has no such property.
            trio_things.client.errors.InvalidValue: the value does not fit ``type_``.
        """
        forms = self._forms("properties", name)
        what = f"property {name!r}"
        chosen = self._choose(forms, "readproperty", established=("http", "websocket"))
        if chosen is None:
            raise self._unsupported("readproperty", what)
        binding, form = chosen
        if binding == "http":
            response = await self._http.request(form.method_for("readproperty"), form.href)
            self._check(response, "readproperty", what)
            value = response.json()
        elif binding == "websocket":
            message = await self._session(form).request(
                "readproperty", thing_id=self._thing_id, name=name, what=what)
            value = message.body.get("value")
        else:
            value = await self._broker(form).read(form, what=what)
        return self._convert(value, type_, what)

    async def write(self, name: str, value: object) -> None:
        """Write the property. ``value`` may be anything trio-things' converter turns
        into JSON (attrs instances, datetimes, ...).

        Raises:
            NotFound: the Thing has no such property.
            NotWritable: it is read-only.
            trio_things.client.errors.InvalidValue: the server refused the value
                (``problem.detail`` says why).
        """
        forms = self._forms("properties", name)
        what = f"property {name!r}"
        data = to_json(value)
        chosen = self._choose(forms, "writeproperty", established=("http", "websocket"))
        if chosen is None:
            if not any("writeproperty" in f.op for f in forms) or self.properties[name].get(
                    "readOnly") is True:
                raise NotWritable(f"{what} of {self.title} is read-only")
            raise self._unsupported("writeproperty", what)
        binding, form = chosen
        if binding == "http":
            response = await self._http.request(form.method_for("writeproperty"), form.href,
                                                json=data, send_body=True)
            self._check(response, "writeproperty", what)
        elif binding == "websocket":
            await self._session(form).request(
                "writeproperty", thing_id=self._thing_id, name=name, members={"value": data},
                what=what)
        else:
            await self._broker(form).write(form, data, what=what)

    async def read_all(self) -> dict[str, JsonValue]:
        """Every readable property's value, by name."""
        forms = thing_forms(self._td, self._url)
        what = f"the properties of {self.title}"
        if (form := http_form(forms, "readallproperties")) is not None:
            response = await self._http.request(form.method_for("readallproperties"),
                                                form.href)
            self._check(response, "readallproperties", what)
            values = response.json()
        elif (form := self._wtp(forms, "readallproperties")) is not None:
            message = await self._session(form).request(
                "readallproperties", thing_id=self._thing_id, what=what)
            values = message.body.get("values")
        else:
            return {name: await self.read(name)
                    for name, affordance in self.properties.items()
                    if affordance.get("writeOnly") is not True}
        if not isinstance(values, dict):
            raise ServerError(f"{what}: the server answered {type(values).__name__}, "
                              f"not an object")
        return values

    # ------------------------------------------------------------------ notifications

    @overload
    def observe(self, name: str) -> Observation[JsonValue]: ...
    @overload
    def observe(self, name: str, type_: type[T]) -> Observation[T]: ...

    def observe(self, name: str, type_: type[Any] | None = None) -> Observation[Any]:
        """The property's values as they change, starting with its current value; use
        as ``async with thing.observe(name) as values: async for value in values``.

        Raises (here, before anything is sent): NotFound, UnsupportedOperation (the TD
        has no ``webthingprotocol`` or MQTT form observing it). Entering may raise what
        the server (or the broker) answers.
        """
        forms = self._forms("properties", name)
        what = f"property {name!r}"
        chosen = self._choose(forms, "observeproperty", established=("websocket",),
                              pushed=True)
        if chosen is None:
            if self.properties[name].get("observable") is False:
                raise UnsupportedOperation(f"{what} of {self.title} is not observable")
            raise self._unsupported("observeproperty", what)
        return Observation(session=self._source(*chosen, "property"),
                           operation="observeproperty", thing_id=self._thing_id, name=name,
                           convert=self._converter(type_, what), coalesce=True,
                           buffer=self._options.event_buffer)

    @overload
    def subscribe(self, name: str) -> Observation[JsonValue]: ...
    @overload
    def subscribe(self, name: str, type_: type[T]) -> Observation[T]: ...

    def subscribe(self, name: str, type_: type[Any] | None = None) -> Observation[Any]:
        """The event's payloads as it is emitted (an event has no current value, so
        nothing comes before the next emission); use like :meth:`observe`."""
        forms = self._forms("events", name)
        what = f"event {name!r}"
        chosen = self._choose(forms, "subscribeevent", established=("websocket",),
                              pushed=True)
        if chosen is None:
            raise self._unsupported("subscribeevent", what)
        return Observation(session=self._source(*chosen, "event"),
                           operation="subscribeevent", thing_id=self._thing_id, name=name,
                           convert=self._converter(type_, what), coalesce=False,
                           buffer=self._options.event_buffer)

    # ------------------------------------------------------------------ actions

    async def invoke(self, name: str, input: object = _MISSING, /,
                     **arguments: object) -> Invocation:
        """Start the action and return its :class:`Invocation` handle.

        The input is either ``input`` (any JSON-able value, for an action whose input
        is not an object) or the keyword ``arguments`` (``invoke("ramp", to=30)``).
        Returns once the server accepted the invocation (or, over a form that answers
        with the output, once the action ended: then bounded by the timeout).

        Raises:
            NotFound: no such action.
            trio_things.client.errors.InvalidValue: the server refused the input; no
                invocation was made.
        """
        forms = self._forms("actions", name)
        what = f"action {name!r}"
        if input is not _MISSING and arguments:
            raise TypeError("pass the input either positionally or as keywords, not both")
        if input is not _MISSING:
            has_input, data = True, to_json(input)
        elif arguments:
            has_input, data = True, to_json(arguments)
        else:  # no arguments: {} for an action taking an object, as LabThings expects
            schema = self.actions[name].get("input")
            has_input = isinstance(schema, dict) and schema.get("type") == "object"
            data = {} if has_input else None
        candidates = labthings_invoke_first(forms, self._url, name)
        established: tuple[Binding, ...] = (
            ("http", "websocket") if self._options.actions_over == "http"
            else ("websocket", "http"))
        chosen = self._choose(forms, "invokeaction", established=established)
        if chosen is not None and chosen[0] == "websocket":
            return await self._invoke_wtp(name, chosen[1], forms,
                                          data if has_input else _MISSING)
        if chosen is not None and chosen[0] == "mqtt":
            return await self._invoke_mqtt(name, chosen[1], forms,
                                           data if has_input else _MISSING)
        if chosen is None or not candidates:
            raise self._unsupported("invokeaction", what)
        form = candidates[0]
        response = await self._http.request(form.method_for("invokeaction"), form.href,
                                            json=data, send_body=has_input)
        invocation = Invocation(action=name, channel=_ActionChannel(self, name, forms, None),
                                options=self._options, spawn=self._spawn,
                                blob_of=self._blob_of)
        body = response.json_or_text() if response.body else None
        if response.status in (201, 202) or (response.ok and looks_like_invocation(body)):
            invocation.update(ActionStatus.from_invocation(
                body, action=name, url=response.url, location=response.headers.get("location")))
            invocation.start_polling_if_needed(pushed=False)
        elif response.ok:
            invocation.update(ActionStatus(id="", action=name, state=State.COMPLETED,
                                           output=body))
        elif response.status >= 500:  # a form that waits answers a failure with its error
            invocation.update(ActionStatus(id="", action=name, state=State.FAILED,
                                           error=problem_from_json(body, response.status)))
        else:
            self._check(response, "invokeaction", what)
        return invocation

    async def _invoke_wtp(self, name: str, form: Form, forms: list[Form],
                          data: JsonValue) -> Invocation:
        session = self._session(form)

        def release() -> None:  # the invocation ended: no more notifications for it
            session.release(invocation)

        channel = _ActionChannel(self, name, forms, session)
        invocation = Invocation(action=name, channel=channel, options=self._options,
                                spawn=self._spawn, on_end=release, blob_of=self._blob_of)
        members: dict[str, JsonValue] = {} if data is _MISSING else {"input": data}
        message = await session.invoke(thing_id=self._thing_id, name=name, members=members,
                                       sink=invocation)
        status = ActionStatus.from_wtp(message.body.get("status"), action=name)
        # The Web Thing Protocol names no URL; an HTTP queryaction form gives one, where
        # the invocation can be asked for later (by anyone: a browser, curl).
        invocation.update(attrs.evolve(status, href=channel.query_url(status)))
        return invocation

    async def _invoke_mqtt(self, name: str, form: Form, forms: list[Form],
                           data: JsonValue) -> Invocation:
        """Publish the invocation; the server answers 201 (accepted) and 200 (ended) on
        our response topic (:class:`~trio_things.client.mqtt.MqttInvocation`)."""
        channel = _ActionChannel(self, name, forms, None)
        follower = MqttInvocation(self._broker(form), action=name,
                                  base=base_url(self._td, self._url),
                                  can_query=channel.can_query)
        invocation = Invocation(action=name, channel=channel, options=self._options,
                                spawn=self._spawn, on_end=follower.release,
                                blob_of=self._blob_of)
        follower.follow(invocation)
        payload = b"" if data is _MISSING else orjson.dumps(data)
        await follower.start(form, payload, what=f"action {name!r}")
        return invocation

    # ------------------------------------------------------------------ blobs

    def blob(self, link: object) -> RemoteBlob:
        """The blob a link names (``{"href": ..., "media_type": ...}``, a property's
        value, say), to download through this client; its ``href`` is taken relative
        to the TD's ``base``. :class:`~trio_things.client.errors.InvalidValue` for
        anything else."""
        blob = self._blob_of(link)
        if blob is None:
            raise InvalidValue(f"{link!r:.80} is no blob link (an object with a string "
                               "href and media_type)")
        return blob

    def _blob_of(self, value: object) -> RemoteBlob | None:
        link = blob_link(value)
        if link is None:
            return None
        base = self._td.get("base")
        base = urllib.parse.urljoin(self._url, base) if isinstance(base, str) else self._url
        return RemoteBlob(href=urllib.parse.urljoin(base, link[0]), media_type=link[1],
                          http=self._http)

    # ------------------------------------------------------------------ helpers

    @property
    def _thing_id(self) -> str:
        """The Web Thing Protocol's ``thingID``: the TD's ``id``, else its URL."""
        return self.id or self._url

    def _forms(self, kind: Kind, name: str) -> list[Form]:
        forms = affordance_forms(self._td, self._url, kind, name)
        if forms is None:
            names = ", ".join(self._affordances(kind)) or "none"
            raise NotFound(f"{self.title} has no {_KIND_NAMES[kind]} {name!r} "
                           f"(its {kind}: {names})")
        return forms

    def _wtp(self, forms: list[Form], operation: str) -> Form | None:
        return None if self._session_for is None else wtp_form(forms, operation)

    def _choose(self, forms: list[Form], operation: str, *,
                established: tuple[Binding, ...], pushed: bool = False
                ) -> tuple[Binding, Form] | None:
        """The binding to perform ``operation`` in and its form (see the module);
        ``pushed``: an observation, which plain HTTP does not carry."""
        speaks: set[Binding] = set() if pushed else {"http"}
        if self._session_for is not None:
            speaks.add("websocket")
        if self._mqtt is not None:
            speaks.add("mqtt")
        binding = choose_binding(forms, operation, speaks=speaks, prefer=self._options.prefer,
                                 established=established)
        form = None if binding is None else form_for(forms, operation, binding)
        if binding is None or form is None:
            return None
        return binding, form

    def _source(self, binding: Binding, form: Form, kind: Literal["property", "event"]
                ) -> Session | MqttSource:
        """Where an observation is made: the WebSocket session, or the broker."""
        if binding == "mqtt":
            return MqttSource(self._broker(form), form, kind=kind)
        return self._session(form)

    def _broker(self, form: Form) -> Broker:
        assert self._mqtt is not None
        return self._mqtt.broker(form)

    def _session(self, form: Form) -> Session:
        assert self._session_for is not None
        return self._session_for(urllib.parse.urldefrag(form.href).url)

    def _unsupported(self, operation: str, what: str) -> UnsupportedOperation:
        websocket = "" if self._session_for is not None else " (WebSocket is disabled)"
        return UnsupportedOperation(
            f"the TD of {self.title} has no form for {operation} on {what} that this "
            f"client speaks{websocket}")

    @staticmethod
    def _check(response: HttpResponse, operation: str, what: str) -> None:
        if not response.ok:
            raise error_for_problem(problem_from_json(response.json_or_text(), response.status),
                                    operation=operation, what=what)

    @staticmethod
    def _converter(type_: type[Any] | None, what: str) -> Callable[[JsonValue], Any]:
        if type_ is None:
            return _identity
        return lambda value: from_json(value, type_, what=what)

    def _convert(self, value: JsonValue, type_: type[Any] | None, what: str) -> Any:
        if type_ is RemoteBlob:
            return self.blob(value)
        return self._converter(type_, what)(value)


class _ActionChannel:
    """Query and cancel one invocation through the forms of its action."""

    def __init__(self, thing: ConsumedThing, action: str, forms: list[Form],
                 session: Session | None) -> None:
        self._thing = thing
        self._action = action
        self._forms = forms
        self._session = session  # set when invoked over this WebSocket session

    async def query(self, status: ActionStatus) -> ActionStatus:
        what = f"invocation {status.id} of {self._action!r}"
        if (url := self._http_url("queryaction", status)) is not None:
            response = await self._thing._http.request("GET", url)
            ConsumedThing._check(response, "queryaction", what)
            return ActionStatus.from_invocation(response.json(), action=self._action,
                                                url=response.url)
        message = await self._wtp_session("queryaction", what).request(
            "queryaction", thing_id=self._thing._thing_id, members={"actionID": status.id},
            what=what)
        return ActionStatus.from_wtp(message.body.get("status"), action=self._action)

    async def cancel(self, status: ActionStatus) -> ActionStatus | None:
        what = f"invocation {status.id} of {self._action!r}"
        if self._session is not None and wtp_form(self._forms, "cancelaction") is not None:
            await self._session.request("cancelaction", thing_id=self._thing._thing_id,
                                        members={"actionID": status.id}, what=what)
            return None
        if (url := self._http_url("cancelaction", status)) is not None:
            form = http_form(self._forms, "cancelaction")
            method = form.method_for("cancelaction") if form is not None else "DELETE"
            response = await self._thing._http.request(method, url)
            ConsumedThing._check(response, "cancelaction", what)
            body = response.json_or_text() if response.body else None
            if isinstance(body, dict):
                return ActionStatus.from_invocation(body, action=self._action, url=response.url)
            return None
        await self._wtp_session("cancelaction", what).request(
            "cancelaction", thing_id=self._thing._thing_id, members={"actionID": status.id},
            what=what)
        return None

    def can_query(self, status: ActionStatus) -> bool:
        """Whether the invocation's status can be asked for (polled, when what pushed
        it is lost): over HTTP (a ``queryaction`` form, or its own URL) or WebSocket."""
        return (self._http_url("queryaction", status) is not None
                or self._thing._wtp(self._forms, "queryaction") is not None)

    def query_url(self, status: ActionStatus) -> str | None:
        """The invocation's URL over HTTP, if the TD offers a ``queryaction`` form with
        a URI variable (or the status named one)."""
        form = http_form(self._forms, "queryaction")
        if form is not None and status.id and _TEMPLATE.search(form.href):
            return _TEMPLATE.sub(urllib.parse.quote(status.id, safe=""), form.href)
        return status.href

    def _http_url(self, operation: str, status: ActionStatus) -> str | None:
        """The TD's HTTP form for ``operation`` with the id in its URI variable; else
        the invocation's own URL (the LabThings convention: GET it, DELETE it)."""
        form = http_form(self._forms, operation)
        if form is not None and status.id:
            return _TEMPLATE.sub(urllib.parse.quote(status.id, safe=""), form.href)
        return status.href

    def _wtp_session(self, operation: str, what: str) -> Session:
        form = self._thing._wtp(self._forms, operation)
        if form is None:
            raise UnsupportedOperation(f"no form for {operation} on {what}")
        return self._thing._session(form)

