"""JSON values on the wire, and Python values in the caller's hands.

Without a type, a value reaches the caller as the server sent it, in plain JSON types
(:data:`JsonValue`). With a type (``await thing.read("reading", Reading)``) it is
structured by trio-things' one cattrs converter (:mod:`trio_things.model.values`), the
one the server uses, so an attrs class a Thing emits comes back as the same class.
Going out, any value the converter knows (attrs instances, datetimes, enums) is
unstructured to JSON first.
"""

from __future__ import annotations

from typing import TypeAlias, TypeVar

import orjson

from trio_things.client.errors import InvalidValue
from trio_things.errors import InvalidValue as ConverterError
from trio_things.model.values import structure, unstructure

__all__ = ["JsonValue", "from_json", "to_json"]

T = TypeVar("T")

#: A value as JSON holds it: what orjson parses and writes.
JsonValue: TypeAlias = (
    "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None")


def to_json(value: object) -> JsonValue:
    """``value`` as JSON-compatible data, ready to send.

    Raises :class:`~trio_things.client.errors.InvalidValue` for a value that cannot be
    written as JSON at all (checked here, not by the server, so the caller's mistake is
    raised where it was made).
    """
    data: JsonValue = unstructure(value)
    try:
        orjson.dumps(data)
    except TypeError as error:
        raise InvalidValue(f"{type(value).__name__} cannot be sent as JSON: {error}") from None
    return data


def from_json(value: JsonValue, tp: type[T], *, what: str) -> T:
    """``value`` structured as ``tp``; :class:`InvalidValue` naming ``what`` if it does
    not fit (the server sent something other than the caller expected)."""
    try:
        result: T = structure(value, tp, path=what)
    except ConverterError as error:
        detail = error.detail
    except (AttributeError, TypeError, ValueError, KeyError) as error:
        # cattrs fails with whatever the wrong shape lacks ('str' has no .keys()).
        detail = f"{type(error).__name__}: {error}"
    else:
        return result
    raise InvalidValue(f"{what}: the server's value does not fit {tp.__name__}: {detail}")
