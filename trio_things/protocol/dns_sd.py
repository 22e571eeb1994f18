"""DNS-SD for the Web of Things, sans-IO: what a server announces, and what a browser found.

W3C WoT Discovery's DNS-SD introduction: a Thing, or a Thing Description Directory
(TDD), is announced as an instance of the service type ``_wot._tcp``; a directory also
under the subtype ``_directory._sub._wot._tcp``. Its TXT record says where the TD is
(``td``, an absolute path), what it describes (``type``: ``Thing`` or ``Directory``) and
the URI scheme (``scheme``: ``http`` unless ``https``). The instance name is free text.

A trio-things server is announced once, as the directory at ``/.well-known/wot`` that
lists all its Things. Its Things are not announced one by one: a consumer finds them all
through the directory (WoT Discovery's introduction, then exploration), and the
multicast traffic (probes, announcements, answers, goodbyes) stays one service's,
however many Things a server has.

This module builds the records from what the server is bound to, and reads back what a
browser resolved; :mod:`trio_things.transport.dns_sd` (the server) and
:mod:`trio_things.client.dns_sd` (the browser) do the multicast, with ``zeroconf``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Final

import attrs

__all__ = [
    "DIRECTORY_SUBTYPE",
    "DIRECTORY_TD_PATH",
    "SERVICE_TYPE",
    "DiscoveryConfig",
    "FoundService",
    "Interfaces",
    "LostService",
    "ServiceRecords",
    "announced_by_default",
    "check_instance_name",
    "default_instance_name",
    "directory_records",
    "found_service",
    "interfaces_for",
    "published_addresses",
]

#: The WoT service type, fully qualified as mDNS names are (RFC 6763 section 7).
SERVICE_TYPE: Final = "_wot._tcp.local."
#: The subtype a Thing Description Directory is also announced under.
DIRECTORY_SUBTYPE: Final = "_directory._sub._wot._tcp.local."
#: Where a trio-things server serves its directory's TD (its introduction URL).
DIRECTORY_TD_PATH: Final = "/.well-known/wot"
#: A DNS label's limit, which an instance name is (RFC 6763 section 4.1.1).
MAX_NAME_BYTES: Final = 63


def check_instance_name(name: str) -> str:
    """``name`` if it can be a DNS-SD instance name, else ValueError saying why.

    Any UTF-8 text of 1 to 63 bytes, without control characters (RFC 6763 section
    4.1.1), and without ``.``: zeroconf would split the name there into two labels.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, not {type(name).__name__}")
    size = len(name.encode("utf-8"))
    if not 0 < size <= MAX_NAME_BYTES:
        raise ValueError(f"name {name!r} must be 1 to {MAX_NAME_BYTES} bytes long in UTF-8, "
                         f"not {size}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ValueError(f"name {name!r} must not contain control characters")
    if "." in name:
        raise ValueError(f"name {name!r} must not contain '.'")
    return name


def default_instance_name(host_name: str) -> str:
    """The instance name a server takes when ``[server.discovery]`` names none: the
    host name's first label (``labpc`` of ``labpc.example.org``), cut to 63 bytes;
    ``trio-things`` for an empty one. Two servers on one host are told apart by
    zeroconf, which renames the later one ``labpc-2``."""
    label = "".join(c for c in host_name.split(".")[0] if ord(c) >= 0x20 and ord(c) != 0x7F)
    encoded = label.encode("utf-8")[:MAX_NAME_BYTES]
    return encoded.decode("utf-8", errors="ignore") or "trio-things"


def _optional_name(_instance: object, _attribute: object, name: str | None) -> None:
    if name is not None:
        check_instance_name(name)


def _optional_bool(_instance: object, _attribute: object, value: bool | None) -> None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"dns_sd must be true or false, not {value!r}")


@attrs.frozen(kw_only=True)
class DiscoveryConfig:
    """``[server.discovery]``: whether and as what the server announces itself."""

    dns_sd: bool | None = attrs.field(default=None, validator=_optional_bool)
    """Announce the server with DNS-SD (multicast DNS) while it serves. ``None`` (the
    default): when it listens on an address other than loopback's."""
    name: str | None = attrs.field(default=None, validator=_optional_name)
    """The instance name browsers show; ``None``: the host name (its first label)."""

    def announces(self, bound: Sequence[str]) -> bool:
        """Whether a server listening on the addresses ``bound`` announces itself."""
        return announced_by_default(bound) if self.dns_sd is None else self.dns_sd


def announced_by_default(bound: Sequence[str]) -> bool:
    """True when any of the addresses ``bound`` is not loopback (``0.0.0.0`` is every
    interface, so not loopback): a server only this machine can reach keeps quiet."""
    return any(not _address(address).is_loopback for address in bound)


def _address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(address.partition("%")[0])


@attrs.frozen(kw_only=True)
class Interfaces:
    """Where to announce (and answer): the interfaces that have these ``addresses``
    (every interface of the families ``ipv4``/``ipv6`` when there are none)."""

    addresses: tuple[str, ...] = ()
    ipv4: bool = True
    ipv6: bool = False


def interfaces_for(bound: Sequence[str], interface_addresses: Sequence[str]) -> Interfaces:
    """The interfaces a server listening on ``bound`` (its listeners' addresses) is
    announced on: those of its :func:`published_addresses`. ``127.0.0.1``: loopback
    alone; ``0.0.0.0``: every interface with an IPv4 address but loopback, whose
    multicast no other machine receives (and which often carries none)."""
    addresses = [_address(address) for address in bound]
    return Interfaces(addresses=published_addresses(bound, interface_addresses),
                      ipv4=any(a.version == 4 for a in addresses),
                      ipv6=any(a.version == 6 for a in addresses))


def published_addresses(bound: Sequence[str], interface_addresses: Sequence[str]
                        ) -> tuple[str, ...]:
    """The A and AAAA records: the addresses a consumer can reach the server on.

    A specific address is itself (an IPv6 one without its zone). ``0.0.0.0`` (``::``)
    stands for every IPv4 (IPv6) address of the machine's interfaces
    (``interface_addresses``) but loopback's, which another machine cannot use; loopback's
    only when nothing else is left (a machine, or a network namespace, with loopback
    alone). IPv6 link-local addresses are kept: a browser knows which interface it heard
    them on (``fe80::1%eth0``).
    """
    chosen: list[str] = []
    for raw in bound:
        address = _address(raw)
        if not address.is_unspecified:
            chosen.append(str(address))
            continue
        family = [_address(a) for a in interface_addresses
                  if _address(a).version == address.version]
        usable = [a for a in family if not a.is_loopback]
        chosen.extend(str(a) for a in (usable or family))
    return tuple(dict.fromkeys(chosen))


@attrs.frozen(kw_only=True)
class ServiceRecords:
    """One DNS-SD service instance: its PTR (under ``service_type`` and each of
    ``subtypes``), SRV (``host_name``, ``port``), TXT and A/AAAA (``addresses``)."""

    name: str
    """The instance name, free text (``labpc``)."""
    port: int
    host_name: str
    """The SRV record's target, fully qualified (``labpc.local.``)."""
    addresses: tuple[str, ...]
    txt: Mapping[str, str]
    service_type: str = SERVICE_TYPE
    subtypes: tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        """The service instance's DNS name (``labpc._wot._tcp.local.``)."""
        return f"{self.name}.{self.service_type}"


def directory_records(*, name: str, host_name: str, port: int, addresses: Sequence[str],
                      scheme: str) -> ServiceRecords:
    """The records of a trio-things server: a Thing Description Directory whose TD is
    at ``/.well-known/wot``, on ``port``, reached at ``addresses``."""
    label = host_name.split(".")[0] or "trio-things"
    return ServiceRecords(
        name=check_instance_name(name), port=port, host_name=f"{label}.local.",
        addresses=tuple(addresses),
        txt={"td": DIRECTORY_TD_PATH, "type": "Directory", "scheme": scheme},
        subtypes=(DIRECTORY_SUBTYPE,))


@attrs.frozen(kw_only=True)
class FoundService:
    """A WoT service a browser found and resolved."""

    name: str
    """The instance name (``labpc``), without the service type."""
    kind: str
    """``Directory`` or ``Thing`` (the TXT record's ``type``; ``Thing`` without one)."""
    url: str
    """The server's root: ``http://192.0.2.7:8000/``."""
    td_url: str
    """The TD announced: the directory's, for a ``Directory``."""


@attrs.frozen(kw_only=True)
class LostService:
    """A WoT service withdrawn (its goodbye packets arrived) or expired."""

    name: str


def found_service(*, full_name: str, addresses: Sequence[str], port: int | None,
                  txt: Mapping[bytes, bytes | None]) -> FoundService | None:
    """What a browser resolved (``full_name`` such as ``labpc._wot._tcp.local.``), as a
    :class:`FoundService`; None when it cannot be used: no address, no port, or a TXT
    record that is not WoT's (a ``td`` that is no absolute path, an unknown scheme).

    TXT keys are matched without regard to case (RFC 6763 section 6.4). Without ``td``,
    a ``Directory`` is taken to be at ``/.well-known/wot``. Of several addresses, a
    routable IPv4 one is preferred, then a routable IPv6 one, then loopback, then IPv6
    link-local with its zone (``fe80::1%eth0``).
    """
    entries = {key.decode("ascii", "replace").lower(): value for key, value in txt.items()}
    values = {key: value.decode("utf-8", "replace") for key, value in entries.items()
              if value is not None}
    kind = values.get("type", "Thing")
    scheme = values.get("scheme", "http").lower()
    td = values.get("td", DIRECTORY_TD_PATH if kind == "Directory" else "")
    host = _preferred_host(addresses)
    if (host is None or not port or scheme not in ("http", "https") or not td.startswith("/")
            or td.startswith("//")):
        return None
    suffix = "." + SERVICE_TYPE
    name = full_name[:-len(suffix)] if full_name.endswith(suffix) else full_name
    root = f"{scheme}://{host}:{port}"
    return FoundService(name=name, kind=kind, url=f"{root}/", td_url=f"{root}{td}")


def _preferred_host(addresses: Sequence[str]) -> str | None:
    def rank(text: str) -> int:
        address = _address(text)
        if address.is_loopback:
            return 2
        if address.version == 6 and address.is_link_local:
            return 3
        return 0 if address.version == 4 else 1

    usable = []
    for text in addresses:
        try:
            usable.append((rank(text), text))
        except ValueError:
            continue
    if not usable:
        return None
    best = min(usable, key=lambda pair: pair[0])[1]
    if ":" in best:
        host, _, zone = best.partition("%")
        return f"[{host}%25{zone}]" if zone else f"[{host}]"
    return best
