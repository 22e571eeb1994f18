from __future__ import annotations

import datetime
import enum
from typing import Annotated, Literal

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import given

from trio_things.errors import InvalidValue, ThingDefinitionError
from trio_things.model.schema import DataSchema, Schema, SchemaTerms, schema_for


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


@attrs.frozen
class Point:
    """A point."""

    x: float
    y: Annotated[float, Schema(minimum=0, unit="mm")] = 0.0
    label: str | None = attrs.field(default=None, metadata={"description": "a name"})


@pytest.mark.parametrize(("tp", "expected"), [
    (bool, {"type": "boolean"}),
    (int, {"type": "integer"}),
    (float, {"type": "number"}),
    (str, {"type": "string"}),
    (None, {"type": "null"}),
    (list[int], {"type": "array", "items": {"type": "integer"}}),
    (tuple[str, ...], {"type": "array", "items": {"type": "string"}}),
    (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
    (Colour, {"type": "string", "enum": ["red", "green"]}),
    (datetime.datetime, {"type": "string", "format": "date-time"}),
    (int | None, {"oneOf": [{"type": "integer"}, {"type": "null"}]}),
    (Annotated[float, Schema(minimum=1, maximum=2, unit="V")],
     {"type": "number", "minimum": 1, "maximum": 2, "unit": "V"}),
])
def test_schema_for_types(tp: object, expected: dict[str, object]) -> None:
    assert schema_for(tp).to_json() == expected


def test_attrs_class_becomes_closed_object() -> None:
    schema = schema_for(Point)
    assert schema.to_json() == {
        "type": "object",
        "title": "Point",
        "description": "A point.",
        "properties": {
            "x": {"type": "number"},
            "y": {"type": "number", "minimum": 0, "unit": "mm"},
            "label": {"oneOf": [{"type": "string"}, {"type": "null"}],
                      "description": "a name"},
        },
        "required": ["x"],
    }
    schema.validate({"x": 1, "y": 2.5, "label": None})
    with pytest.raises(InvalidValue, match=r"point\.y: -1 is less than the minimum 0"):
        schema.validate({"x": 1, "y": -1}, "point")
    with pytest.raises(InvalidValue, match="required field 'x' is missing"):
        schema.validate({"y": 1}, "point")
    with pytest.raises(InvalidValue, match="unexpected field 'z'"):
        schema.validate({"x": 1, "z": 1}, "point")


@pytest.mark.parametrize(("terms", "value", "message"), [
    (Schema(maximum=10), 11, "greater than the maximum 10"),
    (Schema(exclusive_minimum=0), 0, "not greater than 0"),
    (Schema(exclusive_maximum=1), 1, "not less than 1"),
    (Schema(multiple_of=0.5), 0.75, "not a multiple of 0.5"),
])
def test_number_constraints(terms: Schema, value: float, message: str) -> None:
    schema = schema_for(float, terms)
    with pytest.raises(InvalidValue, match=message):
        schema.validate(value, "x")


def test_multiple_of_tolerates_float_rounding() -> None:
    schema_for(float, Schema(multiple_of=0.1)).validate(0.3, "x")


@pytest.mark.parametrize(("terms", "value", "message"), [
    (Schema(min_length=2), "a", "shorter than 2"),
    (Schema(max_length=2), "abc", "longer than 2"),
    (Schema(pattern="^[a-z]+$"), "ABC", "does not match"),
    (Schema(enum=("a", "b")), "c", "not one of"),
])
def test_string_constraints(terms: Schema, value: str, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        schema_for(str, terms).validate(value, "s")


def test_array_constraints_and_item_paths() -> None:
    schema = schema_for(list[Annotated[int, Schema(minimum=0)]], Schema(max_items=3))
    with pytest.raises(InvalidValue, match="more than 3 items"):
        schema.validate([1, 2, 3, 4], "xs")
    with pytest.raises(InvalidValue, match=r"xs\[1\]: -1 is less than"):
        schema.validate([1, -1], "xs")


@pytest.mark.parametrize(("tp", "value"), [
    (int, True), (int, 1.5), (int, "1"), (float, "1.0"), (float, False), (bool, 1),
    (str, 1), (list[int], {"a": 1}), (Point, [1, 2]), (datetime.datetime, "yesterday"),
])
def test_wrong_types_are_rejected(tp: object, value: object) -> None:
    with pytest.raises(InvalidValue):
        schema_for(tp).validate(value, "v")


def test_integer_accepts_integral_floats() -> None:
    schema_for(int).validate(3.0, "n")


def test_enum_does_not_confuse_bool_and_int() -> None:
    with pytest.raises(InvalidValue):
        schema_for(Literal[1, 2]).validate(True, "n")


@pytest.mark.parametrize("tp", [set[int], dict[int, str], tuple[int, str], object, complex])
def test_types_without_json_form_are_definition_errors(tp: object) -> None:
    with pytest.raises(ThingDefinitionError):
        schema_for(tp)


def test_invalid_regex_is_rejected_when_declared() -> None:
    with pytest.raises(Exception, match=r"unterminated|missing"):
        Schema(pattern="[")


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 1e26, float(2**60)])
def test_integers_beyond_what_json_carries_exactly_are_refused(value: object) -> None:
    """Beyond 64 bits orjson cannot write an integer, and a float beyond 2**53 is not
    the integer the client wrote: both refused, naming the value."""
    with pytest.raises(InvalidValue, match="count"):
        schema_for(int).validate(value, "count")


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63), 3.0, float(2**53)])
def test_integers_within_reach_are_accepted(value: object) -> None:
    schema_for(int).validate(value, "count")


def test_schema_terms_are_the_fields_of_schema() -> None:
    """``tt.property(**terms)`` and ``Schema(**terms)`` take the same terms: the TypedDict
    that types the first must list exactly the fields of the second."""
    assert set(SchemaTerms.__annotations__) == {field.name for field in attrs.fields(Schema)}


# --------------------------------------------------------------------- the quick check

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3),
    max_leaves=10)

_BOUND = st.none() | st.integers(-5, 5) | st.floats(-5, 5)


def _schemas() -> st.SearchStrategy[DataSchema]:
    scalar = st.one_of(
        st.builds(DataSchema, type=st.sampled_from(["number", "integer"]), minimum=_BOUND,
                  maximum=_BOUND, exclusive_minimum=_BOUND, exclusive_maximum=_BOUND,
                  multiple_of=st.none() | st.just(2)),
        st.builds(DataSchema, type=st.just("string"), min_length=st.none() | st.integers(0, 3),
                  max_length=st.none() | st.integers(0, 3),
                  pattern=st.none() | st.just("^a")),
        st.builds(DataSchema, type=st.sampled_from(["boolean", "null"])),
        st.builds(DataSchema, enum=st.none() | st.just((1, "a", True))),
    )
    return st.recursive(scalar, lambda inner: st.one_of(
        st.builds(DataSchema, type=st.just("array"), items=st.none() | inner,
                  min_items=st.none() | st.integers(0, 2),
                  max_items=st.none() | st.integers(0, 3)),
        st.builds(DataSchema, type=st.just("object"),
                  properties=st.none() | st.lists(
                      st.tuples(st.sampled_from(["a", "b", "c"]), inner), max_size=3,
                      unique_by=lambda pair: pair[0]).map(tuple),
                  required=st.lists(st.sampled_from(["a", "b"]), max_size=2,
                                    unique=True).map(tuple),
                  items=st.none() | inner),
        st.builds(DataSchema, one_of=st.lists(inner, min_size=1, max_size=3).map(tuple)),
    ), max_leaves=6)


@given(schema=_schemas(), value=_JSON)
def test_the_quick_check_never_accepts_what_the_full_check_refuses(
        schema: DataSchema, value: object) -> None:
    if schema._accepts(value):
        schema._check(value, "x")  # raises if the quick check was wrong


def test_the_quick_check_takes_the_common_shapes() -> None:
    """It would be no use if it sent everything to the full check."""
    point = schema_for(Point)
    assert point._accepts({"x": 1.5, "y": 2})
    assert schema_for(list[int])._accepts([1, 2, 3])
    assert schema_for(str, Schema(max_length=3))._accepts("abc")
    assert schema_for(int | None)._accepts(None)
    assert not point._accepts({"x": 1.5, "y": -1})  # the full check says why
