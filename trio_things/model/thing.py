"""The :class:`Thing` base class and the :class:`Notifier` seam.

A Thing is a plain Python object: its properties are attributes, its actions methods,
its events emitters. It knows nothing of HTTP, WebSockets or Trio. The server reaches
it through the specs built when the class is defined, and it reaches the server only
through the :class:`Notifier` the server installs when the Thing is added: the one
narrow seam through which property changes and events leave the model.

Subclassing notes
-----------------
* Declare affordances in the class body (see :func:`trio_things.property`,
  :func:`trio_things.action`, :func:`trio_things.event`). A string literal right below
  a property is its description, as in Sphinx.
* ``__init__`` may take whatever your driver needs; calling ``super().__init__()`` is
  good manners but not required.
* Override ``__aenter__``/``__aexit__`` to open and close hardware: the server enters
  every Thing before it serves and exits them on shutdown, in reverse order.
* Override :meth:`Thing.background_task` for work that runs as long as the server does.
* Affordance names may not start with ``_`` and may not be one of
  :data:`RESERVED_NAMES`, which the HTTP layout uses.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import textwrap
import typing
from collections.abc import Mapping
from types import TracebackType
from typing import Any, ClassVar, Final, Protocol, Self

import attrs

from trio_things.errors import ThingDefinitionError
from trio_things.model.affordances import (
    ActionSpec,
    Affordances,
    EventSpec,
    PropertySpec,
    StreamSpec,
)
from trio_things.model.declarations import (
    Action,
    DataProperty,
    Event,
    FrameStream,
    FunctionalProperty,
    Misdeclaration,
    PropertyDecorator,
    _PropertyBase,
)
from trio_things.model.docstrings import description_from_docstring
from trio_things.model.values import structure, unstructure, unstructure_as

__all__ = ["RESERVED_NAMES", "Notifier", "Thing"]

#: Names the HTTP layout uses below ``/{thing}/``, so no affordance may take them.
RESERVED_NAMES: Final = frozenset({"properties", "actions", "events", "ws"})

_NAME_PATTERN: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class Notifier(Protocol):
    """Where a Thing's changes go: the server installs one per Thing.

    Both methods are called synchronously, from whatever thread made the change, with
    a JSON-compatible value already validated. They must never block and never raise.
    """

    def property_changed(self, thing: Thing, name: str, value: Any) -> None:
        """``thing``'s property ``name`` now has the JSON value ``value``."""

    def event_emitted(self, thing: Thing, name: str, data: Any) -> None:
        """``thing`` emitted event ``name`` with the JSON payload ``data``."""

    def frame_published(self, thing: Thing, name: str, frame: bytes) -> None:
        """``thing`` published ``frame`` on its frame stream ``name``."""

    def watched(self, thing: Thing, name: str) -> bool:
        """Whether anybody views ``thing``'s frame stream ``name`` (a hint)."""


class _SilentNotifier:
    """The notifier of a Thing not (yet) served: changes go nowhere."""

    def property_changed(self, thing: Thing, name: str, value: Any) -> None:
        pass

    def event_emitted(self, thing: Thing, name: str, data: Any) -> None:
        pass

    def frame_published(self, thing: Thing, name: str, frame: bytes) -> None:
        pass

    def watched(self, thing: Thing, name: str) -> bool:
        return False


_SILENT: Final = _SilentNotifier()


@attrs.define(eq=False)
class _ThingState:
    """Per-instance state, kept in one attribute so it never collides with user names."""

    values: dict[str, Any]
    notifier: Notifier = _SILENT


class Thing:
    """Base class of every Thing. Its docstring becomes the TD ``description``."""

    #: Every affordance of this class, built when the class is defined.
    affordances: ClassVar[Affordances] = Affordances(properties={}, actions={}, events={})
    #: The TD ``title``; defaults to the class name.
    title: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.affordances = _collect_affordances(cls)

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        """Open resources (hardware, files). The server calls this before serving."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Release what :meth:`__aenter__` opened. Called on shutdown, even after errors."""

    async def background_task(self) -> None:
        """Work that runs as long as the server serves this Thing; returns at once here.

        The server runs it in its nursery after :meth:`__aenter__` and cancels it on
        shutdown. If it raises, the error is logged and the server keeps serving.
        """

    # -------------------------------------------------------------- notifications

    def property_changed(self, name: str) -> None:
        """Tell observers that property ``name`` changed outside of an assignment.

        For functional properties whose value changes in hardware: reads the getter
        (in the calling thread) and notifies with that value.
        """
        spec = self.affordances.properties[name]
        value = getattr(self, name)
        self._tt_state.notifier.property_changed(self, name, unstructure(value, spec.value_type))

    # -------------------------------------------------------------- internals
    # Called by the descriptors and the server; not part of the public API.

    @property
    def _tt_state(self) -> _ThingState:
        # Created on first use, so subclasses need not call ``super().__init__()``.
        state: _ThingState | None = self.__dict__.get("_tt_state_")
        if state is None:
            defaults: dict[str, Any] = {}
            for name, spec in type(self).affordances.properties.items():
                if not spec.functional:
                    descriptor = inspect.getattr_static(type(self), name)
                    assert isinstance(descriptor, DataProperty)
                    defaults[name] = structure(
                        unstructure(descriptor.default, spec.value_type), spec.value_type)
            state = _ThingState(values=defaults)
            self.__dict__["_tt_state_"] = state
        return state

    def _tt_set_from_python(self, spec: PropertySpec, value: Any) -> None:
        """Validate a value assigned by Thing code, store it and notify observers."""
        json_value = unstructure_as(value, spec.value_type, path=spec.name)
        spec.schema.validate(json_value, spec.name)
        given = spec.kept_as_given
        if given is None or not given(value):
            value = structure(json_value, spec.value_type, path=spec.name)
        self._tt_store(spec, value, json_value)

    def _tt_structure_json(self, spec: PropertySpec, json_value: Any) -> Any:
        """Validate a value a client sent and convert it to the property's type, storing
        nothing: so that several values can all be checked before any is written."""
        spec.schema.validate(json_value, spec.name)
        return structure(json_value, spec.value_type, path=spec.name)

    def _tt_store_structured(self, spec: PropertySpec, value: Any) -> None:
        """Store a value from :meth:`_tt_structure_json` and notify observers.

        Observers are told the stored value as a read would return it (a client's
        ``22`` for a float property is ``22.0``), not the client's spelling of it.
        """
        self._tt_store(spec, value, unstructure(value, spec.value_type))

    def _tt_read_json(self, spec: PropertySpec) -> Any:
        """The property's current value as JSON data."""
        return unstructure(getattr(self, spec.name), spec.value_type)

    def _tt_store(self, spec: PropertySpec, value: Any, json_value: Any) -> None:
        if spec.functional:
            descriptor = inspect.getattr_static(type(self), spec.name)
            assert isinstance(descriptor, FunctionalProperty)
            assert descriptor.setter_function is not None
            descriptor.setter_function(self, value)
        else:
            self._tt_state.values[spec.name] = value
        if spec.observable or spec.setting:  # a setting is saved, observed or not
            self._tt_state.notifier.property_changed(self, spec.name, json_value)

    def _tt_emit(self, spec: EventSpec, payload: Any) -> None:
        data = None
        if spec.schema is not None:
            data = unstructure_as(payload, spec.payload_type, path=spec.name)
            spec.schema.validate(data, spec.name)
        self._tt_state.notifier.event_emitted(self, spec.name, data)

    def _tt_publish_frame(self, spec: StreamSpec, frame: bytes) -> None:
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise TypeError(f"{spec.name}: a frame is bytes, not {type(frame).__name__}")
        self._tt_state.notifier.frame_published(self, spec.name, bytes(frame))

    def _tt_watched(self, spec: StreamSpec) -> bool:
        return self._tt_state.notifier.watched(self, spec.name)

    def _tt_set_notifier(self, notifier: Notifier | None) -> None:
        self._tt_state.notifier = _SILENT if notifier is None else notifier



def _collect_affordances(cls: type[Thing]) -> Affordances:
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except NameError as error:
        raise ThingDefinitionError(f"{cls.__qualname__}: cannot resolve {error}") from None
    docs = _attribute_docstrings(cls)
    properties: dict[str, PropertySpec] = {}
    actions: dict[str, ActionSpec] = {}
    events: dict[str, EventSpec] = {}
    streams: dict[str, StreamSpec] = {}
    seen: set[str] = set()
    for klass in reversed(cls.__mro__):
        for name, member in vars(klass).items():
            if isinstance(member, (Misdeclaration, PropertyDecorator)):
                raise ThingDefinitionError(
                    f"{cls.__qualname__}.{name}: {member.problem(name)}")
            if not isinstance(member, (_PropertyBase, Action, Event, FrameStream)):
                if name in seen and klass is cls:
                    properties.pop(name, None)  # overridden by a plain attribute
                    actions.pop(name, None)
                    events.pop(name, None)
                    streams.pop(name, None)
                continue
            seen.add(name)
            where = f"{cls.__qualname__}.{name}"
            _check_name(where, name)
            try:
                if isinstance(member, DataProperty):
                    if name not in hints:
                        raise ThingDefinitionError("needs a type annotation, e.g. `x: float = "
                                                   "tt.property(default=0.0)`")
                    properties[name] = member.bind(hints[name], docs.get(name))
                elif isinstance(member, FunctionalProperty):
                    getter_hints = typing.get_type_hints(member.getter, include_extras=True)
                    if "return" not in getter_hints:
                        raise ThingDefinitionError("the getter needs a return annotation")
                    properties[name] = member.bind(
                        getter_hints["return"], description_from_docstring(member.__doc__))
                elif isinstance(member, Action):
                    actions[name] = member.bind()
                elif isinstance(member, Event):
                    events[name] = member.bind(docs.get(name))
                elif isinstance(member, FrameStream):
                    streams[name] = member.bind(docs.get(name))
            except ThingDefinitionError as error:
                raise ThingDefinitionError(f"{where}: {error}") from None
    return Affordances(properties=properties, actions=actions, events=events,
                       streams=streams)


#: What the attributes of :class:`Thing` itself are for, when an affordance would take
#: one of their names (a property ``title`` would hide the TD's title, and break it).
_THING_ATTRIBUTES: Final = {
    "title": "the TD title of the class",
    "affordances": "the affordances of the class",
    "background_task": "the Thing's background task",
    "property_changed": "the method that announces a changed functional property",
}


def _check_name(where: str, name: str) -> None:
    if name in RESERVED_NAMES:
        raise ThingDefinitionError(
            f"{where}: {name!r} is reserved by the HTTP layout ({sorted(RESERVED_NAMES)})")
    if hasattr(Thing, name):
        what = _THING_ATTRIBUTES.get(name, "an attribute every trio_things.Thing has")
        raise ThingDefinitionError(
            f"{where}: {name!r} is taken by trio_things.Thing itself ({what}); "
            f"give the affordance another name (e.g. {name + '_'!r} or a more specific one)")
    if not _NAME_PATTERN.match(name):
        raise ThingDefinitionError(
            f"{where}: affordance names must start with a letter and use only letters, "
            "digits and underscores")


def _attribute_docstrings(cls: type) -> Mapping[str, str]:
    """Docstrings written below class attributes (``x: int = 1`` then ``'''Doc.'''``).

    Python discards them, so we read them from the source, as Sphinx does. Classes
    without source (defined in a REPL) simply have none.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return {}
    if not tree.body or not isinstance(tree.body[0], ast.ClassDef):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body
    for statement, following in itertools.pairwise(body):
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            name = statement.target.id
        elif (isinstance(statement, ast.Assign) and len(statement.targets) == 1
              and isinstance(statement.targets[0], ast.Name)):
            name = statement.targets[0].id
        else:
            continue
        if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            text = description_from_docstring(following.value.value)
            if text is not None:
                docs[name] = text
    return docs
