"""The one cattrs converter: Python values <-> JSON-compatible values.

Validation happens once, at the edge (see :mod:`trio_things.model.schema`): a JSON value
is checked against the affordance's :class:`~trio_things.model.schema.DataSchema` first,
so by the time it is structured here its shape is already known to be right. cattrs'
own errors are still turned into :class:`~trio_things.errors.InvalidValue` naming the
field, for the types a schema cannot fully express.
"""

from __future__ import annotations

import contextvars
import datetime
import enum
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.strategies import configure_union_passthrough

from trio_things.errors import InvalidValue
from trio_things.model.blob import Blob, blob_id_from_href

__all__ = ["converter", "kept_as_given", "structure", "unstructure", "unstructure_as",
           "unstructure_linking"]

T = TypeVar("T")

#: The converter every value passes through. ``forbid_extra_keys`` because a client
#: that misspells a field should hear about it, not have it silently dropped.
converter = cattrs.Converter(forbid_extra_keys=True)

# Unions (``int | str``, ``float | Reading``): a JSON value of a member's type is that
# member; the schema (a ``oneOf``) has already said that it fits one of them. Without
# this, cattrs has no structure hook for a union of primitives.
configure_union_passthrough(str | int | float | bool | None, converter)

converter.register_unstructure_hook(datetime.datetime, lambda dt: dt.isoformat())
converter.register_structure_hook(
    datetime.datetime, lambda value, _: datetime.datetime.fromisoformat(value))
converter.register_unstructure_hook(datetime.date, lambda d: d.isoformat())
converter.register_structure_hook(
    datetime.date, lambda value, _: datetime.date.fromisoformat(value))


def _is_blob_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Blob)


def _structure_blob(value: Any, tp: type[Blob]) -> Blob:
    """A link to a blob this server holds (an earlier output sent back as an input)."""
    href = value.get("href") if isinstance(value, dict) else None
    blob_id = blob_id_from_href(href) if isinstance(href, str) else None
    if blob_id is None:
        raise ValueError("expected a blob link: {\"href\": \"/blob/<id>\", ...}")
    blob = Blob.lookup(blob_id)
    if blob is None:
        raise ValueError(f"no blob at {href!r} (unknown, or its invocation expired)")
    if not isinstance(blob, tp):
        raise ValueError(f"the blob at {href!r} is {blob.content_type}, not {tp.media_type}")
    return blob


#: The blobs unstructured so far, while :func:`unstructure_linking` collects them.
_linked: contextvars.ContextVar[list[Blob] | None] = contextvars.ContextVar(
    "trio_things_linked_blobs", default=None)


def _unstructure_blob(blob: Blob) -> dict[str, str]:
    linked = _linked.get()
    if linked is not None:
        linked.append(blob)
    return blob.to_json()


# Blobs travel as links (model/blob.py); an instance of any Blob class, whatever the
# annotation says (``Any``, a union), unstructures to its link.
converter.register_unstructure_hook_func(_is_blob_type, _unstructure_blob)
converter.register_structure_hook_func(_is_blob_type, _structure_blob)


def structure(value: Any, tp: Any, *, path: str = "") -> Any:
    """Turn a JSON-compatible ``value`` into an instance of ``tp``.

    Raises :class:`InvalidValue` naming ``path`` (and the field inside it) on failure.
    """
    try:
        return converter.structure(value, tp)
    except cattrs.BaseValidationError as error:
        messages = cattrs.transform_error(error, path=path or "$")
        raise InvalidValue("; ".join(messages)) from None
    except (TypeError, ValueError, KeyError) as error:
        raise InvalidValue(f"cannot be read as {_type_name(tp)}: {error}", path=path) from None


def unstructure(value: Any, tp: Any = None) -> Any:
    """Turn a Python value into JSON-compatible data (dicts, lists, str, numbers, ...)."""
    if tp is None:
        return converter.unstructure(value)
    return converter.unstructure(value, tp)


def unstructure_as(value: Any, tp: Any, *, path: str) -> Any:
    """:func:`unstructure` a value Thing code produced, as ``tp``.

    Raises :class:`InvalidValue` naming ``path`` when ``value`` cannot be read as a
    ``tp`` at all (cattrs fails with whatever the wrong object lacks, an
    ``AttributeError`` say), so the mistake surfaces in the code that made it as the
    error that call documents. A value of the right shape but out of bounds is the
    schema's to reject, after this.
    """
    try:
        return unstructure(value, tp)
    except (AttributeError, TypeError, ValueError, KeyError) as error:
        raise InvalidValue(f"{type(value).__name__} cannot be written as {_type_name(tp)} "
                           f"({type(error).__name__}: {error})", path=path) from None


def unstructure_linking(value: Any, tp: Any, *, path: str) -> tuple[Any, tuple[Blob, ...]]:
    """:func:`unstructure_as`, and the blobs whose links the JSON holds (an action's
    output, say): whoever keeps the JSON keeps these too, or the links go dead."""
    linked: list[Blob] = []
    token = _linked.set(linked)
    try:
        data = unstructure_as(value, tp, path=path)
    finally:
        _linked.reset(token)
    return data, tuple({id(blob): blob for blob in linked}.values())


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return f"one of {[member.value for member in tp]}"
    return getattr(tp, "__name__", repr(tp))


#: Types whose exact instances are their own structured form (``bool`` is no ``int``
#: here: the checks compare exact types).
_PLAIN_TYPES = (int, float, str, bool)


def kept_as_given(tp: Any) -> Callable[[Any], bool] | None:
    """A cheap check that a value Thing code assigned to a property of type ``tp`` is
    exactly what structuring its JSON would give back, so it can be stored as it is;
    None where no such check exists (the value is then structured, as ever).

    What passes: an exact ``int``, ``float``, ``str`` or ``bool`` for that type; an
    instance of exactly ``tp``, a *frozen* attrs class whose fields are such values
    (recursively). Frozen, so that storing the caller's instance rather than a copy
    changes nothing: it cannot be changed behind the property's back. Anything else
    (an ``int`` for a ``float``, a list, a mutable class, a subclass) takes the round
    trip, which is what makes it the property's type. Every property change passes
    here: the round trip through cattrs is about a microsecond per field.
    """
    if tp in _PLAIN_TYPES:
        return lambda value: type(value) is tp
    if not (isinstance(tp, type) and attrs.has(tp) and _frozen(tp)):
        return None
    try:
        hints = typing.get_type_hints(tp)
    except Exception:  # an annotation that does not resolve: structure as ever
        return None
    checks: list[tuple[str, Callable[[Any], bool]]] = []
    for field in attrs.fields(tp):
        check = kept_as_given(hints.get(field.name, field.type))
        if check is None or not field.init:
            return None
        checks.append((field.name, check))

    def given(value: Any) -> bool:
        return type(value) is tp and all(check(getattr(value, name)) for name, check in checks)
    return given


@attrs.frozen
class _FrozenProbe:
    """A frozen attrs class: every frozen attrs class shares its ``__setattr__``."""


def _frozen(cls: type) -> bool:
    """Whether instances of the attrs class ``cls`` refuse attribute assignment."""
    return cls.__setattr__ is _FrozenProbe.__setattr__  # type: ignore[comparison-overlap]
