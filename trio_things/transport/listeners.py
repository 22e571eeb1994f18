"""The server's listening side: what ``ThingServer.serve`` wraps its listeners in and
asks before serving an accepted connection.

* :class:`_PatientListener` waits out an ``accept()`` that fails for want of
  descriptors or memory (EMFILE, ENFILE, ENOMEM, ENOBUFS), logging one line per 10 s.
* :class:`_Door` admits each accepted connection or refuses it (429 over the address's
  limit, 503 over the server's), counting with :mod:`~trio_things.transport.admission`,
  and logs the refusals.
* :func:`_connection_limit` lowers ``max_connections`` to what the process's open-file
  limit allows.

They log to the ``trio_things.server`` logger, as they did inside ``server.py``: these
lines are the server's, and operators filter on that name.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Final, Generic, Protocol, TypeVar

import trio

from trio_things.errors import RemoteProtocolError
from trio_things.protocol.limits import HttpLimits
from trio_things.transport.admission import ClientConnections, ConnectionCap, RefusalTally
from trio_things.transport.http import refuse_http_connection

__all__: list[str] = []

logger = logging.getLogger("trio_things.server")

#: What ``accept()`` fails with when the process or the system is out of descriptors
#: or memory (the errors ``trio.serve_listeners`` waits out too): the connection stays
#: in the kernel's backlog, and accepting is retried after a pause.
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: Seconds between two ``accept()`` attempts while they fail so.
_ACCEPT_RETRY: Final = 0.1
#: Seconds between two log lines about refused connections or failed accepts.
_REFUSAL_LOG_INTERVAL: Final = 10.0
#: File descriptors ``max_connections`` leaves to everything else: the Things' files
#: and devices, the listeners, Trio's wake-up pipes, log files, TLS certificates.
_RESERVED_DESCRIPTORS: Final = 64
StreamT = TypeVar("StreamT", bound=trio.abc.AsyncResource)


class _PatientListener(trio.abc.Listener[StreamT], Generic[StreamT]):
    """A listener whose ``accept()`` waits out a lack of descriptors or memory (EMFILE,
    ENFILE, ENOMEM, ENOBUFS) instead of raising it: it retries every 0.1 s, and logs one
    line per 10 s with how many attempts failed, where ``trio.serve_listeners`` alone
    would log a traceback at every attempt. Connections already open are served on
    meanwhile; new ones wait in the kernel's backlog."""

    def __init__(self, listener: trio.abc.Listener[StreamT]) -> None:
        self.listener = listener
        self._failures = RefusalTally(interval=_REFUSAL_LOG_INTERVAL)

    async def accept(self) -> StreamT:
        while True:
            try:
                stream = await self.listener.accept()
            except OSError as error:
                if error.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                failed = self._failures.count(now=trio.current_time())
                if failed:
                    logger.error(
                        "cannot accept connections: %s (%s), %d time(s) since the last "
                        "report; retrying every %.1f s, serving the connections already "
                        "open", errno.errorcode[error.errno], os.strerror(error.errno),
                        failed, _ACCEPT_RETRY)
                await trio.sleep(_ACCEPT_RETRY)
            else:
                if failed := self._failures.take():
                    logger.warning("accepting connections again, after %d more failed "
                                   "attempt(s)", failed)
                return stream

    async def aclose(self) -> None:
        await self.listener.aclose()


class _DoorConfig(Protocol):
    """What :class:`_Door` reads of the server's configuration (a ``ServerConfig``,
    which this layer cannot import)."""

    @property
    def max_connections_per_client(self) -> int: ...

    @property
    def max_connections(self) -> int: ...

    @property
    def http(self) -> HttpLimits: ...


class _Door:
    """Which accepted connections are served: at most ``max_connections_per_client``
    per address and ``max_connections`` in all (:mod:`~trio_things.transport.admission`).

    A refused connection is answered (429, 503) by the task that accepted it, at most
    ``ConnectionCap.max_refusing`` at once; beyond that it is closed unanswered, so a
    flood costs an accept and a close each. Refusals for the server's limit are logged
    one line per 10 s with their count; the line for those held back is written by a
    timer task in ``nursery``, started only while some are held back."""

    def __init__(self, config: _DoorConfig, nursery: trio.Nursery) -> None:
        self.clients = ClientConnections(limit=config.max_connections_per_client)
        self.cap = ConnectionCap(limit=_connection_limit(config.max_connections))
        self._limits = config.http
        self._nursery = nursery
        self._full = RefusalTally(interval=_REFUSAL_LOG_INTERVAL)
        self._reporting = False

    async def refuse(self, stream: trio.abc.Stream, error: RemoteProtocolError) -> None:
        """Answer ``error`` and close ``stream``; or just close it, when
        ``max_refusing`` refusals are being answered already."""
        if not self.cap.begin_refusal():
            await trio.aclose_forcefully(stream)
            return
        try:
            await refuse_http_connection(stream, error, limits=self._limits)
        finally:
            self.cap.end_refusal()

    def note_full(self) -> None:
        """Count a connection refused for ``max_connections``; log at most one line per
        interval."""
        reported = self._full.count(now=trio.current_time())
        if reported:
            self._log_full(reported)
        elif not self._reporting:
            self._reporting = True
            self._nursery.start_soon(self._report_held_back)

    async def _report_held_back(self) -> None:
        try:
            due = self._full.due
            if due is not None:
                await trio.sleep_until(due)
                reported = self._full.flush(now=trio.current_time())
                if reported:
                    self._log_full(reported)
        finally:
            self._reporting = False

    def _log_full(self, refused: int) -> None:
        logger.warning("refused %d connection(s) with 503 since the last report: the server "
                       "serves at most %d at once (max_connections)", refused, self.cap.limit)


def _connection_limit(configured: int) -> int:
    """``max_connections``, or less if the process's open-file limit would be reached
    first: at that limit ``accept()`` fails and no client can even be told why, and the
    Things cannot open a file. Logged (INFO) when it is less."""
    try:
        import resource
    except ImportError:  # pragma: no cover (no RLIMIT_NOFILE on Windows)
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - _RESERVED_DESCRIPTORS >= configured:
        return configured
    limit = max(1, soft - _RESERVED_DESCRIPTORS)
    logger.info("serving at most %d connections at once, not max_connections = %d: the "
                "open-file limit (ulimit -n) is %d", limit, configured, soft)
    return limit
