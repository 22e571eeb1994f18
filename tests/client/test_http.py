"""The client's HTTP/1.1: keep-alive, a stale pooled connection, timeouts, failures."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.testing import MockClock

import trio_things.client as ttc
from tests.client.conftest import LAB, MemoryNetwork
from trio_things.client.http import HttpClient


async def test_keep_alive_reuses_one_connection(network: MemoryNetwork) -> None:
    http = HttpClient(network, timeout=5.0)
    with trio.fail_after(5):
        for _ in range(3):
            response = await http.request("GET", LAB + "level")
            assert (response.status, response.json()) == (200, 0)
        written = await http.request("PUT", LAB + "level", json=3, send_body=True)
        assert written.status == 204 and written.body == b""
        assert (await http.request("GET", LAB + "level")).json() == 3
        await http.aclose()
    assert network.opened == 1
    with pytest.raises(ttc.ConnectionLost, match="closed"):
        await http.request("GET", LAB + "level")


async def test_concurrent_requests_use_their_own_connections(network: MemoryNetwork) -> None:
    http = HttpClient(network, timeout=5.0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(http.request, "GET", LAB)
        await http.aclose()
    assert network.opened == 3


async def test_a_stale_pooled_connection_is_retried_for_idempotent_requests(
        network: MemoryNetwork) -> None:
    """The server closed the idle connection (its idle timeout): a GET goes again on a
    new one, and the caller never hears of it."""
    http = HttpClient(network, timeout=5.0)
    with trio.fail_after(5):
        await http.request("GET", LAB + "level")
        await network.break_all()
        assert (await http.request("GET", LAB + "level")).json() == 0
        assert network.opened == 2
        await network.break_all()
        # POST is not idempotent: not retried, the caller is told.
        with pytest.raises(ttc.ConnectionLost):
            await http.request("POST", LAB + "actions/wait", json={"seconds": 0},
                               send_body=True)
        await http.aclose()


async def test_no_answer_is_a_timeout(autojump_clock: MockClock) -> None:
    peers: list[trio.abc.Stream] = []  # held open, never answering

    async def silent(host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        peers.append(server)
        return client

    http = HttpClient(silent, timeout=3.0)
    with trio.fail_after(10):
        started = trio.current_time()
        with pytest.raises(ttc.Timeout, match="no answer within 3 s"):
            await http.request("GET", "http://testserver/x")
        assert trio.current_time() - started == pytest.approx(3.0)
        await http.aclose()


async def test_a_refused_connection_is_unreachable() -> None:
    async def refuse(host: str, port: int, *, tls: bool) -> trio.abc.Stream:
        raise ConnectionRefusedError(111, "Connection refused")

    http = HttpClient(refuse, timeout=3.0)
    with trio.fail_after(5), pytest.raises(ttc.Unreachable,
                                           match="cannot reach host:8080: Connection refused"):
        await http.request("GET", "http://host:8080/x")


async def test_a_response_over_the_limit_is_refused(network: MemoryNetwork) -> None:
    http = HttpClient(network, timeout=5.0, max_response_bytes=100)
    with trio.fail_after(5), pytest.raises(ttc.ServerError, match="larger than 100 bytes"):
        await http.request("GET", LAB)
    await http.aclose()


def test_urls_that_are_not_http_are_refused() -> None:
    http = HttpClient(None, timeout=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not an absolute"):
        trio.run(http.request, "GET", "ftp://host/x")
