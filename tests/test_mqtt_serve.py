"""``trio-things serve`` with ``[server.mqtt]``: the demo Things observed and driven
with Mosquitto's own command-line clients alone, following the TD's forms."""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pytest

from benchmarks.broker import Mosquitto

TIMEOUT = 20.0


def read_line(stream: IO[str], deadline: float) -> str:
    """The next line of ``stream``; AssertionError if none comes before ``deadline``."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        assert selector.select(max(0.0, deadline - time.monotonic())), "timed out"
    return stream.readline()


@pytest.fixture
def served(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[str]:
    """The server, publishing through the broker; yields its root URL once the MQTT
    binding is connected."""
    config = tmp_path / "things.toml"
    config.write_text(f'[server]\nport = 0\n[server.mqtt]\nbroker = "{mosquitto.url}"\n'
                      '[things.thermometer]\nclass = "trio_things.demo:Thermometer"\n'
                      '[things.counter]\nclass = "trio_things.demo:Counter"\n')
    process = subprocess.Popen([sys.executable, "-m", "trio_things.cli", "serve", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path)
    try:
        assert process.stdout is not None and process.stderr is not None
        deadline = time.monotonic() + TIMEOUT
        first = read_line(process.stdout, deadline)
        root = first.rsplit(" ", 1)[1].strip()
        while "MQTT: publishing 2 Thing(s)" not in (line := read_line(process.stderr,
                                                                      deadline)):
            assert line, "the server ended before it connected to the broker"
        yield root
    finally:
        process.terminate()
        process.wait(timeout=10)


def mqtt_form(td: dict[str, Any], kind: str, name: str, op: str) -> dict[str, Any]:
    affordance = td[kind][name] if kind else td
    return next(form for form in affordance["forms"]
                if form["href"].startswith("mqtt://") and op in form["op"])


def test_mosquitto_sub_observes_and_mosquitto_pub_writes_by_the_td(served: str) -> None:
    with urllib.request.urlopen(f"{served}counter/", timeout=TIMEOUT) as response:
        td = orjson.loads(response.read())
    observe = mqtt_form(td, "properties", "count", "observeproperty")
    write = mqtt_form(td, "properties", "count", "writeproperty")
    # -L takes the form's href as it is: broker, port and topic.
    sub = subprocess.Popen(["mosquitto_sub", "-L", observe["href"], "-C", "2", "-W", "20"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        assert read_line(sub.stdout, deadline).strip() == "0"  # the retained value
        subprocess.run(["mosquitto_pub", "-L", write["href"], "-m", "7", "-q",
                        write["mqv:qos"]], check=True, timeout=TIMEOUT)
        assert read_line(sub.stdout, deadline).strip() == "7"
    finally:
        sub.kill()
        sub.wait()
    with urllib.request.urlopen(f"{served}counter/count", timeout=TIMEOUT) as response:
        assert orjson.loads(response.read()) == 7


def test_mosquitto_sub_follows_every_property_of_a_thing(served: str) -> None:
    with urllib.request.urlopen(f"{served}thermometer/", timeout=TIMEOUT) as response:
        td = orjson.loads(response.read())
    form = mqtt_form(td, "", "", "observeallproperties")
    result = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p",
                             form["href"].split(":")[2].split("/")[0], "-t",
                             form["mqv:filter"], "-v", "-C", "6", "-W", "20"],
                            capture_output=True, text=True, timeout=TIMEOUT, check=True)
    topics = [line.split()[0] for line in result.stdout.splitlines()]
    assert {"things/thermometer/properties/setpoint", "things/thermometer/properties/threshold",
            "things/thermometer/properties/temperature"} <= set(topics)
    # Beyond the three retained values, live temperatures (one every 100 ms).
    assert topics.count("things/thermometer/properties/temperature") >= 2


def test_the_command_line_writes_through_the_broker_when_asked(served: str) -> None:
    with urllib.request.urlopen(f"{served}counter/", timeout=TIMEOUT) as response:
        td = orjson.loads(response.read())
    write = mqtt_form(td, "properties", "count", "writeproperty")
    observe = mqtt_form(td, "properties", "count", "observeproperty")
    port = write["href"].split(":")[2].split("/")[0]
    # Whoever listens on the write topic sees the command line's write go by; the
    # property's retained value, first, says that the subscriptions are in place.
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-v", "-W", "20",
                            "-t", observe["mqv:filter"], "-t", write["mqv:topic"]],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        assert read_line(sub.stdout, deadline).split() == [observe["mqv:filter"], "0"]
        result = subprocess.run([sys.executable, "-m", "trio_things.cli", "write",
                                 f"{served}counter/", "count", "12", "--prefer", "mqtt"],
                                capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr
        while (line := read_line(sub.stdout, deadline).split()) != [write["mqv:topic"], "12"]:
            assert line == [observe["mqv:filter"], "12"], line  # the change, published
    finally:
        sub.kill()
        sub.wait()
