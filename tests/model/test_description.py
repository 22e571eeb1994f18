"""Every TD we generate must validate against the official TD 1.1 JSON Schema."""

from __future__ import annotations

import datetime
import enum
from typing import Annotated, Any, Literal

import attrs
import jsonschema
import pytest

import trio_things as tt
from trio_things.bindings.http import HttpBinding
from trio_things.bindings.websocket import WebSocketBinding
from trio_things.demo import Counter, Thermometer
from trio_things.model.description import TD_CONTEXT, describe_thing


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@attrs.frozen
class Vector:
    """A 3-vector."""

    x: Annotated[float, tt.Schema(unit="mm", description="the x component")]
    y: float = 0.0
    z: float = 0.0


@attrs.frozen
class Sample:
    name: Annotated[str, tt.Schema(min_length=1, max_length=20, pattern="^[a-z]+$")]
    position: Vector
    tags: list[str] = attrs.Factory(list)
    taken: datetime.datetime | None = None


class Everything(tt.Thing):
    """A Thing that uses every supported type and constraint."""

    flag: bool = tt.property(default=False)
    count: int = tt.property(default=0, minimum=0, maximum=100, multiple_of=2)
    ratio: float = tt.property(default=0.5, exclusive_minimum=0, exclusive_maximum=1)
    name: str = tt.property(default="a", min_length=1, max_length=8, pattern="^[a-z]+$")
    mode: Mode = tt.property(default=Mode.FAST)
    level: Literal["low", "high"] = tt.property(default="low")
    choice: str = tt.property(default="x", enum=["x", "y"])
    values: list[float] = tt.property(default=[], min_items=0, max_items=4)
    table: dict[str, int] = tt.property(default={})
    maybe: int | None = tt.property(default=None)
    hidden: int = tt.property(default=0, observable=False)
    position: Vector = tt.property(default=Vector(x=1.0), title="Position")
    when: datetime.datetime = tt.property(
        default=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), readonly=True)

    @tt.property
    def computed(self) -> float:
        return 1.0

    @tt.action(safe=True, idempotent=True, title="Measure")
    async def measure(self, sample: Sample, repeats: Annotated[int, tt.Schema(minimum=1)] = 1
                      ) -> list[Vector]:
        return []

    @tt.action
    def reset(self) -> None:
        pass

    moved = tt.event(Vector)
    ping = tt.event()


def describe(cls: type[tt.Thing], name: str) -> dict[str, Any]:
    return describe_thing(cls.affordances, name=name, title=cls.__name__,
                          description=cls.__doc__, base="http://127.0.0.1:8000/",
                          bindings=[HttpBinding(), WebSocketBinding()])


@pytest.mark.parametrize(("cls", "name"), [
    (Thermometer, "thermometer"), (Counter, "counter"), (Everything, "everything")])
def test_td_validates_against_td11_schema(
        td_validator: jsonschema.Draft7Validator, cls: type[tt.Thing], name: str) -> None:
    td = describe(cls, name)
    errors = sorted(td_validator.iter_errors(td), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_td_shape_for_consumers() -> None:
    td = describe(Everything, "everything")
    assert td["@context"] == TD_CONTEXT
    assert td["base"].endswith("/")
    assert td["id"].startswith("urn:uuid:")
    assert td["security"] == ["nosec_sc"]
    assert describe(Everything, "everything")["id"] == td["id"]  # stable
    for kind in ("properties", "actions", "events"):
        for affordance in td[kind].values():
            for form in affordance["forms"]:
                assert isinstance(form["op"], list)
                assert not form["href"].startswith("/")
    count = td["properties"]["count"]
    assert count | {"forms": None} == {
        "type": "integer", "minimum": 0, "maximum": 100, "multipleOf": 2,
        "observable": True, "forms": None}
    assert td["properties"]["when"]["readOnly"] is True
    assert td["properties"]["when"]["forms"][0]["op"] == ["readproperty"]
    assert td["properties"]["flag"]["forms"][0]["op"] == ["readproperty", "writeproperty"]
    assert td["properties"]["position"]["title"] == "Position"
    measure = td["actions"]["measure"]
    assert measure["safe"] is True and measure["idempotent"] is True
    assert measure["input"]["required"] == ["sample"]
    assert measure["output"]["items"]["title"] == "Vector"
    # Generic consumers take the first invokeaction form: it answers with the bare output.
    assert measure["forms"][0]["href"] == "everything/actions/measure"
    assert measure["forms"][1]["href"] == "everything/measure"
    assert "input" not in td["actions"]["reset"]
    assert "data" not in td["events"]["ping"]
    assert td["events"]["moved"]["data"]["required"] == ["x"]


def test_td_advertises_the_websocket_forms_after_the_http_ones() -> None:
    td = describe(Everything, "everything")
    ws_href = "ws://127.0.0.1:8000/everything/ws"

    def ws_ops(forms: list[dict[str, Any]]) -> list[str]:
        [form] = [f for f in forms if f.get("subprotocol") == "webthingprotocol"]
        assert form["href"] == ws_href
        assert forms[-1] is form  # HTTP forms first: generic consumers take the first
        return list(form["op"])

    assert ws_ops(td["properties"]["flag"]["forms"]) == [
        "readproperty", "writeproperty", "observeproperty", "unobserveproperty"]
    assert ws_ops(td["properties"]["when"]["forms"]) == [
        "readproperty", "observeproperty", "unobserveproperty"]
    assert ws_ops(td["actions"]["measure"]["forms"]) == [
        "invokeaction", "queryaction", "cancelaction"]
    assert ws_ops(td["events"]["moved"]["forms"]) == ["subscribeevent", "unsubscribeevent"]
    assert set(ws_ops(td["forms"])) == {
        "readallproperties", "readmultipleproperties", "writeallproperties",
        "writemultipleproperties", "observeallproperties", "unobserveallproperties",
        "queryallactions", "subscribeallevents", "unsubscribeallevents"}


def test_an_https_base_gives_wss_forms() -> None:
    td = describe_thing(Counter.affordances, name="counter", title="Counter", description=None,
                        base="https://lab.example/", bindings=[WebSocketBinding()])
    assert td["properties"]["count"]["forms"][0]["href"] == "wss://lab.example/counter/ws"


def test_base_must_end_with_slash() -> None:
    with pytest.raises(ValueError, match="must end with"):
        describe_thing(Counter.affordances, name="c", title="C", description=None,
                       base="http://x", bindings=[])


def test_td_offers_sse_then_longpoll_then_the_websocket_to_observers() -> None:
    td = describe(Everything, "everything")

    def observing(forms: list[dict[str, Any]], op: str) -> list[tuple[str, str | None]]:
        """(href, subprotocol) of each form listing ``op``, in order."""
        return [(f["href"], f.get("subprotocol")) for f in forms if op in f["op"]]

    # A generic consumer takes the first form it can use: one stream beats a request
    # per change, which beats nothing (node-wot has no WebSocket client for these).
    assert observing(td["properties"]["flag"]["forms"], "observeproperty") == [
        ("everything/flag", "sse"), ("everything/flag/next", "longpoll"),
        ("ws://127.0.0.1:8000/everything/ws", "webthingprotocol")]
    assert observing(td["events"]["moved"]["forms"], "subscribeevent") == [
        ("everything/events/moved", "sse"), ("everything/events/moved", "longpoll"),
        ("ws://127.0.0.1:8000/everything/ws", "webthingprotocol")]
    assert observing(td["forms"], "observeallproperties")[0] == (
        "everything/properties", "sse")
    assert observing(td["forms"], "subscribeallevents")[0] == ("everything/events", "sse")
    assert td["properties"]["hidden"]["observable"] is False
    for name, prop in td["properties"].items():
        sse = [f for f in prop["forms"] if f.get("subprotocol") == "sse"]
        assert bool(sse) == prop["observable"], name
        # The form's contentType is the data's: node-wot parses each message with it.
        assert all(f["contentType"] == "application/json" for f in sse)
        assert all("unobserveproperty" in f["op"] for f in sse)
