from __future__ import annotations

from typing import Any

import attrs
import pytest

import trio_things as tt
from trio_things.errors import InvalidValue, ThingDefinitionError


@attrs.frozen
class Alarm:
    level: int


class Recorder:
    """A Notifier that records what reaches it."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, Any]] = []
        self.events: list[tuple[str, Any]] = []

    def property_changed(self, thing: tt.Thing, name: str, value: Any) -> None:
        self.changes.append((name, value))

    def event_emitted(self, thing: tt.Thing, name: str, data: Any) -> None:
        self.events.append((name, data))


class Stage(tt.Thing):
    """A motorised stage."""

    speed: float = tt.property(default=1.0, minimum=0, maximum=10, unit="mm/s")
    """How fast the stage moves."""

    label: str = tt.property(default="stage", max_length=8, observable=False)
    tags: list[str] = tt.property(default=[])
    alarm = tt.event(Alarm)
    """Something went wrong."""
    homed = tt.event()

    def __init__(self) -> None:
        self._position = 0

    @tt.property
    def position(self) -> int:
        """Where the stage is, in steps."""
        return self._position

    @position.setter
    def position(self, value: int) -> None:
        self._position = value

    @tt.property
    def temperature(self) -> float:
        return 21.5

    @tt.action
    def move(self, to: int) -> int:
        """Move to a position."""
        self.position = to
        return to


def test_affordances_are_collected_in_order() -> None:
    affordances = Stage.affordances
    assert list(affordances.properties) == ["speed", "label", "tags", "position", "temperature"]
    assert list(affordances.actions) == ["move"]
    assert list(affordances.events) == ["alarm", "homed"]


def test_attribute_docstrings_become_descriptions() -> None:
    assert Stage.affordances.properties["speed"].description == "How fast the stage moves."
    assert Stage.affordances.properties["position"].description == "Where the stage is, in steps."
    assert Stage.affordances.events["alarm"].description == "Something went wrong."
    assert Stage.affordances.actions["move"].description == "Move to a position."


def test_functional_property_without_setter_is_read_only() -> None:
    props = Stage.affordances.properties
    assert props["temperature"].readonly
    assert not props["position"].readonly
    assert props["position"].functional
    with pytest.raises(AttributeError):
        Stage().temperature = 3.0  # type: ignore[misc]


def test_python_assignment_is_validated_and_notified() -> None:
    stage = Stage()
    recorder = Recorder()
    stage._tt_set_notifier(recorder)
    stage.speed = 2
    assert stage.speed == 2.0
    assert isinstance(stage.speed, float)
    with pytest.raises(InvalidValue, match="speed: 11 is greater than the maximum 10"):
        stage.speed = 11
    with pytest.raises(ValueError, match="label: is longer than 8"):
        stage.label = "much too long"
    assert stage.speed == 2.0
    stage.label = "short"  # not observable: no notification
    stage.position = 5
    assert recorder.changes == [("speed", 2.0), ("position", 5)]


def test_mutable_defaults_are_not_shared() -> None:
    a, b = Stage(), Stage()
    a.tags.append("x")
    assert b.tags == []


def test_events_validate_their_payload() -> None:
    stage = Stage()
    recorder = Recorder()
    stage._tt_set_notifier(recorder)
    stage.alarm.emit(Alarm(level=3))
    stage.homed.emit()
    assert recorder.events == [("alarm", {"level": 3}), ("homed", None)]
    with pytest.raises(InvalidValue):
        stage.alarm.emit(Alarm(level="high"))  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="alarm: str cannot be written as Alarm"):
        stage.alarm.emit("high")  # type: ignore[arg-type]  # not even an Alarm
    assert len(recorder.events) == 2  # nothing reached the observers


def test_actions_are_plain_methods_from_python() -> None:
    assert Stage().move(to=3) == 3


def test_subclasses_inherit_and_extend() -> None:
    class FastStage(Stage):
        turbo: bool = tt.property(default=False)

    assert "speed" in FastStage.affordances.properties
    assert "turbo" in FastStage.affordances.properties
    assert "turbo" not in Stage.affordances.properties


@pytest.mark.parametrize(("body", "message"), [
    ("x = tt.property(default=1)", "needs a type annotation"),
    ("properties: int = tt.property(default=1)", "reserved"),
    ("x: set[int] = tt.property(default=set())", "has no JSON form"),
    ("x: int = tt.property(default=1, maximum=0)", "default is invalid"),
    # A property with neither a default nor a getter would silently vanish.
    ("speed: float = tt.property(minimum=0, maximum=10)",
     r"Bad\.speed: tt\.property\(\.\.\.\) without default= declares no property: give it a "
     r"default \(`speed: float = tt\.property\(default=0\.0, \.\.\.\)`\), or put it above a "
     r"getter as a decorator"),
    # A misspelt term names the class, the attribute and the right keyword.
    ("x: int = tt.property(default=1, max=10)",
     r"Bad\.x: tt\.property\(\): unknown term 'max' \(did you mean 'maximum'\?\); the "
     r"terms are: description, enum,"),
    ("x: int = tt.property(default=1, minimun=0, unit='m')",
     r"unknown term 'minimun' \(did you mean 'minimum'\?\)"),
    # Names Thing itself uses: a property ``title`` once made every TD request a 500.
    ("title: str = tt.property(default='t')",
     r"Bad\.title: 'title' is taken by trio_things\.Thing itself \(the TD title of the "
     r"class\); give the affordance another name"),
    ("affordances: int = tt.property(default=1)", "taken by trio_things.Thing itself"),
    ("background_task = tt.event()", "taken by trio_things.Thing itself"),
])
def test_definition_errors_name_the_attribute(body: str, message: str) -> None:
    with pytest.raises(ThingDefinitionError, match=message) as info:
        exec(f"class Bad(tt.Thing):\n    {body}\n", {"tt": tt})
    assert "Bad." in str(info.value)


def test_action_parameters_need_annotations() -> None:
    with pytest.raises(ThingDefinitionError, match="'x' needs a type annotation"):
        class Bad(tt.Thing):
            @tt.action
            def act(self, x) -> None:  # type: ignore[no-untyped-def]
                pass


def test_action_context_is_not_input() -> None:
    class Worker(tt.Thing):
        @tt.action
        def work(self, ctx: tt.ActionContext, n: int = 2) -> None:
            pass

    spec = Worker.affordances.actions["work"]
    assert spec.context_parameter == "ctx"
    assert [p.name for p in spec.parameters] == ["n"]
    assert spec.input_schema is not None
    assert spec.input_schema.to_json() == {
        "type": "object", "properties": {"n": {"type": "integer", "default": 2}}}
    assert spec.output_schema is None
    assert not spec.is_async


def test_a_misspelt_term_on_a_getter_names_the_attribute() -> None:
    with pytest.raises(ThingDefinitionError,
                       match=r"Bad\.position: tt\.property\(\): unknown term 'max'"):
        class Bad(tt.Thing):
            @tt.property(max=3)  # type: ignore[call-overload]
            def position(self) -> float:
                return 1.0


def test_a_misspelt_schema_term_suggests_the_right_one() -> None:
    with pytest.raises(ThingDefinitionError,
                       match=r"Schema\(\): unknown term 'max' \(did you mean 'maximum'\?\)"):
        tt.Schema(max=3)  # type: ignore[call-arg]


def test_a_property_without_default_still_decorates_a_getter() -> None:
    class Good(tt.Thing):
        @tt.property(maximum=3)
        def position(self) -> float:
            return 1.0

    assert Good.affordances.properties["position"].schema.maximum == 3
    assert Good().position == 1.0
