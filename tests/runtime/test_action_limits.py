"""What the action runner bounds (``trio_things.runtime.actions``, "Limits"): the
invocations it keeps (per Thing and in all, dropping the first to have ended, never a
running one), how many of one action run at once and wait, and the worker threads thread
actions take, apart from those property getters and setters use."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trio_things as tt
from trio_things.config import ServerConfig
from trio_things.errors import NotFound, RemoteProtocolError, TooManyRequests
from trio_things.model.declarations import DEFAULT_MAX_QUEUED, DEFAULT_THREAD_CONCURRENCY
from trio_things.model.invocation import Invocation, InvocationStatus
from trio_things.runtime.actions import ActionRunner, open_action_runner
from trio_things.testing import serve_in_memory

#: Seconds: what a test may take before it is a hang (never reached when all is well).
TIMEOUT = 10
#: Seconds a blocked worker thread waits for the test to open its gate: longer than
#: TIMEOUT, so that a test fails by its own deadline, not by threads that gave up.
GATE_TIMEOUT = 60
RETENTION = 300.0


class Threads:
    """Worker threads that wait for the test's gate, counted as they come in."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = 0
        self._entering = threading.Condition()

    def block(self) -> str:
        with self._entering:
            self.entered += 1
            self._entering.notify_all()
        if not self.gate.wait(GATE_TIMEOUT):
            raise TimeoutError("the test never opened the gate")
        return "done"

    def wait_for(self, count: int) -> bool:
        """Block (in a worker thread) until ``count`` threads have come in."""
        with self._entering:
            return self._entering.wait_for(lambda: self.entered >= count, TIMEOUT)


class Machine(tt.Thing):
    """Actions under the test's control."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()
        self.started: list[str] = []
        self.threads = Threads()

    @tt.action
    async def hold(self, context: tt.ActionContext) -> None:
        self.started.append(context.invocation_id)
        await self.release.wait()

    @tt.action(max_concurrent=1, max_queued=2)
    async def one_at_a_time(self, context: tt.ActionContext) -> None:
        self.started.append(context.invocation_id)
        await self.release.wait()

    @tt.action
    async def idle(self) -> None:
        pass

    @tt.action
    def block(self) -> str:
        """A worker thread that waits for the test's gate."""
        return self.threads.block()


@attrs.define
class Runner:
    runner: ActionRunner
    machine: Machine
    other: Machine

    def invoke(self, action: str, *, thing: str = "machine", input: Any = None) -> Invocation:
        instance = self.machine if thing == "machine" else self.other
        return self.runner.invoke(thing, instance, Machine.affordances.actions[action], input)

    async def finish(self, invocation: Invocation) -> None:
        with trio.fail_after(TIMEOUT):
            await self.runner.wait(invocation)


@pytest.fixture
def limits() -> dict[str, int]:
    """The runner's limits; a test overrides them with ``@pytest.mark.parametrize``."""
    return {"max_invocations": 100, "max_invocations_per_thing": 3, "max_threads": 32}


@pytest.fixture
async def runner(limits: dict[str, int]) -> AsyncIterator[Runner]:
    machine, other = Machine(), Machine()
    try:
        async with open_action_runner(retention=RETENTION, **limits) as runner:
            yield Runner(runner=runner, machine=machine, other=other)
    finally:
        machine.threads.gate.set()
        other.threads.gate.set()


# ------------------------------------------------------------------ the declaration


def test_thread_actions_have_a_small_default_concurrency_async_ones_none() -> None:
    actions = Machine.affordances.actions
    assert (actions["block"].max_concurrent, actions["block"].max_queued) == (
        DEFAULT_THREAD_CONCURRENCY, DEFAULT_MAX_QUEUED) == (4, 100)
    assert actions["hold"].max_concurrent is None
    assert (actions["one_at_a_time"].max_concurrent, actions["one_at_a_time"].max_queued) == (
        1, 2)


@pytest.mark.parametrize(("limits", "message"), [
    ({"max_concurrent": 0}, "max_concurrent must be a positive integer or None, not 0"),
    ({"max_concurrent": True}, "max_concurrent must be a positive integer or None, not True"),
    ({"max_concurrent": 2.5}, "max_concurrent must be a positive integer or None, not 2.5"),
    ({"max_queued": -1}, "max_queued must be an integer of at least 0, not -1"),
])
def test_a_limit_out_of_range_is_a_definition_error(limits: dict[str, Any],
                                                    message: str) -> None:
    with pytest.raises(tt.ThingDefinitionError) as info:
        class Bad(tt.Thing):
            @tt.action(**limits)
            def act(self) -> None:
                pass
    assert "act" in str(info.value) and message in str(info.value)


# ------------------------------------------------------------------ the records kept


async def test_ended_invocations_beyond_the_bound_are_forgotten_first_ended_first(
        runner: Runner) -> None:
    made = []
    for _ in range(5):
        made.append(runner.invoke("idle"))
        await runner.finish(made[-1])
    assert runner.runner.list() == made[2:]
    for gone in made[:2]:
        with pytest.raises(NotFound):
            runner.runner.get(gone.id)
    assert runner.runner.list(thing="other") == []


async def test_the_first_to_have_ended_goes_not_the_first_invoked(runner: Runner) -> None:
    long = runner.invoke("hold")
    short = runner.invoke("idle")
    await runner.finish(short)
    runner.machine.release.set()
    await runner.finish(long)  # ended after `short`, though invoked before it
    third = runner.invoke("idle")
    assert runner.runner.list() == [long, short, third]  # three fit
    fourth = runner.invoke("idle")
    assert runner.runner.list() == [long, third, fourth]


async def test_running_invocations_are_never_forgotten_a_new_one_is_refused_503(
        runner: Runner) -> None:
    held = [runner.invoke("hold") for _ in range(3)]
    with pytest.raises(RemoteProtocolError) as info:
        runner.invoke("idle")
    assert info.value.status == 503
    assert "Thing 'machine' has 3 invocations pending or running" in info.value.detail
    assert runner.runner.list() == held  # nothing forgotten, nothing made
    await trio.testing.wait_all_tasks_blocked()
    assert all(i.status is InvocationStatus.RUNNING for i in held)
    assert runner.invoke("idle", thing="other").thing == "other"  # its own bound
    runner.machine.release.set()
    for invocation in held:
        await runner.finish(invocation)
    after = runner.invoke("idle")  # the three ended together: one of them is forgotten
    kept = runner.runner.list(thing="machine")
    assert len(kept) == 3 and kept[-1] is after and set(kept[:2]) < set(held)


@pytest.mark.parametrize("limits", [
    {"max_invocations": 3, "max_invocations_per_thing": 10, "max_threads": 32}])
async def test_the_total_bound_forgets_the_first_ended_of_any_thing(runner: Runner) -> None:
    first = runner.invoke("idle", thing="other")
    await runner.finish(first)
    second, third = runner.invoke("idle"), runner.invoke("idle")
    await runner.finish(second)
    await runner.finish(third)
    fourth = runner.invoke("hold")
    assert runner.runner.list() == [second, third, fourth]
    fifth, sixth = runner.invoke("hold", thing="other"), runner.invoke("hold")
    assert runner.runner.list() == [fourth, fifth, sixth]
    with pytest.raises(RemoteProtocolError) as info:
        runner.invoke("idle", thing="other")
    assert info.value.status == 503
    assert "the server has 3 invocations pending or running" in info.value.detail
    runner.machine.release.set()
    runner.other.release.set()


async def test_expiry_and_forgetting_keep_the_counts_right(
        runner: Runner, autojump_clock: trio.testing.MockClock) -> None:
    for _ in range(3):
        await runner.finish(runner.invoke("idle"))
    await trio.sleep(RETENTION)
    assert runner.runner.list() == []
    held = [runner.invoke("hold") for _ in range(3)]  # room for three again, no more
    with pytest.raises(RemoteProtocolError):
        runner.invoke("hold")
    runner.machine.release.set()
    for invocation in held:
        await runner.finish(invocation)


# ------------------------------------------------------------------ concurrency


async def test_an_action_runs_max_concurrent_at_once_the_next_wait_in_order(
        runner: Runner) -> None:
    first = runner.invoke("one_at_a_time")
    second = runner.invoke("one_at_a_time")
    third = runner.invoke("one_at_a_time")
    await trio.testing.wait_all_tasks_blocked()
    assert runner.machine.started == [first.id]
    assert (second.status, third.status) == (InvocationStatus.PENDING,) * 2
    with pytest.raises(TooManyRequests) as info:
        runner.invoke("one_at_a_time")
    assert info.value.status == 429
    assert "1 invocations running and 2 waiting" in info.value.detail
    assert runner.runner.list() == [first, second, third]  # the refused one was not made

    runner.runner.cancel(second.id)  # a waiting one cancelled never runs
    await runner.finish(second)
    assert second.status is InvocationStatus.CANCELLED and second.time_started is None
    runner.machine.release.set()
    await runner.finish(third)
    assert runner.machine.started == [first.id, third.id]
    assert first.status is third.status is InvocationStatus.COMPLETED


async def test_an_action_busy_on_one_thing_is_free_on_another(runner: Runner) -> None:
    runner.invoke("one_at_a_time")
    elsewhere = runner.invoke("one_at_a_time", thing="other")
    await trio.testing.wait_all_tasks_blocked()
    assert runner.other.started == [elsewhere.id]
    runner.machine.release.set()
    runner.other.release.set()


@pytest.mark.parametrize("limits", [
    {"max_invocations": 100, "max_invocations_per_thing": 10, "max_threads": 1}])
async def test_thread_actions_wait_pending_for_their_own_threads_not_trios(
        runner: Runner) -> None:
    """With the runner's one action thread taken, another Thing's thread action waits
    ``pending``, while Trio's default threads (property getters) are all still free."""
    taken = runner.invoke("block")
    with trio.fail_after(TIMEOUT):
        assert await trio.to_thread.run_sync(runner.machine.threads.wait_for, 1)
    waiting = runner.invoke("block", thing="other")
    await trio.testing.wait_all_tasks_blocked()
    assert taken.status is InvocationStatus.RUNNING
    assert waiting.status is InvocationStatus.PENDING
    default = trio.to_thread.current_default_thread_limiter()
    assert default.borrowed_tokens == 0
    runner.machine.threads.gate.set()
    runner.other.threads.gate.set()
    await runner.finish(taken)
    await runner.finish(waiting)
    assert waiting.output == "done" and runner.other.threads.entered == 1


# ------------------------------------------------------------------ over HTTP


class Lab(tt.Thing):
    """A Thing with a thread action that blocks, a quick one, and a functional property."""

    def __init__(self) -> None:
        super().__init__()
        self.threads = Threads()
        self.release = trio.Event()

    @tt.property
    def reading(self) -> float:
        """Read in a worker thread, from Trio's default limiter."""
        return 21.5

    @tt.action
    def block(self) -> str:
        return self.threads.block()

    @tt.action
    def quick(self) -> int:
        return 7

    @tt.action(max_concurrent=1, max_queued=0)
    def exclusive(self) -> str:
        return self.threads.block()

    @tt.action
    async def hold(self) -> None:
        await self.release.wait()


async def test_forty_blocked_thread_invocations_leave_properties_and_other_things_served(
) -> None:
    """The issue's case: forty invocations of one blocking thread action (valid input)
    used to take all forty of Trio's threads, and every functional property and thread
    action of every Thing stopped answering. Now four run, the rest wait ``pending``."""
    busy, calm = Lab(), Lab()
    async with serve_in_memory({"busy": busy, "calm": calm}, timeout=TIMEOUT) as served, \
            served.http() as http:
        try:
            for _ in range(40):
                assert (await http.post("/busy/block")).status == 201
            with trio.fail_after(TIMEOUT):
                assert await trio.to_thread.run_sync(busy.threads.wait_for, 4)
                read = await http.get("/busy/reading")
                assert (read.status, read.json()) == (200, 21.5)
                other = await http.post("/calm/actions/quick")
                assert (other.status, other.json()) == (200, 7)
            statuses = [i["status"] for i in (await http.get("/busy/block")).json()]
            assert statuses.count("running") == 4 and statuses.count("pending") == 36
            assert busy.threads.entered == 4
        finally:
            busy.threads.gate.set()  # else leaving waits for threads that never check


async def test_a_busy_action_is_answered_429_with_problem_details() -> None:
    lab = Lab()
    async with serve_in_memory(lab, name="lab", timeout=TIMEOUT) as served, \
            served.http() as http:
        try:
            assert (await http.post("/lab/exclusive")).status == 201
            refused = await http.post("/lab/exclusive")
            assert_problem(refused, 429, "action 'exclusive' of Thing 'lab' is busy")
        finally:
            lab.threads.gate.set()


async def test_running_invocations_filling_the_bound_are_answered_503(
        autojump_clock: trio.testing.MockClock) -> None:
    lab = Lab()
    config = ServerConfig(max_invocations_per_thing=2)
    async with serve_in_memory(lab, name="lab", config=config) as served:
        async with served.http() as http:
            assert [(await http.post("/lab/hold")).status for _ in range(2)] == [201, 201]
            assert_problem(await http.post("/lab/hold"), 503, "the most the server keeps")
            lab.release.set()


def assert_problem(response: Any, status: int, detail: str) -> None:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and detail in problem["detail"]

