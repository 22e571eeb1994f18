"""``trio-things td/read/write/invoke/observe/subscribe`` as a user runs them: real
processes against a server in this test's trio.run, on 127.0.0.1 and a port from the
OS; exit codes and output asserted. Few and quick: each starts a Python process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import trio

from tests.client.conftest import Lab, make_server
from trio_things.client import open_tcp_stream
from trio_things.client.command_line import parse_arguments, parse_value
from trio_things.client.http import HttpClient
from trio_things.config import ServerConfig
from trio_things.server import ThingServer

COMMAND = [sys.executable, "-m", "trio_things.cli"]
ENV = {k: v for k, v in os.environ.items() if k != "TRIO_THINGS_TOKEN"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def served() -> AsyncIterator[tuple[ThingServer, str]]:
    """The test server on a free loopback port; yields it and the Lab's TD URL."""
    server = make_server(ServerConfig(port=0))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve)
        port = listeners[0].socket.getsockname()[1]
        yield server, f"http://127.0.0.1:{port}/lab/"
        nursery.cancel_scope.cancel()


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process([*COMMAND, *args], capture_stdout=True,
                                      capture_stderr=True, check=False, env=ENV,
                                      stdin=subprocess.DEVNULL)


def lines(output: bytes) -> list[str]:
    return output.decode().splitlines()


def lab_of(server: ThingServer) -> Lab:
    lab = server.things["lab"]
    assert isinstance(lab, Lab)
    return lab


def test_values_on_the_command_line_are_json_or_else_strings() -> None:
    assert [parse_value(v) for v in ("30", "2.5", "true", "null", '"30"', "[1]", "fast")] == [
        30, 2.5, True, None, "30", [1], "fast"]
    assert parse_arguments(["to=30", "mode=fast", "empty="]) == {
        "to": 30, "mode": "fast", "empty": ""}
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        parse_arguments(["30"])


async def test_td_read_write(served: tuple[ThingServer, str]) -> None:
    server, url = served
    td = await cli("td", url)
    assert td.returncode == 0, td.stderr
    assert orjson.loads(td.stdout)["title"] == "Lab"
    # write says what it wrote, once the server took it.
    written = await cli("write", url, "level", "12")
    assert (written.returncode, written.stdout, written.stderr) == (0, b"level = 12\n", b"")
    assert lab_of(server).level == 12
    written = await cli("write", url, "mode", "fast", "--json")
    assert (written.returncode, orjson.loads(written.stdout)) == (0, {"mode": "fast"})
    assert lab_of(server).mode == "fast"
    read = await cli("read", url, "level")
    assert (read.returncode, lines(read.stdout)) == (0, ["level = 12"])
    # Several names: a line each, in the order given; --json: one object.
    read = await cli("read", url, "mode", "level")
    assert (read.returncode, lines(read.stdout)) == (0, ['mode = "fast"', "level = 12"])
    read = await cli("read", url, "mode", "level", "--json")
    assert lines(read.stdout) == ['{"mode":"fast","level":12}']
    # No name: every property.
    read = await cli("read", url, "--json")
    assert orjson.loads(read.stdout) == {
        "level": 12, "mode": "fast", "label": "lab", "serial": 7,
        "last": {"level": 0, "time": "2026-01-01T00:00:00+00:00"}}


async def test_a_failed_read_of_several_prints_no_value(served: tuple[ThingServer, str]
                                                        ) -> None:
    _, url = served
    read = await cli("read", url, "level", "nothing")
    assert (read.returncode, read.stdout) == (2, b"")
    assert b"Lab has no property 'nothing'" in read.stderr


@pytest.mark.parametrize(("args", "status", "message"), [
    (("read", "{url}", "nothing"), 2,
     "Lab has no property 'nothing' (its properties: level, mode, label, serial, last)"),
    (("write", "{url}", "level", "1000"), 2, "level: 1000 is greater than the maximum 100"),
    (("write", "{url}", "serial", "1"), 2, "property 'serial' of Lab is read-only"),
    (("invoke", "{url}", "climb", "to"), 2, "argument 'to' is not KEY=VALUE"),
    (("invoke", "{url}", "explode"), 1, "ZeroDivisionError: division by zero"),
    (("invoke", "{url}", "wait", "--reconnect-for", "0"), 2,
     "--reconnect-for must be positive"),
    (("read", "http://127.0.0.1:9/lab/", "level"), 3, "cannot reach 127.0.0.1:9"),
    (("td", "{url}nothing/"), 2, "no Thing Description at"),
    # URLs that are not a Thing's: what was wrong, and what to type instead.
    (("read", "{root}", "level"), 2,
     "{root} is a server, not a Thing; its Things are: {root}lab/, {root}broken/, "
     "{root}counter/, {root}thermometer/"),
    (("read", "{url}level"), 2,
     "{url}level is property 'level' of the Thing {url}, not a Thing Description; "
     "try: trio-things read {url} level"),
    (("write", "{url}level", "level", "5"), 2, "try: trio-things write {url} level 5"),
    (("td", "{url}last"), 2, "{url}last is property 'last' of the Thing {url}, not a "
     "Thing Description; try: trio-things td {url}"),
    (("invoke", "{url}climb", "to=3"), 2, "{url}climb is action 'climb' of the Thing {url}, "
     "not a Thing Description; try: trio-things invoke {url} climb"),
    (("read", "{https}", "level"), 3,
     "the server speaks plain http, not https; try {url}"),
])
async def test_failures_exit_with_a_status_and_one_line(
        served: tuple[ThingServer, str], args: tuple[str, ...], status: int,
        message: str) -> None:
    _, url = served
    urls = {"url": url, "root": url.removesuffix("lab/"),
            "https": url.replace("http://", "https://")}
    result = await cli(*(a.format(**urls) for a in args))
    assert result.returncode == status, result.stderr
    [line] = lines(result.stderr)
    assert line.startswith("trio-things: error: ") and message.format(**urls) in line, line


async def test_invoke_shows_status_until_done(served: tuple[ThingServer, str]) -> None:
    _, url = served
    result = await cli("invoke", url, "climb", "to=2", "delay=0.01")
    assert result.returncode == 0, result.stderr
    output = lines(result.stdout)
    assert output[-1] == "climb = 2"
    states = [line.rsplit(": ", 1)[1] for line in output[:-1]]
    assert states[-1] == "completed" and set(states) <= {"pending", "running", "completed"}
    # The action's log is its progress: shown as it comes, before the end.
    counted = await cli("invoke", url.replace("/lab/", "/counter/"), "count_slowly", "n=2",
                        "delay=0")
    assert counted.returncode == 0, counted.stderr
    out = lines(counted.stdout)
    assert out[-1] == "count_slowly = 2"
    assert [line.split(": ", 1)[1] for line in out[-4:-1]] == [
        "counted 1 of 2", "counted 2 of 2", "completed"]
    as_json = await cli("invoke", url, "climb", "to=0", "delay=0.01", "--json")
    final = orjson.loads(lines(as_json.stdout)[-1])
    assert (final["action"], final["state"], final["output"]) == ("climb", "completed", 0)
    assert final["href"] == url.replace("/lab/", f"/action_invocations/{final['id']}")


async def test_invoke_json_lines_carry_each_log_line_once(
        served: tuple[ThingServer, str]) -> None:
    _, url = served
    result = await cli("invoke", url.replace("/lab/", "/counter/"), "count_slowly", "n=3",
                       "delay=0", "--json")
    assert result.returncode == 0, result.stderr
    statuses = [orjson.loads(line) for line in lines(result.stdout)]
    logged = [entry for status in statuses for entry in status.get("log", [])]
    assert [entry["message"] for entry in logged] == [
        "counted 1 of 3", "counted 2 of 3", "counted 3 of 3"]
    assert all(entry["level"] == "INFO" and entry["timestamp"].endswith("Z")
               for entry in logged)
    assert statuses[-1]["state"] == "completed"


async def test_invoke_gives_up_on_a_dead_server_and_names_the_invocation(
        tmp_path: Path) -> None:
    """The server dies mid-action (killed: no close, no last word): invoke says it is
    reconnecting, gives up after --reconnect-for, exits 3 and prints where the
    invocation can be asked for. (A server that shuts down cleanly tells the invoker
    over the WebSocket that the action was cancelled, which is not this case.)"""
    config = tmp_path / "lab.toml"
    config.write_text('[things.lab]\nclass = "tests.client.conftest:Lab"\n')
    with trio.fail_after(30):
        server = await trio.lowlevel.open_process(
            [*COMMAND, "serve", str(config), "--port", "0", "--app-dir", str(ROOT)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            env=ENV)
        try:
            assert server.stdout is not None
            announced = b""
            while b"\n" not in announced:
                chunk = await server.stdout.receive_some()
                assert chunk, announced
                announced += chunk
            root = announced.split(b"\n")[0].rsplit(b" ", 1)[1].decode()
            url = f"{root}lab/"
            process = await trio.lowlevel.open_process(
                [*COMMAND, "invoke", url, "wait", "seconds=60", "--reconnect-for", "0.5"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                env=ENV)
            assert process.stdout is not None and process.stderr is not None
            output = b""
            while b": running" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, output
                output += chunk
            invocation = await the_one_invocation(url + "wait")
            server.kill()  # the server dies, the action with it, unreported
            async for chunk in process.stdout:
                output += chunk
            errors = lines(b"".join([chunk async for chunk in process.stderr]))
            assert await process.wait() == 3, errors
        finally:
            server.kill()
            await server.wait()
    assert lines(output)[-1] == f"wait {invocation[:8]}: running"
    # The WebSocket that pushed the status is lost, then the polling that takes over.
    assert len(errors) == 3, errors
    assert errors[0].startswith(f"trio-things: lost the WebSocket connection to "
                                f"{url.replace('http:', 'ws:')}ws (closed with 1006)")
    assert errors[1].startswith(f"trio-things: lost the server while following invocation "
                                f"{invocation} of 'wait' (")
    assert errors[1].endswith("reconnecting for up to 0.5 s")
    assert errors[2].startswith(f"trio-things: error: gave up on invocation {invocation} "
                                f"of 'wait' after 0.5 s without reaching the server")
    href = url.replace("/lab/", f"/action_invocations/{invocation}")
    assert errors[2].endswith(f"it may still be running: ask for it later at {href}")


async def the_one_invocation(action_url: str) -> str:
    """The id of the one invocation of the action at ``action_url`` (LabThings: GET
    on the action lists its invocations)."""
    http = HttpClient(open_tcp_stream, timeout=5.0)
    try:
        invocations = (await http.request("GET", action_url)).json()
    finally:
        await http.aclose()
    assert isinstance(invocations, list) and len(invocations) == 1, invocations
    [invocation] = invocations
    assert isinstance(invocation, dict) and isinstance(invocation["id"], str)
    return invocation["id"]


async def test_observe_prints_a_line_per_change(served: tuple[ThingServer, str]) -> None:
    _, url = served
    result = await cli("observe", url, "level", "mode", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert sorted(lines(result.stdout)) == ["level = 0", 'mode = "precise"']
    result = await cli("observe", url, "level", "--count", "1", "--json")
    change = orjson.loads(result.stdout)
    assert (change["name"], change["value"]) == ("level", 0)
    assert change["timestamp"].endswith("Z")


async def test_subscribe_prints_each_event(served: tuple[ThingServer, str]) -> None:
    """Events have no current value: keep emitting until the subscriber has printed
    the two lines it waits for."""
    server, url = served
    lab = lab_of(server)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            done: list[subprocess.CompletedProcess[bytes]] = []

            async def run() -> None:
                done.append(await cli("subscribe", url, "tick", "--count", "2"))
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
            while True:
                lab.tick.emit(7)
                await trio.sleep(0.05)  # paces the emitter only; nothing waits on it
    [result] = done
    assert (result.returncode, lines(result.stdout)) == (0, ["tick: 7", "tick: 7"])


async def test_ctrl_c_during_invoke_cancels_the_invocation_without_a_terminal(
        served: tuple[ThingServer, str]) -> None:
    _, url = served
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [*COMMAND, "invoke", url, "wait", "seconds=60"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=ENV)
        assert process.stdout is not None and process.stderr is not None
        output = b""
        while b": running" not in output:
            chunk = await process.stdout.receive_some()
            assert chunk, output
            output += chunk
        process.send_signal(signal.SIGINT)
        async for chunk in process.stdout:
            output += chunk
        errors = b"".join([chunk async for chunk in process.stderr])
        assert await process.wait() == 130
    assert lines(output)[-1].endswith(": cancelled"), output
    assert b"trio-things: cancelling wait" in errors
    # The server agrees: its one invocation of `wait` was cancelled.
    http = HttpClient(open_tcp_stream, timeout=5.0)
    [invocation] = (await http.request("GET", url + "wait")).json()  # type: ignore[misc]
    await http.aclose()
    assert invocation["status"] == "cancelled"


async def test_ctrl_c_ends_observe_with_status_0(served: tuple[ThingServer, str]) -> None:
    _, url = served
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [*COMMAND, "observe", url, "level"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=ENV)
        assert process.stdout is not None and process.stderr is not None
        output = b""
        while not output.endswith(b"\n"):
            output += await process.stdout.receive_some()
        assert output == b"level = 0\n"
        process.send_signal(signal.SIGINT)
        errors = b"".join([chunk async for chunk in process.stderr])
        assert await process.wait() == 0, errors
    assert errors == b""
