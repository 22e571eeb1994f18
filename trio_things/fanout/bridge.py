"""Publishing from worker threads.

Thing code that blocks (a driver) runs in worker threads, and the changes it makes must
reach observers exactly as those made on the Trio thread do. A worker thread may not
touch trio objects, so :meth:`TrioBridge.call_soon` hands the call to the Trio thread
with :meth:`trio.lowlevel.TrioToken.run_sync_soon`, which is thread-safe and runs the
calls in the order they were made. On the Trio thread it simply calls.

An exception from a call made on behalf of a thread is logged, never raised: raised in
a ``run_sync_soon`` callback, it would be a :exc:`trio.TrioInternalError` and end the
whole Trio run, every client's server with it. (On the Trio thread it propagates to the
caller, the Thing code that made the change, as any error of its own would.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["TrioBridge"]

logger = logging.getLogger(__name__)


class TrioBridge:
    """Runs callables on the Trio thread of the run it was created in."""

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._trio_thread = threading.get_ident()

    def call_soon(self, function: Callable[..., object], *args: Any) -> None:
        """Call ``function(*args)`` on the Trio thread: now if we are on it, else soon.

        Never blocks. After the Trio run has ended, calls from threads are dropped:
        nobody is left to observe them.
        """
        if threading.get_ident() == self._trio_thread:
            function(*args)
            return
        try:
            self._token.run_sync_soon(_call_logging_errors, function, *args)
        except trio.RunFinishedError:
            pass


def _call_logging_errors(function: Callable[..., object], *args: Any) -> None:
    try:
        function(*args)
    except Exception:
        logger.exception("publishing a change made by a worker thread failed; "
                         "serving goes on")
