"""TrioBridge: calls from worker threads run on the Trio thread, in order, and a call
that raises is logged instead of ending the Trio run."""

from __future__ import annotations

import logging

import pytest
import trio

from trio_things.fanout.bridge import TrioBridge


async def test_a_failing_call_from_a_thread_is_logged_and_the_run_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    bridge = TrioBridge()
    calls: list[int] = []
    done = trio.Event()

    def fail() -> None:
        raise ValueError("cannot encode")

    def from_thread() -> None:
        bridge.call_soon(calls.append, 1)
        bridge.call_soon(fail)  # in run_sync_soon, this would be a TrioInternalError
        bridge.call_soon(calls.append, 2)
        bridge.call_soon(done.set)

    with trio.fail_after(10), caplog.at_level(logging.ERROR, "trio_things.fanout.bridge"):
        await trio.to_thread.run_sync(from_thread)
        await done.wait()
    assert calls == [1, 2]
    assert "worker thread failed" in caplog.text
    assert "cannot encode" in caplog.text


async def test_on_the_trio_thread_the_caller_gets_the_error() -> None:
    bridge = TrioBridge()
    with pytest.raises(ValueError):
        bridge.call_soon(int, "not a number")
