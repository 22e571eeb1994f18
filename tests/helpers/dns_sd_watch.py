"""Print each DNS-SD event for ``_wot._tcp`` as it comes, one line each, until killed::

    python -m tests.helpers.dns_sd_watch [INTERFACE_ADDRESS [SERVICE_TYPE]]

Browses ``_wot._tcp.local.``, or SERVICE_TYPE (a subtype). Prints ``browsing`` once
the browser is open, then ``found NAME URL`` and ``lost NAME``. For
tests that must see a withdrawal as it happens (the goodbye packets), which a
``trio-things discover`` that prints at its end cannot show. Run it only inside a
network namespace, as tests/test_dns_sd.py does: it sends multicast queries.
"""

from __future__ import annotations

import sys

import trio

from trio_things.client.dns_sd import browsing
from trio_things.protocol.dns_sd import SERVICE_TYPE, FoundService


async def main(interface: str | None, service_type: str) -> None:
    async with browsing(interface=interface, service_type=service_type) as events:
        print("browsing", flush=True)
        async for event in events:
            if isinstance(event, FoundService):
                print(f"found {event.name} {event.url}", flush=True)
            else:
                print(f"lost {event.name}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None,
             sys.argv[2] if len(sys.argv) > 2 else SERVICE_TYPE)
