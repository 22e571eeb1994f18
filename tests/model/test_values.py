"""Values Thing code assigns: which are stored as given, and which take the round trip
through JSON that makes them the property's type."""

from __future__ import annotations

import attrs

import trio_things as tt
from trio_things.model.values import kept_as_given


@attrs.frozen
class Point:
    x: float
    y: float


@attrs.frozen
class Labelled:
    label: str
    at: Point


@attrs.define
class Mutable:
    x: float


@attrs.frozen
class WithList:
    xs: list[int]


class SubPoint(Point):
    pass


def test_exact_plain_values_are_kept() -> None:
    for tp, kept, converted in ((int, 3, True), (float, 2.5, 3), (str, "a", b"a"),
                                (bool, True, 1)):
        check = kept_as_given(tp)
        assert check is not None
        assert check(kept) and not check(converted), tp
    check = kept_as_given(int)
    assert check is not None and not check(True)  # a bool is no int here


def test_frozen_attrs_values_of_plain_fields_are_kept() -> None:
    check = kept_as_given(Labelled)
    assert check is not None
    assert check(Labelled("a", Point(1.0, 2.0)))
    assert not check(Labelled("a", Point(1, 2.0)))  # an int where a float belongs
    assert not check(Labelled("a", SubPoint(1.0, 2.0)))  # a subclass
    for tp in (Mutable, WithList, list[int], dict[str, int], int | None):
        assert kept_as_given(tp) is None, tp


class Plotter(tt.Thing):
    position: Point = tt.property(default=Point(0.0, 0.0))
    speed: float = tt.property(default=1.0)


def test_a_kept_value_is_stored_as_it_is_and_others_as_their_type() -> None:
    plotter = Plotter()
    point = Point(1.5, 2.5)
    plotter.position = point
    assert plotter.position is point  # frozen: nothing can change it behind our back
    plotter.position = Point(1, 2)  # ints for floats: made floats, as a client's write
    assert plotter.position == Point(1.0, 2.0) and type(plotter.position.x) is float
    plotter.speed = 3
    assert plotter.speed == 3.0 and type(plotter.speed) is float
