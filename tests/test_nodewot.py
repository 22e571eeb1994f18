"""Interop: Eclipse node-wot 0.9.2 consumes a real ``trio-things serve`` over HTTP.

``tests/interop/nodewot/consume.js`` explores the server's Thing Description Directory
(``WoT.exploreDirectory``), fetches both demo TDs with node-wot's HTTP client and reads,
writes, invokes, observes and subscribes; it prints one JSON line per step.
``make nodewot`` (which ``make test`` runs) installs Node.js and the pinned packages.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

INTEROP = Path(__file__).resolve().parent / "interop" / "nodewot"
SETUP_HINT = "run `make nodewot` (or `make test`), which installs Node.js and node-wot"


@pytest.fixture
def node() -> str:
    """The ``node`` executable, once node-wot is installed beside consume.js."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"`node` is not on PATH: {SETUP_HINT}")
    if not (INTEROP / "node_modules" / "@node-wot" / "binding-http").is_dir():
        pytest.fail(f"{INTEROP / 'node_modules'} lacks node-wot: {SETUP_HINT}")
    return node


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """``trio-things serve --port 0`` with the demo Things; yields its root URL."""
    errors = tmp_path / "serve.err"
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "trio_things.cli", "serve", "--host", "127.0.0.1",
             "--port", "0"], stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks until the server listens (or dies)
        match = re.search(r"serving \d+ Thing\(s\) at (http://127\.0\.0\.1:\d+/)", first)
        if match is None:
            pytest.fail(f"the server did not start: {first!r} {errors.read_text()}")
        yield match.group(1)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    assert "Traceback" not in errors.read_text(), errors.read_text()


def test_nodewot_consumes_the_demo_things(node: str, served: str) -> None:
    result = subprocess.run([node, "consume.js", served], cwd=INTEROP, capture_output=True,
                            text=True, timeout=60)
    steps: dict[str, dict[str, Any]] = {}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        steps[record.get("step", "result")] = record
    failures = {name: record["error"] for name, record in steps.items() if "error" in record}
    if result.returncode != 0 or failures:
        # node-wot's TD validator warns about a format its JSON Schema library lacks.
        stderr = "\n".join(line for line in result.stderr.splitlines()
                           if 'unknown format "iri-reference"' not in line)
        pytest.fail(f"node-wot failed (exit {result.returncode}): {failures}\n"
                    f"stdout:\n{result.stdout}stderr:\n{stderr[-2000:]}", pytrace=False)
    assert steps["result"] == {"ok": True}

    # WoT.exploreDirectory recognised /.well-known/wot as a Thing Description Directory
    # and read every TD from its listing (sorted by id, as WoT Discovery requires).
    listed = steps["explore:directory"]["listed"]
    assert {entry["title"] for entry in listed} == {"Thermometer", "Counter", "Camera"}
    assert [entry["id"] for entry in listed] == sorted(entry["id"] for entry in listed)

    assert steps["write:counter.count"]["readBack"] == 41
    assert steps["invoke:counter.increment"]["output"] == 42
    assert isinstance(steps["read:thermometer.temperature"]["value"], float | int)
    setpoint = steps["write:thermometer.setpoint"]
    assert setpoint["readBack"] == setpoint["written"]
    assert isinstance(steps["invoke:thermometer.ramp"]["output"], float | int)

    values = steps["observe:thermometer.temperature"]["values"]
    assert len(values) >= 3
    assert all(isinstance(value, float | int) for value in values)

    event = steps["subscribe:thermometer.overheated"]
    assert set(event["data"]) == {"temperature", "time"}
    assert isinstance(event["data"]["temperature"], float | int)
    assert event["data"]["temperature"] > event["threshold"]
    assert isinstance(event["data"]["time"], str)
