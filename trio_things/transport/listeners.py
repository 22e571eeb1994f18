"""The server's listening side: how ``ThingServer.serve`` accepts connections, and asks
before serving one.

* :class:`_Acceptor` accepts the connections of one listening socket, every one
  waiting (up to a burst) at each wake-up, and waits out an ``accept()`` that fails for
  want of descriptors or memory (EMFILE, ENFILE, ENOMEM, ENOBUFS), logging one line per
  10 s.
* :class:`_Door` admits each accepted connection or refuses it (429 over the address's
  limit, 503 over the server's), counting with :mod:`~trio_things.transport.admission`,
  and logs the refusals.
* :func:`_raise_open_file_limit` raises the process's open-file soft limit to its hard
  limit, and :func:`_connection_limit` lowers ``max_connections`` to what the limit then
  allows.

They log to the ``trio_things.server`` logger, as they did inside ``server.py``: these
lines are the server's, and operators filter on that name.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn, Protocol

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
#: What ``accept()`` fails with when the connection it was about to return went away
#: (reset, refused by a firewall...): that one is skipped, the next one accepted. The
#: list ``trio.SocketListener`` ignores.
_ACCEPT_SKIPPED_ERRNOS: Final = frozenset(
    getattr(errno, name) for name in (
        "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN",
        "ENONET", "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET")
    if hasattr(errno, name))
#: Connections one wake-up of an accept loop takes at most, with no checkpoint between
#: them (asyncio's loop takes up to its backlog, 100): enough that admission keeps up
#: with a fan-out in every scheduler round, few enough that one round stays short.
_ACCEPT_BURST: Final = 64
#: Seconds between two ``accept()`` attempts while they fail for want of descriptors.
_ACCEPT_RETRY: Final = 0.1
#: Seconds between two log lines about refused connections or failed accepts.
_REFUSAL_LOG_INTERVAL: Final = 10.0
#: File descriptors ``max_connections`` leaves to everything else: the Things' files
#: and devices, the listeners, Trio's wake-up pipes, log files, TLS certificates.
_RESERVED_DESCRIPTORS: Final = 64
#: The soft limit asked for when the hard limit is unlimited (Linux's default
#: ``fs.nr_open``, above which ``setrlimit`` fails).
_UNLIMITED_NOFILE: Final = 1 << 20

ServedStream = trio.SocketStream | trio.SSLStream[trio.SocketStream]
#: Serves one accepted connection, given its stream and the client's address; closes it.
ConnectionHandler = Callable[[ServedStream, str], Awaitable[object]]


class _Acceptor:
    """Accepts the connections of one listening socket and starts
    ``handler(stream, address)`` for each in the nursery given to :meth:`serve`.

    Why not ``trio.serve_listeners``: a Trio listener's ``accept()`` ends with a
    checkpoint, so it takes one connection per scheduler round; and while a producer
    runs flat out, every round also carries one fan-out of an update to every observer.
    Connections were then admitted one per fan-out (1,000 clients took 5 to 9 s to
    connect, where asyncio took 1.5 s). Here each wake-up (the listening socket is
    readable) accepts every connection waiting, up to ``burst``, with non-blocking
    ``accept()`` calls and no checkpoint between them, as asyncio's loop does.

    The socket is a duplicate of the listener's descriptor (``accept()`` must be called
    synchronously, which a Trio socket does not offer), closed when :meth:`serve` ends,
    with the listener.

    With ``ssl_context``, each connection is wrapped in a server-side
    :class:`trio.SSLStream` (as :class:`trio.SSLListener` does, HTTPS-compatible); its
    TLS handshake runs in the connection's task, at its first read.

    Out of descriptors or memory (EMFILE, ENFILE, ENOMEM, ENOBUFS): new connections wait
    in the kernel's backlog while accepting is retried every 0.1 s, and the connections
    already open are served on; one ERROR line per 10 s says so, with how many attempts
    failed (where ``trio.serve_listeners`` logs a traceback at every attempt), and one
    WARNING when accepting works again.
    """

    def __init__(self, listener: trio.SocketListener, *,
                 ssl_context: ssl.SSLContext | None = None, burst: int = _ACCEPT_BURST,
                 sock: socket.socket | None = None) -> None:
        """``sock``: the listening socket to accept from (tests); by default a duplicate
        of ``listener``'s."""
        self.listener = listener
        if sock is None:
            sock = socket.socket(fileno=os.dup(listener.socket.fileno()))
        sock.setblocking(False)
        self._sock = sock
        self._ssl_context = ssl_context
        self._burst = burst
        self._failures = RefusalTally(interval=_REFUSAL_LOG_INTERVAL)
        self._failing = False

    async def serve(self, handler: ConnectionHandler, nursery: trio.Nursery) -> NoReturn:
        """Accept connections until cancelled, starting ``handler`` in ``nursery`` for
        each; then close the socket and the listener. Errors of ``accept()`` other than
        the ones above propagate (as from ``trio.serve_listeners``)."""
        try:
            while True:
                await trio.lowlevel.wait_readable(self._sock)
                failed = self._accept_waiting(handler, nursery)
                if failed is not None:
                    self._report(failed)
                    await trio.sleep(_ACCEPT_RETRY)
        finally:
            self._sock.close()
            await self.listener.aclose()

    def _accept_waiting(self, handler: ConnectionHandler, nursery: trio.Nursery,
                        ) -> OSError | None:
        """Accept the connections waiting, at most ``burst``; the error if ``accept()``
        failed for want of descriptors or memory."""
        for _ in range(self._burst):
            try:
                sock, address = self._sock.accept()
            except BlockingIOError:
                return None
            except OSError as error:
                if error.errno in _ACCEPT_CAPACITY_ERRNOS:
                    return error
                if error.errno in _ACCEPT_SKIPPED_ERRNOS:
                    continue
                raise
            if self._failing:
                self._failing = False
                logger.warning("accepting connections again, after %d more failed "
                               "attempt(s)", self._failures.take())
            plain = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            stream: ServedStream = plain if self._ssl_context is None else trio.SSLStream(
                plain, self._ssl_context, server_side=True, https_compatible=True)
            nursery.start_soon(handler, stream, str(address[0]))
        return None

    def _report(self, error: OSError) -> None:
        self._failing = True
        failed = self._failures.count(now=trio.current_time())
        if not failed:
            return
        assert error.errno is not None
        why = f"{errno.errorcode[error.errno]} ({os.strerror(error.errno)}"
        if error.errno == errno.EMFILE:
            why += f": the open-file limit, ulimit -n, is {_open_file_limit()}"
        logger.error("cannot accept more connections: %s), %d time(s) since the last "
                     "report; retrying every %.1f s, serving the connections already open",
                     why, failed, _ACCEPT_RETRY)


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


def _open_file_limit() -> int | None:
    """The process's open-file soft limit (``ulimit -n``); None if unlimited or unknown."""
    try:
        import resource
    except ImportError:  # pragma: no cover (no RLIMIT_NOFILE on Windows)
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _raise_open_file_limit() -> None:
    """Raise the process's open-file soft limit (``ulimit -n``) to its hard limit, which
    any process may do: each connection takes a descriptor, and the usual soft limit
    (1,024) is below ``max_connections``. Logged (INFO): the new limit, or why it stays.

    Called when the server starts, before :func:`_connection_limit` reads the limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover (no RLIMIT_NOFILE on Windows)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _UNLIMITED_NOFILE if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        logger.info("the open-file limit (ulimit -n) is %s, the most the hard limit allows",
                    "unlimited" if soft == resource.RLIM_INFINITY else soft)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as error:
        logger.info("the open-file limit (ulimit -n) stays %d: raising it to %d failed (%s)",
                    soft, target, error)
        return
    logger.info("raised the open-file limit (ulimit -n) from %d to %d (the hard limit: %s)",
                soft, target, "unlimited" if hard == resource.RLIM_INFINITY else hard)


def _connection_limit(configured: int) -> int:
    """``max_connections``, or less if the process's open-file limit would be reached
    first: at that limit ``accept()`` fails and no client can even be told why, and the
    Things cannot open a file. Logged (INFO) when it is less."""
    soft = _open_file_limit()
    if soft is None or soft - _RESERVED_DESCRIPTORS >= configured:
        return configured
    limit = max(1, soft - _RESERVED_DESCRIPTORS)
    logger.info("serving at most %d connections at once, not max_connections = %d: the "
                "open-file limit (ulimit -n) is %d", limit, configured, soft)
    return limit
