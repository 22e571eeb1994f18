"""The Dispatcher, driven directly: commands in, replies (or RemoteProtocolErrors) out.

No HTTP and no WebSocket: the Dispatcher is built as ``ThingServer.running()`` builds it
(observer sets, the replay history, an action runner, the notifier installed in each
Thing), and an "observer" is an :class:`Observer` around a bare :class:`Outbox`, whose
frames the tests take and decode. The Things' background tasks are not started, so
nothing changes that a test did not change.
"""

from __future__ import annotations

import datetime
import functools
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import attrs
import jsonschema
import orjson
import pytest
import trio
import trio.testing

import trio_things as tt
from trio_things.bindings.http import HttpBinding
from trio_things.bindings.websocket import WebSocketBinding
from trio_things.demo import Counter, Reading, Thermometer
from trio_things.errors import (
    BadRequest,
    Conflict,
    InvalidValue,
    MethodNotAllowed,
    NotFound,
    RemoteProtocolError,
)
from trio_things.fanout.bridge import TrioBridge
from trio_things.fanout.history import History
from trio_things.fanout.notifier import ThingNotifier, publish_action_status
from trio_things.fanout.observers import (
    ACTION,
    EVENT,
    PROPERTY,
    Observer,
    ObserverRegistry,
    ObserverSet,
)
from trio_things.fanout.outbox import Outbox
from trio_things.model.description import thing_id
from trio_things.model.invocation import Invocation, InvocationStatus
from trio_things.protocol import commands as c
from trio_things.protocol.commands import (
    DescriptionPageReply,
    DocumentReply,
    InvocationListReply,
    InvocationReply,
    NoContentReply,
    SubscribedReply,
    ValueReply,
)
from trio_things.runtime.actions import ActionRunner, open_action_runner
from trio_things.runtime.dispatcher import Dispatcher

BASE = "http://things.test:8000/"
#: Seconds: what a test may take before it is a hang (never reached when all is well).
TIMEOUT = 10
#: Seconds; tests that wait this long use the autojump clock.
RETENTION = 600.0
TIME = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)

# --------------------------------------------------------------------------- Things


class Lamp(tt.Thing):
    """A lamp whose brightness lives in its hardware."""

    title: ClassVar[str | None] = "Desk lamp"

    level: int = tt.property(default=0, minimum=0, maximum=100)
    """The level the lamp dims to."""

    label: str = tt.property(default="lamp", max_length=8)
    serial: str = tt.property(default="L-1", readonly=True)
    blinks: int = tt.property(default=0, observable=False)

    flashed: tt.Event[int] = tt.event(int)
    """The lamp flashed, this many times."""

    dimmed = tt.event()

    def __init__(self) -> None:
        super().__init__()
        self.hardware = 40
        self.getter_threads: list[int] = []
        self.setter_calls: list[tuple[int, int]] = []  # (value, thread)
        self.release = trio.Event()
        self.holds_started = 0

    @tt.property(minimum=0, maximum=100)
    def brightness(self) -> int:
        """Read from the hardware."""
        self.getter_threads.append(threading.get_ident())
        return self.hardware

    @brightness.setter
    def brightness(self, value: int) -> None:
        self.setter_calls.append((value, threading.get_ident()))
        self.hardware = value

    @tt.property
    def voltage(self) -> float:
        """Measured; there is no setter."""
        return 230.0

    @tt.action
    async def hold(self) -> str:
        """Wait until the test sets ``release``."""
        self.holds_started += 1
        await self.release.wait()
        return "released"

    @tt.action
    async def switch_off(self) -> None:
        self.level = 0

    @tt.action
    async def burn_out(self) -> None:
        raise RuntimeError("the filament broke")

    @tt.action
    async def refuse(self) -> None:
        raise tt.InvalidValue("not in this state", path="refuse")


def _ordered(instance: Span, attribute: attrs.Attribute[int], hi: int) -> None:
    if hi < instance.lo:
        raise ValueError(f"hi {hi} is below lo {instance.lo}")


@attrs.frozen
class Span:
    """A range whose order no JSON schema can state."""

    lo: int
    hi: int = attrs.field(validator=_ordered)


class Window(tt.Thing):
    """A Thing whose values a schema cannot fully check."""

    level: int = tt.property(default=0)
    span: Span = tt.property(default=Span(0, 10))

    @tt.action
    def pick(self, choice: int | str) -> str:
        return str(choice)


# --------------------------------------------------------------------------- the rig


@attrs.define
class Rig:
    """A Dispatcher and what it was built from."""

    dispatcher: Dispatcher
    things: dict[str, tt.Thing]
    observers: ObserverRegistry
    invocations: ActionRunner
    history: History

    @property
    def thermometer(self) -> Thermometer:
        thing = self.things["thermometer"]
        assert isinstance(thing, Thermometer)
        return thing

    @property
    def counter(self) -> Counter:
        thing = self.things["counter"]
        assert isinstance(thing, Counter)
        return thing

    @property
    def lamp(self) -> Lamp:
        thing = self.things["lamp"]
        assert isinstance(thing, Lamp)
        return thing

    async def run(self, command: c.Command, observer: Observer | None = None) -> c.Reply:
        with trio.fail_after(TIMEOUT):
            return await self.dispatcher.run(command, observer)

    async def start(self, thing: str, action: str, input: Any = None,
                    observer: Observer | None = None) -> Invocation:
        """Invoke without waiting; the new invocation."""
        reply = await self.run(c.InvokeAction(thing=thing, name=action, input=input),
                               observer)
        assert isinstance(reply, InvocationReply)
        assert reply.created
        return reply.invocation

    async def finish(self, invocation: Invocation) -> None:
        with trio.fail_after(TIMEOUT):
            await self.invocations.wait(invocation)

    def memberships(self, observer: Observer) -> frozenset[ObserverSet]:
        return self.observers.memberships(observer.outbox)

    def sets(self, thing: str, kind: str, *names: str) -> frozenset[ObserverSet]:
        return frozenset(self.observers.get(thing, kind, name) for name in names)


def demo_things() -> dict[str, tt.Thing]:
    return {"thermometer": Thermometer(), "counter": Counter(), "lamp": Lamp()}


@asynccontextmanager
async def open_rig(
    things: dict[str, tt.Thing] | None = None, *,
    security_definitions: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[Rig]:
    """A Dispatcher over ``things`` (default: thermometer, counter, lamp), wired as
    ``ThingServer.running()`` wires it."""
    things = demo_things() if things is None else things
    bridge = TrioBridge()
    history = History(things)
    observers = ObserverRegistry({
        name: (list(thing.affordances.properties), list(thing.affordances.events),
               list(thing.affordances.actions))
        for name, thing in things.items()})
    async with open_action_runner(
            retention=RETENTION,
            on_status=functools.partial(publish_action_status, observers, history)
    ) as invocations:
        for name, thing in things.items():
            thing._tt_set_notifier(ThingNotifier(name, bridge, history, observers))
        dispatcher = Dispatcher(
            things=things, invocations=invocations, history=history, observers=observers,
            bindings=[HttpBinding(), WebSocketBinding()],
            security_definitions=security_definitions)
        try:
            yield Rig(dispatcher=dispatcher, things=things, observers=observers,
                      invocations=invocations, history=history)
        finally:
            for thing in things.values():
                thing._tt_set_notifier(None)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with open_rig() as rig:
        yield rig


def encode(notification: c.Notification) -> bytes:
    """A dialect's encoder, as plain as can be."""
    match notification:
        case c.PropertyChanged(thing=thing, name=name, value=value):
            return orjson.dumps({"thing": thing, "property": name, "value": value})
        case c.EventEmitted(thing=thing, name=name, data=data):
            return orjson.dumps({"thing": thing, "event": name, "data": data})
        case c.ActionStatusChanged(invocation=invocation):
            return orjson.dumps({"thing": invocation.thing, "action": invocation.action,
                                 "id": invocation.id, "status": invocation.status.value})
    raise AssertionError(notification)


@pytest.fixture
def observer() -> Observer:
    return Observer(outbox=Outbox(16), encoder=encode)


def received(observer: Observer) -> list[dict[str, Any]]:
    """The messages pending in the observer's outbox, taken."""
    messages = []
    for frame in observer.outbox.take():
        data = b"".join(frame)
        assert data[0] == 0x81  # a final text frame
        assert data[1] == len(data) - 2 < 126
        messages.append(orjson.loads(data[2:]))
    return messages


def reading(temperature: float = 101.5) -> Reading:
    return Reading(temperature=temperature, time=TIME)


def nobody_observes(rig: Rig) -> bool:
    return not any(rig.observers)


# --------------------------------------------------------------------------- properties


async def test_read_data_property(rig: Rig) -> None:
    assert await rig.run(c.ReadProperty(thing="counter", name="count")) == ValueReply(value=0)
    rig.counter.count = 7
    assert await rig.run(c.ReadProperty(thing="counter", name="count")) == ValueReply(value=7)


async def test_read_gives_json_data(rig: Rig) -> None:
    reply = await rig.run(c.ReadProperty(thing="thermometer", name="setpoint"))
    assert isinstance(reply, ValueReply)
    assert reply == ValueReply(value=20.0)
    assert isinstance(reply.value, float)


async def test_write_data_property(rig: Rig) -> None:
    reply = await rig.run(c.WriteProperty(thing="thermometer", name="setpoint", value=35))
    assert reply == NoContentReply()
    assert rig.thermometer.setpoint == 35.0
    assert await rig.run(c.ReadProperty(thing="thermometer", name="setpoint")) == ValueReply(
        value=35.0)


@pytest.mark.parametrize("value", [151, "hot", None, True])
async def test_write_invalid_value_changes_nothing(rig: Rig, value: Any) -> None:
    with pytest.raises(InvalidValue) as info:
        await rig.run(c.WriteProperty(thing="thermometer", name="setpoint", value=value))
    assert info.value.status == 422
    assert info.value.detail.startswith("setpoint: ")
    assert rig.thermometer.setpoint == 20.0


async def test_read_functional_property_in_a_worker_thread(rig: Rig) -> None:
    rig.lamp.hardware = 55
    reply = await rig.run(c.ReadProperty(thing="lamp", name="brightness"))
    assert reply == ValueReply(value=55)
    assert len(rig.lamp.getter_threads) == 1
    assert rig.lamp.getter_threads[0] != threading.get_ident()


async def test_write_functional_property_in_a_worker_thread(rig: Rig) -> None:
    reply = await rig.run(c.WriteProperty(thing="lamp", name="brightness", value=70))
    assert reply == NoContentReply()
    assert rig.lamp.hardware == 70
    [(value, thread)] = rig.lamp.setter_calls
    assert value == 70
    assert thread != threading.get_ident()
    assert await rig.run(c.ReadProperty(thing="lamp", name="brightness")) == ValueReply(value=70)


@pytest.mark.parametrize("value", [101, -1, "bright", 50.5])
async def test_write_functional_property_validates_before_the_setter(
        rig: Rig, value: Any) -> None:
    with pytest.raises(InvalidValue):
        await rig.run(c.WriteProperty(thing="lamp", name="brightness", value=value))
    assert rig.lamp.setter_calls == []
    assert rig.lamp.hardware == 40


@pytest.mark.parametrize(("thing", "name"), [
    ("thermometer", "temperature"),  # a read-only data property
    ("lamp", "serial"),
    ("lamp", "voltage"),  # a functional property without a setter
])
async def test_write_read_only_property_is_not_allowed(
        rig: Rig, thing: str, name: str) -> None:
    before = await rig.run(c.ReadProperty(thing=thing, name=name))
    assert isinstance(before, ValueReply)
    with pytest.raises(MethodNotAllowed) as info:
        await rig.run(c.WriteProperty(thing=thing, name=name, value=before.value))
    assert info.value.status == 405
    assert info.value.allow == ("GET", "HEAD")
    assert name in info.value.detail
    assert await rig.run(c.ReadProperty(thing=thing, name=name)) == before


async def test_read_all_properties(rig: Rig) -> None:
    rig.lamp.level = 25
    rig.lamp.hardware = 60
    reply = await rig.run(c.ReadAllProperties(thing="lamp"))
    # Every property, in declaration order: not-observable and functional ones included.
    assert reply == ValueReply(value={
        "level": 25, "label": "lamp", "serial": "L-1", "blinks": 0, "brightness": 60,
        "voltage": 230.0})
    assert isinstance(reply, ValueReply)
    assert list(reply.value) == list(Lamp.affordances.properties)


async def test_read_all_properties_of_a_demo_thing(rig: Rig) -> None:
    reply = await rig.run(c.ReadAllProperties(thing="thermometer"))
    assert reply == ValueReply(value={"temperature": 20.0, "setpoint": 20.0,
                                      "threshold": 100.0})


async def test_read_multiple_properties(rig: Rig) -> None:
    rig.lamp.label = "desk"
    reply = await rig.run(c.ReadMultipleProperties(thing="lamp",
                                                   names=("brightness", "label")))
    assert reply == ValueReply(value={"brightness": 40, "label": "desk"})
    reply = await rig.run(c.ReadMultipleProperties(thing="lamp", names=()))
    assert reply == ValueReply(value={})


async def test_write_multiple_properties(rig: Rig) -> None:
    reply = await rig.run(c.WriteMultipleProperties(
        thing="lamp", values={"level": 30, "label": "desk", "brightness": 65}))
    assert reply == NoContentReply()
    assert (rig.lamp.level, rig.lamp.label, rig.lamp.hardware) == (30, "desk", 65)
    assert await rig.run(c.ReadMultipleProperties(
        thing="lamp", names=("level", "label", "brightness"))) == ValueReply(
        value={"level": 30, "label": "desk", "brightness": 65})


@pytest.mark.parametrize(("values", "error"), [
    ({"level": 30, "label": "far too long", "brightness": 65}, InvalidValue),
    ({"level": 30, "label": "desk", "brightness": 101}, InvalidValue),
    ({"brightness": 65, "level": "high"}, InvalidValue),
    ({"level": 30, "serial": "L-2"}, MethodNotAllowed),
    ({"level": 30, "brightness": 65, "voltage": 12.0}, MethodNotAllowed),
    ({"level": 30, "brightness": 65, "nope": 1}, NotFound),
])
async def test_write_multiple_properties_is_all_or_nothing(
        rig: Rig, observer: Observer, values: dict[str, Any],
        error: type[RemoteProtocolError]) -> None:
    await rig.run(c.ObserveAllProperties(thing="lamp"), observer)
    received(observer)  # the initial values are the reply's, not the outbox's
    with pytest.raises(error):
        await rig.run(c.WriteMultipleProperties(thing="lamp", values=values))
    assert (rig.lamp.level, rig.lamp.label, rig.lamp.serial) == (0, "lamp", "L-1")
    assert rig.lamp.setter_calls == []
    assert rig.lamp.hardware == 40
    assert received(observer) == []  # and nobody was told of a change


async def test_write_multiple_properties_is_all_or_nothing_beyond_the_schema() -> None:
    window = Window()
    async with open_rig({"window": window}) as rig:
        with pytest.raises(InvalidValue, match="span"):
            await rig.run(c.WriteMultipleProperties(
                thing="window", values={"level": 5, "span": {"lo": 9, "hi": 1}}))
    assert window.span == Span(0, 10)
    assert window.level == 0


async def test_property_writes_notify_observers(rig: Rig, observer: Observer) -> None:
    await rig.run(c.ObserveProperty(thing="lamp", name="brightness"), observer)
    await rig.run(c.ObserveProperty(thing="lamp", name="level"), observer)
    await rig.run(c.WriteProperty(thing="lamp", name="brightness", value=70))
    await rig.run(c.WriteMultipleProperties(thing="lamp", values={"level": 5, "label": "x"}))
    assert received(observer) == [
        {"thing": "lamp", "property": "brightness", "value": 70},
        {"thing": "lamp", "property": "level", "value": 5},
    ]


# --------------------------------------------------------------------------- actions


async def test_invoke_and_wait_replies_with_the_output(rig: Rig) -> None:
    reply = await rig.run(c.InvokeAction(thing="counter", name="increment",
                                         input={"by": 2}, wait=True))
    assert reply == ValueReply(value=2)
    assert rig.counter.count == 2
    [invocation] = rig.invocations.list()
    assert invocation.status is InvocationStatus.COMPLETED
    assert (invocation.thing, invocation.action, invocation.input) == (
        "counter", "increment", {"by": 2})


async def test_invoke_and_wait_without_output(rig: Rig) -> None:
    rig.lamp.level = 50
    reply = await rig.run(c.InvokeAction(thing="lamp", name="switch_off", input=None,
                                         wait=True))
    assert reply == NoContentReply()
    assert rig.lamp.level == 0


async def test_invoke_and_wait_for_a_failing_action(rig: Rig) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        await rig.run(c.InvokeAction(thing="lamp", name="burn_out", input={}, wait=True))
    assert info.value.status == 500
    assert info.value.detail == (
        "action 'burn_out' failed: RuntimeError: the filament broke")
    [invocation] = rig.invocations.list()
    assert invocation.status is InvocationStatus.FAILED


async def test_invoke_and_wait_for_an_action_that_refuses(rig: Rig) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        await rig.run(c.InvokeAction(thing="lamp", name="refuse", input={}, wait=True))
    assert info.value.status == 422
    assert "not in this state" in info.value.detail


async def test_invoke_without_waiting(rig: Rig) -> None:
    reply = await rig.run(c.InvokeAction(thing="lamp", name="hold", input=None))
    assert isinstance(reply, InvocationReply)
    assert reply.created
    invocation = reply.invocation
    assert invocation.status is InvocationStatus.PENDING
    assert rig.lamp.holds_started == 0  # it starts once the caller yields
    await trio.testing.wait_all_tasks_blocked()
    assert invocation.status is InvocationStatus.RUNNING
    assert rig.lamp.holds_started == 1
    rig.lamp.release.set()
    await rig.finish(invocation)
    assert invocation.status is InvocationStatus.COMPLETED
    assert invocation.output == "released"


@pytest.mark.parametrize(("input", "error"), [
    ({"by": "two"}, InvalidValue),
    ({"step": 1}, InvalidValue),
    ([1], BadRequest),
    ("by", BadRequest),
])
async def test_invoke_with_bad_input_creates_no_invocation(
        rig: Rig, observer: Observer, input: Any, error: type[RemoteProtocolError]) -> None:
    for wait in (False, True):
        with pytest.raises(error):
            await rig.run(c.InvokeAction(thing="counter", name="increment", input=input,
                                         wait=wait), observer)
    assert rig.invocations.list() == []
    assert rig.counter.count == 0
    assert rig.memberships(observer) == frozenset()


async def test_invoke_with_a_union_parameter() -> None:
    async with open_rig({"window": Window()}) as rig:
        try:
            reply: object = await rig.run(c.InvokeAction(
                thing="window", name="pick", input={"choice": "a"}, wait=True))
        except Exception as error:  # a bug: leave the rig, then fail the assertion
            reply = error
    assert reply == ValueReply(value="a")


async def test_query_action(rig: Rig) -> None:
    invocation = await rig.start("lamp", "hold")
    query = c.QueryAction(invocation_id=invocation.id)
    assert await rig.run(query) == InvocationReply(invocation=invocation, created=False)
    rig.lamp.release.set()
    await rig.finish(invocation)
    reply = await rig.run(query)
    assert isinstance(reply, InvocationReply)
    assert reply.invocation is invocation
    assert reply.invocation.status is InvocationStatus.COMPLETED
    assert not reply.created
    output = c.QueryAction(invocation_id=invocation.id, output_only=True)
    assert await rig.run(output) == ValueReply(value="released")


async def test_query_output_of_an_unfinished_invocation_is_a_conflict(rig: Rig) -> None:
    invocation = await rig.start("lamp", "hold")
    output = c.QueryAction(invocation_id=invocation.id, output_only=True)
    with pytest.raises(Conflict) as info:
        await rig.run(output)
    assert info.value.status == 409
    assert info.value.detail == f"invocation {invocation.id} has not finished (pending)"
    await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(Conflict, match=r"has not finished \(running\)"):
        await rig.run(output)
    rig.lamp.release.set()
    await rig.finish(invocation)
    assert await rig.run(output) == ValueReply(value="released")


async def test_query_output_of_a_failed_invocation(rig: Rig) -> None:
    invocation = await rig.start("lamp", "burn_out")
    await rig.finish(invocation)
    with pytest.raises(RemoteProtocolError) as info:
        await rig.run(c.QueryAction(invocation_id=invocation.id, output_only=True))
    assert info.value.status == 500
    assert "the filament broke" in info.value.detail


async def test_query_output_of_a_completed_invocation_without_output(rig: Rig) -> None:
    invocation = await rig.start("lamp", "switch_off")
    await rig.finish(invocation)
    assert await rig.run(c.QueryAction(invocation_id=invocation.id,
                                       output_only=True)) == NoContentReply()


async def test_cancel_and_wait(rig: Rig) -> None:
    invocation = await rig.start("lamp", "hold")
    await trio.testing.wait_all_tasks_blocked()
    assert invocation.status is InvocationStatus.RUNNING
    reply = await rig.run(c.CancelAction(invocation_id=invocation.id))
    assert reply == InvocationReply(invocation=invocation)
    assert invocation.status is InvocationStatus.CANCELLED
    with pytest.raises(Conflict, match="was cancelled"):
        await rig.run(c.QueryAction(invocation_id=invocation.id, output_only=True))
    with pytest.raises(Conflict, match=r"has already ended \(cancelled\)"):
        await rig.run(c.CancelAction(invocation_id=invocation.id))


async def test_cancel_without_waiting(rig: Rig) -> None:
    invocation = await rig.start("lamp", "hold")
    await trio.testing.wait_all_tasks_blocked()
    reply = await rig.run(c.CancelAction(invocation_id=invocation.id, wait=False))
    assert reply == InvocationReply(invocation=invocation)
    assert invocation.status is InvocationStatus.RUNNING  # asked, not yet stopped
    await rig.finish(invocation)
    assert invocation.status is InvocationStatus.CANCELLED


async def test_cancel_a_pending_invocation(rig: Rig) -> None:
    invocation = await rig.start("lamp", "hold")
    assert invocation.status is InvocationStatus.PENDING
    await rig.run(c.CancelAction(invocation_id=invocation.id))
    assert invocation.status is InvocationStatus.CANCELLED
    assert invocation.time_started is None
    assert rig.lamp.holds_started == 0


async def test_cancel_a_completed_invocation_is_a_conflict(rig: Rig) -> None:
    await rig.run(c.InvokeAction(thing="counter", name="increment", input={}, wait=True))
    [invocation] = rig.invocations.list()
    with pytest.raises(Conflict) as info:
        await rig.run(c.CancelAction(invocation_id=invocation.id))
    assert info.value.status == 409
    assert invocation.status is InvocationStatus.COMPLETED


async def test_query_all_actions(rig: Rig) -> None:
    assert await rig.run(c.QueryAllActions()) == InvocationListReply(invocations=())
    first = await rig.start("counter", "increment")
    second = await rig.start("lamp", "hold")
    third = await rig.start("counter", "increment", {"by": 3})
    fourth = await rig.start("counter", "count_slowly", {"n": 0})

    async def listed(**query: str) -> tuple[Invocation, ...]:
        reply = await rig.run(c.QueryAllActions(**query))
        assert isinstance(reply, InvocationListReply)
        return reply.invocations

    assert await listed() == (first, second, third, fourth)  # oldest first
    assert await listed(thing="counter") == (first, third, fourth)
    assert await listed(thing="lamp") == (second,)
    assert await listed(thing="thermometer") == ()
    assert await listed(thing="counter", action="increment") == (first, third)
    assert await listed(action="hold") == (second,)
    rig.lamp.release.set()


async def test_query_all_actions_of_an_unknown_action_is_not_found(rig: Rig) -> None:
    with pytest.raises(NotFound):
        await rig.run(c.QueryAllActions(thing="counter", action="nope"))


async def test_invoke_with_an_observer_tells_it_the_status(
        rig: Rig, observer: Observer) -> None:
    invocation = await rig.start("lamp", "hold", observer=observer)
    # In the invocation's own set before the action can start.
    own = rig.observers.invocation_if_observed(invocation.id)
    assert own is not None
    assert rig.memberships(observer) == {own}
    await trio.testing.wait_all_tasks_blocked()
    rig.lamp.release.set()
    await rig.finish(invocation)
    # "pending" is the reply itself; the changes after it are pushed.
    assert [m["status"] for m in received(observer)] == ["running", "completed"]
    assert rig.memberships(observer) == frozenset()  # forgotten once ended
    assert rig.observers.invocation_if_observed(invocation.id) is None


async def test_invoke_and_wait_with_an_observer(rig: Rig, observer: Observer) -> None:
    reply = await rig.run(c.InvokeAction(thing="counter", name="increment", input={},
                                         wait=True), observer)
    assert reply == ValueReply(value=1)
    assert [m["status"] for m in received(observer)] == ["running", "completed"]
    assert nobody_observes(rig)


# --------------------------------------------------------------------------- events


async def test_subscribe_event_without_observer_is_refused(rig: Rig) -> None:
    # A long-poll is an observer too (bindings/http.py): without one there is nowhere
    # to push to.
    with pytest.raises(BadRequest, match="needs a connection to push to"):
        await rig.run(c.SubscribeEvent(thing="thermometer", name="overheated"))


async def test_an_event_emitted_in_a_worker_thread_reaches_observers(
        rig: Rig, observer: Observer) -> None:
    await rig.run(c.SubscribeEvent(thing="lamp", name="flashed"), observer)
    with trio.fail_after(TIMEOUT):
        await trio.to_thread.run_sync(rig.lamp.flashed.emit, 3)
        await trio.testing.wait_all_tasks_blocked()
    assert received(observer) == [{"thing": "lamp", "event": "flashed", "data": 3}]


async def test_subscribing_with_the_last_id_seen_replays_what_was_missed(
        rig: Rig, observer: Observer) -> None:
    last = rig.history.last_id
    rig.lamp.flashed.emit(1)
    rig.thermometer.overheated.emit(reading(101.0))  # another Thing's: not replayed
    rig.lamp.dimmed.emit(0.5)  # another event: not replayed
    rig.lamp.flashed.emit(2)
    reply = await rig.run(c.SubscribeEvent(thing="lamp", name="flashed", after=last),
                          observer)
    assert isinstance(reply, SubscribedReply)
    assert [(type(n).__name__, getattr(n, "data", None)) for n in reply.missed] == [
        ("EventEmitted", 1), ("EventEmitted", 2)]
    ids = [n.id for n in reply.missed if isinstance(n, c.EventEmitted)]
    assert ids == sorted(ids, key=lambda i: int(i.rpartition(".")[2]))
    # From the newest id on, nothing is missed.
    again = await rig.run(c.SubscribeEvent(thing="lamp", name="flashed", after=ids[-1]),
                          observer)
    assert again == SubscribedReply(event_id=ids[-1])


async def test_subscribing_with_an_id_of_another_run_is_told_of_a_gap(
        rig: Rig, observer: Observer) -> None:
    rig.lamp.flashed.emit(1)
    reply = await rig.run(c.SubscribeAllEvents(thing="lamp", after="0000.5"), observer)
    assert isinstance(reply, SubscribedReply)
    gap, *rest = reply.missed
    assert isinstance(gap, c.NotificationsMissed)
    assert gap.last_event_id == "0000.5" and "restarted" in gap.detail
    assert [getattr(n, "data", None) for n in rest] == [1]


async def test_an_action_observer_coming_back_gets_the_status_changes_missed(
        rig: Rig, observer: Observer) -> None:
    last = rig.history.last_id
    invocation = await rig.start("counter", "increment", {"by": 2})
    await rig.finish(invocation)
    reply = await rig.run(c.ObserveAction(thing="counter", name="increment", after=last),
                          observer)
    assert isinstance(reply, SubscribedReply)
    statuses = [n.invocation.status.value for n in reply.missed
                if isinstance(n, c.ActionStatusChanged)]
    # Snapshots: each as it was then, though the invocation has completed since.
    assert statuses == ["pending", "running", "completed"]


async def test_subscribe_event_with_an_observer(rig: Rig, observer: Observer) -> None:
    reply = await rig.run(c.SubscribeEvent(thing="thermometer", name="overheated"), observer)
    assert reply == SubscribedReply(event_id=rig.history.last_id)
    assert rig.memberships(observer) == rig.sets("thermometer", EVENT, "overheated")
    rig.thermometer.overheated.emit(reading(102.0))
    assert received(observer) == [{"thing": "thermometer", "event": "overheated",
                                   "data": {"temperature": 102.0, "time": TIME.isoformat()}}]


async def test_unsubscribe_event(rig: Rig, observer: Observer) -> None:
    await rig.run(c.SubscribeEvent(thing="lamp", name="flashed"), observer)
    await rig.run(c.SubscribeEvent(thing="lamp", name="dimmed"), observer)
    reply = await rig.run(c.UnsubscribeEvent(thing="lamp", name="flashed"), observer)
    assert reply == NoContentReply()
    assert rig.memberships(observer) == rig.sets("lamp", EVENT, "dimmed")
    rig.lamp.flashed.emit(2)
    rig.lamp.dimmed.emit(None)
    assert received(observer) == [{"thing": "lamp", "event": "dimmed", "data": None}]
    # Unsubscribing what one does not subscribe to is no error.
    assert await rig.run(c.UnsubscribeEvent(thing="lamp", name="flashed"),
                         observer) == NoContentReply()


async def test_subscribe_and_unsubscribe_all_events(rig: Rig, observer: Observer) -> None:
    reply = await rig.run(c.SubscribeAllEvents(thing="lamp"), observer)
    assert reply == SubscribedReply(event_id=rig.history.last_id)
    assert rig.memberships(observer) == rig.sets("lamp", EVENT, "flashed", "dimmed")
    rig.lamp.flashed.emit(4)
    rig.lamp.dimmed.emit(None)
    rig.thermometer.overheated.emit(reading())  # another Thing's
    assert received(observer) == [
        {"thing": "lamp", "event": "flashed", "data": 4},
        {"thing": "lamp", "event": "dimmed", "data": None},
    ]
    reply = await rig.run(c.UnsubscribeAllEvents(thing="lamp"), observer)
    assert reply == NoContentReply()
    assert rig.memberships(observer) == frozenset()
    rig.lamp.flashed.emit(5)
    assert received(observer) == []


# --------------------------------------------------------------------------- observing


async def test_observe_property_replies_with_the_current_value(
        rig: Rig, observer: Observer) -> None:
    rig.thermometer.setpoint = 42.0
    before = datetime.datetime.now(datetime.UTC)
    reply = await rig.run(c.ObserveProperty(thing="thermometer", name="setpoint"), observer)
    assert isinstance(reply, SubscribedReply)
    [initial] = reply.initial
    assert (initial.thing, initial.name, initial.value) == ("thermometer", "setpoint", 42.0)
    assert before <= initial.timestamp <= datetime.datetime.now(datetime.UTC)
    assert rig.memberships(observer) == rig.sets("thermometer", PROPERTY, "setpoint")
    assert received(observer) == []  # the initial value is the reply's to deliver
    rig.thermometer.setpoint = 43.0
    await rig.run(c.WriteProperty(thing="thermometer", name="threshold", value=90))
    assert received(observer) == [
        {"thing": "thermometer", "property": "setpoint", "value": 43.0}]


async def test_observe_functional_property(rig: Rig, observer: Observer) -> None:
    reply = await rig.run(c.ObserveProperty(thing="lamp", name="brightness"), observer)
    assert isinstance(reply, SubscribedReply)
    assert [(i.name, i.value) for i in reply.initial] == [("brightness", 40)]
    rig.lamp.hardware = 12  # changed in the hardware, then announced
    rig.lamp.property_changed("brightness")
    assert received(observer) == [{"thing": "lamp", "property": "brightness", "value": 12}]


async def test_observe_unobservable_property_is_not_allowed(
        rig: Rig, observer: Observer) -> None:
    with pytest.raises(MethodNotAllowed, match="not observable"):
        await rig.run(c.ObserveProperty(thing="lamp", name="blinks"), observer)
    assert rig.memberships(observer) == frozenset()


async def test_unobserve_property(rig: Rig, observer: Observer) -> None:
    await rig.run(c.ObserveProperty(thing="lamp", name="level"), observer)
    await rig.run(c.ObserveProperty(thing="lamp", name="label"), observer)
    reply = await rig.run(c.UnobserveProperty(thing="lamp", name="level"), observer)
    assert reply == NoContentReply()
    assert rig.memberships(observer) == rig.sets("lamp", PROPERTY, "label")
    rig.lamp.level = 9
    rig.lamp.label = "desk"
    assert received(observer) == [{"thing": "lamp", "property": "label", "value": "desk"}]


async def test_observe_and_unobserve_all_properties(rig: Rig, observer: Observer) -> None:
    reply = await rig.run(c.ObserveAllProperties(thing="lamp"), observer)
    assert isinstance(reply, SubscribedReply)
    observable = ["level", "label", "serial", "brightness", "voltage"]  # not "blinks"
    assert [(i.thing, i.name, i.value) for i in reply.initial] == [
        ("lamp", "level", 0), ("lamp", "label", "lamp"), ("lamp", "serial", "L-1"),
        ("lamp", "brightness", 40), ("lamp", "voltage", 230.0)]
    assert rig.memberships(observer) == rig.sets("lamp", PROPERTY, *observable)
    reply = await rig.run(c.UnobserveAllProperties(thing="lamp"), observer)
    assert reply == NoContentReply()
    assert rig.memberships(observer) == frozenset()
    rig.lamp.level = 3
    assert received(observer) == []


async def test_observe_action(rig: Rig, observer: Observer) -> None:
    reply = await rig.run(c.ObserveAction(thing="lamp", name="switch_off"), observer)
    assert reply == SubscribedReply(event_id=rig.history.last_id)
    assert rig.memberships(observer) == rig.sets("lamp", ACTION, "switch_off")
    # Somebody else invokes it; the observer hears every status of every invocation.
    await rig.run(c.InvokeAction(thing="lamp", name="switch_off", input={}, wait=True))
    await rig.start("lamp", "hold")
    [first, _] = rig.invocations.list()
    assert received(observer) == [
        {"thing": "lamp", "action": "switch_off", "id": first.id, "status": status}
        for status in ("pending", "running", "completed")]
    rig.lamp.release.set()


async def test_unobserve_action(rig: Rig, observer: Observer) -> None:
    await rig.run(c.ObserveAction(thing="counter", name="increment"), observer)
    await rig.run(c.ObserveAction(thing="counter", name="count_slowly"), observer)
    reply = await rig.run(c.UnobserveAction(thing="counter", name="increment"), observer)
    assert reply == NoContentReply()
    assert rig.memberships(observer) == rig.sets("counter", ACTION, "count_slowly")
    await rig.run(c.InvokeAction(thing="counter", name="increment", input={}, wait=True))
    assert received(observer) == []


OBSERVATIONS = [
    c.UnsubscribeEvent(thing="thermometer", name="overheated"),
    c.SubscribeAllEvents(thing="thermometer"),
    c.UnsubscribeAllEvents(thing="thermometer"),
    c.ObserveProperty(thing="counter", name="count"),
    c.UnobserveProperty(thing="counter", name="count"),
    c.ObserveAllProperties(thing="counter"),
    c.UnobserveAllProperties(thing="counter"),
    c.ObserveAction(thing="counter", name="increment"),
    c.UnobserveAction(thing="counter", name="increment"),
]


@pytest.mark.parametrize("command", OBSERVATIONS, ids=lambda command: type(command).__name__)
async def test_observation_without_an_observer_is_a_bad_request(
        rig: Rig, command: c.Command) -> None:
    with pytest.raises(BadRequest) as info:
        await rig.run(command)
    assert info.value.status == 400
    assert info.value.detail == (f"{type(command).__name__} needs a connection to push to "
                                 "(a WebSocket or an event stream)")
    assert nobody_observes(rig)


# --------------------------------------------------------------------------- not found


NO_THING = "no Thing named 'nope'"


def _not_found() -> Iterator[tuple[c.Command, str]]:
    """Commands naming something that does not exist, and the detail that says so."""
    yield c.ReadProperty(thing="nope", name="count"), NO_THING
    yield c.ReadProperty(thing="counter", name="nope"), "Thing 'counter' has no property 'nope'"
    yield c.WriteProperty(thing="nope", name="count", value=1), NO_THING
    yield (c.WriteProperty(thing="counter", name="nope", value=1),
           "Thing 'counter' has no property 'nope'")
    yield c.ReadAllProperties(thing="nope"), NO_THING
    yield c.ReadMultipleProperties(thing="nope", names=("count",)), NO_THING
    yield (c.ReadMultipleProperties(thing="counter", names=("count", "nope")),
           "Thing 'counter' has no property 'nope'")
    yield c.WriteMultipleProperties(thing="nope", values={"count": 1}), NO_THING
    yield (c.WriteMultipleProperties(thing="counter", values={"count": 1, "nope": 2}),
           "Thing 'counter' has no property 'nope'")
    for wait in (False, True):
        yield c.InvokeAction(thing="nope", name="increment", input={}, wait=wait), NO_THING
        yield (c.InvokeAction(thing="counter", name="nope", input={}, wait=wait),
               "Thing 'counter' has no action 'nope'")
        yield (c.InvokeAction(thing="counter", name="count", input={}, wait=wait),
               "Thing 'counter' has no action 'count'")
    for wait in (False, True):
        yield c.QueryAction(invocation_id="nope", output_only=wait), "no invocation 'nope'"
        yield c.CancelAction(invocation_id="nope", wait=wait), "no invocation 'nope'"
    yield c.QueryAllActions(thing="nope"), NO_THING
    yield c.QueryAllActions(thing="nope", action="increment"), NO_THING
    yield c.SubscribeEvent(thing="nope", name="overheated"), NO_THING
    yield (c.SubscribeEvent(thing="thermometer", name="nope"),
           "Thing 'thermometer' has no event 'nope'")
    yield (c.SubscribeEvent(thing="thermometer", name="setpoint"),
           "Thing 'thermometer' has no event 'setpoint'")
    yield c.UnsubscribeEvent(thing="nope", name="overheated"), NO_THING
    yield (c.UnsubscribeEvent(thing="thermometer", name="nope"),
           "Thing 'thermometer' has no event 'nope'")
    yield c.SubscribeAllEvents(thing="nope"), NO_THING
    yield c.UnsubscribeAllEvents(thing="nope"), NO_THING
    yield c.ObserveProperty(thing="nope", name="count"), NO_THING
    yield (c.ObserveProperty(thing="counter", name="nope"),
           "Thing 'counter' has no property 'nope'")
    yield (c.ObserveProperty(thing="counter", name="increment"),
           "Thing 'counter' has no property 'increment'")
    yield c.UnobserveProperty(thing="nope", name="count"), NO_THING
    yield (c.UnobserveProperty(thing="counter", name="nope"),
           "Thing 'counter' has no property 'nope'")
    yield c.ObserveAllProperties(thing="nope"), NO_THING
    yield c.UnobserveAllProperties(thing="nope"), NO_THING
    yield c.ObserveAction(thing="nope", name="increment"), NO_THING
    yield (c.ObserveAction(thing="counter", name="nope"),
           "Thing 'counter' has no action 'nope'")
    yield (c.ObserveAction(thing="counter", name="count"),
           "Thing 'counter' has no action 'count'")
    yield c.UnobserveAction(thing="nope", name="increment"), NO_THING
    yield (c.UnobserveAction(thing="counter", name="nope"),
           "Thing 'counter' has no action 'nope'")
    yield c.ReadThingDescription(thing="nope", base=BASE), NO_THING


NOT_FOUND = list(_not_found())


@pytest.mark.parametrize(("command", "detail"), NOT_FOUND,
                         ids=[repr(command) for command, _ in NOT_FOUND])
async def test_unknown_names_are_not_found(
        rig: Rig, observer: Observer, command: c.Command, detail: str) -> None:
    with pytest.raises(NotFound) as info:
        await rig.run(command, observer)
    assert info.value.status == 404
    assert info.value.detail.startswith(detail)
    assert rig.memberships(observer) == frozenset()
    assert rig.invocations.list() == []
    assert rig.counter.count == 0


@pytest.mark.parametrize("command", [
    c.ReadProperty(thing="nope", name="count"),
    c.SubscribeEvent(thing="nope", name="overheated"),
    c.SubscribeEvent(thing="thermometer", name="nope"),
    c.InvokeAction(thing="counter", name="nope", input={}),
], ids=repr)
async def test_unknown_names_are_not_found_without_an_observer(
        rig: Rig, command: c.Command) -> None:
    with pytest.raises(NotFound):
        await rig.run(command)
    assert nobody_observes(rig)


async def test_unknown_event_of_an_unknown_thing_names_the_thing(rig: Rig) -> None:
    with pytest.raises(NotFound, match="no Thing named 'nope'"):
        await rig.run(c.SubscribeEvent(thing="nope", name="overheated"))
    with pytest.raises(NotFound, match="Thing 'thermometer' has no event 'nope'"):
        await rig.run(c.SubscribeEvent(thing="thermometer", name="nope"))


# --------------------------------------------------------------------------- descriptions


async def test_read_thing_description(
        rig: Rig, td_validator: jsonschema.Draft7Validator) -> None:
    reply = await rig.run(c.ReadThingDescription(thing="thermometer", base=BASE))
    assert isinstance(reply, DocumentReply)
    assert reply.content_type == "application/td+json"
    td = reply.document
    assert not list(td_validator.iter_errors(td))
    assert td == rig.dispatcher.describe("thermometer", BASE)
    assert td["id"] == thing_id(BASE, "thermometer")
    assert td["title"] == "Thermometer"
    assert td["description"] == "A simulated thermometer whose temperature follows a setpoint."
    assert td["base"] == BASE
    assert td["security"] == ["nosec_sc"]
    assert list(td["properties"]) == ["temperature", "setpoint", "threshold"]
    assert list(td["actions"]) == ["ramp"]
    assert list(td["events"]) == ["overheated"]
    # Both bindings have their say: an HTTP form and a WebSocket form.
    hrefs = [form["href"] for form in td["properties"]["setpoint"]["forms"]]
    assert "thermometer/setpoint" in hrefs
    assert "ws://things.test:8000/thermometer/ws" in hrefs


async def test_thing_description_title_and_docstring(rig: Rig) -> None:
    reply = await rig.run(c.ReadThingDescription(thing="lamp", base=BASE))
    assert isinstance(reply, DocumentReply)
    assert reply.document["title"] == "Desk lamp"
    assert reply.document["description"] == "A lamp whose brightness lives in its hardware."
    assert reply.document["properties"]["serial"]["readOnly"] is True
    assert reply.document["properties"]["blinks"]["observable"] is False


async def test_read_all_thing_descriptions(rig: Rig) -> None:
    reply = await rig.run(c.ReadAllThingDescriptions(base=BASE))
    assert isinstance(reply, ValueReply)
    assert list(reply.value) == ["thermometer", "counter", "lamp"]
    for name, td in reply.value.items():
        assert td == rig.dispatcher.describe(name, BASE)


async def test_list_things(rig: Rig) -> None:
    assert await rig.run(c.ListThings(base=BASE)) == ValueReply(value={
        "thermometer": f"{BASE}thermometer/", "counter": f"{BASE}counter/",
        "lamp": f"{BASE}lamp/"})


async def test_discover(rig: Rig, td_validator: jsonschema.Draft7Validator) -> None:
    reply = await rig.run(c.Discover(base=BASE))
    assert isinstance(reply, DocumentReply)
    assert reply.content_type == "application/td+json"
    directory = reply.document
    assert not list(td_validator.iter_errors(directory))
    assert directory["id"] == thing_id(BASE, ".well-known/wot")
    assert directory["base"] == BASE
    assert directory["@type"] == "ThingDirectory"
    assert directory["links"] == [
        {"rel": "item", "href": f"{name}/", "type": "application/td+json"}
        for name in ("thermometer", "counter", "lamp")]
    assert directory["properties"]["things"]["forms"][0]["href"] == (
        ".well-known/wot/things{?offset,limit,format}")


async def test_the_listing_is_sorted_by_id_a_page_at_a_time(rig: Rig) -> None:
    ids = sorted(thing_id(BASE, name) for name in ("thermometer", "counter", "lamp"))
    whole = await rig.run(c.ListThingDescriptions(base=BASE))
    assert isinstance(whole, DescriptionPageReply)
    assert [td["id"] for td in whole.descriptions] == ids  # WoT Discovery's order
    assert (whole.offset, whole.total, whole.limit) == (0, 3, None)
    assert whole.descriptions[0] == rig.dispatcher.describe(
        next(n for n in ("thermometer", "counter", "lamp") if thing_id(BASE, n) == ids[0]),
        BASE)
    second = await rig.run(c.ListThingDescriptions(base=BASE, offset=1, limit=1,
                                                   collection=True))
    assert isinstance(second, DescriptionPageReply)
    assert [td["id"] for td in second.descriptions] == ids[1:2]
    assert (second.offset, second.total, second.limit, second.collection) == (1, 3, 1, True)
    assert second.etag == whole.etag
    beyond = await rig.run(c.ListThingDescriptions(base=BASE, offset=10**9, limit=5))
    assert isinstance(beyond, DescriptionPageReply)
    assert (beyond.descriptions, beyond.total) == ((), 3)
    elsewhere = await rig.run(c.ListThingDescriptions(base="https://elsewhere.test/"))
    assert isinstance(elsewhere, DescriptionPageReply)
    assert elsewhere.etag != whole.etag  # other base, other ids


async def test_retrieve_thing_by_id(rig: Rig) -> None:
    reply = await rig.run(c.RetrieveThing(id=thing_id(BASE, "counter"), base=BASE))
    assert reply == DocumentReply(document=rig.dispatcher.describe("counter", BASE),
                                  content_type="application/td+json")
    with pytest.raises(NotFound, match="no Thing Description with id 'urn:uuid:nope'"):
        await rig.run(c.RetrieveThing(id="urn:uuid:nope", base=BASE))
    with pytest.raises(NotFound):  # an id is the Thing's at one base only
        await rig.run(c.RetrieveThing(id=thing_id("https://elsewhere.test/", "counter"),
                                      base=BASE))


async def test_descriptions_carry_the_security_definitions() -> None:
    definitions = {"bearer_sc": {"scheme": "bearer", "format": "opaque"}}
    async with open_rig(security_definitions=definitions) as rig:
        td = await rig.run(c.ReadThingDescription(thing="counter", base=BASE))
        directory = await rig.run(c.Discover(base=BASE))
    for reply in (td, directory):
        assert isinstance(reply, DocumentReply)
        assert reply.document["securityDefinitions"] == definitions
        assert reply.document["security"] == ["bearer_sc"]


async def test_descriptions_follow_the_base(rig: Rig) -> None:
    other = "https://elsewhere.test/"
    reply = await rig.run(c.ReadThingDescription(thing="counter", base=other))
    assert isinstance(reply, DocumentReply)
    assert reply.document["base"] == other
    assert reply.document["id"] == thing_id(other, "counter")
    assert reply.document["id"] != thing_id(BASE, "counter")
    assert await rig.run(c.ListThings(base=other)) == ValueReply(value={
        name: f"{other}{name}/" for name in ("thermometer", "counter", "lamp")})


def test_dispatcher_exposes_its_observer_registry() -> None:
    registry = ObserverRegistry({})
    dispatcher = Dispatcher(things={}, invocations=None,  # type: ignore[arg-type]
                            history=History(()), observers=registry, bindings=[])
    assert dispatcher.observers is registry
