"""The README's first example runs as written: its ``devices.py`` and ``things.toml``
are taken from the README itself, served in memory (on the autojump clock where time
passes), and do what the README and its comments say."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.helpers.httpclient import HttpClient, connect
from trio_things.config import load_config
from trio_things.server import ThingServer

README = Path(__file__).resolve().parents[1] / "README.md"


def block_after(text: str, marker: str, language: str) -> str:
    """The first fenced ``language`` block after ``marker``."""
    start = text.index(marker)
    match = re.compile(rf"```{language}\n(.*?)```", re.DOTALL).search(text, start)
    assert match is not None, f"no {language} block after {marker!r}"
    return match.group(1)


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[HttpClient]:
    text = README.read_text()
    (tmp_path / "devices.py").write_text(block_after(text, "Save this as `devices.py`",
                                                     "python"))
    (tmp_path / "things.toml").write_text(block_after(text, "And this as `things.toml`",
                                                      "toml"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "devices", raising=False)
    server = ThingServer(load_config(tmp_path / "things.toml"))
    server.add_configured_things()
    async with server.running(), connect(server) as client:
        yield client
    sys.modules.pop("devices", None)


async def read(client: HttpClient, name: str) -> float:
    answer = await client.get(f"/thermometer/{name}")
    assert answer.status == 200
    value = answer.json()
    assert isinstance(value, float)
    return value


async def test_the_curl_examples(client: HttpClient) -> None:
    assert await read(client, "temperature") == 20.0  # "# 20.0"
    refused = await client.put("/thermometer/setpoint", 200)
    assert refused.status == 422
    assert refused.json()["detail"] == "setpoint: 200 is greater than the maximum 150"
    started = await client.post("/thermometer/ramp", {"to": 30})
    assert started.status == 201  # "201 with the invocation"
    assert started.json()["input"] == {"to": 30}


async def test_the_temperature_follows_the_setpoint(
        client: HttpClient, autojump_clock: trio.testing.MockClock) -> None:
    assert (await client.put("/thermometer/setpoint", 30)).status == 204
    await trio.sleep(5)  # virtual: fifty steps of the thermometer's background task
    assert 29.9 < await read(client, "temperature") < 30


async def test_overlapping_ramps_run_one_after_the_other(
        client: HttpClient, autojump_clock: trio.testing.MockClock) -> None:
    """Two ramps to different targets once fought forever; the second now waits for the
    first, then runs, and each ends where it was sent."""
    first = (await client.post("/thermometer/ramp", {"to": 25, "rate": 5})).json()
    second = (await client.post("/thermometer/ramp", {"to": 22, "rate": 5})).json()
    setpoints = []
    for _ in range(20):  # 5 virtual seconds; the two ramps take 1.6 s, one after the other
        setpoints.append(await read(client, "setpoint"))
        await trio.sleep(0.25)
    # Ramps that fight never end, and the setpoint would swing around 20 meanwhile.
    ended = [(await client.get(invocation["href"])).json() for invocation in (first, second)]
    assert [e["status"] for e in ended] == ["completed", "completed"]
    assert ended[0]["timeCompleted"] <= ended[1]["timeCompleted"]
    top = setpoints.index(max(setpoints))
    assert 22 < setpoints[top] <= 25
    assert setpoints[:top + 1] == sorted(setpoints[:top + 1])  # up towards 25, never back
    assert setpoints[top:] == sorted(setpoints[top:], reverse=True)  # then down to 22
    assert await read(client, "setpoint") == 22


async def test_overheated_is_emitted_once_when_crossing_100(
        client: HttpClient, autojump_clock: trio.testing.MockClock) -> None:
    assert (await client.put("/thermometer/setpoint", 150)).status == 204
    with trio.fail_after(60):
        event = await client.get("/thermometer/events/overheated")  # a long-poll
    assert event.status == 200
    assert event.json()["temperature"] > 100
