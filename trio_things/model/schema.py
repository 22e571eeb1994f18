"""Type hints -> TD 1.1 data schemas, and the validation of JSON values against them.

A Thing's types are the single source of truth: the same :class:`DataSchema` that goes
into the Thing Description is the one every incoming value is checked against, so what
we advertise and what we accept cannot drift apart.

Supported annotations: ``bool``, ``int``, ``float``, ``str``, ``None``, ``Optional[T]``
and unions (``oneOf``), ``Literal[...]`` and :class:`enum.Enum` (``enum``),
``list[T]``/``tuple[T, ...]``/``Sequence[T]`` (``array``), ``dict[str, T]`` (``object``),
:mod:`datetime` values (``string`` with a ``format``), attrs classes (``object`` with
``properties`` and ``required``), and ``Annotated[T, Schema(...)]`` to add constraints,
a unit or a description to any of them.

Three names, two ideas. :class:`Schema` holds the terms a user adds to a type
(``Annotated[float, Schema(minimum=0)]``), and :class:`SchemaTerms` is the same terms as
the keyword arguments of ``tt.property(minimum=0)``. :class:`DataSchema` is the whole TD
data schema that :func:`schema_for` computes from a type with those terms on top: what the
TD shows and what validation checks.

Objects built from attrs classes are *closed*: a key the class does not declare is
rejected (the TD cannot say so, since TD 1.1 has no ``additionalProperties``, but a client
that misspells a field deserves an error, not silence).

One module, though long: building a schema and checking a value against it are kept
together on purpose, so that a term cannot be advertised without being enforced.
"""

from __future__ import annotations

import collections.abc
import datetime
import enum
import inspect
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Final, Literal, TypedDict, Union, Unpack

import attrs

from trio_things.errors import InvalidValue, ThingDefinitionError, unknown_names
from trio_things.model.blob import Blob
from trio_things.model.docstrings import description_from_docstring

__all__ = ["DataSchema", "JsonType", "Schema", "SchemaTerms", "schema_for"]

JsonType = Literal["boolean", "integer", "number", "string", "object", "array", "null"]

_JSON_NAMES: Final[dict[type, str]] = {
    bool: "a boolean", int: "an integer", float: "a number", str: "a string",
    dict: "an object", list: "an array", type(None): "null",
}


def _optional_tuple(values: Any) -> tuple[Any, ...] | None:
    return None if values is None else tuple(values)


@attrs.frozen(kw_only=True, init=False)
class Schema:
    """Extra schema terms for a type, used as ``Annotated[float, Schema(minimum=0)]``.

    The keyword arguments of :func:`trio_things.property` build one of these too, so
    a property and an action parameter spell their constraints the same way. A term
    that does not exist is refused with the nearest one that does (``max``: did you
    mean ``maximum``?), as a :class:`~trio_things.errors.ThingDefinitionError`.
    """

    def __init__(self, **terms: Unpack[SchemaTerms]) -> None:
        message = unknown_names(terms, _TERM_NAMES, what="term")
        if message:
            raise ThingDefinitionError(f"Schema(): {message}")
        self.__attrs_init__(**terms)

    title: str | None = None
    description: str | None = None
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    multiple_of: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0)))
    min_length: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    max_length: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    pattern: str | None = attrs.field(default=None, validator=lambda _s, _a, value: (
        value is None or re.compile(value)))
    min_items: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    max_items: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    enum: tuple[Any, ...] | None = attrs.field(default=None, converter=_optional_tuple)


class SchemaTerms(TypedDict, total=False):
    """The fields of :class:`Schema` as keyword arguments (``tt.property(minimum=0)``);
    ``tests/model/test_schema.py`` keeps the two in step."""

    title: str | None
    description: str | None
    unit: str | None
    minimum: float | None
    maximum: float | None
    exclusive_minimum: float | None
    exclusive_maximum: float | None
    multiple_of: float | None
    min_length: int | None
    max_length: int | None
    pattern: str | None
    min_items: int | None
    max_items: int | None
    enum: tuple[Any, ...] | list[Any] | None


#: Every term :class:`Schema` takes.
_TERM_NAMES: Final = frozenset(SchemaTerms.__annotations__)


@attrs.frozen(kw_only=True)
class DataSchema:
    """One TD 1.1 DataSchema (section 5.3.2), immutable, with the checks it implies.

    Build it with :func:`schema_for`; read it out with :meth:`to_json`; check a value
    with :meth:`validate`.
    """

    type: JsonType | None = None
    title: str | None = None
    description: str | None = None
    unit: str | None = None
    format: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    multiple_of: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    min_items: int | None = None
    max_items: int | None = None
    enum: tuple[Any, ...] | None = None
    items: DataSchema | None = None
    properties: tuple[tuple[str, DataSchema], ...] | None = None
    required: tuple[str, ...] = ()
    one_of: tuple[DataSchema, ...] = ()
    read_only: bool = False
    write_only: bool = False
    default: Any = None
    has_default: bool = False
    _by_name: dict[str, DataSchema] | None = attrs.field(init=False, eq=False, repr=False)
    """``properties`` as a dict, made once: :meth:`validate` looks each field up in it."""
    _accepts: Callable[[Any], bool] = attrs.field(init=False, eq=False, repr=False)
    """A conservative check made once from the terms (:func:`_quick_check`): True only
    for values the full check would accept, False for "ask the full check". Every
    change of a property is validated on the fan-out's path, and the full check, which
    interprets every term each time, costs a few microseconds for a small object."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_name",
                           None if self.properties is None else dict(self.properties))
        object.__setattr__(self, "_accepts", _quick_check(self))

    def to_json(self) -> dict[str, Any]:
        """The schema as TD JSON (camelCase terms, unset terms left out)."""
        out: dict[str, Any] = {}
        for name, key in _SCALAR_TERMS:
            value = getattr(self, name)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        if self.items is not None:
            out["items"] = self.items.to_json()
        if self.properties is not None:
            out["properties"] = {name: schema.to_json() for name, schema in self.properties}
        if self.required:
            out["required"] = list(self.required)
        if self.one_of:
            out["oneOf"] = [schema.to_json() for schema in self.one_of]
        if self.read_only:
            out["readOnly"] = True
        if self.write_only:
            out["writeOnly"] = True
        if self.has_default:
            out["default"] = self.default
        return out

    def validate(self, value: Any, path: str = "") -> None:
        """Check a JSON-compatible ``value``; raise :class:`InvalidValue` naming the field.

        ``path`` names the value for the message (``setpoint``, ``ramp.rate``,
        ``reading.value``); nested fields are appended with a dot or ``[i]``.
        """
        if self._accepts(value):
            return
        self._check(value, path)

    def _check(self, value: Any, path: str) -> None:
        """The full check, term by term; it alone says what is wrong."""
        if self.one_of:
            errors = []
            for option in self.one_of:
                try:
                    option.validate(value, path)
                    return
                except InvalidValue as error:
                    errors.append(error.detail)
            raise InvalidValue(f"{_show(value)} matches none of the allowed types "
                               f"({'; '.join(errors)})", path=path)
        if self.type is not None:
            _check_type(self.type, value, path)
        if self.enum is not None and not any(_json_equal(value, e) for e in self.enum):
            raise InvalidValue(f"{_show(value)} is not one of {list(self.enum)}", path=path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._validate_number(value, path)
        elif isinstance(value, str):
            self._validate_string(value, path)
        elif isinstance(value, list):
            self._validate_array(value, path)
        elif isinstance(value, dict):
            self._validate_object(value, path)

    def _validate_number(self, value: float, path: str) -> None:
        if self.minimum is not None and value < self.minimum:
            raise InvalidValue(f"{value} is less than the minimum {self.minimum}", path=path)
        if self.maximum is not None and value > self.maximum:
            raise InvalidValue(f"{value} is greater than the maximum {self.maximum}", path=path)
        if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
            raise InvalidValue(
                f"{value} is not greater than {self.exclusive_minimum}", path=path)
        if self.exclusive_maximum is not None and value >= self.exclusive_maximum:
            raise InvalidValue(f"{value} is not less than {self.exclusive_maximum}", path=path)
        if self.multiple_of is not None:
            quotient = value / self.multiple_of
            if not math.isclose(quotient, round(quotient), rel_tol=1e-9, abs_tol=1e-9):
                raise InvalidValue(
                    f"{value} is not a multiple of {self.multiple_of}", path=path)

    def _validate_string(self, value: str, path: str) -> None:
        if self.min_length is not None and len(value) < self.min_length:
            raise InvalidValue(
                f"is shorter than {self.min_length} characters", path=path)
        if self.max_length is not None and len(value) > self.max_length:
            raise InvalidValue(f"is longer than {self.max_length} characters", path=path)
        if self.pattern is not None and re.search(self.pattern, value) is None:
            raise InvalidValue(f"{_show(value)} does not match {self.pattern!r}", path=path)
        if self.format in _FORMAT_PARSERS:
            try:
                _FORMAT_PARSERS[self.format](value)
            except ValueError:
                raise InvalidValue(
                    f"{_show(value)} is not a valid {self.format}", path=path) from None

    def _validate_array(self, value: list[Any], path: str) -> None:
        if self.min_items is not None and len(value) < self.min_items:
            raise InvalidValue(f"has fewer than {self.min_items} items", path=path)
        if self.max_items is not None and len(value) > self.max_items:
            raise InvalidValue(f"has more than {self.max_items} items", path=path)
        if self.items is not None:
            for index, item in enumerate(value):
                self.items.validate(item, f"{path}[{index}]")

    def _validate_object(self, value: dict[str, Any], path: str) -> None:
        for name in self.required:
            if name not in value:
                raise InvalidValue(f"required field {name!r} is missing", path=path)
        known = self._by_name
        if known is None:
            if self.items is not None:  # dict[str, T]: every value is a T
                for key, item in value.items():
                    self.items.validate(item, _join(path, key))
            return
        for key, item in value.items():
            schema = known.get(key)
            if schema is None:
                raise InvalidValue(
                    f"unexpected field {key!r} (expected {sorted(known)})", path=path)
            schema.validate(item, _join(path, key))


def _never(_value: Any) -> bool:
    return False


def _quick_check(schema: DataSchema) -> Callable[[Any], bool]:
    """A check of ``schema``'s common terms on exact JSON types, for
    :attr:`DataSchema._accepts`: never True where :meth:`DataSchema._check` would
    refuse. Terms it does not handle (``enum``, ``multipleOf``, ``pattern``,
    ``format``, no ``type``), integral floats for integers, and anything of another
    Python type give False: the full check decides those."""
    if schema.one_of:
        options = tuple(option._accepts for option in schema.one_of)
        return lambda value: any(accepts(value) for accepts in options)
    if (schema.type is None or schema.enum is not None or schema.multiple_of is not None
            or schema.pattern is not None or schema.format is not None):
        return _never
    kind = schema.type
    if kind in ("number", "integer"):
        integer = kind == "integer"
        low = -math.inf if schema.minimum is None else schema.minimum
        high = math.inf if schema.maximum is None else schema.maximum
        above = -math.inf if schema.exclusive_minimum is None else schema.exclusive_minimum
        below = math.inf if schema.exclusive_maximum is None else schema.exclusive_maximum
        if integer:
            low, high = max(low, _MIN_INTEGER), min(high, _MAX_INTEGER)

        def number(value: Any) -> bool:
            kind_of = type(value)
            if kind_of is not int and (integer or kind_of is not float):
                return False
            return bool(low <= value <= high and above < value < below)
        return number
    if kind == "string":
        shortest = schema.min_length or 0
        longest = math.inf if schema.max_length is None else schema.max_length
        return lambda value: type(value) is str and shortest <= len(value) <= longest
    if kind == "boolean":
        return lambda value: type(value) is bool
    if kind == "null":
        return lambda value: value is None
    if kind == "array":
        fewest = schema.min_items or 0
        most = math.inf if schema.max_items is None else schema.max_items
        item = _always if schema.items is None else schema.items._accepts
        return lambda value: (type(value) is list and fewest <= len(value) <= most
                              and all(item(entry) for entry in value))
    required = schema.required
    if schema._by_name is None:
        member = _always if schema.items is None else schema.items._accepts
        return lambda value: (type(value) is dict and all(key in value for key in required)
                              and all(member(entry) for entry in value.values()))
    fields = {name: field._accepts for name, field in schema._by_name.items()}

    def closed_object(value: Any) -> bool:
        if type(value) is not dict:
            return False
        for key in required:
            if key not in value:
                return False
        for key, entry in value.items():
            accepts = fields.get(key)
            if accepts is None or not accepts(entry):
                return False
        return True
    return closed_object


def _always(_value: Any) -> bool:
    return True


_SCALAR_TERMS: Final = (
    ("type", "type"), ("title", "title"), ("description", "description"),
    ("unit", "unit"), ("format", "format"), ("minimum", "minimum"), ("maximum", "maximum"),
    ("exclusive_minimum", "exclusiveMinimum"), ("exclusive_maximum", "exclusiveMaximum"),
    ("multiple_of", "multipleOf"), ("min_length", "minLength"), ("max_length", "maxLength"),
    ("pattern", "pattern"), ("min_items", "minItems"), ("max_items", "maxItems"),
    ("enum", "enum"),
)

_FORMAT_PARSERS: Final[dict[str, collections.abc.Callable[[str], object]]] = {
    "date-time": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_equal(a: Any, b: Any) -> bool:
    # JSON has no bool/int distinction problem, but Python does: True == 1.
    return bool(type(a) is type(b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool))) and bool(a == b)


#: The integers JSON values may carry here: what orjson encodes (signed and unsigned
#: 64-bit). A parser reads a larger one as a float, which has lost its low digits.
_MIN_INTEGER: Final = -(1 << 63)
_MAX_INTEGER: Final = (1 << 64) - 1
#: Floats hold every integer up to 2**53 exactly; beyond, ``1e26`` is not the integer
#: the client wrote, only the nearest double.
_MAX_EXACT_FLOAT: Final = float(1 << 53)


def _check_type(expected: JsonType, value: Any, path: str) -> None:
    if expected == "integer":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
        if ok:
            _check_integer_range(value, path)
    elif expected == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, _PYTHON_TYPES[expected])
    if not ok:
        got = _JSON_NAMES.get(type(value), type(value).__name__)
        raise InvalidValue(f"expected {_ARTICLES[expected]}, got {got} {_show(value)}",
                           path=path)


def _check_integer_range(value: int | float, path: str) -> None:
    if isinstance(value, int):
        if not _MIN_INTEGER <= value <= _MAX_INTEGER:
            raise InvalidValue(f"{_show(value)} is beyond the 64-bit integers", path=path)
    elif abs(value) > _MAX_EXACT_FLOAT:
        raise InvalidValue(f"{_show(value)} is too large to be an exact integer "
                           "(write it without an exponent, within 64 bits)", path=path)


_PYTHON_TYPES: Final[dict[str, type | tuple[type, ...]]] = {
    "boolean": bool, "string": str, "object": dict, "array": list, "null": type(None),
}
_ARTICLES: Final[dict[str, str]] = {
    "boolean": "a boolean", "integer": "an integer", "number": "a number",
    "string": "a string", "object": "an object", "array": "an array", "null": "null",
}


def schema_for(tp: Any, extra: Schema | None = None) -> DataSchema:
    """The :class:`DataSchema` of a type hint, with ``extra`` terms layered on top.

    Raises :class:`ThingDefinitionError` for a type that has no JSON form, so a Thing
    that cannot be described fails when its class is defined.
    """
    metadata: list[Schema] = []
    while typing.get_origin(tp) is typing.Annotated:
        tp, *annotations = typing.get_args(tp)
        metadata.extend(a for a in annotations if isinstance(a, Schema))
    if extra is not None:
        metadata.append(extra)
    schema = _base_schema(tp)
    for terms in metadata:
        schema = _apply(schema, terms)
    return schema


def _apply(schema: DataSchema, terms: Schema) -> DataSchema:
    changes = {
        field.name: getattr(terms, field.name)
        for field in attrs.fields(Schema)
        if getattr(terms, field.name) is not None
    }
    if schema.one_of and changes:
        # Optional[T] with constraints: they constrain T, and the title/description
        # describe the whole.
        described = {k: changes.pop(k) for k in ("title", "description") if k in changes}
        options = tuple(
            attrs.evolve(option, **changes) if option.type != "null" else option
            for option in schema.one_of
        )
        return attrs.evolve(schema, one_of=options, **described)
    return attrs.evolve(schema, **changes)


def _base_schema(tp: Any) -> DataSchema:
    if tp is None or tp is type(None):
        return DataSchema(type="null")
    if tp is bool:
        return DataSchema(type="boolean")
    if tp is int:
        return DataSchema(type="integer")
    if tp is float:
        return DataSchema(type="number")
    if tp is str:
        return DataSchema(type="string")
    if tp is datetime.datetime:
        return DataSchema(type="string", format="date-time")
    if tp is datetime.date:
        return DataSchema(type="string", format="date")
    if tp is typing.Any:
        return DataSchema()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = tuple(member.value for member in tp)
        return DataSchema(type=_enum_type(values, tp), enum=values)
    if isinstance(tp, type) and attrs.has(tp):
        return _attrs_schema(tp)
    if isinstance(tp, type) and issubclass(tp, Blob):
        return _blob_schema(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return DataSchema(type=_enum_type(args, tp), enum=args)
    if origin is Union or origin is types.UnionType:
        return DataSchema(one_of=tuple(schema_for(arg) for arg in args))
    if origin in (list, collections.abc.Sequence, collections.abc.MutableSequence):
        return DataSchema(type="array", items=schema_for(args[0]) if args else None)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return DataSchema(type="array", items=schema_for(args[0]))
        raise ThingDefinitionError(
            f"{tp!r}: fixed-length tuples have no TD schema; use tuple[T, ...] or an "
            "attrs class")
    if origin in (dict, collections.abc.Mapping):
        if args and args[0] is not str:
            raise ThingDefinitionError(f"{tp!r}: JSON object keys must be str")
        return DataSchema(type="object", items=schema_for(args[1]) if args else None)
    raise ThingDefinitionError(f"{tp!r} has no JSON form: use a JSON type or an attrs class")


def _blob_schema(cls: type[Blob]) -> DataSchema:
    """A blob's link (model/blob.py); its media type when the class fixes one."""
    media_type = DataSchema(type="string", enum=(cls.media_type,)
                            ) if cls.fixed_media_type else DataSchema(type="string")
    return DataSchema(
        type="object",
        title=cls.__name__,
        description=(f"A link to {cls.media_type if cls.fixed_media_type else 'binary'} "
                     "data: GET its href for the bytes"),
        # rel and description: LabThings' clients send its blob links back so (an
        # output passed as the input of another action); ours never carry them.
        properties=(("href", DataSchema(type="string", format="uri-reference")),
                    ("media_type", media_type),
                    ("rel", DataSchema(type="string")),
                    ("description", DataSchema(type="string"))),
        required=("href", "media_type"),
    )


def _enum_type(values: tuple[Any, ...], tp: Any) -> JsonType:
    kinds = {type(v) for v in values}
    for python_type, json_type in ((bool, "boolean"), (int, "integer"), (str, "string")):
        if kinds == {python_type}:
            return json_type  # type: ignore[return-value]
    if kinds <= {int, float}:
        return "number"
    raise ThingDefinitionError(f"{tp!r}: enumerated values must all be str, int or float")


def _attrs_schema(cls: type) -> DataSchema:
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except NameError as error:
        raise ThingDefinitionError(f"{cls.__qualname__}: cannot resolve {error}") from None
    properties = []
    required = []
    for field in attrs.fields(cls):
        name = field.alias if field.alias is not None else field.name
        field_schema = schema_for(hints.get(field.name, typing.Any))
        description = field.metadata.get("description")
        if description is not None:
            field_schema = attrs.evolve(field_schema, description=description)
        properties.append((name, field_schema))
        if field.default is attrs.NOTHING:
            required.append(name)
    return DataSchema(
        type="object",
        title=cls.__name__,
        description=_docstring(cls),
        properties=tuple(properties),
        required=tuple(required),
    )


def _docstring(obj: object) -> str | None:
    doc = getattr(obj, "__doc__", None)
    if not doc:
        return None
    # attrs generates "Cls(a, b)"-style docs for classes without one; skip those.
    if inspect.cleandoc(doc).startswith(f"{getattr(obj, '__name__', '')}("):
        return None
    return description_from_docstring(doc)
