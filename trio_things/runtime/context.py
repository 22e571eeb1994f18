"""The :class:`~trio_things.ActionContext` an action is handed: its invocation's log,
and cancellation checks and sleeps for an action running in a worker thread.

It logs to the ``trio_things.runtime.actions`` logger, as it did inside
``runtime/actions.py``: these lines are the action runner's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import attrs
import trio

from trio_things.errors import LocalProtocolError
from trio_things.model.invocation import Invocation

__all__: list[str] = []

logger = logging.getLogger("trio_things.runtime.actions")

#: How often ``ActionContext.sleep`` checks for cancellation from a worker thread.
_THREAD_SLEEP_SLICE: Final = 0.05  # seconds


@attrs.frozen
class _Context:
    """The :class:`~trio_things.ActionContext` handed to an action."""

    invocation: Invocation
    announce: Callable[[], None]
    """Tells the invocation's observers of the lines logged (from any thread)."""

    @property
    def invocation_id(self) -> str:
        return self.invocation.id

    def log(self, message: str, *, level: str = "INFO") -> None:
        self.invocation.add_log(level, message)
        self.announce()
        logger.log(logging.getLevelNamesMapping().get(level.upper(), logging.INFO),
                   "%s.%s [%s]: %s", self.invocation.thing, self.invocation.action,
            self.invocation.id[:8], message)

    def check_cancelled(self) -> None:
        if _in_trio_thread():
            return  # async actions are cancelled at their next await
        trio.from_thread.check_cancelled()

    def sleep(self, seconds: float) -> None:
        if _in_trio_thread():
            raise LocalProtocolError(
                "ActionContext.sleep() blocks; in an async action use `await trio.sleep()`")
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            trio.from_thread.check_cancelled()
            time.sleep(min(remaining, _THREAD_SLEEP_SLICE))
        trio.from_thread.check_cancelled()


def _in_trio_thread() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
