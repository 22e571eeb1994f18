"""ThingServer: the registry of Things, their lifecycle, and the listening socket.

Ownership, outermost first::

    ThingServer.running()          loads the Things' settings, then enters every Thing
                                   (async with), in order
      nursery                      Things' background tasks, their settings writers
        open_action_runner    every action task
          handle_connection(...)   one HTTP connection each (serve() or your own streams)

Leaving ``running()`` (Ctrl-C, cancellation, an error) cancels the connections, then the
actions (recorded ``cancelled``), then the background tasks, saves the settings not yet
on disk, and finally exits the Things in reverse order, so a Thing's hardware is
released after nothing uses it (and saves again what their ``__aexit__`` changed).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import NoReturn

import trio

from trio_things.bindings.http import HttpBinding, handle_http_request
from trio_things.bindings.mqtt import MqttBinding, MqttBridge, serve_mqtt
from trio_things.bindings.websocket import (
    WebSocketBinding,
    WebSocketDialects,
    serve_websocket_upgrade,
)
from trio_things.config import ConfigError, ServerConfig, check_thing_name
from trio_things.errors import LocalProtocolError, RemoteProtocolError, TooManyRequests
from trio_things.fanout.bridge import TrioBridge
from trio_things.fanout.history import History
from trio_things.fanout.notifier import ThingNotifier, publish_action_status
from trio_things.fanout.observers import ObserverRegistry
from trio_things.model.affordances import Affordances
from trio_things.model.description import Binding
from trio_things.model.thing import Thing
from trio_things.runtime.actions import open_action_runner
from trio_things.runtime.blobs import BlobStore
from trio_things.runtime.dispatcher import Dispatcher
from trio_things.runtime.settings import SettingsStore, settings_of
from trio_things.transport.dns_sd import announce_server
from trio_things.transport.http import HttpRequest, HttpResponse, serve_http_connection
from trio_things.transport.listeners import (
    ServedStream,
    _Acceptor,
    _Door,
    _raise_open_file_limit,
)
from trio_things.transport.listeners import (
    _connection_limit as _connection_limit,  # importable here still, as before it moved
)
from trio_things.transport.upgrade import UpgradeStream

__all__ = ["ThingServer"]

logger = logging.getLogger("trio_things.server")


class ThingServer:
    """Serves a set of Things over HTTP on one port.

    >>> server = ThingServer(ServerConfig(port=8000))
    >>> server.add_thing("counter", Counter())
    >>> trio.run(server.serve)
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        """Raises :class:`~trio_things.config.ConfigError` if ``config.tls`` names files
        that cannot be used: they are read now, so that a mistake shows at startup."""
        self.config = config or ServerConfig()
        self._things: dict[str, Thing] = {}
        self._dispatcher: Dispatcher | None = None
        self._settings: dict[str, SettingsStore] = {}  # while running: each Thing's
        self.mqtt: MqttBridge | None = None
        """While running with ``config.mqtt``: the MQTT binding's broker side."""
        self._affordances: dict[str, Affordances] = {}
        self._ssl_context = None if self.config.tls is None else self.config.tls.ssl_context()
        self._dialects = WebSocketDialects(
            things=self._affordances, default_host=f"{self.config.host}:{self.config.port}",
            scheme=self.scheme)

    @property
    def scheme(self) -> str:
        """``https`` when the server speaks TLS (``config.tls``), else ``http``."""
        return "http" if self.config.tls is None else "https"

    @property
    def things(self) -> Mapping[str, Thing]:
        """The Things served, by name."""
        return self._things

    def add_thing(self, name: str, thing: Thing) -> None:
        """Serve ``thing`` at ``/{name}/``. Only before :meth:`running` is entered."""
        if self._dispatcher is not None:
            raise LocalProtocolError("add Things before the server starts")
        if not isinstance(thing, Thing):
            raise TypeError(f"{thing!r} is not a trio_things.Thing")
        check_thing_name(name)
        if name in self._things:
            raise ConfigError(f"thing {name!r}: the name is already taken")
        self._things[name] = thing
        self._affordances[name] = type(thing).affordances

    def add_configured_things(self) -> None:
        """Create and add every Thing in :attr:`config` (raises ConfigError)."""
        for thing_config in self.config.things:
            self.add_thing(thing_config.name, thing_config.create())

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ThingServer]:
        """Enter every Thing, start their background tasks and the action runner.

        Connections may be handed to :meth:`handle_connection` inside this block.
        """
        if self._dispatcher is not None:
            raise LocalProtocolError("the server is already running")
        bridge = TrioBridge()
        history = History(self._things, size=self.config.replay_size)
        observers = ObserverRegistry({
            name: (list(a.properties), list(a.events), list(a.actions), list(a.streams))
            for name, a in self._affordances.items()})
        stores = {name: SettingsStore(name, thing, self.config.settings_folder)
                  for name, thing in self._things.items() if settings_of(thing)}
        self._settings = stores
        async with AsyncExitStack() as stack:
            for store in stores.values():  # before the Things are entered: they see them
                try:
                    await store.load()
                except OSError as error:
                    raise ConfigError(
                        f"thing {store.name!r}: cannot use the settings folder "
                        f"{str(store.folder)!r} ([server] settings_folder): "
                        f"{error.strerror or error}") from error
            stack.push_async_callback(_flush_settings, stores)  # what __aexit__ changed
            for thing in self._things.values():
                await stack.enter_async_context(thing)
            stack.push_async_callback(_flush_settings, stores)  # before the Things exit
            nursery = await stack.enter_async_context(trio.open_nursery())
            for name, thing in self._things.items():
                nursery.start_soon(_run_background, name, thing, name=f"{name} background")
            for name, store in stores.items():
                nursery.start_soon(store.run, name=f"{name} settings writer")
            invocations = await stack.enter_async_context(
                open_action_runner(
                    retention=self.config.invocation_retention,
                    on_status=functools.partial(publish_action_status, observers, history),
                    max_invocations=self.config.max_invocations,
                    max_invocations_per_thing=self.config.max_invocations_per_thing,
                    max_threads=self.config.max_action_threads,
                    blobs=BlobStore(memory_bytes=self.config.blob_memory_bytes,
                                    spill_bytes=self.config.blob_spill_bytes,
                                    folder=self.config.blob_folder)))
            for name, thing in self._things.items():
                settings = stores.get(name)
                thing._tt_set_notifier(ThingNotifier(
                    name, bridge, history, observers,
                    on_setting=None if settings is None else settings.changed))
            bindings: list[Binding] = [HttpBinding(), WebSocketBinding()]
            if self.config.mqtt is not None:
                bindings.append(MqttBinding(self.config.mqtt))
            self._dispatcher = Dispatcher(
                things=self._things,
                invocations=invocations,
                history=history,
                observers=observers,
                bindings=bindings,
                security_definitions=self.config.access.security_definitions(),
            )
            if self.config.mqtt is not None:
                self.mqtt = await nursery.start(
                    serve_mqtt, self.config.mqtt.with_environment(), self._dispatcher,
                    self._affordances, name="MQTT binding")
            try:
                yield self
            finally:
                self._dispatcher = None
                self.mqtt = None
                for thing in self._things.values():
                    thing._tt_set_notifier(None)
                nursery.cancel_scope.cancel()

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve HTTP on ``stream`` until the peer leaves; then close it.

        Only inside :meth:`running`. Never raises for anything the peer does.
        """
        await self._serve_http(stream)

    def _serve_http(self, stream: trio.abc.Stream) -> Awaitable[None]:
        # Not async, so that a connection that lives for months holds one frame less.
        return serve_http_connection(stream, handle_request=self._handle_request,
                                     handle_upgrade=self._handle_upgrade,
                                     limits=self.config.http)

    def _handle_upgrade(self, request: HttpRequest, stream: UpgradeStream) -> Awaitable[None]:
        # Not async: the coroutine is the request's only holder, and frees it after the
        # handshake (an async wrapper's frame would hold it for the connection's life).
        if self._dispatcher is None:
            raise LocalProtocolError("the server is not running")
        return serve_websocket_upgrade(
            request, stream, dispatcher=self._dispatcher, dialects=self._dialects,
            limits=self.config.websocket, access=self.config.access)

    async def _handle_request(self, request: HttpRequest) -> HttpResponse:
        if self._dispatcher is None:
            raise LocalProtocolError("the server is not running")
        return await handle_http_request(
            self._dispatcher, self._affordances, request,
            default_host=f"{self.config.host}:{self.config.port}", access=self.config.access,
            scheme=self.scheme, limits=self.config.http,
            long_poll_timeout=self.config.long_poll_timeout)

    def run(self) -> None:
        """Serve until Ctrl-C (SIGINT) or SIGTERM, shut down cleanly, and return.

        The blocking entry point for a script (``server.run()``), where
        ``trio.run(server.serve)`` would end a Ctrl-C with a ``KeyboardInterrupt``: the
        signal is a request to stop, not an error. Only from the main thread (signals are
        delivered there). Inside a Trio program, use :meth:`serve_until_signal` or
        :meth:`serve`.

        A second Ctrl-C (or SIGTERM) while the shutdown waits, say for a worker-thread
        action that never checks for cancellation, ends the process at once with exit
        status 130 (143 after SIGTERM), as :meth:`serve_until_signal` describes: then
        ``run()`` does not return.
        """
        trio.run(self.serve_until_signal)

    async def serve_until_signal(
        self, *, on_signal: Callable[[signal.Signals], object] | None = None,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> signal.Signals:
        """:meth:`serve` until SIGINT or SIGTERM arrives; then shut down cleanly (the
        connections, the actions, the Things) and return the signal.

        ``on_signal`` is called with the signal as soon as it arrives, before the
        shutdown (the command line prints a line there). ``task_status`` receives the
        listeners, as with :meth:`serve`. Main thread only.

        A second SIGINT or SIGTERM before the shutdown is over ends the process at once:
        one line on stderr says that it did not wait, and the exit status is 128 plus
        the signal's number (130 for SIGINT, 143 for SIGTERM), what a shell reports for
        a process killed by that signal. The shutdown can take long, since a
        worker-thread action that never checks for cancellation holds it until the
        action returns, and whoever asks twice wants the process gone: nothing more is
        cleaned up (no Thing is exited), as after ``kill -9`` but with a word said.
        Signals are watched for all along, so the second one is not left queued behind
        the shutdown it is meant to cut short.
        """
        first: signal.Signals | None = None
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as watching:
                serving = trio.CancelScope()

                async def serve(*, task_status: trio.TaskStatus[list[trio.SocketListener]]
                                ) -> None:
                    with serving:
                        await self.serve(task_status=task_status)
                    watching.cancel_scope.cancel()  # shut down: stop watching for signals

                task_status.started(await watching.start(serve))
                async for signum in signals:
                    received = signal.Signals(signum)
                    if first is not None:
                        _exit_at_once(received)
                    first = received
                    if on_signal is not None:
                        on_signal(received)
                    serving.cancel()
        assert first is not None, "serve() ended without being cancelled"
        return first

    async def serve(self, *, task_status: trio.TaskStatus[list[trio.SocketListener]]
                    = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``config.host:config.port`` and serve until cancelled.

        With ``config.tls``, every connection speaks TLS first (``https`` and ``wss`` on
        the one port); a client that does not is closed when its handshake fails.

        Each connection takes a file descriptor: first the process's open-file soft
        limit is raised to its hard limit (logged at INFO), and ``max_connections`` is
        kept below what it allows (see ``transport/listeners.py``).

        Returns:
            Never, unless cancelled. ``task_status.started()`` receives the TCP
            listeners (with ``port = 0`` in the config, read the real port from them).

        Resource handling:
            Connections are served in a nursery inside :meth:`running`, so they are
            cancelled before the Things are exited.

        Error handling:
            A Ctrl-C that reaches it (``trio.run(server.serve)``) shuts the server down
            and leaves as one plain :exc:`KeyboardInterrupt`, not the exception groups
            of every nursery it crossed.
        """
        try:
            await self._serve(task_status)
        except BaseExceptionGroup as group:
            interrupts, others = group.split(KeyboardInterrupt)
            if interrupts is not None and others is None:
                raise KeyboardInterrupt from None
            raise

    async def _serve(self, task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
        if not _loopback(self.config.host) and not self.config.access.enabled:
            logger.warning(
                "serving on %s without authentication: anyone who can reach this address "
                "can read and control these Things; set tokens in [server.access] or "
                "TRIO_THINGS_TOKENS", self.config.host or "every interface")
        _raise_open_file_limit()  # before the door reads it: a descriptor per connection
        async with self.running():
            listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
            async with trio.open_nursery() as nursery:
                door = _Door(self.config, nursery)
                handler = functools.partial(self._handle_socket, door)
                # Not trio.serve_listeners: it accepts one connection per scheduler round
                # (each round may carry a fan-out to every observer), and logs a traceback
                # at each accept() that fails for want of descriptors, ten a second.
                for listener in listeners:
                    acceptor = _Acceptor(listener, ssl_context=self._ssl_context)
                    nursery.start_soon(acceptor.serve, handler, nursery,
                                       name=f"accepting on {listener.socket.getsockname()}")
                for listener in listeners:
                    host, port = listener.socket.getsockname()[:2]
                    host = f"[{host}]" if ":" in host else host
                    logger.info("listening on %s://%s:%d/", self.scheme, host, port)
                bound = [listener.socket.getsockname()[:2] for listener in listeners]
                if self.config.discovery.announces([address for address, _ in bound]):
                    nursery.start_soon(announce_server, self.config.discovery, bound,
                                       self.scheme, name="DNS-SD announcement")
                task_status.started(listeners)

    async def _handle_socket(self, door: _Door, stream: ServedStream, address: str) -> None:
        """:meth:`handle_connection`, if the peer's ``address`` is within its connection
        limit (else 429) and the server within its own (else 503); closes ``stream``.

        The address is checked first: a client refused for the server's limit holds
        one of its own connections while it is answered, not one of the server's.
        One coroutine, the root of the connection's task: it lives as long as the
        connection, and each frame costs every idle connection its memory.
        """
        clients = door.clients
        try:
            if not clients.admit(address):
                logger.debug("refused a connection: %s has %d open", address,
                             clients[address])
                await door.refuse(stream, TooManyRequests(
                    f"This address has {clients.limit} connections open, the most one "
                    "client may have; close one before opening another."))
                return
            try:
                if not door.cap.admit():
                    door.note_full()
                    await door.refuse(stream, RemoteProtocolError(
                        f"The server has {door.cap.limit} connections open, the most it "
                        "serves at once; try again later.", status=503))
                    return
                try:
                    await self._serve_http(stream)
                finally:
                    door.cap.release()
            finally:
                clients.release(address)
        finally:  # closed already but for a bug: never leave a descriptor behind
            await trio.aclose_forcefully(stream)


def _exit_at_once(received: signal.Signals) -> NoReturn:
    """End the process now, with one line saying so: the shutdown in progress is
    abandoned (see :meth:`ThingServer.serve_until_signal`). ``os._exit``, because
    nothing else ends a process whose Trio run waits for a worker thread."""
    status = 128 + received.value
    try:
        sys.stdout.flush()
        print(f"trio-things: {received.name} again: exiting at once, without waiting for "
              f"the shutdown to finish (exit status {status})", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # a closed or broken stdout or stderr: exit regardless
        pass
    os._exit(status)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or "" (every interface)


async def _run_background(name: str, thing: Thing) -> None:
    try:
        await thing.background_task()
    except Exception:
        logger.exception("the background task of Thing %r failed; serving goes on", name)


async def _flush_settings(stores: Mapping[str, SettingsStore]) -> None:
    """Save every Thing's pending settings, side by side, whatever is being cancelled;
    each within its timeout (:meth:`SettingsStore.flush`)."""
    if not stores:
        return
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            for name, store in stores.items():
                nursery.start_soon(store.flush, name=f"{name} settings flush")
