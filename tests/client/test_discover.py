"""``trio-things discover`` without the network: reading a directory's Things (its listing,
page by page) against the real server in memory, and the
command line's checks. Browsing itself is tested in a network namespace
(tests/test_dns_sd.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.client.conftest import BASE, MemoryNetwork
from trio_things.client import open_client
from trio_things.client.discover import FoundThing, things_of
from trio_things.client.errors import ClientError
from trio_things.protocol.dns_sd import FoundService

DIRECTORY = FoundService(name="bench", kind="Directory", url=BASE,
                         td_url=BASE + ".well-known/wot")


async def test_a_trio_things_directory_names_its_things(network: MemoryNetwork) -> None:
    async with open_client(open_stream=network, websocket=False) as client:
        things = await things_of(client, DIRECTORY)
    assert sorted(thing.title for thing in things) == [
        "Broken", "Counter", "Lab", "Thermometer"]
    # Each at a URL its TD is at: the directory's retrieveThing URL for its id.
    for thing in things:
        assert thing.url.startswith(BASE + ".well-known/wot/things/urn")


async def test_an_announced_thing_is_its_own_td(network: MemoryNetwork) -> None:
    thing = FoundService(name="counter", kind="Thing", url=BASE, td_url=BASE + "counter/")
    async with open_client(open_stream=network, websocket=False) as client:
        assert await things_of(client, thing) == [
            FoundThing(title="Counter", url=BASE + "counter/")]
        with pytest.raises(ClientError):
            await things_of(client, FoundService(name="x", kind="Thing", url=BASE,
                                                 td_url=BASE + "nothing/"))


@pytest.mark.parametrize(("args", "message"), [
    (["--seconds", "0"], "--seconds must be positive"),
    (["--timeout", "-1"], "--timeout must be positive"),
    (["--interface", "eth0"], "--interface takes an interface's IP address, not 'eth0'"),
])
def test_bad_command_lines_exit_2(args: list[str], message: str) -> None:
    """Checked before anything is sent: these never browse."""
    result = subprocess.run([sys.executable, "-m", "trio_things.cli", "discover", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"trio-things: error: {message}\n"
