"""``trio-things discover``: the WoT servers on the local network, and their Things.

::

    trio-things discover [--seconds N] [--interface ADDR] [--timeout SECONDS]

Browses DNS-SD (multicast DNS) for ``_wot._tcp`` for ``--seconds`` (3 by default), on
every IPv4 interface or only the one whose address is ``--interface``; then asks each
server found for its Things, and prints one line per server (its instance name, its
URL, what it announced) and one per Thing (its title, and its TD's URL when known)::

    labpc  http://192.0.2.7:8000/  (directory http://192.0.2.7:8000/.well-known/wot)
      Thermometer  http://192.0.2.7:8000/thermometer/
      Counter      http://192.0.2.7:8000/counter/

A directory's Things are those of its listing (WoT Discovery's ``things`` property,
followed page by page: :meth:`Client.explore_directory
<trio_things.client.Client.explore_directory>`). A server that cannot be asked gets a
line saying why instead of its Things. No token is sent:
anyone on the network can announce a service, and a token would go to whoever did (a
server whose directory needs one says so).

Exit status: 0, whether or not anything was found (a line on stderr says when nothing
was); 1 when it could not browse (zeroconf could not open its sockets); 2 for a bad
command line; 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Final

import attrs
import trio

from trio_things.client.connect import Client, open_client
from trio_things.client.dns_sd import browse
from trio_things.client.errors import ClientError
from trio_things.client.options import ClientOptions
from trio_things.protocol.dns_sd import FoundService

__all__ = ["SECONDS", "FoundThing", "add_command", "run", "things_of"]

#: How long ``discover`` browses by default.
SECONDS: Final = 3.0


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``discover`` to ``commands`` (argparse's subparsers action)."""
    parser = commands.add_parser(
        "discover", help="find WoT servers on the local network (DNS-SD) and list their Things")
    parser.add_argument("--seconds", type=float, default=SECONDS,
                        help="how long to browse (default %(default)g)")
    parser.add_argument("--interface", metavar="ADDR",
                        help="browse only on the interface with this IP address "
                             "(default: every IPv4 interface)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds any one request to a server may take "
                             "(default %(default)g)")


def run(args: argparse.Namespace) -> int:
    """Run ``discover``; its exit status."""
    problem = _check(args)
    if problem:
        print(f"trio-things: error: {problem}", file=sys.stderr)
        return 2
    try:
        status: int = trio.run(_discover, args)
    except KeyboardInterrupt:
        return 130
    return status


def _check(args: argparse.Namespace) -> str:
    if not args.seconds > 0:
        return "--seconds must be positive"
    if not args.timeout > 0:
        return "--timeout must be positive"
    if args.interface is not None:
        try:
            ipaddress.ip_address(args.interface)
        except ValueError:
            return f"--interface takes an interface's IP address, not {args.interface!r}"
    return ""


@attrs.frozen(kw_only=True)
class FoundThing:
    """A Thing of a server found: its TD's title, and a URL its TD is at (for a
    directory's Thing, the directory's ``retrieveThing`` URL for its id)."""

    title: str
    url: str


async def _discover(args: argparse.Namespace) -> int:
    where = f" on {args.interface}" if args.interface else ""
    try:
        services = await browse(args.seconds, interface=args.interface)
    except OSError as error:
        print(f"trio-things: error: cannot browse{where}: {error.strerror or error}",
              file=sys.stderr)
        return 1
    if not services:
        print(f"trio-things: found no WoT server (DNS-SD _wot._tcp{where}, "
              f"{args.seconds:g} s)", file=sys.stderr, flush=True)
        return 0
    results: list[list[FoundThing] | str] = [""] * len(services)
    async with open_client(options=ClientOptions(timeout=args.timeout),
                           websocket=False) as client:
        async with trio.open_nursery() as nursery:
            for index, service in enumerate(services):
                nursery.start_soon(_fill, results, index, client, service)
    for service, things in zip(services, results, strict=True):
        _print_service(service, things)
    return 0


async def _fill(results: list[list[FoundThing] | str], index: int, client: Client,
                service: FoundService) -> None:
    try:
        results[index] = await things_of(client, service)
    except ClientError as error:
        results[index] = str(error)


def _print_service(service: FoundService, things: list[FoundThing] | str) -> None:
    what = "directory" if service.kind == "Directory" else service.kind
    print(f"{service.name}  {service.url}  ({what} {service.td_url})")
    if isinstance(things, str):
        print(f"  (its Things could not be listed: {things})")
    elif not things:
        print("  (no Things)")
    else:
        width = max(len(thing.title) for thing in things)
        for thing in things:
            print(f"  {thing.title:<{width}}  {thing.url}")
    sys.stdout.flush()


async def things_of(client: Client, service: FoundService) -> list[FoundThing]:
    """The Things of a service found: a Thing's own TD, or those a directory lists.

    Raises ClientError (Unreachable, Timeout, NotFound, ServerError, ...) when the
    announced TD, or the directory's listing, cannot be read."""
    if service.kind != "Directory":
        td, url = await client.fetch_td(service.td_url)
        title = td.get("title")
        return [FoundThing(title=title if isinstance(title, str) else "(untitled)", url=url)]
    directory = await client.explore_directory(service.td_url)
    return [FoundThing(title=listed.title, url=listed.url) for listed in directory.things]
