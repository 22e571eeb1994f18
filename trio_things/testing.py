"""Test your Things in memory: the server and its clients in one ``trio.run``, no sockets.

::

    from trio_things.testing import serve_in_memory

    async def test_the_setpoint_is_kept(autojump_clock):
        async with serve_in_memory(Thermometer()) as served:
            async with served.connect() as thermometer:        # trio_things.client
                await thermometer.write("setpoint", 21.5)
                assert await thermometer.read("setpoint") == 21.5
            async with served.http() as http:                  # raw HTTP requests
                assert (await http.put("/thermometer/setpoint", 200)).status == 422

Why in memory: every connection is a :func:`trio.testing.memory_stream_pair` (or a
:func:`~trio.testing.lockstep_stream_pair`) whose server end is served by the real
:meth:`ThingServer.handle_connection <trio_things.server.ThingServer.handle_connection>`:
the same HTTP parser, routes, WebSocket dialects and fan-out as ``trio-things serve``,
without a port to bind, a firewall to ask or a kernel buffer in between. Tests are
fast and deterministic, and they run under pytest-trio's ``autojump_clock``: nothing
here waits on the wall clock, so an action that sleeps for an hour completes at once,
with ``trio.current_time()`` an hour later. This is how trio-things tests itself.

Ownership, outermost first::

    serve_in_memory(...)        the ThingServer, running (Things entered, actions runner)
      in_memory(server)         a nursery holding the server end of every connection
        served.connect()        a trio_things.client, its HTTP pool and WebSocket
        served.http()           one keep-alive HTTP connection
        served.websocket(path)  one trio-websocket connection (its reader task)

Cancellation and shutdown: leaving a block closes what it opened, innermost first.
Leaving :func:`in_memory` refuses new connections and cancels the server end of every
connection still open (each closes its stream, so a client still holding the other
end reads end-of-file, as from a server that went away); leaving
:func:`serve_in_memory` then stops the server as ``trio-things serve`` stops on Ctrl-C:
running actions are cancelled, background tasks too, and the Things are exited. Nothing
outlives the block: no task, no observer, no connection. An exception raised in the
block comes out as itself, not wrapped in an exception group by the nurseries it
crosses, so a failed ``assert`` reads as one and ``pytest.raises`` around the block
works.

Every wait that depends on the peer has a timeout (``timeout``, 60 s by default:
longer than the server's own waits, such as a 30 s long-poll), so a test that would
hang fails with :exc:`trio.TooSlowError` naming what it waited for instead. Under the
autojump clock such a timeout costs no real time.

One job in one module, though it is long: serving Things in memory and reaching them,
where :func:`serve_in_memory`, :func:`in_memory` and :class:`InMemoryServer` share one
set of connections and their shutdown; much of the length is docstrings. The raw HTTP
client, which needs no server, is apart in :mod:`trio_things.testing_http`.
"""

from __future__ import annotations

import contextlib
import errno
import math
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import NoReturn

import attrs
import trio
import trio.testing
import trio_websocket

from trio_things.client import Client, ClientOptions, ConsumedThing, connect, open_client
from trio_things.config import ServerConfig
from trio_things.model.thing import Thing
from trio_things.protocol.access import AccessPolicy, allow_test_host
from trio_things.server import ThingServer
from trio_things.testing_http import (
    DEFAULT_HOST,
    DEFAULT_TIMEOUT,
    HttpConnection,
    Response,
    _fail_after,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "HttpConnection",
    "InMemoryServer",
    "Response",
    "StreamPair",
    "in_memory",
    "serve_in_memory",
]

#: Makes one connection: ``(client end, server end)``, as
#: :func:`trio.testing.memory_stream_pair` and :func:`trio.testing.lockstep_stream_pair` do.
StreamPair = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]

# Servers refuse requests for host names they are not known as (DNS rebinding,
# docs/security.md); every server in a process that tests with this harness answers to
# its name, however it is configured.
allow_test_host(DEFAULT_HOST)


@asynccontextmanager
async def serve_in_memory(
    things: Thing | Mapping[str, Thing] | ThingServer,
    *,
    name: str | None = None,
    config: ServerConfig | None = None,
    stream_pair: StreamPair = trio.testing.memory_stream_pair,
    host: str = DEFAULT_HOST,
    timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (each wait's, not the block's)
) -> AsyncIterator[InMemoryServer]:
    """Serve ``things`` for the ``async with`` block, reachable only in memory.

    ``things`` is one Thing (served as ``name``, by default its class name in lower
    case: ``Thermometer()`` at ``/thermometer/``), a mapping of names to Things
    (``{"pump": Pump(), "valve": Valve()}``), or a :class:`ThingServer` that is not yet
    running (to serve it as configured; then give neither ``name`` nor ``config``).
    ``config`` configures the server made here (``ServerConfig()`` by default, with its
    settings in a temporary folder removed when the block ends; ``host`` and ``port``
    are not used: nothing listens).

    ``stream_pair`` makes each connection: :func:`trio.testing.memory_stream_pair`
    (writes never block), or :func:`trio.testing.lockstep_stream_pair` (each write
    waits until the peer reads it: no buffer at all, to find code that only works
    because a buffer hid a missing read). ``host`` is the host of the server's URLs;
    ``timeout`` bounds each wait on the server (None: no bound). A ``host`` other than
    ``testserver`` is allowed by the server made here; a server or ``config`` of yours
    must list it in ``allowed_hosts`` (``docs/security.md``).

    Raises:
        ConfigError: a name that cannot be a Thing's, or taken twice.
        TypeError: something that is not a Thing; ``name`` or ``config`` with a server.
    """
    with contextlib.ExitStack() as scratch:
        if config is None and not isinstance(things, ThingServer):
            # Settings (tt.setting) go to a folder of the block's own, not the working
            # directory: a test leaves nothing behind, and sees no earlier test's values.
            folder = scratch.enter_context(tempfile.TemporaryDirectory(
                prefix="trio-things-settings-"))
            config = ServerConfig(access=AccessPolicy().allowing_host(host),
                                  settings_folder=Path(folder))
        server = _server_for(things, name=name, config=config)
        try:
            async with server.running(), in_memory(
                    server, stream_pair=stream_pair, host=host, timeout=timeout) as served:
                yield served
        except BaseExceptionGroup as group:
            _unwrap(group)


@asynccontextmanager
async def in_memory(
    server: ThingServer,
    *,
    stream_pair: StreamPair = trio.testing.memory_stream_pair,
    host: str = DEFAULT_HOST,
    timeout: float | None = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (each wait's, not the block's)
) -> AsyncIterator[InMemoryServer]:
    """Reach ``server``, already running (inside ``server.running()``), over memory
    streams for the ``async with`` block; the arguments are :func:`serve_in_memory`'s.

    For a server you run yourself: to share one between fixtures, or to stop it while
    clients are connected. Leaving the block cancels the server end of every
    connection opened through it; the server goes on running.
    """
    try:
        async with trio.open_nursery() as nursery:
            served = InMemoryServer(server, nursery, stream_pair=stream_pair, host=host,
                                    timeout=timeout)
            try:
                yield served
            finally:
                served._stopped = True
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _unwrap(group)


@attrs.define(eq=False)
class _Connection:
    """One in-memory connection: its server end, and the scope of the task serving it."""

    server_end: trio.abc.Stream
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)


class InMemoryServer:
    """A running :class:`ThingServer`, reached over memory streams.

    Made by :func:`serve_in_memory` and :func:`in_memory`, which own ``nursery`` and
    cancel it when their block ends. Making one yourself (inside ``server.running()``)
    serves each connection in a nursery of yours instead; cancelling it ends them all.

    Every connection, however it is opened (by a client through :meth:`open_stream`,
    by :meth:`http`, :meth:`websocket` or :meth:`open_raw_stream`), is a new
    ``stream_pair()`` whose server end is handed to ``server.handle_connection`` in
    ``nursery``: it is served exactly as a socket's would be.
    """

    def __init__(self, server: ThingServer, nursery: trio.Nursery, *,
                 stream_pair: StreamPair = trio.testing.memory_stream_pair,
                 host: str = DEFAULT_HOST, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.server = server
        """The :class:`ThingServer` served."""
        self.host = host
        """The host of the server's URLs; :meth:`open_stream` refuses any other."""
        self.timeout = timeout
        """Seconds each wait on the server may take (None: no bound)."""
        self.connections_opened = 0
        """How many connections were opened, in all (to check that a client reuses
        its connections, say)."""
        self._nursery = nursery
        self._stream_pair = stream_pair
        self._live: set[_Connection] = set()
        self._stopped = False

    @property
    def url(self) -> str:
        """The server's root URL, ``http://testserver/``: ``GET`` lists its Things."""
        return f"{self.server.scheme}://{self.host}/"

    def thing_url(self, name: str | None = None) -> str:
        """The URL of the Thing Description of Thing ``name`` (``http://testserver/pump/``);
        ``name`` may be left out when the server has one Thing.

        Raises:
            ValueError: no Thing of that name, or no name given and several Things.
        """
        names = list(self.server.things)
        if name is None:
            if len(names) != 1:
                raise ValueError(f"name one of the {len(names)} Things served: "
                                 f"{', '.join(names) or '(none)'}")
            name = names[0]
        elif name not in self.server.things:
            raise ValueError(f"no Thing {name!r} is served; there are: "
                             f"{', '.join(names) or '(none)'}")
        return f"{self.url}{name}/"

    @property
    def open_connections(self) -> int:
        """How many connections are open now: opened, and not yet ended by the server."""
        return len(self._live)

    # ------------------------------------------------------------------ trio_things.client

    async def open_stream(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        """An :class:`~trio_things.client.OpenStream`: pass it as
        ``trio_things.client.connect(url, open_stream=served.open_stream)`` to reach this
        server at :attr:`url`. Each call opens a new connection (see
        :meth:`open_raw_stream`); the client owns and closes it.

        Any port is accepted. ``tls`` is ignored: memory streams carry plain HTTP, so a
        server configured for TLS (whose URLs say ``https``) is reached without it.

        Raises:
            ConnectionRefusedError: ``host`` is not :attr:`host` (the client reports
                it as :class:`~trio_things.client.Unreachable`), or the server has
                stopped.
        """
        if host.lower() != self.host.lower():
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"Connection refused (the in-memory server answers "
                                    f"only as {self.host!r}, not {host!r})")
        return await self.open_raw_stream()

    def connect(self, name: str | None = None, *, options: ClientOptions | None = None,
                token: str | None = None, websocket: bool = True
                ) -> AbstractAsyncContextManager[ConsumedThing]:
        """:func:`trio_things.client.connect` to Thing ``name`` (left out: the only
        one), over this server's memory streams::

            async with served.connect("pump") as pump:
                await pump.write("speed", 3)

        The client is closed when the block ends, before the server is.
        """
        return connect(self.thing_url(name), open_stream=self.open_stream,
                       options=options, token=token, websocket=websocket)

    def open_client(self, *, options: ClientOptions | None = None, token: str | None = None,
                    websocket: bool = True) -> AbstractAsyncContextManager[Client]:
        """:func:`trio_things.client.open_client` over this server's memory streams, to
        consume several Things through one client: ``await
        client.consume(served.thing_url("pump"))``."""
        return open_client(open_stream=self.open_stream, options=options, token=token,
                           websocket=websocket)

    # ------------------------------------------------------------------ raw HTTP, WebSocket

    @asynccontextmanager
    async def http(self, *, stream_pair: StreamPair | None = None
                   ) -> AsyncIterator[HttpConnection]:
        """One keep-alive :class:`HttpConnection` to the server, for raw requests::

            async with served.http() as http:
                response = await http.put("/pump/speed", 3)
                assert response.status == 204

        ``stream_pair`` overrides the server's for this connection; its requests time
        out after :attr:`timeout` (set the connection's own ``timeout`` to change that).
        The connection is closed when the block ends.
        """
        stream = await self.open_raw_stream(stream_pair=stream_pair)
        try:
            yield HttpConnection(stream, host=self.host, timeout=self.timeout)
        finally:
            await trio.aclose_forcefully(stream)

    @asynccontextmanager
    async def websocket(self, path: str, subprotocols: Iterable[str] = (), *,
                        headers: Mapping[str, str] | None = None,
                        stream_pair: StreamPair | None = None,
                        ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """A trio-websocket connection to ``path`` (``/pump/ws``, ``/ws``), offering
        ``subprotocols``::

            async with served.websocket("/pump/ws", ["webthingprotocol"]) as ws:
                await ws.send_message(json.dumps({...}))
                reply = json.loads(await ws.get_message())

        ``/{thing}/ws`` with ``webthingprotocol`` speaks the Web Thing Protocol, without
        it the LabThings dialect (``docs/websocket.md``). ``headers`` are added to the
        handshake request (``authorization``, say).

        Leaving the block closes the WebSocket politely (close code 1000, within
        :attr:`timeout`), then closes the stream and ends the connection's reader task.

        Raises:
            trio_websocket.ConnectionRejected: the server refused the handshake (its
                ``status_code`` and problem details ``body``).
            trio.TooSlowError: no answer to the handshake within :attr:`timeout`.
        """
        seconds = self.timeout
        stream = await self.open_raw_stream(stream_pair=stream_pair)
        try:
            async with trio.open_nursery() as nursery:
                try:
                    with _fail_after(seconds, f"no answer to the WebSocket handshake at "
                                              f"{path}"):
                        ws = await trio_websocket.wrap_client_stream(
                            # trio-websocket is typed for sockets, but takes any stream.
                            nursery, stream, self.host, path,  # type: ignore[arg-type]
                            subprotocols=list(subprotocols),
                            extra_headers=[(k.encode(), v.encode())
                                           for k, v in (headers or {}).items()])
                    try:
                        yield ws
                    finally:
                        with trio.move_on_after(math.inf if seconds is None else seconds):
                            await ws.aclose()
                finally:
                    # No checkpoint after this: the Cancelled it raised would be caught
                    # by this very nursery, and an exception from the block lost with it.
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            _unwrap(group)
        finally:
            await trio.aclose_forcefully(stream)  # closed already, unless the handshake failed

    async def open_raw_stream(self, *, stream_pair: StreamPair | None = None
                              ) -> trio.abc.Stream:
        """Open a new connection and return its client end: a :class:`trio.abc.Stream`
        to write raw bytes to and read the server's from, yours to close.

        Its server end is served by ``server.handle_connection`` in the nursery, until
        the client end closes, the server ends the connection, or the nursery ends.

        Raises:
            ConnectionRefusedError: the server has stopped (the block has ended).
        """
        if self._stopped:
            raise ConnectionRefusedError(errno.ECONNREFUSED,
                                         "Connection refused (the in-memory server stopped)")
        client_end, server_end = (stream_pair or self._stream_pair)()
        connection = _Connection(server_end)
        try:
            self._nursery.start_soon(self._serve, connection,
                                     name="trio_things.testing connection")
        except RuntimeError:  # the nursery has closed
            self._stopped = True
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, "Connection refused (the in-memory server stopped)"
            ) from None
        self._live.add(connection)
        self.connections_opened += 1
        return client_end

    async def _serve(self, connection: _Connection) -> None:
        try:
            with connection.scope:
                await self.server.handle_connection(connection.server_end)
        finally:
            self._live.discard(connection)

    async def drop_connections(self) -> None:
        """Break every open connection at the server's end, abruptly, as a server
        process that died or a network that failed would: no response is finished, no
        WebSocket close frame sent. Each server end is closed at once, so its client
        reads end-of-file (a WebSocket client sees close code 1006; a client such as
        ``trio_things.client`` may reconnect, as the server still runs), and the task
        serving it is cancelled.

        Returns after one checkpoint, before those tasks have run again: what the test
        does next (changing a Thing's property, say) happens while the client has no
        connection."""
        dropped = list(self._live)
        for connection in dropped:
            connection.scope.cancel()
        for connection in dropped:
            # A memory stream closes at once; its checkpoint is cut short.
            await trio.aclose_forcefully(connection.server_end)
        await trio.lowlevel.checkpoint()


# ----------------------------------------------------------------------------- internals


def _server_for(things: Thing | Mapping[str, Thing] | ThingServer, *, name: str | None,
                config: ServerConfig | None) -> ThingServer:
    if isinstance(things, ThingServer):
        if name is not None or config is not None:
            raise TypeError("give a ThingServer, or Things with a name and a config; "
                            "not both")
        return things
    server = ThingServer(config)
    if isinstance(things, Thing):
        server.add_thing(name or type(things).__name__.lower(), things)
        return server
    if name is not None:
        raise TypeError("name is for one Thing; a mapping names its Things itself")
    if not isinstance(things, Mapping):
        raise TypeError(f"{things!r} is not a Thing, a mapping of names to Things, or a "
                        f"ThingServer")
    for thing_name, thing in things.items():
        server.add_thing(thing_name, thing)
    return server


def _unwrap(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the one exception a nursery wrapped (the block's own, usually), without
    the group; the cancellations beside it only say the nursery was cancelled because
    of it. A group holding several, or only cancellations, is raised as it is."""
    leaves = [leaf for leaf in _leaves(group) if not isinstance(leaf, trio.Cancelled)]
    if len(leaves) != 1:
        raise group
    error = leaves[0]
    context = error.__context__
    try:
        raise error
    finally:
        error.__context__ = context  # not the group it was caught in
        del error, context


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error
