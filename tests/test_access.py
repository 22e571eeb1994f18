"""Access control end to end: bearer tokens and roles over HTTP and WebSocket, the
Origin check on handshakes, CORS, and the TD's security scheme."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import jsonschema
import orjson
import pytest
import trio
import trio_websocket

from tests.helpers.httpclient import HttpClient, connect
from tests.helpers.wsclient import open_ws, receive, request
from trio_things.config import ServerConfig
from trio_things.demo import Counter
from trio_things.protocol.access import AccessPolicy
from trio_things.server import ThingServer, _loopback

FULL, VIEWER = "full-access-token", "read-only-token"
WTP = ["webthingprotocol"]


@pytest.fixture
async def server() -> AsyncIterator[ThingServer]:
    server = ThingServer(ServerConfig(access=AccessPolicy(
        tokens=[FULL], readonly_tokens=[VIEWER], cors_origins=["https://ui.example"],
        allowed_origins=["https://ui.example"])))
    server.add_thing("counter", Counter())
    async with server.running():
        yield server


@pytest.fixture
async def client(server: ThingServer) -> AsyncIterator[HttpClient]:
    with trio.fail_after(10):
        async with connect(server) as client:
            yield client


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", ["/counter/count", "/counter/", "/nothing/at/all",
                                  "/.well-known/wot", "/.well-known/wot/things",
                                  "/.well-known/wot/things?limit=0",
                                  "/.well-known/wot/things/urn:uuid:x"])
async def test_no_token_is_401_before_routing(client: HttpClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401


async def test_a_wrong_token_is_401(client: HttpClient) -> None:
    response = await client.request("GET", "/counter/count", headers=bearer("not-the-token"))
    assert response.status == 401


async def test_tokens_and_roles_over_http(client: HttpClient) -> None:
    assert (await client.request("GET", "/counter/count", headers=bearer(VIEWER))).json() == 0
    refused = await client.request("PUT", "/counter/count", json=5, headers=bearer(VIEWER))
    assert refused.status == 403
    assert "read" in refused.json()["detail"]
    refused = await client.request("POST", "/counter/increment", json={},
                                   headers=bearer(VIEWER))
    assert refused.status == 403
    written = await client.request("PUT", "/counter/count", json=5, headers=bearer(FULL))
    assert written.status == 204
    assert (await client.request("GET", "/counter/count", headers=bearer(VIEWER))).json() == 5


async def test_the_td_advertises_bearer_and_validates(
        client: HttpClient, td_validator: jsonschema.Draft7Validator) -> None:
    td = (await client.request("GET", "/counter/", headers=bearer(VIEWER))).json()
    assert td["securityDefinitions"] == {
        "bearer_sc": {"scheme": "bearer", "in": "header", "name": "Authorization"}}
    assert td["security"] == ["bearer_sc"]
    assert not list(td_validator.iter_errors(td))
    directory = (await client.request("GET", "/.well-known/wot", headers=bearer(VIEWER))).json()
    assert directory["security"] == ["bearer_sc"]
    assert not list(td_validator.iter_errors(directory))


async def test_the_directory_needs_a_token_as_the_rest(client: HttpClient) -> None:
    """The listing and retrieval answer a read-only token as any read does; without a
    token they answer nothing but 401 (the TDs say what the server holds)."""
    listed = await client.request("GET", "/.well-known/wot/things", headers=bearer(VIEWER))
    assert listed.status == 200
    [td] = listed.json()
    assert td["security"] == ["bearer_sc"]
    retrieved = await client.request("GET", f"/.well-known/wot/things/{td['id']}",
                                     headers=bearer(VIEWER))
    assert retrieved.json() == td
    assert (await client.get(f"/.well-known/wot/things/{td['id']}")).status == 401
    refused = await client.request("DELETE", f"/.well-known/wot/things/{td['id']}",
                                   headers=bearer(FULL))
    assert refused.status == 405


async def test_cors_preflight_and_allow_origin(client: HttpClient) -> None:
    preflight = await client.request("OPTIONS", "/counter/count", headers={
        "origin": "https://ui.example", "access-control-request-method": "PUT"})
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "https://ui.example"
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    response = await client.request("GET", "/counter/count", headers={
        "origin": "https://ui.example"} | bearer(FULL))
    assert response.headers["access-control-allow-origin"] == "https://ui.example"
    other = await client.request("GET", "/counter/count", headers={
        "origin": "https://evil.example"} | bearer(FULL))
    assert "access-control-allow-origin" not in other.headers
    refused = await client.request("OPTIONS", "/counter/count", headers={
        "origin": "https://evil.example", "access-control-request-method": "PUT"})
    assert refused.status == 401  # not an allowed origin: an ordinary, unauthorized request


async def rejection(server: ThingServer, path: str, headers: dict[str, str] | None = None
                    ) -> trio_websocket.ConnectionRejected:
    with trio.fail_after(5), pytest.RaisesGroup(
            trio_websocket.ConnectionRejected, flatten_subgroups=True) as info:
        async with open_ws(server, path, WTP, headers=headers):
            pass
    [error] = info.value.exceptions
    assert isinstance(error, trio_websocket.ConnectionRejected)
    return error


async def test_websocket_handshake_needs_a_token(server: ThingServer) -> None:
    error = await rejection(server, "/counter/ws")
    assert error.status_code == 401
    assert error.body is not None and json.loads(error.body)["status"] == 401
    assert (await rejection(server, "/counter/ws?access_token=wrong-token")).status_code == 401


async def test_websocket_token_in_the_query_and_the_read_only_role(
        server: ThingServer) -> None:
    with trio.fail_after(5):
        async with open_ws(server, f"/counter/ws?access_token={VIEWER}", WTP) as ws:
            assert (await request(ws, "readproperty", name="count"))["value"] == 0
            await request(ws, "observeproperty", name="count")
            assert (await receive(ws))["value"] == 0
            refused = await request(ws, "writeproperty", name="count", value=3)
            assert refused["error"]["status"] == 403
            refused = await request(ws, "invokeaction", name="increment", input={})
            assert refused["error"]["status"] == 403
        async with open_ws(server, "/counter/ws", WTP, headers=bearer(FULL)) as ws:
            assert "error" not in await request(ws, "writeproperty", name="count", value=3)


async def test_cross_site_websocket_handshakes_are_403(server: ThingServer) -> None:
    error = await rejection(server, "/counter/ws",
                            {"origin": "https://evil.example"} | bearer(FULL))
    assert error.status_code == 403
    assert error.body is not None and "origin" in orjson.loads(error.body)["detail"]
    with trio.fail_after(5):
        for origin in ("https://ui.example", "http://testserver"):
            async with open_ws(server, "/counter/ws", WTP,
                               headers={"origin": origin} | bearer(FULL)) as ws:
                assert (await request(ws, "readproperty", name="count"))["value"] == 0


def test_loopback_hosts() -> None:
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("localhost")
    assert not _loopback("0.0.0.0") and not _loopback("") and not _loopback("lab.example")
