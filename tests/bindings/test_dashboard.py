"""The dashboard's server side (``trio_things/bindings/dashboard.py``): which requests
get the page and its files, with what headers; the page itself is tested in a real
browser (``tests/browser/``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from tests.helpers.httpclient import HttpClient, Response
from trio_things.bindings.dashboard import CONTENT_SECURITY_POLICY
from trio_things.config import ConfigError, ServerConfig, check_thing_name
from trio_things.demo import Counter
from trio_things.protocol.access import AccessPolicy
from trio_things.server import ThingServer
from trio_things.testing import in_memory

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
FULL, VIEWER = "f" * 32, "v" * 32


def is_page(response: Response) -> bool:
    return (response.status == 200
            and response.headers["content-type"] == "text/html; charset=utf-8"
            and b'type="module"' in response.body)


async def test_a_browser_at_the_root_gets_the_dashboard_and_json_clients_the_things(
        client: HttpClient) -> None:
    page = await client.get("/", headers=BROWSER)
    assert is_page(page)
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    for accept in ("application/json", "*/*", None, "text/html;q=0"):
        headers = {"accept": accept} if accept else {}
        things = await client.get("/", headers=headers)
        assert things.json() == {"thermometer": "http://testserver/thermometer/",
                                 "counter": "http://testserver/counter/"}, accept


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/", "/dashboard/things/counter",
                                  "/dashboard/things/nope"])
async def test_every_dashboard_path_is_the_page_which_routes_itself(
        client: HttpClient, path: str) -> None:
    assert is_page(await client.get(path))


async def test_static_files_with_their_types_and_validators(client: HttpClient) -> None:
    script = await client.get("/dashboard/static/app.js")
    assert script.status == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    etag = script.headers["etag"]
    again = await client.get("/dashboard/static/app.js", headers={"if-none-match": etag})
    assert again.status == 304 and again.body == b""
    style = await client.get("/dashboard/static/style.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    head = await client.request("HEAD", "/dashboard/static/app.js")
    assert head.status == 200 and head.body == b""


@pytest.mark.parametrize("path", [
    "/dashboard/static/", "/dashboard/static/nope.js", "/dashboard/static/../bindings/http.py",
    "/dashboard/static/%2e%2e/config.py", "/dashboard/static//etc/passwd",
    "/dashboard/static/vendor/../../server.py",
])
async def test_nothing_outside_the_dashboard_folder_is_served(
        client: HttpClient, path: str) -> None:
    response = await client.get(path)
    assert response.status == 404
    assert b"import" not in response.body


async def test_only_reads_reach_the_dashboard(client: HttpClient) -> None:
    response = await client.request("POST", "/dashboard/", body=b"{}",
                                    headers={"content-type": "application/json"})
    assert response.status in (404, 405)


@pytest.fixture
async def guarded() -> AsyncIterator[HttpClient]:
    server = ThingServer(ServerConfig(access=AccessPolicy(tokens=[FULL],
                                                          readonly_tokens=[VIEWER])))
    server.add_thing("counter", Counter())
    with trio.fail_after(30):
        async with server.running(), in_memory(server) as served, served.http() as client:
            yield client


async def test_the_page_needs_no_token_but_the_api_does(guarded: HttpClient) -> None:
    assert is_page(await guarded.get("/", headers=BROWSER))
    assert (await guarded.get("/dashboard/static/app.js")).status == 200
    assert (await guarded.get("/")).status == 401
    assert (await guarded.get("/dashboard/access")).status == 401


@pytest.mark.parametrize(("token", "role"), [(FULL, "full"), (VIEWER, "readonly")])
async def test_access_says_what_the_token_may_do(guarded: HttpClient, token: str,
                                                 role: str) -> None:
    response = await guarded.get("/dashboard/access",
                                 headers={"authorization": f"Bearer {token}"})
    assert response.status == 200
    assert response.json() == {"role": role}
    assert response.headers["cache-control"] == "no-store"


def test_a_thing_may_not_be_named_after_the_dashboard() -> None:
    for name in ("dashboard", "blob"):
        with pytest.raises(ConfigError, match="taken by the server's own routes"):
            check_thing_name(name)
