"""The server's DNS-SD announcement: zeroconf, driven from Trio.

``zeroconf`` runs its own asyncio loop in a thread of its own; its blocking calls wait
for that loop. So they are made in Trio's worker threads (never on the Trio thread),
each abandoned when Trio cancels it: a cancellation never waits for a probe to end.

Lifecycle: :func:`announce` registers the service (probing the name first, zeroconf
renaming it ``labpc-2`` if another server holds it), then waits until cancelled. On the
way out, cancelled or not, it withdraws the service, which sends the goodbye packets
(records with TTL 0, RFC 6762 section 10.1) and closes zeroconf's sockets and thread.
That is shielded from the cancellation, so that the goodbyes go out, but bounded by
:data:`WITHDRAW_TIMEOUT`: a Ctrl-C never waits for it longer than that. Were it cut
short, consumers would drop the records when they expire instead.

The subtype: a ``zeroconf.ServiceInfo`` has one type, and the library keys the services
it answers for by their instance name, so one instance under a type and a subtype takes
two infos, the second one under a key of its own (python-zeroconf issues #109, #1287:
registered with the subtype alone, a browser of ``_wot._tcp`` would not see it).

A failure to announce (no multicast route, say) is logged as a warning, and the server
serves on: being announced is a convenience, serving is the job.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import trio

from trio_things.protocol.dns_sd import (
    DiscoveryConfig,
    Interfaces,
    ServiceRecords,
    default_instance_name,
    directory_records,
    interfaces_for,
)

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

__all__ = ["WITHDRAW_TIMEOUT", "announce", "announce_server"]

logger = logging.getLogger("trio_things.dns_sd")

#: Seconds the withdrawal (the goodbye packets, then closing zeroconf) may hold up a
#: shutdown. zeroconf sends its goodbyes three times, 125 ms apart: about 0.25 s.
WITHDRAW_TIMEOUT: Final = 0.5


async def announce_server(discovery: DiscoveryConfig, bound: Sequence[tuple[str, int]],
                          scheme: str) -> None:
    """Announce a server listening on ``bound`` (its listeners' ``(address, port)``) as
    its Thing Description Directory, until cancelled; see the module."""
    port = bound[0][1]
    addresses = [address for address, bound_port in bound if bound_port == port]
    host_name = socket.gethostname()
    interfaces = interfaces_for(addresses, _interface_addresses())
    records = directory_records(
        name=discovery.name or default_instance_name(host_name), host_name=host_name,
        port=port, addresses=interfaces.addresses, scheme=scheme)
    await announce(records, interfaces)


async def announce(records: ServiceRecords, interfaces: Interfaces, *,
                   task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Announce ``records`` on ``interfaces`` until cancelled, then withdraw them.

    ``task_status.started()`` receives the instance name announced (zeroconf may have
    renamed it). Returns early, after a warning, if the service cannot be announced.
    """
    announcer = _Announcer(records, interfaces)
    try:
        name = await trio.to_thread.run_sync(announcer.register, abandon_on_cancel=True)
        where = ", ".join(interfaces.addresses) or "every interface"
        what = ("a Thing Description Directory" if records.txt.get("type") == "Directory"
                else "a Thing")
        logger.info("announced as %r (DNS-SD %s, %s at %s) on %s, port %d", name,
                    records.service_type.removesuffix(".local."), what,
                    records.txt.get("td"), where, records.port)
        task_status.started(name)
        await trio.sleep_forever()
    except Exception as error:  # zeroconf's errors, OSError: serving goes on regardless
        logger.warning("could not announce the server with DNS-SD: %s: %s",
                       type(error).__name__, error)
    finally:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + WITHDRAW_TIMEOUT):
            await trio.to_thread.run_sync(announcer.close, abandon_on_cancel=True)


class _Announcer:
    """zeroconf's side, in worker threads: :meth:`register` and :meth:`close` may run
    at the same time, in either order (a close while registering ends the
    registration), and each at most once."""

    def __init__(self, records: ServiceRecords, interfaces: Interfaces) -> None:
        self._records = records
        self._interfaces = interfaces
        self._lock = threading.Lock()
        self._zeroconf: Zeroconf | None = None
        self._closed = False

    def register(self) -> str:
        """Probe, then announce; the instance name announced."""
        from zeroconf import InterfaceChoice, IPVersion, Zeroconf

        interfaces = self._interfaces
        version = (IPVersion.All if interfaces.ipv4 and interfaces.ipv6
                   else IPVersion.V6Only if interfaces.ipv6 else IPVersion.V4Only)
        zeroconf = Zeroconf(interfaces=list(interfaces.addresses) or InterfaceChoice.All,
                            ip_version=version)
        with self._lock:
            closed = self._closed
            if not closed:
                self._zeroconf = zeroconf
        if closed:  # withdrawn while it was opening: nobody else will close it
            zeroconf.close()
            raise RuntimeError("withdrawn before it was announced")  # to nobody: abandoned
        records = self._records
        info = self._info(records.service_type, records.full_name)
        zeroconf.register_service(info, allow_name_change=True)
        for subtype in records.subtypes:
            alias = self._info(subtype, info.name)
            alias.key = f"{info.key} {subtype}"  # a key of its own: see the module
            zeroconf.register_service(alias, cooperating_responders=True)  # probed above
        return info.name.removesuffix("." + records.service_type)

    def _info(self, type_: str, name: str) -> ServiceInfo:
        from zeroconf import ServiceInfo

        records = self._records
        return ServiceInfo(type_, name, port=records.port, properties=dict(records.txt),
                           server=records.host_name,
                           parsed_addresses=list(records.addresses))

    def close(self) -> None:
        """Withdraw (goodbye packets) and close; at once if nothing was opened yet."""
        with self._lock:
            self._closed = True
            zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is not None:
            zeroconf.close()  # unregisters every service first: the goodbyes


def _interface_addresses() -> list[str]:
    """Every address of every interface (IPv6 ones without their zone)."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            found.append(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return found
