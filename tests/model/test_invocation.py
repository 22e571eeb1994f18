from __future__ import annotations

import pytest

from trio_things.errors import LocalProtocolError
from trio_things.model.invocation import MAX_LOG_ENTRIES, Invocation, InvocationStatus


def make() -> Invocation:
    return Invocation(thing="counter", action="increment", input={})


def test_happy_path_stamps_times() -> None:
    invocation = make()
    assert invocation.status is InvocationStatus.PENDING
    invocation.start()
    assert invocation.time_started is not None
    invocation.finish(InvocationStatus.COMPLETED, output=3)
    assert invocation.status.ended
    assert invocation.output == 3
    assert invocation.time_completed is not None


def test_pending_may_be_cancelled() -> None:
    invocation = make()
    invocation.finish(InvocationStatus.CANCELLED)
    assert invocation.status is InvocationStatus.CANCELLED
    assert invocation.time_started is None


@pytest.mark.parametrize("final", [InvocationStatus.COMPLETED, InvocationStatus.FAILED,
                                   InvocationStatus.CANCELLED])
def test_ended_invocations_never_change(final: InvocationStatus) -> None:
    invocation = make()
    invocation.start()
    invocation.finish(final)
    with pytest.raises(LocalProtocolError):
        invocation.start()
    with pytest.raises(LocalProtocolError):
        invocation.finish(InvocationStatus.COMPLETED)


def test_pending_cannot_complete_without_running() -> None:
    with pytest.raises(LocalProtocolError):
        make().finish(InvocationStatus.COMPLETED)


def test_finish_requires_a_final_status() -> None:
    invocation = make()
    invocation.start()
    with pytest.raises(LocalProtocolError):
        invocation.finish(InvocationStatus.RUNNING)


def test_log_is_bounded() -> None:
    invocation = make()
    for i in range(MAX_LOG_ENTRIES + 5):
        invocation.add_log("INFO", str(i))
    assert len(invocation.log) == MAX_LOG_ENTRIES
    assert invocation.log[0].message == "5"
