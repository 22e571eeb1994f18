"""The action runner (``trio_things.runtime.actions``), driven directly: starting,
cancelling, failing, reporting status and forgetting invocations."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trio_things as tt
from trio_things.demo import Reading
from trio_things.errors import (
    BadRequest,
    Conflict,
    InvalidValue,
    LocalProtocolError,
    NotFound,
)
from trio_things.model.invocation import Invocation, InvocationError, InvocationStatus
from trio_things.runtime.actions import ActionRunner, open_action_runner

#: Seconds: what a test may take before it is a hang (never reached when all is well).
TIMEOUT = 10
RETENTION = 300.0
TIME = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)


class Machine(tt.Thing):
    """Actions of every kind, each under the test's control."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.started = 0
        self.checks = 0

    @tt.action
    async def hold(self) -> str:
        self.started += 1
        await self.release.wait()
        return "released"

    @tt.action
    def block(self) -> str:
        """A worker thread that never checks for cancellation."""
        self.entered.set()
        if not self.gate.wait(TIMEOUT):
            raise TimeoutError("the test never opened the gate")
        return "done"

    @tt.action
    def spin(self, context: tt.ActionContext) -> int:
        """A worker thread that checks for cancellation as it goes."""
        self.entered.set()
        while self.checks < 1_000_000:
            context.check_cancelled()
            self.checks += 1
            self.gate.wait(0.001)
        return self.checks

    @tt.action
    def nap(self, context: tt.ActionContext, seconds: float) -> str:
        self.entered.set()
        context.sleep(seconds)
        return "rested"

    @tt.action
    async def chat(self, context: tt.ActionContext, lines: int = 2) -> str:
        for i in range(lines):
            context.log(f"line {i}", level="DEBUG" if i else "INFO")
        context.check_cancelled()  # does nothing in an async action
        return context.invocation_id

    @tt.action
    async def misuse(self, context: tt.ActionContext) -> None:
        context.sleep(1)

    @tt.action
    async def burn(self) -> None:
        raise RuntimeError("smoke")

    @tt.action
    async def refuse(self) -> None:
        raise tt.InvalidValue("not in this state", path="refuse")

    @tt.action
    async def measure(self) -> Reading:
        return Reading(temperature=21.5, time=TIME)

    @tt.action
    async def add(self, a: int, b: int = 1) -> int:
        return a + b

    @tt.action
    async def idle(self) -> None:
        pass


@attrs.define
class Runner:
    runner: ActionRunner
    machine: Machine
    statuses: list[tuple[str, str]]
    """(action, status) as on_status was called, in order."""

    def invoke(self, action: str, input: Any = None) -> Invocation:
        return self.runner.invoke("machine", self.machine,
                                  Machine.affordances.actions[action], input)

    async def finish(self, invocation: Invocation) -> None:
        with trio.fail_after(TIMEOUT):
            await self.runner.wait(invocation)


@pytest.fixture
async def runner() -> AsyncIterator[Runner]:
    statuses: list[tuple[str, str]] = []
    async with open_action_runner(
            retention=RETENTION,
            on_status=lambda i: statuses.append((i.action, i.status.value))) as runner:
        yield Runner(runner=runner, machine=Machine(), statuses=statuses)


async def test_an_action_runs_and_completes(runner: Runner) -> None:
    invocation = runner.invoke("add", {"a": 2, "b": 3})
    assert (invocation.thing, invocation.action, invocation.input) == (
        "machine", "add", {"a": 2, "b": 3})
    assert invocation.status is InvocationStatus.PENDING
    await runner.finish(invocation)
    assert invocation.status is InvocationStatus.COMPLETED
    assert invocation.output == 5
    assert invocation.error is None
    assert invocation.time_started is not None and invocation.time_completed is not None
    assert invocation.time_requested <= invocation.time_started <= invocation.time_completed
    assert runner.statuses == [("add", "pending"), ("add", "running"), ("add", "completed")]


async def test_parameter_defaults_apply(runner: Runner) -> None:
    invocation = runner.invoke("add", {"a": 2})
    await runner.finish(invocation)
    assert invocation.output == 3


async def test_the_output_is_json_data(runner: Runner) -> None:
    invocation = runner.invoke("measure")
    await runner.finish(invocation)
    assert invocation.output == {"temperature": 21.5, "time": TIME.isoformat()}


async def test_an_action_without_output(runner: Runner) -> None:
    for input in (None, {}):
        invocation = runner.invoke("idle", input)
        await runner.finish(invocation)
        assert invocation.status is InvocationStatus.COMPLETED
        assert invocation.output is None


@pytest.mark.parametrize(("action", "input", "error", "detail"), [
    ("add", {}, InvalidValue, "add: required field 'a' is missing"),
    ("add", {"a": "two"}, InvalidValue, "add.a: expected an integer"),
    ("add", {"a": 1, "c": 2}, InvalidValue, "add: unexpected field 'c'"),
    ("idle", {"x": 1}, InvalidValue, "idle: takes no input, got ['x']"),
    ("add", [1, 2], BadRequest, "the input of action 'add' must be a JSON object"),
    ("idle", 0, BadRequest, "the input of action 'idle' must be a JSON object"),
])
async def test_bad_input_creates_no_invocation(
        runner: Runner, action: str, input: Any, error: type[Exception], detail: str) -> None:
    with pytest.raises(error) as info:
        runner.invoke(action, input)
    assert str(info.value).startswith(detail)
    assert runner.runner.list() == []
    assert runner.statuses == []
    await trio.testing.wait_all_tasks_blocked()
    assert runner.runner.list() == []


async def test_get_and_list(runner: Runner) -> None:
    first = runner.invoke("hold")
    second = runner.invoke("idle")
    third = runner.invoke("hold")
    assert runner.runner.get(second.id) is second
    assert runner.runner.list() == [first, second, third]
    assert runner.runner.list(thing="machine", action="hold") == [first, third]
    assert runner.runner.list(thing="other") == []
    assert runner.runner.list(action="idle") == [second]
    with pytest.raises(NotFound, match="no invocation 'nope'"):
        runner.runner.get("nope")
    runner.machine.release.set()


async def test_an_async_action_starts_at_the_next_scheduling_point(runner: Runner) -> None:
    invocation = runner.invoke("hold")
    assert runner.machine.started == 0
    await trio.testing.wait_all_tasks_blocked()
    assert runner.machine.started == 1
    assert invocation.status is InvocationStatus.RUNNING
    runner.machine.release.set()
    await runner.finish(invocation)
    assert invocation.output == "released"


async def test_cancel_a_running_async_action(runner: Runner) -> None:
    invocation = runner.invoke("hold")
    await trio.testing.wait_all_tasks_blocked()
    assert runner.runner.cancel(invocation.id) is invocation
    assert invocation.status is InvocationStatus.RUNNING  # asked, not yet stopped
    assert runner.runner.cancel(invocation.id) is invocation  # asking twice is fine
    await runner.finish(invocation)
    assert invocation.status is InvocationStatus.CANCELLED
    assert invocation.output is None and invocation.error is None
    assert runner.statuses == [("hold", "pending"), ("hold", "running"), ("hold", "cancelled")]
    with pytest.raises(Conflict, match=r"already ended \(cancelled\)"):
        runner.runner.cancel(invocation.id)


async def test_a_pending_invocation_cancelled_never_runs(runner: Runner) -> None:
    invocation = runner.invoke("hold")
    runner.runner.cancel(invocation.id)
    await runner.finish(invocation)
    assert invocation.status is InvocationStatus.CANCELLED
    assert invocation.time_started is None
    assert runner.machine.started == 0
    assert runner.statuses == [("hold", "pending"), ("hold", "cancelled")]


async def test_cancel_unknown_is_not_found(runner: Runner) -> None:
    with pytest.raises(NotFound):
        runner.runner.cancel("nope")


async def test_cancel_a_thread_that_checks(runner: Runner) -> None:
    invocation = runner.invoke("spin")
    with trio.fail_after(TIMEOUT):
        await trio.to_thread.run_sync(runner.machine.entered.wait)
    runner.runner.cancel(invocation.id)
    await runner.finish(invocation)
    assert invocation.status is InvocationStatus.CANCELLED
    assert runner.machine.checks < 1_000_000


async def test_cancel_a_thread_in_context_sleep(runner: Runner) -> None:
    invocation = runner.invoke("nap", {"seconds": 60})
    with trio.fail_after(TIMEOUT):
        await trio.to_thread.run_sync(runner.machine.entered.wait)
    runner.runner.cancel(invocation.id)
    with trio.fail_after(5):  # within a 50 ms slice, not 60 s
        await runner.runner.wait(invocation)
    assert invocation.status is InvocationStatus.CANCELLED


async def test_context_sleep_in_a_thread_returns(runner: Runner) -> None:
    invocation = runner.invoke("nap", {"seconds": 0.01})
    await runner.finish(invocation)
    assert invocation.status is InvocationStatus.COMPLETED
    assert invocation.output == "rested"


async def test_a_thread_that_never_checks_runs_to_its_end(runner: Runner) -> None:
    invocation = runner.invoke("block")
    with trio.fail_after(TIMEOUT):
        await trio.to_thread.run_sync(runner.machine.entered.wait)
    runner.runner.cancel(invocation.id)
    await trio.testing.wait_all_tasks_blocked()
    assert invocation.status is InvocationStatus.RUNNING
    runner.machine.gate.set()
    await runner.finish(invocation)
    assert invocation.status is InvocationStatus.COMPLETED  # honestly
    assert invocation.output == "done"


async def test_cancelling_a_wait_leaves_the_action_running(runner: Runner) -> None:
    invocation = runner.invoke("hold")
    with trio.move_on_after(0.01) as scope:
        await runner.runner.wait(invocation)
    assert scope.cancelled_caught
    assert invocation.status is InvocationStatus.RUNNING
    runner.machine.release.set()
    await runner.finish(invocation)
    assert invocation.status is InvocationStatus.COMPLETED


async def test_wait_for_an_unknown_invocation_returns_at_once(runner: Runner) -> None:
    stranger = Invocation(thing="machine", action="hold", input=None)
    with trio.fail_after(TIMEOUT):
        await runner.runner.wait(stranger)
    assert stranger.status is InvocationStatus.PENDING


async def test_a_failing_action_is_recorded_and_logged(
        runner: Runner, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="trio_things.runtime.actions"):
        invocation = runner.invoke("burn")
        await runner.finish(invocation)
    assert invocation.status is InvocationStatus.FAILED
    assert invocation.error == InvocationError(title="RuntimeError", detail="smoke", status=500)
    assert invocation.output is None
    [record] = [r for r in caplog.records if r.name == "trio_things.runtime.actions"]
    assert record.levelno == logging.ERROR
    assert invocation.id in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert runner.statuses[-1] == ("burn", "failed")


async def test_an_action_that_refuses_is_the_clients_problem(
        runner: Runner, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="trio_things.runtime.actions"):
        invocation = runner.invoke("refuse")
        await runner.finish(invocation)
    assert invocation.status is InvocationStatus.FAILED
    assert invocation.error == InvocationError(
        title="InvalidValue", detail="refuse: not in this state", status=422)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_context_sleep_in_an_async_action_fails_it(runner: Runner) -> None:
    invocation = runner.invoke("misuse")
    await runner.finish(invocation)
    assert invocation.status is InvocationStatus.FAILED
    assert invocation.error is not None
    assert invocation.error.title == LocalProtocolError.__name__
    assert "await trio.sleep()" in invocation.error.detail


async def test_the_context_logs_and_knows_its_invocation(runner: Runner) -> None:
    invocation = runner.invoke("chat", {"lines": 3})
    await runner.finish(invocation)
    assert invocation.output == invocation.id
    assert [(entry.level, entry.message) for entry in invocation.log] == [
        ("INFO", "line 0"), ("DEBUG", "line 1"), ("DEBUG", "line 2")]


async def test_ended_invocations_are_forgotten_after_the_retention(
        runner: Runner, autojump_clock: trio.testing.MockClock) -> None:
    invocation = runner.invoke("idle")
    await runner.finish(invocation)
    await trio.sleep(RETENTION - 1)
    assert runner.runner.get(invocation.id) is invocation
    await trio.sleep(1)
    with pytest.raises(NotFound, match="unknown or expired"):
        runner.runner.get(invocation.id)
    assert runner.runner.list() == []
    with pytest.raises(NotFound):
        runner.runner.cancel(invocation.id)


async def test_running_invocations_are_never_forgotten(
        runner: Runner, autojump_clock: trio.testing.MockClock) -> None:
    invocation = runner.invoke("hold")
    await trio.sleep(RETENTION * 3)
    assert runner.runner.get(invocation.id) is invocation
    runner.machine.release.set()
    await runner.finish(invocation)
    await trio.sleep(RETENTION / 2)
    assert runner.runner.list() == [invocation]


async def test_leaving_the_runner_cancels_every_action() -> None:
    machine = Machine()
    statuses: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with open_action_runner(
                retention=RETENTION,
                on_status=lambda i: statuses.append(i.status.value)) as runner:
            first = runner.invoke("machine", machine, Machine.affordances.actions["hold"], None)
            second = runner.invoke("machine", machine, Machine.affordances.actions["spin"],
                                   None)
            await trio.testing.wait_all_tasks_blocked()
            assert first.status is second.status is InvocationStatus.RUNNING
    # The block returns once every action has stopped, each recorded cancelled.
    assert first.status is InvocationStatus.CANCELLED
    assert second.status is InvocationStatus.CANCELLED
    assert statuses.count("cancelled") == 2


async def test_an_invocation_pending_at_shutdown_never_runs() -> None:
    machine = Machine()
    statuses: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with open_action_runner(
                retention=RETENTION,
                on_status=lambda i: statuses.append(i.status.value)) as runner:
            pending = runner.invoke("machine", machine, Machine.affordances.actions["hold"],
                                    None)
    assert pending.status is InvocationStatus.CANCELLED
    assert statuses == ["pending", "cancelled"]
    assert machine.started == 0
