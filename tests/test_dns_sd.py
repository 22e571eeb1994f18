"""DNS-SD for real: ``trio-things serve`` announces itself, ``trio-things discover``
finds it, and a Ctrl-C withdraws it (goodbye packets) within a second.

Multicast never leaves the network namespaces these tests create and delete: one with
loopback alone, or two joined by a virtual Ethernet link and nothing else; every
process (the server, the browsers) runs in them through ``ip netns exec``. Creating them
takes root and iproute2's ``ip``; without them the tests fail, saying so, rather than
skip: it is how this feature is tested at all.

Synchronisation is by what the processes print, read through pipes, each wait under
``trio.fail_after``: the server's startup line (and its log line once announced), and
the events of browsers that run alongside (``tests/helpers/dns_sd_watch.py``, one for
``_wot._tcp`` and one for the directories' subtype), which see the announcement arrive
and, after the signal, the goodbye.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from trio_things.protocol.dns_sd import (
    DIRECTORY_SUBTYPE,
    SERVICE_TYPE,
    default_instance_name,
)

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k != "TRIO_THINGS_TOKEN"}
CONFIG = """\
[server]
host = "127.0.0.1"
port = 0

[server.discovery]
dns_sd = true
name = "bench"

[things.thermometer]
class = "trio_things.demo:Thermometer"

[things.counter]
class = "trio_things.demo:Counter"
"""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr.strip()}"


def _can_make_namespaces() -> None:
    if shutil.which("ip") is None:
        pytest.fail("the DNS-SD tests need iproute2's `ip` to create network namespaces "
                    "(apt-get install iproute2)")
    if os.geteuid() != 0:
        pytest.fail("the DNS-SD tests need root to create network namespaces (they never "
                    "send multicast on this machine's real interfaces)")


@pytest.fixture
def namespace() -> Iterator[str]:
    """A network namespace with loopback up and multicast on it; deleted afterwards."""
    _can_make_namespaces()
    name = f"trio-things-dnssd-{os.getpid()}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "link", "set", "lo", "multicast", "on")
        _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "lo")
        yield name
    finally:
        _ip("netns", "delete", name)


#: The addresses of the two ends of the link between two namespaces (TEST-NET-2).
SERVER_ADDRESS, CLIENT_ADDRESS = "198.51.100.1", "198.51.100.2"


@pytest.fixture
def linked_namespaces() -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a virtual Ethernet link, a LAN of two machines
    that nothing else is on (the server's end at SERVER_ADDRESS); deleted afterwards,
    the link with them."""
    _can_make_namespaces()
    names = (f"trio-things-dnssd-a-{os.getpid()}", f"trio-things-dnssd-b-{os.getpid()}")
    made: list[str] = []
    try:
        for name in names:
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("link", "add", "tt0", "netns", names[0], "type", "veth", "peer", "name", "tt1",
            "netns", names[1])
        for name, link, address in zip(names, ("tt0", "tt1"), (SERVER_ADDRESS, CLIENT_ADDRESS),
                                       strict=True):
            _ip("-n", name, "address", "add", f"{address}/24", "dev", link)
            _ip("-n", name, "link", "set", link, "up")
        yield names
    finally:
        for name in made:
            _ip("netns", "delete", name)


class Lines:
    """The lines of a process's output, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        self._stream = stream
        self._buffer = b""
        self.seen: list[str] = []

    async def until(self, wanted: Callable[[str], bool]) -> str:
        """The first line (from here on) for which ``wanted`` is true."""
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                text = line.decode()
                self.seen.append(text)
                if wanted(text):
                    return text
            chunk = await self._stream.receive_some()
            assert chunk, f"the output ended; it said: {self.seen}"
            self._buffer += chunk


async def discover(namespace: str, *args: str) -> tuple[list[str], str]:
    """``trio-things discover --seconds 2 ARGS`` in ``namespace`` (by default on
    loopback): its stdout's lines and its stderr."""
    with trio.fail_after(30):
        result = await trio.run_process(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "trio_things.cli",
             "discover", "--seconds", "2", *(args or ("--interface", "127.0.0.1"))],
            capture_stdout=True, capture_stderr=True, check=False, env=ENV,
            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines(), result.stderr.decode()


async def test_discover_finds_the_server_and_a_ctrl_c_withdraws_it(
        namespace: str, tmp_path: Path) -> None:
    config = tmp_path / "things.toml"
    config.write_text(CONFIG)
    in_namespace = ["ip", "netns", "exec", namespace, sys.executable]
    processes: list[trio.Process] = []
    try:
        with trio.fail_after(30):
            watchers = []  # one browses _wot._tcp, the other the directories' subtype
            for service_type in (SERVICE_TYPE, DIRECTORY_SUBTYPE):
                watcher = await trio.lowlevel.open_process(
                    [*in_namespace, "-m", "tests.helpers.dns_sd_watch", "127.0.0.1",
                     service_type],
                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT, env=ENV)
                processes.append(watcher)
                watchers.append(Lines(watcher.stdout))
                await watchers[-1].until(lambda line: line == "browsing")
            server = await trio.lowlevel.open_process(
                [*in_namespace, "-m", "trio_things.cli", "serve", str(config)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                cwd=tmp_path, env=ENV)
            processes.append(server)
            started = await Lines(server.stdout).until(lambda line: "serving" in line)
            assert started.startswith("trio-things: serving 2 Thing(s) at http://127.0.0.1:")
            root = started.rsplit(" ", 1)[1]
            # The announcement reaches the browsers that were already listening.
            for events in watchers:
                await events.until(lambda line: line == f"found bench {root}")

        lines, _ = await discover(namespace)
        # The server, then each Thing the directory lists (sorted by id, as listings
        # are), at the directory's URL for its TD.
        assert lines[0] == f"bench  {root}  (directory {root}.well-known/wot)"
        assert sorted(line.split()[0] for line in lines[1:]) == ["Counter", "Thermometer"]
        assert all(line.split()[1].startswith(f"{root}.well-known/wot/things/urn")
                   for line in lines[1:])

        with trio.fail_after(10):
            server.send_signal(signal.SIGINT)
            signalled = trio.current_time()
            status = await server.wait()
            took = trio.current_time() - signalled
            # The goodbye packets: withdrawn at once, not when the records expire.
            for events in watchers:
                await events.until(lambda line: line == "lost bench")
        assert status == 0
        assert took < 1.0, f"the server took {took:.2f} s to exit after SIGINT"
        assert server.stderr is not None
        errors = b"".join([chunk async for chunk in server.stderr]).decode()
        assert "INFO trio_things.dns_sd: announced as 'bench'" in errors
        assert "Traceback" not in errors and "WARNING" not in errors, errors

        lines, messages = await discover(namespace)
        assert lines == []
        assert "found no WoT server (DNS-SD _wot._tcp on 127.0.0.1, 2 s)" in messages
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            with trio.move_on_after(10):
                await process.wait()


async def test_a_server_on_every_interface_is_announced_by_default(
        linked_namespaces: tuple[str, str], tmp_path: Path) -> None:
    """Listening on 0.0.0.0, without [server.discovery]: announced under the host name,
    with its address on the link, not loopback's; found from the other machine."""
    server_namespace, client_namespace = linked_namespaces
    config = tmp_path / "things.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\nport = 0\n\n'
                      '[things.counter]\nclass = "trio_things.demo:Counter"\n')
    with trio.fail_after(30):
        server = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", server_namespace, sys.executable, "-m",
             "trio_things.cli", "serve", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            cwd=tmp_path, env=ENV)
        try:
            started = await Lines(server.stdout).until(lambda line: "serving" in line)
            port = started.rsplit(":", 1)[1].strip("/")
            announced = await Lines(server.stderr).until(lambda line: "announced as" in line)
            name = default_instance_name(socket.gethostname())
            assert announced == (
                f"INFO trio_things.dns_sd: announced as {name!r} (DNS-SD _wot._tcp, a Thing "
                f"Description Directory at /.well-known/wot) on {SERVER_ADDRESS}, port {port}")
            lines, _ = await discover(client_namespace, "--interface", CLIENT_ADDRESS)
            root = f"http://{SERVER_ADDRESS}:{port}/"
            assert lines[0] == f"{name}  {root}  (directory {root}.well-known/wot)"
            assert [line.split()[0] for line in lines[1:]] == ["Counter"]
            assert lines[1].split()[1].startswith(f"{root}.well-known/wot/things/urn")
            server.send_signal(signal.SIGINT)
            assert await server.wait() == 0
        finally:
            if server.returncode is None:
                server.kill()
            with trio.move_on_after(10):
                await server.wait()
