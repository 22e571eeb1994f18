"""Browsing for WoT servers with DNS-SD (multicast DNS): zeroconf, driven from Trio.

::

    async with trio_things.client.dns_sd.browsing() as events:
        async for event in events:      # FoundService or LostService, as they come
            print(event)

    services = await trio_things.client.dns_sd.browse(3.0)   # what is there after 3 s

Any WoT server or Thing announced as ``_wot._tcp`` is found, not only trio-things
(:mod:`trio_things.protocol.dns_sd` reads the records). ``zeroconf`` runs its own
asyncio loop in a thread; its blocking calls are made in Trio's worker threads, each
abandoned when cancelled, and a service is resolved (its address, port and TXT record)
in the browser's own thread, from which the events reach Trio without blocking it.

Resource handling: leaving ``browsing()`` closes zeroconf (its sockets and threads), at
most :data:`CLOSE_TIMEOUT` later even when cancelled.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, TypeAlias

import trio

from trio_things.protocol.dns_sd import SERVICE_TYPE, FoundService, LostService, found_service

if TYPE_CHECKING:
    from zeroconf import ServiceStateChange, Zeroconf

__all__ = ["CLOSE_TIMEOUT", "BrowseEvent", "browse", "browsing"]

BrowseEvent: TypeAlias = FoundService | LostService
_Push: TypeAlias = Callable[[BrowseEvent], None]
#: Seconds closing zeroconf may take when the browse ends.
CLOSE_TIMEOUT: Final = 0.5
#: Milliseconds to wait for a service's address and TXT record once its name is known.
RESOLVE_MS: Final = 1000
#: Events held for a consumer that reads slowly; past that, new ones are dropped.
_BUFFER: Final = 256


@asynccontextmanager
async def browsing(*, interface: str | None = None, service_type: str = SERVICE_TYPE
                   ) -> AsyncIterator[trio.MemoryReceiveChannel[BrowseEvent]]:
    """Browse ``_wot._tcp`` for the block: each service found (and resolved) comes as a
    :class:`FoundService` (again when its records change), each one withdrawn as a
    :class:`LostService`.

    ``interface``: the address of the one interface to browse on (default: every
    IPv4 interface). ``service_type``: a subtype to browse instead, such as
    :data:`~trio_things.protocol.dns_sd.DIRECTORY_SUBTYPE` for directories only.
    OSError if zeroconf cannot open its sockets.
    """
    token = trio.lowlevel.current_trio_token()
    send, receive = trio.open_memory_channel[BrowseEvent](_BUFFER)

    def deliver(event: BrowseEvent) -> None:  # on the Trio thread
        try:
            send.send_nowait(event)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def push(event: BrowseEvent) -> None:  # on zeroconf's browser thread: never blocks
        try:
            token.run_sync_soon(deliver, event)
        except trio.RunFinishedError:
            pass

    browser = _Browser(interface, service_type, push)
    try:
        await trio.to_thread.run_sync(browser.open, abandon_on_cancel=True)
        async with receive:
            yield receive
    finally:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
            await trio.to_thread.run_sync(browser.close, abandon_on_cancel=True)
        send.close()


async def browse(seconds: float, *, interface: str | None = None,
                 service_type: str = SERVICE_TYPE) -> list[FoundService]:
    """The services that are there after browsing for ``seconds`` (found, and not
    withdrawn since), by name; the arguments as :func:`browsing`'s."""
    found: dict[str, FoundService] = {}
    async with browsing(interface=interface, service_type=service_type) as events:
        with trio.move_on_after(seconds):
            async for event in events:
                if isinstance(event, FoundService):
                    found[event.name] = event
                else:
                    found.pop(event.name, None)
    return sorted(found.values(), key=lambda service: service.name.casefold())


def _instance(full_name: str) -> str:
    return full_name.removesuffix("." + SERVICE_TYPE)


class _Browser:
    """zeroconf's side, in worker threads: :meth:`close` may come before, during or
    after :meth:`open`, and ends whatever was opened."""

    def __init__(self, interface: str | None, service_type: str, push: _Push) -> None:
        self._interface = interface
        self._service_type = service_type
        self._push = push
        self._lock = threading.Lock()
        self._zeroconf: Zeroconf | None = None
        self._closed = False

    def open(self) -> None:
        from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, Zeroconf

        interface = self._interface
        version = IPVersion.V6Only if interface and ":" in interface else IPVersion.V4Only
        zeroconf = Zeroconf(interfaces=[interface] if interface else InterfaceChoice.All,
                            ip_version=version)
        with self._lock:
            closed = self._closed
            if not closed:
                self._zeroconf = zeroconf
        if closed:  # closed while it was opening: nobody else will close it
            zeroconf.close()
            return
        ServiceBrowser(zeroconf, self._service_type, handlers=[self._changed])

    def _changed(self, zeroconf: Zeroconf, service_type: str, name: str,
                 state_change: ServiceStateChange) -> None:
        """On the browser's thread, where zeroconf's blocking calls are allowed."""
        from zeroconf import ServiceStateChange

        if state_change is ServiceStateChange.Removed:
            self._push(LostService(name=_instance(name)))
            return
        info = zeroconf.get_service_info(service_type, name, timeout=RESOLVE_MS)
        if info is None:
            return
        found = found_service(full_name=name, addresses=info.parsed_scoped_addresses(),
                              port=info.port, txt=info.properties)
        if found is not None:
            self._push(found)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is not None:
            zeroconf.close()

