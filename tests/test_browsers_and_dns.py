"""Nothing reachable from a web page the user opens, end to end over the in-memory server:
cross-site writes (CSRF), DNS rebinding (the ``Host`` check), and bearer tokens in the
query string of HTTP requests (which end up in logs and browser history).

The rules themselves are tested without a server in ``tests/protocol/test_access.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h11
import orjson
import pytest
import trio

import trio_things as tt
from tests.helpers.httpclient import HttpClient
from trio_things.config import ConfigError, ServerConfig, load_config
from trio_things.demo import Counter
from trio_things.protocol.access import AccessPolicy
from trio_things.server import ThingServer
from trio_things.testing import InMemoryServer, in_memory

EVIL = "https://evil.example"
UI = "https://ui.example"
TOKEN = "full-access-token"
#: A browser tab that a rebinding attacker pointed at the server: its page's origin and
#: the Host it sends both name the attacker's domain, now resolving to the server.
REBIND_HOST = "rebind.attacker.example:8000"
REBIND_HEADERS = {"host": REBIND_HOST, "origin": f"http://{REBIND_HOST}"}


def counter_server(**access: Any) -> ThingServer:
    server = ThingServer(ServerConfig(access=AccessPolicy(**access)))
    server.add_thing("counter", Counter())
    return server


@pytest.fixture
async def served() -> AsyncIterator[InMemoryServer]:
    server = counter_server(cors_origins=[UI])
    with trio.fail_after(10):
        async with server.running(), in_memory(server) as served:
            yield served


@pytest.fixture
async def http(served: InMemoryServer) -> AsyncIterator[HttpClient]:
    async with served.http() as http:
        yield http


async def count(http: HttpClient) -> int:
    response = await http.get("/counter/count")
    assert response.status == 200
    value = response.json()
    assert isinstance(value, int)
    return value


async def invoked(http: HttpClient) -> int:
    """How many invocations the server has recorded: one is recorded the moment an
    action is invoked, before it runs, so this says at once whether a request did."""
    response = await http.get("/action_invocations/")
    assert response.status == 200
    return len(response.json())


def assert_problem(response: Any, status: int, *words: str) -> dict[str, Any]:
    assert response.status == status, response
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    for word in words:
        assert word in problem["detail"], problem
    return dict(problem)


# ----------------------------------------------------------------------------- 1. CSRF

#: What a page on another site can make a browser send without a CORS preflight: a
#: "simple" POST, whose content type is one an HTML form can send, or none at all.
SIMPLE_POSTS = [
    pytest.param({"content-type": "text/plain;charset=UTF-8"}, id="text/plain"),
    pytest.param({"content-type": "application/x-www-form-urlencoded"}, id="form"),
    pytest.param({"content-type": "multipart/form-data; boundary=x"}, id="multipart"),
    pytest.param({}, id="no content type"),
]


@pytest.mark.parametrize("headers", SIMPLE_POSTS)
async def test_a_cross_site_post_does_not_run_the_action(
        http: HttpClient, headers: dict[str, str]) -> None:
    response = await http.request("POST", "/counter/increment", body=b"",
                                  headers={"origin": EVIL} | headers)
    assert_problem(response, 403, EVIL, "cors_origins")
    assert await invoked(http) == 0


@pytest.mark.parametrize("origin", ["null", "http://testserver:8001", "http://other"])
async def test_opaque_and_other_port_origins_are_cross_site(http: HttpClient,
                                                           origin: str) -> None:
    """``Origin: null`` (a sandboxed frame, a file) and another port of the same host
    are other origins."""
    response = await http.post("/counter/increment", {}, headers={"origin": origin})
    assert_problem(response, 403)
    assert await invoked(http) == 0


async def test_sec_fetch_site_cross_site_is_refused_without_an_origin(
        http: HttpClient) -> None:
    response = await http.post("/counter/increment", {},
                               headers={"sec-fetch-site": "cross-site"})
    assert_problem(response, 403, "cross-site")
    assert await invoked(http) == 0


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PUT", "/counter/count", b"5"),
    ("PUT", "/counter/properties", b'{"count": 5}'),
    ("PATCH", "/counter/count", b"5"),
])
async def test_every_state_changing_method_is_refused_cross_site(
        http: HttpClient, method: str, path: str, body: bytes) -> None:
    response = await http.request(method, path, body=body, headers={
        "origin": EVIL, "content-type": "application/json"})
    assert_problem(response, 403)
    assert await count(http) == 0


async def test_a_cross_site_delete_does_not_cancel(served: InMemoryServer,
                                                   http: HttpClient) -> None:
    invoked = await http.post("/counter/count_slowly", {"n": 1, "delay": 10})
    assert invoked.status == 201
    href = "/action_invocations/" + invoked.json()["id"]
    assert_problem(await http.delete(href, headers={"origin": EVIL}), 403)
    assert (await http.get(href)).json()["status"] in ("pending", "running")
    cancelled = await http.delete(href)  # no Origin: not a browser page
    assert cancelled.status == 200
    assert cancelled.json()["status"] == "cancelled"


async def test_reads_from_other_sites_are_not_refused(http: HttpClient) -> None:
    """A page may make the browser send a GET anywhere (an <img>); it changes nothing,
    and the browser does not let the page read the answer without CORS."""
    response = await http.get("/counter/count", headers={"origin": EVIL,
                                                         "sec-fetch-site": "cross-site"})
    assert response.status == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no Origin: a program, not a browser page"),
    pytest.param({"origin": "http://testserver"}, id="the server's own origin"),
    pytest.param({"origin": "http://TESTSERVER/"}, id="its own origin, spelt otherwise"),
    pytest.param({"origin": UI, "sec-fetch-site": "cross-site"}, id="an origin in cors_origins"),
    pytest.param({"sec-fetch-site": "same-origin"}, id="same-origin"),
    pytest.param({"sec-fetch-site": "none"}, id="typed in the address bar"),
])
async def test_legitimate_writes_pass(http: HttpClient, headers: dict[str, str]) -> None:
    response = await http.post("/counter/increment", {}, headers=headers)
    assert response.status == 201, response
    assert await invoked(http) == 1


async def test_allowed_origins_may_write_too(served: InMemoryServer) -> None:
    """An origin allowed to open WebSockets may already invoke over one: its pages may
    write over HTTP as well."""
    server = counter_server(allowed_origins=[UI])
    async with server.running(), in_memory(server) as other, other.http() as http:
        response = await http.post("/counter/increment", {}, headers={"origin": UI})
        assert response.status == 201
        assert_problem(await http.post("/counter/increment", {}, headers={"origin": EVIL}),
                       403)


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
async def test_an_action_body_declared_as_a_form_type_is_415_even_when_empty(
        http: HttpClient, content_type: str) -> None:
    """The second line of defence, for browsers that send no ``Origin``: what an HTML
    form can post is never taken for an action's input."""
    for path in ("/counter/increment", "/counter/actions/increment"):
        response = await http.request("POST", path, body=b"",
                                      headers={"content-type": content_type})
        assert_problem(response, 415, "application/json")
    assert await invoked(http) == 0


@pytest.mark.parametrize(("headers", "body"), [
    pytest.param({"content-type": "application/json"}, b"{}", id="{} as JSON (LabThings)"),
    pytest.param({"content-type": "application/json"}, b"", id="empty, declared JSON"),
    pytest.param({"content-type": "application/json; charset=utf-8"}, b"", id="charset"),
    pytest.param({}, b"", id="empty, no content type (trio_things.client, curl -X POST)"),
])
async def test_action_bodies_real_clients_send(http: HttpClient, headers: dict[str, str],
                                               body: bytes) -> None:
    response = await http.request("POST", "/counter/increment", body=body, headers=headers)
    assert response.status == 201, response
    assert await invoked(http) == 1


async def test_the_readme_curl_examples_still_work(http: HttpClient) -> None:
    """What ``curl -X PUT|POST -H 'Content-Type: application/json' -d ...`` and ``curl
    -X DELETE`` send (README, docs/quickstart.md)."""
    curl = {"user-agent": "curl/8.5.0", "accept": "*/*",
            "content-type": "application/json"}
    assert (await http.request("PUT", "/counter/count", body=b"200", headers=curl)).status == 204
    invoked = await http.request("POST", "/counter/count_slowly",
                                 body=b'{"n": 1, "delay": 10}', headers=curl)
    assert invoked.status == 201
    cancelled = await http.request("DELETE", invoked.headers["location"].removeprefix(
        "http://testserver"), headers={"user-agent": "curl/8.5.0", "accept": "*/*"})
    assert cancelled.status == 200


async def test_the_client_still_invokes_over_http(served: InMemoryServer) -> None:
    """``trio_things.client`` posts an action without input as an empty body without a
    content type; over HTTP (no WebSocket) that must still run the action."""
    async with served.connect("counter", websocket=False) as counter:
        invocation = await counter.invoke("increment")
        assert (await invocation.result()) == 1
        await counter.write("count", 7)
        assert await counter.read("count") == 7


# ----------------------------------------------------------------------------- 2. DNS rebinding


async def raw_exchange(served: InMemoryServer, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send a request head (with any ``Host``) and read the whole answer."""
    stream = await served.open_raw_stream()
    try:
        await stream.send_all(head)
        client = h11.Connection(h11.CLIENT)
        proposal = [("connection", "upgrade"), ("upgrade", "websocket")] if (
            b"Upgrade: websocket" in head) else []
        client.send(h11.Request(method="GET", target="/", headers=[("host", "x"), *proposal]))
        client.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(bytes(await stream.receive_some()))
            elif event is h11.PAUSED:  # switched protocols: the head is all there is
                return status, headers, body
            elif isinstance(event, h11.Response | h11.InformationalResponse):
                status = event.status_code
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, headers, body
    finally:
        await stream.aclose()


def handshake(host: str, *, origin: str | None = None, path: str = "/counter/ws") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Protocol: webthingprotocol"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_rebound_name_is_refused_over_http(http: HttpClient) -> None:
    for method, path, body in (("GET", "/counter/count", None), ("PUT", "/counter/count", 5),
                               ("GET", "/counter/", None)):
        response = await http.request(method, path, json=body, headers=REBIND_HEADERS)
        problem = assert_problem(response, 403, "rebind.attacker.example", "allowed_hosts")
        assert "[server.access]" in problem["detail"]
    assert await count(http) == 0


async def test_a_rebound_name_is_refused_on_the_websocket_handshake(
        served: InMemoryServer) -> None:
    status, headers, body = await raw_exchange(
        served, handshake(REBIND_HOST, origin=f"http://{REBIND_HOST}"))
    assert status == 403
    assert headers["content-type"] == "application/problem+json"
    assert "allowed_hosts" in orjson.loads(body)["detail"]


async def test_loopback_names_and_addresses_are_allowed(served: InMemoryServer) -> None:
    for host in ("localhost:8000", "LOCALHOST:1234", "127.0.0.1:9", "[::1]:80", "localhost",
                 "192.168.1.20:8000", "[fe80::1]:8000"):
        status, _, _ = await raw_exchange(served, handshake(host, origin=f"http://{host}"))
        assert status == 101, host
        status, _, body = await raw_exchange(
            served, f"GET /counter/count HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert (status, body) == (200, b"0"), host


async def test_the_harness_name_is_allowed_by_the_harness(http: HttpClient) -> None:
    """``trio_things.testing`` answers as ``testserver``: it allows that name on the
    server it serves, so every in-memory test keeps working."""
    assert (await http.get("/counter/count")).status == 200


@pytest.mark.parametrize(("allowed", "host", "status"), [
    (["lab.example"], "lab.example:8000", 200),
    (["lab.example"], "LAB.example.:8000", 200),
    (["lab.example"], "evil-lab.example:8000", 403),
    ([".lab.example"], "scope.lab.example", 200),
    ([".lab.example"], "lab.example", 200),
    ([".lab.example"], "lab.example.evil", 403),
    (["*"], REBIND_HOST, 200),
])
async def test_configured_allowed_hosts(allowed: list[str], host: str, status: int) -> None:
    server = counter_server(allowed_hosts=allowed)
    async with server.running(), in_memory(server) as served:
        answer, _, _ = await raw_exchange(
            served, f"GET /counter/count HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert answer == status


async def test_the_name_the_server_is_bound_to_is_allowed() -> None:
    server = ThingServer(ServerConfig(host="lab-pc.local"))
    server.add_thing("counter", Counter())
    async with server.running(), in_memory(server) as served:
        status, _, _ = await raw_exchange(
            served, b"GET /counter/count HTTP/1.1\r\nHost: lab-pc.local:8000\r\n\r\n")
        assert status == 200
        status, _, _ = await raw_exchange(
            served, b"GET /counter/count HTTP/1.1\r\nHost: other-pc.local:8000\r\n\r\n")
        assert status == 403


def test_allowed_hosts_in_the_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "things.toml"
    path.write_text('[server.access]\nallowed_hosts = ["Lab.Example", ".lab.example"]\n')
    assert load_config(path).access.allowed_hosts == ("lab.example", ".lab.example")
    path.write_text('[server.access]\nallowed_hosts = ["lab.example:8000"]\n')
    with pytest.raises(ConfigError, match="without a scheme or port"):
        load_config(path)


# ----------------------------------------------------------------------------- 3. query tokens


@pytest.fixture
async def tokened() -> AsyncIterator[InMemoryServer]:
    server = counter_server(tokens=[TOKEN])
    with trio.fail_after(10):
        async with server.running(), in_memory(server) as served:
            yield served


@pytest.mark.parametrize("path", ["/counter/count", "/counter/", "/.well-known/wot"])
async def test_a_token_in_the_query_of_an_http_request_is_not_accepted(
        tokened: InMemoryServer, path: str) -> None:
    async with tokened.http() as http:
        response = await http.get(f"{path}?access_token={TOKEN}")
        assert_problem(response, 401, "Authorization")
        assert response.headers["www-authenticate"].startswith("Bearer")
        refused = await http.put(f"/counter/count?access_token={TOKEN}", 3)
        assert refused.status == 401
        header = {"authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/counter/count", headers=header)).json() == 0


async def test_a_token_in_the_query_still_opens_a_websocket(tokened: InMemoryServer) -> None:
    async with tokened.websocket(f"/counter/ws?access_token={TOKEN}",
                                 ["webthingprotocol"]) as ws:
        await ws.send_message(orjson.dumps({
            "messageType": "request", "operation": "readproperty", "thingID": "counter",
            "name": "count", "correlationID": "1", "messageID": "1"}).decode())
        assert orjson.loads(await ws.get_message())["value"] == 0


class Faulty(Counter):
    """A Counter with a property whose getter fails: a 500 the server logs."""

    @tt.property
    def broken(self) -> int:
        raise RuntimeError("the sensor is unplugged")


async def test_tokens_in_request_targets_never_reach_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    """Whatever is logged about a request (a handler that failed, a malformed request,
    a refused handshake) never holds its query, where a token may be."""
    server = ThingServer(ServerConfig(access=AccessPolicy(tokens=[TOKEN])))
    server.add_thing("counter", Faulty())
    header = {"authorization": f"Bearer {TOKEN}"}
    with caplog.at_level(logging.DEBUG, logger="trio_things"):
        async with server.running(), in_memory(server) as served:
            async with served.http() as http:
                failed = await http.get(f"/counter/broken?access_token={TOKEN}",
                                        headers=header)
                assert failed.status == 500
                await http.get(f"/counter/count?access_token={TOKEN}")
                await http.get(f"/counter/count?access_token={TOKEN}", headers=REBIND_HEADERS)
            for path in ("/counter/ws", "/nothing/ws"):
                for host in ("testserver", REBIND_HOST):
                    await raw_exchange(served, handshake(host, path=f"{path}?access_token="
                                                         f"{TOKEN}"))
            malformed, _, _ = await raw_exchange(
                served, f"GET /counter/count?access_token={TOKEN} HTTP/1.1\r\n"
                        f"Host: testserver\r\nContent-Length: x\r\n\r\n".encode())
            assert malformed == 400
    logged = [(record.getMessage(), record.exc_text or "") for record in caplog.records]
    assert any("/counter/broken" in message for message, _ in logged), logged
    for message, traceback in logged:
        assert TOKEN not in message
        assert TOKEN not in traceback
