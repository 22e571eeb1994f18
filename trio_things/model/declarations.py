"""Properties, actions and events as a Thing class declares them: the descriptors.

A descriptor is what the user writes in the class body (``tt.property(...)``,
``@tt.action``, ``tt.event(...)``). On an instance, it reads and writes the stored value
or emits the event; when the class is complete, it *binds* to a frozen spec
(:mod:`trio_things.model.affordances`), which is all the rest of trio-things reads.

One job in one module, though it is long: the three kinds share how a descriptor binds
and what it needs of its Thing (:class:`AffordanceOwner`), and most of the length is the
typed overloads that let ``mypy`` see ``thing.count`` as an ``int``.
"""

from __future__ import annotations

import builtins
import inspect
import typing
from collections.abc import Callable
from typing import Any, Final, Generic, Protocol, TypeVar, Unpack, overload

import attrs

from trio_things.errors import ThingDefinitionError, unknown_names
from trio_things.model.affordances import (
    ActionContext,
    ActionSpec,
    EventSpec,
    ParameterSpec,
    PropertySpec,
    StreamSpec,
)
from trio_things.model.docstrings import description_from_docstring
from trio_things.model.schema import DataSchema, Schema, SchemaTerms, schema_for

__all__ = [
    "Action",
    "AffordanceOwner",
    "BoundEvent",
    "BoundFrameStream",
    "DataProperty",
    "Event",
    "FrameStream",
    "FunctionalProperty",
    "Misdeclaration",
    "PropertyDecorator",
    "action",
    "event",
    "frame_stream",
    "property",
    "setting",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class _StoredValues(Protocol):
    values: dict[str, Any]


class AffordanceOwner(Protocol):
    """What the descriptors here need of the Thing that holds them.

    :class:`trio_things.model.thing.Thing` is the one implementation. A protocol, so that
    this module need not import ``thing.py``, which imports this one (no import cycle,
    not even for the type checker).
    """

    @property
    def _tt_state(self) -> _StoredValues: ...

    def _tt_set_from_python(self, spec: PropertySpec, value: Any) -> None: ...

    def _tt_emit(self, spec: EventSpec, payload: Any) -> None: ...

    def _tt_publish_frame(self, spec: StreamSpec, frame: bytes) -> None: ...

    def _tt_watched(self, spec: StreamSpec) -> bool: ...


# --------------------------------------------------------------------------- properties


class Misdeclaration:
    """What ``tt.property(...)`` returns when what it was given declares no property.

    It cannot raise there: it does not know the class or the attribute yet. The class
    body keeps this object instead, and the Thing class, when it is defined, raises a
    :class:`~trio_things.errors.ThingDefinitionError` that names both, with
    :meth:`problem`. Calling it (as a decorator) returns it unchanged, for the same end.
    """

    def __init__(self, problem: str) -> None:
        self._problem = problem

    def problem(self, name: str) -> str:
        """What is wrong with the declaration of ``name``, and how to fix it."""
        return self._problem

    def __call__(self, getter: Callable[[Any], Any]) -> Misdeclaration:
        return self


class PropertyDecorator:
    """``tt.property(...)`` without ``default=``: a decorator that makes a getter a
    property. Left in a class body undecorated, it declares nothing, and the Thing class
    refuses it (a property with neither a default nor a getter would have no value)."""

    def __init__(self, *, observable: bool, terms: Schema) -> None:
        self._observable = observable
        self._terms = terms

    def problem(self, name: str) -> str:
        """Why this, left in a class body as ``name``, declares nothing, and the fix."""
        return ("tt.property(...) without default= declares no property: give it a "
                f"default (`{name}: float = tt.property(default=0.0, ...)`), or put it "
                f"above a getter as a decorator (`@tt.property(...)` then "
                f"`def {name}(self) -> float: ...`)")

    def __call__(self, getter: Callable[[Any], T]) -> FunctionalProperty[T]:
        return FunctionalProperty(getter, readonly=True, observable=self._observable,
                                  terms=self._terms)


class _PropertyBase:
    name: str
    spec: PropertySpec
    setting = False  # only a DataProperty may be a setting

    def __init__(self, *, readonly: bool, observable: bool, terms: Schema) -> None:
        self.readonly = readonly
        self.observable = observable
        self.terms = terms

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def bind(self, value_type: Any, description: str | None) -> PropertySpec:
        schema = schema_for(value_type, self.terms)
        if schema.description is None and description is not None:
            schema = attrs.evolve(schema, description=description)
        self.spec = PropertySpec(
            name=self.name,
            value_type=value_type,
            schema=attrs.evolve(schema, read_only=self.readonly),
            readonly=self.readonly,
            observable=self.observable,
            functional=isinstance(self, FunctionalProperty),
            title=schema.title,
            description=schema.description,
            setting=self.setting,
        )
        return self.spec


class DataProperty(_PropertyBase, Generic[T]):
    """A property whose value the server keeps: ``count: int = tt.property(default=0)``.

    Reading it from Thing code returns the stored value; assigning validates the new
    value against the schema (raising :class:`~trio_things.errors.InvalidValue`),
    stores it and notifies observers.
    """

    def __init__(self, *, default: T, readonly: bool, observable: bool, terms: Schema,
                 setting: bool = False) -> None:
        super().__init__(readonly=readonly, observable=observable, terms=terms)
        self.default = default
        self.setting = setting

    def bind(self, value_type: Any, description: str | None) -> PropertySpec:
        spec = super().bind(value_type, description)
        # The default must itself be valid: a bad default is a definition error.
        from trio_things.model.values import unstructure

        try:
            spec.schema.validate(unstructure(self.default, value_type), self.name)
        except ValueError as error:
            raise ThingDefinitionError(f"the default is invalid: {error}") from None
        return spec

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> DataProperty[T]: ...
    @overload
    def __get__(self, obj: AffordanceOwner, objtype: type | None = None) -> T: ...
    def __get__(self, obj: AffordanceOwner | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._tt_state.values[self.name]

    def __set__(self, obj: AffordanceOwner, value: T) -> None:
        obj._tt_set_from_python(self.spec, value)


class FunctionalProperty(_PropertyBase, Generic[T]):
    """A property computed by a getter (and written by a setter), like :func:`property`.

    Use it for values that live in hardware. Getters and setters may block: the server
    calls them from a worker thread. Without a setter the property is read-only. Call
    ``thing.property_changed("name")`` when the hardware value changes on its own, so
    observers hear about it.
    """

    def __init__(
        self,
        getter: Callable[[Any], T],
        *,
        readonly: bool,
        observable: bool,
        terms: Schema,
    ) -> None:
        super().__init__(readonly=readonly, observable=observable, terms=terms)
        self.getter = getter
        self.setter_function: Callable[[Any, T], None] | None = None
        self.__doc__ = getter.__doc__

    def setter(self, setter: Callable[[Any, T], None]) -> FunctionalProperty[T]:
        """Decorate the setter, as with the built-in :func:`property`."""
        self.setter_function = setter
        self.readonly = False
        return self

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> FunctionalProperty[T]: ...
    @overload
    def __get__(self, obj: AffordanceOwner, objtype: type | None = None) -> T: ...
    def __get__(self, obj: AffordanceOwner | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return self.getter(obj)

    def __set__(self, obj: AffordanceOwner, value: T) -> None:
        if self.setter_function is None:
            raise AttributeError(f"property {self.name!r} has no setter")
        obj._tt_set_from_python(self.spec, value)


_MISSING: Any = object()


@overload
def property(getter: Callable[[Any], T], /) -> FunctionalProperty[T]: ...
@overload
def property(
    *,
    default: T,
    readonly: bool = ...,
    observable: bool = ...,
    **terms: Unpack[SchemaTerms],
) -> T: ...
@overload
def property(
    *,
    readonly: bool = ...,
    observable: bool = ...,
    **terms: Unpack[SchemaTerms],
) -> Callable[[Callable[[Any], T]], FunctionalProperty[T]]: ...
def property(
    getter: Callable[[Any], Any] | None = None,
    /,
    *,
    default: Any = _MISSING,
    readonly: bool = False,
    observable: bool = True,
    **terms: Unpack[SchemaTerms],
) -> Any:
    """Declare a property.

    As a field, with its type from the annotation::

        setpoint: float = tt.property(default=20.0, minimum=-50, maximum=150,
                                      unit="degree Celsius")
        '''The temperature the controller aims for.'''   # becomes the description

    As a decorator, for a value computed by a getter (add ``@name.setter`` to make it
    writable); the type comes from the getter's return annotation::

        @tt.property
        def position(self) -> int:
            return self.stage.read_position()

    The keyword arguments after ``observable`` are the TD data-schema terms (see
    :class:`~trio_things.model.schema.Schema`). ``readonly`` stops clients from writing
    the property; Thing code can still assign it.

    Mistakes are refused when the Thing class is defined, naming the class and the
    attribute: a term that does not exist (with the nearest one that does), or a
    property with neither ``default=`` nor a getter.
    """
    unknown = unknown_names(terms, SchemaTerms.__annotations__, what="term")
    if unknown:
        return Misdeclaration(f"tt.property(): {unknown}")
    schema_terms = Schema(**terms)
    if getter is not None:
        return FunctionalProperty(getter, readonly=True, observable=observable,
                                  terms=schema_terms)
    if default is _MISSING:
        return PropertyDecorator(observable=observable, terms=schema_terms)
    return DataProperty(default=default, readonly=readonly, observable=observable,
                        terms=schema_terms)


def setting(
    *,
    default: Any,
    readonly: bool = False,
    observable: bool = True,
    **terms: Unpack[SchemaTerms],
) -> Any:
    """Declare a *setting*: a property the server keeps on disk, so that it survives a
    restart (a calibration, an exposure, a stage's soft limits)::

        exposure: float = tt.setting(default=10.0, minimum=0.1, maximum=1000,
                                     unit="millisecond")
        '''How long the sensor collects light for each frame.'''

    It is a property in every other way: clients read, write and observe it, and Thing
    code assigns it. The server loads the stored values before it enters the Thing and
    saves each change, atomically, in a worker thread (``docs/settings.md``). The
    default is used when nothing is stored, or when what is stored no longer validates.
    Assign a new value to save it: a list or dict changed in place is not seen.
    """
    unknown = unknown_names(terms, SchemaTerms.__annotations__, what="term")
    if unknown:
        return Misdeclaration(f"tt.setting(): {unknown}")
    return DataProperty(default=default, readonly=readonly, observable=observable,
                        terms=Schema(**terms), setting=True)


# --------------------------------------------------------------------------- actions


#: Invocations of one thread action that run at once on one Thing, unless the action
#: says otherwise: each holds a worker thread for as long as it runs, and a client that
#: could start any number of them could take every thread the server has.
DEFAULT_THREAD_CONCURRENCY: Final = 4
#: Invocations of one action that may wait ``pending`` for a free slot, unless the
#: action says otherwise; one more is refused with 429.
DEFAULT_MAX_QUEUED: Final = 100


class _Default:
    """The ``max_concurrent`` of an action that did not set one: decided at binding,
    when it is known whether the action runs in a thread."""

    def __repr__(self) -> str:
        return "DEFAULT"


_DEFAULT: Final = _Default()


def _check_limits(max_concurrent: int | _Default | None, max_queued: int) -> None:
    if max_concurrent is not None and not isinstance(max_concurrent, _Default) and (
            not isinstance(max_concurrent, int) or isinstance(max_concurrent, bool)
            or max_concurrent < 1):
        raise ThingDefinitionError(
            f"max_concurrent must be a positive integer or None, not {max_concurrent!r}")
    if not isinstance(max_queued, int) or isinstance(max_queued, bool) or max_queued < 0:
        raise ThingDefinitionError(
            f"max_queued must be an integer of at least 0, not {max_queued!r}")


class Action(Generic[F]):
    """An action: a method clients invoke. Calling it from Python calls it directly."""

    name: str
    spec: ActionSpec

    def __init__(self, function: F, *, safe: bool, idempotent: bool,
                 title: str | None, description: str | None,
                 max_concurrent: int | _Default | None = _DEFAULT,
                 max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        self.function = function
        self.safe = safe
        self.idempotent = idempotent
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.title = title
        self.description = description or description_from_docstring(function.__doc__)
        self.__doc__ = function.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Action[F]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> F: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return self.function.__get__(obj, objtype)

    def bind(self) -> ActionSpec:
        _check_limits(self.max_concurrent, self.max_queued)  # here, the error names the action
        function = self.function
        try:
            hints = typing.get_type_hints(function, include_extras=True)
        except NameError as error:
            raise ThingDefinitionError(f"cannot resolve a type hint: {error}") from None
        signature = inspect.signature(function)
        parameters = []
        context_parameter = None
        for index, parameter in enumerate(signature.parameters.values()):
            if index == 0:
                continue  # self
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD,
                                  parameter.POSITIONAL_ONLY):
                raise ThingDefinitionError(
                    f"parameter {parameter.name!r}: actions take named parameters only")
            if parameter.name not in hints:
                raise ThingDefinitionError(
                    f"parameter {parameter.name!r} needs a type annotation")
            hint = hints[parameter.name]
            if hint is ActionContext:
                context_parameter = parameter.name
                continue
            required = parameter.default is parameter.empty
            schema = schema_for(hint)
            if not required:
                from trio_things.model.values import unstructure

                schema = attrs.evolve(schema, default=unstructure(parameter.default),
                                      has_default=True)
            parameters.append(ParameterSpec(
                name=parameter.name, value_type=hint, schema=schema, required=required,
                default=None if required else parameter.default))
        input_schema = None
        if parameters:
            input_schema = DataSchema(
                type="object",
                properties=tuple((p.name, p.schema) for p in parameters),
                required=tuple(p.name for p in parameters if p.required),
            )
        output_type = hints.get("return", None)
        output_schema = None
        if output_type not in (None, type(None)):
            output_schema = schema_for(output_type)
        is_async = inspect.iscoroutinefunction(function)
        max_concurrent = self.max_concurrent
        if isinstance(max_concurrent, _Default):
            # A task costs a few KiB and takes nothing from anyone: the bounds on the
            # invocations kept are enough. A thread is scarce.
            max_concurrent = None if is_async else DEFAULT_THREAD_CONCURRENCY
        self.spec = ActionSpec(
            name=self.name,
            parameters=tuple(parameters),
            input_schema=input_schema,
            output_type=output_type,
            output_schema=output_schema,
            is_async=is_async,
            context_parameter=context_parameter,
            safe=self.safe,
            idempotent=self.idempotent,
            title=self.title,
            description=self.description,
            max_concurrent=max_concurrent,
            max_queued=self.max_queued,
        )
        return self.spec


@overload
def action(function: F, /) -> Action[F]: ...
@overload
def action(
    *,
    safe: bool = ...,
    idempotent: bool = ...,
    title: str | None = ...,
    description: str | None = ...,
    max_concurrent: int | _Default | None = ...,
    max_queued: int = ...,
) -> Callable[[F], Action[F]]: ...
def action(
    function: F | None = None,
    /,
    *,
    safe: bool = False,
    idempotent: bool = False,
    title: str | None = None,
    description: str | None = None,
    max_concurrent: int | _Default | None = _DEFAULT,
    max_queued: int = DEFAULT_MAX_QUEUED,
) -> Action[F] | Callable[[F], Action[F]]:
    """Declare an action, as ``@tt.action`` or ``@tt.action(title=...)``.

    The input schema comes from the keyword parameters' annotations (add constraints
    with ``Annotated[float, tt.Schema(minimum=0)]``), the output schema from the return
    annotation, the description from the docstring. ``async def`` actions run as tasks
    in the server's nursery; plain ``def`` actions run in a worker thread. Both are
    cancellable (see :class:`ActionContext`).

    ``max_concurrent`` invocations run at once on one Thing (``None``: any number);
    by default 4 for a plain ``def`` action, since each holds a worker thread while it
    runs, and any number for an ``async def`` one. Up to ``max_queued`` (100) more wait
    ``pending``, started in the order they came; one more is refused with 429, so a
    client learns at once that the action is busy rather than queueing for hours. Raises
    :class:`~trio_things.errors.ThingDefinitionError` for a ``max_concurrent`` below 1
    or a ``max_queued`` below 0.
    """

    def decorate(f: F) -> Action[F]:
        return Action(f, safe=safe, idempotent=idempotent, title=title,
                      description=description, max_concurrent=max_concurrent,
                      max_queued=max_queued)

    if function is not None:
        return decorate(function)
    return decorate


# --------------------------------------------------------------------------- events


class Event(Generic[T]):
    """An event a Thing emits: ``overheated = tt.event(Reading)``.

    On an instance it is a :class:`BoundEvent`: ``self.overheated.emit(Reading(...))``.
    """

    name: str
    spec: EventSpec

    def __init__(self, payload_type: type[T] | Any, *, title: str | None,
                 description: str | None) -> None:
        self.payload_type = payload_type
        self.title = title
        self.description = description

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def bind(self, description: str | None) -> EventSpec:
        schema = None
        if self.payload_type not in (None, type(None)):
            schema = schema_for(self.payload_type)
        self.spec = EventSpec(
            name=self.name,
            payload_type=self.payload_type,
            schema=schema,
            title=self.title,
            description=self.description or description,
        )
        return self.spec

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Event[T]: ...
    @overload
    def __get__(self, obj: AffordanceOwner, objtype: type | None = None) -> BoundEvent[T]: ...
    def __get__(self, obj: AffordanceOwner | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return BoundEvent(obj, self.spec)


@attrs.frozen
class BoundEvent(Generic[T]):
    """An event of one Thing instance; :meth:`emit` sends it to every subscriber."""

    thing: AffordanceOwner
    spec: EventSpec

    def emit(self, payload: T | None = None) -> None:
        """Validate ``payload`` and hand it to subscribers. Never blocks.

        Safe to call from the Trio thread and from worker threads. Raises
        :class:`~trio_things.errors.InvalidValue` if the payload does not fit the
        event's type, so a bad payload fails in the code that made it.
        """
        self.thing._tt_emit(self.spec, payload)


def event(payload_type: type[T] | Any = None, *, title: str | None = None,
          description: str | None = None) -> Event[T]:
    """Declare an event whose payload is a ``payload_type`` (``None``: no payload)."""
    return Event(payload_type, title=title, description=description)


# --------------------------------------------------------------------------- frame streams


class FrameStream:
    """A live stream of frames, a camera's say: ``video = tt.frame_stream()``.

    On an instance it is a :class:`BoundFrameStream`: ``self.video.publish(jpeg)``. The
    server serves it at ``/{thing}/{name}`` as ``multipart/x-mixed-replace``, which a
    browser's ``<img>`` shows live, and links it from the Thing Description.
    """

    name: str
    spec: StreamSpec

    def __init__(self, *, media_type: str, title: str | None,
                 description: str | None) -> None:
        self.media_type = media_type
        self.title = title
        self.description = description

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def bind(self, description: str | None) -> StreamSpec:
        self.spec = StreamSpec(name=self.name, media_type=self.media_type, title=self.title,
                               description=self.description or description)
        return self.spec

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> FrameStream: ...
    @overload
    def __get__(self, obj: AffordanceOwner, objtype: type | None = None) -> BoundFrameStream: ...
    def __get__(self, obj: AffordanceOwner | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return BoundFrameStream(obj, self.spec)


@attrs.frozen
class BoundFrameStream:
    """A frame stream of one Thing instance."""

    thing: AffordanceOwner
    spec: StreamSpec

    def publish(self, frame: bytes) -> None:
        """Send ``frame`` (one whole image of the stream's media type) to every viewer.
        Never blocks; safe from any thread. Viewers that have not taken the previous
        frame yet get this one instead: the newest, never a backlog. With no viewer, it
        costs nothing (check :attr:`watched` first to skip encoding the frame too)."""
        self.thing._tt_publish_frame(self.spec, frame)

    @builtins.property
    def watched(self) -> bool:
        """Whether anybody views the stream now (a hint, read without a lock: encode a
        frame only when it is true)."""
        return self.thing._tt_watched(self.spec)


def frame_stream(*, media_type: str = "image/jpeg", title: str | None = None,
                 description: str | None = None) -> FrameStream:
    """Declare a stream of frames, each a whole image of ``media_type`` (JPEG: MJPEG)."""
    if "/" not in media_type or any(c in media_type for c in "\r\n;"):
        raise ThingDefinitionError(
            f"tt.frame_stream(): {media_type!r} is not a media type (type/subtype)")
    return FrameStream(media_type=media_type, title=title, description=description)
