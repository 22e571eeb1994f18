from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import jsonschema
import pytest
import trio

from benchmarks.broker import Mosquitto
from tests.helpers import servers
from tests.helpers.httpclient import HttpClient
from trio_things.server import ThingServer
from trio_things.testing import in_memory


@pytest.fixture
async def demo_server() -> AsyncIterator[ThingServer]:
    server = servers.demo_server(invocation_retention=10.0, long_poll_timeout=5.0)
    async with server.running():
        yield server


@pytest.fixture
async def client(demo_server: ThingServer) -> AsyncIterator[HttpClient]:
    with trio.fail_after(30):
        async with in_memory(demo_server) as served, served.http() as client:
            yield client


ROOT = Path(__file__).resolve().parents[1]


def _schema_path() -> Path:
    configured = os.environ.get("TD_SCHEMA")
    if configured:
        return Path(configured)
    return ROOT.parent / "shared" / "td-schema" / "td-json-schema-validation.json"


@pytest.fixture(scope="module")
def td_validator() -> jsonschema.Draft7Validator:
    path = _schema_path()
    if not path.exists():
        pytest.fail(f"the TD 1.1 schema is missing at {path} (set TD_SCHEMA)")
    schema = json.loads(path.read_text())
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto broker on a free loopback port, stopped after the test."""
    with Mosquitto(tmp_path) as broker:
        yield broker
