"""The HTTP binding (``trio_things/bindings/http.py``) in the real server, end to end over
in-memory streams: every route and every error status."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import attrs
import jsonschema
import pytest
import trio
import trio.testing

import trio_things as tt
from tests.helpers.httpclient import HttpClient, Response, connect
from trio_things.server import ThingServer

pytestmark = pytest.mark.usefixtures("demo_server")


def assert_problem(response: Response, status: int, detail: str = "") -> dict[str, Any]:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert isinstance(problem["title"], str)
    assert detail in problem["detail"]
    return problem


async def wait_ended(client: HttpClient, href: str) -> dict[str, Any]:
    """Poll an invocation as LabThings clients do; call only with the autojump clock."""
    while True:
        invocation = (await client.get(href)).json()
        if invocation["status"] not in ("pending", "running"):
            return invocation
        await trio.sleep(0.05)


# ------------------------------------------------------------------ discovery and TDs


async def test_thing_description(client: HttpClient) -> None:
    response = await client.get("/thermometer/")
    assert response.status == 200
    assert response.headers["content-type"] == "application/td+json"
    td = response.json()
    assert td["title"] == "Thermometer"
    assert td["base"] == "http://testserver/"
    assert set(td["properties"]) == {"temperature", "setpoint", "threshold"}
    assert set(td["actions"]) == {"ramp"}
    assert set(td["events"]) == {"overheated"}
    assert (await client.get("/thermometer")).json() == td


async def test_directory_routes(client: HttpClient) -> None:
    assert (await client.get("/things/")).json() == {
        "thermometer": "http://testserver/thermometer/", "counter": "http://testserver/counter/"}
    assert (await client.get("/")).json() == (await client.get("/things/")).json()
    tds = (await client.get("/thing_descriptions/")).json()
    assert tds["counter"] == (await client.get("/counter/")).json()
    wot = await client.get("/.well-known/wot")
    assert wot.headers["content-type"] == "application/td+json"
    assert [link["href"] for link in wot.json()["links"]] == ["thermometer/", "counter/"]


# ------------------------------------------------------------------ the directory (WoT Discovery)

LISTING = "/.well-known/wot/things"


async def test_the_directory_td_leads_to_the_listing(
        client: HttpClient, td_validator: jsonschema.Draft7Validator) -> None:
    response = await client.get("/.well-known/wot")
    assert response.headers["content-type"] == "application/td+json"
    directory = response.json()
    assert not list(td_validator.iter_errors(directory))
    assert directory["@type"] == "ThingDirectory"
    assert directory["@context"][-1] == "https://www.w3.org/2022/wot/discovery"
    # The form a consumer follows, its URI template expanded with no variables.
    href = directory["properties"]["things"]["forms"][0]["href"]
    listed = await client.get("/" + href.removesuffix("{?offset,limit,format}"))
    assert listed.status == 200
    assert listed.headers["content-type"] == "application/ld+json"  # WoT Discovery's choice
    tds = listed.json()
    assert tds == sorted(tds, key=lambda td: td["id"])  # by id, in code point order
    assert {td["id"] for td in tds} == {
        (await client.get(f"/{name}/")).json()["id"] for name in ("thermometer", "counter")}
    for td in tds:
        assert not list(td_validator.iter_errors(td))
    assert listed.headers["link"] == (
        f'<http://testserver{LISTING}>; rel="canonical"; etag="{etag(listed)}"')
    # The routes LabThings clients read answer as they did.
    assert (await client.get("/things/")).json() == {
        "thermometer": "http://testserver/thermometer/", "counter": "http://testserver/counter/"}
    assert set((await client.get("/thing_descriptions/")).json()) == {"thermometer", "counter"}


def etag(response: Response) -> str:
    return response.headers["link"].rsplit('etag="', 1)[1].rstrip('"')


async def test_the_listing_a_page_at_a_time(client: HttpClient) -> None:
    whole = (await client.get(LISTING)).json()
    first = await client.get(f"{LISTING}?limit=1")
    assert first.json() == whole[:1]
    next_link = first.headers["link"].split(", ")[0]
    assert next_link == f'<http://testserver{LISTING}?offset=1&limit=1>; rel="next"'
    second = await client.get(next_link[len("<http://testserver"):next_link.index(">")])
    assert second.json() == whole[1:]
    assert 'rel="next"' not in second.headers["link"]  # the last page
    assert etag(first) == etag(second)  # the collection did not change between them
    assert (await client.get(f"{LISTING}?offset=2")).json() == []
    collection = (await client.get(f"{LISTING}?limit=1&format=collection")).json()
    assert collection["@type"] == "ThingCollection"
    assert (collection["total"], collection["members"]) == (2, whole[:1])
    assert collection["next"] == (
        f"http://testserver{LISTING}?offset=1&limit=1&format=collection")


@pytest.mark.parametrize(("query", "detail"), [
    ("limit=0", "limit must be a positive integer"),
    ("offset=-1", "offset must be a non-negative integer"),
    ("limit=x&offset=1", "limit must be a positive integer"),
    ("format=turtle", "format must be 'array' or 'collection'"),
])
async def test_bad_listing_parameters_are_400(client: HttpClient, query: str,
                                              detail: str) -> None:
    assert_problem(await client.get(f"{LISTING}?{query}"), 400, detail)


async def test_retrieve_a_td_by_its_id(client: HttpClient) -> None:
    td = (await client.get("/counter/")).json()
    for target in (td["id"], urllib.parse.quote(td["id"], safe="")):
        response = await client.get(f"{LISTING}/{target}")
        assert response.status == 200
        assert response.headers["content-type"] == "application/td+json"
        assert response.json() == td
    assert_problem(await client.get(f"{LISTING}/urn:uuid:00000000-0000-0000-0000-000000000000"),
                   404, "no Thing Description with id 'urn:uuid:00000000-")


async def test_head_of_the_directory(client: HttpClient) -> None:
    """A TD Server answers HEAD with the headers of a GET (WoT Discovery)."""
    td_id = (await client.get("/counter/")).json()["id"]
    for path in ("/.well-known/wot", f"{LISTING}?limit=1", f"{LISTING}/{td_id}"):
        got, head = await client.get(path), await client.request("HEAD", path)
        assert (head.status, head.body) == (200, b"")
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.body))
        assert head.headers.get("link") == got.headers.get("link")


async def test_the_directory_refuses_writes(client: HttpClient) -> None:
    td = (await client.get("/counter/")).json()
    for method, path in (("PUT", f"{LISTING}/{td['id']}"), ("POST", LISTING),
                         ("DELETE", f"{LISTING}/{td['id']}")):
        response = await client.request(method, path, json=td)
        assert_problem(response, 405, "read-only")
        assert response.headers["allow"] == "GET, HEAD"
    assert (await client.get(f"{LISTING}/{td['id']}")).json() == td


async def test_head_has_headers_but_no_body(client: HttpClient) -> None:
    response = await client.request("HEAD", "/counter/count")
    assert response.status == 200
    assert response.body == b""
    assert response.headers["content-length"] == "1"  # that of the GET: b"0"


async def test_unknown_paths_are_404(client: HttpClient) -> None:
    assert_problem(await client.get("/nothing/"), 404, "no Thing named 'nothing'")
    assert_problem(await client.get("/counter/nothing"), 404,
                   "no property, action or stream")
    assert_problem(await client.get("/action_invocations/nope"), 404, "unknown or expired")


# ------------------------------------------------------------------ properties


async def test_read_and_write_property(client: HttpClient) -> None:
    assert (await client.get("/counter/count")).json() == 0
    response = await client.put("/counter/count", 41)
    assert response.status == 204
    assert (await client.get("/counter/count")).json() == 41


async def test_property_errors(client: HttpClient) -> None:
    problem = assert_problem(await client.put("/thermometer/setpoint", 200), 422)
    assert problem["detail"] == "setpoint: 200 is greater than the maximum 150"
    assert_problem(await client.put("/counter/count", "seven"), 422, "expected an integer")
    response = await client.put("/thermometer/temperature", 3)
    assert_problem(response, 405, "read-only")
    assert response.headers["allow"] == "GET, HEAD"
    assert_problem(await client.request("PUT", "/counter/count", body=b"{oops",
                                        headers={"content-type": "application/json"}), 400)
    assert_problem(await client.request("PUT", "/counter/count", body=b"count=1", headers={
        "content-type": "application/x-www-form-urlencoded"}), 415)
    assert (await client.get("/thermometer/setpoint")).json() == 20.0


async def test_all_and_multiple_properties(client: HttpClient) -> None:
    assert (await client.get("/counter/properties")).json() == {"count": 0}
    values = (await client.get("/thermometer/properties?names=setpoint,threshold")).json()
    assert values == {"setpoint": 20.0, "threshold": 100.0}
    response = await client.put("/thermometer/properties", {"setpoint": 30, "threshold": 90})
    assert response.status == 204
    # All or nothing: one bad value writes none of them.
    assert_problem(await client.put("/thermometer/properties",
                                    {"setpoint": 10, "threshold": 900}), 422, "threshold")
    values = (await client.get("/thermometer/properties?names=setpoint,threshold")).json()
    assert values == {"setpoint": 30.0, "threshold": 90.0}
    assert_problem(await client.put("/thermometer/properties", {"temperature": 1}), 405)
    assert_problem(await client.get("/thermometer/properties?names=nope"), 404)


async def test_body_over_the_limit_is_413(demo_server: ThingServer) -> None:
    limit = demo_server.config.http.max_body_bytes
    async with connect(demo_server) as client:
        response = await client.request("PUT", "/counter/count", body=b"1" * (limit + 1),
                                        headers={"content-type": "application/json"})
    assert_problem(response, 413)


# ------------------------------------------------------------------ actions


async def test_invoke_returns_invocation_then_completes(
        client: HttpClient, autojump_clock: trio.testing.MockClock) -> None:
    response = await client.post("/counter/increment", {"by": 5})
    assert response.status == 201
    invocation = response.json()
    assert invocation["status"] in ("pending", "running")
    assert invocation["action"].endswith("/increment")
    assert invocation["input"] == {"by": 5}
    href = invocation["href"]
    assert response.headers["location"] == f"http://testserver{href}"
    assert {"rel": "self", "href": href} in invocation["links"]
    final = await wait_ended(client, href)
    assert final["status"] == "completed"
    assert final["output"] == 5
    assert final["timeStarted"] and final["timeCompleted"]
    assert (await client.get(f"{href}/output")).json() == 5
    listed = (await client.get("/counter/increment")).json()
    assert [i["id"] for i in listed] == [invocation["id"]]
    assert [i["id"] for i in (await client.get("/counter/actions")).json()] == [invocation["id"]]
    assert len((await client.get("/action_invocations/")).json()) == 1


async def test_synchronous_invoke_answers_bare_output(client: HttpClient) -> None:
    response = await client.post("/counter/actions/increment", {"by": 2})
    assert response.status == 200
    assert response.json() == 2
    response = await client.request("POST", "/counter/actions/increment")  # empty body: {}
    assert response.json() == 3


async def test_action_input_errors(client: HttpClient) -> None:
    assert_problem(await client.post("/counter/increment", {"by": "x"}), 422, "increment.by")
    assert_problem(await client.post("/counter/increment", {"bye": 1}), 422, "unexpected field")
    assert_problem(await client.post("/counter/increment", [1]), 400, "JSON object")
    assert_problem(await client.post("/thermometer/ramp", {}), 422, "'to' is missing")
    assert (await client.get("/action_invocations/")).json() == []  # none created


async def test_thread_action_logs_progress(client: HttpClient) -> None:
    response = await client.post("/counter/actions/count_slowly", {"n": 3, "delay": 0.001})
    assert response.json() == 3
    [invocation] = (await client.get("/counter/count_slowly")).json()
    assert invocation["status"] == "completed"
    assert [entry["message"] for entry in invocation["log"]] == [
        "counted 1 of 3", "counted 2 of 3", "counted 3 of 3"]
    assert (await client.get("/counter/count")).json() == 3


async def test_cancel_async_action(client: HttpClient,
                                   autojump_clock: trio.testing.MockClock) -> None:
    response = await client.post("/thermometer/ramp", {"to": 100, "rate": 1})
    href = response.json()["href"]
    await trio.sleep(1)
    cancelled = await client.delete(href)
    assert cancelled.status == 200
    assert cancelled.json()["status"] == "cancelled"
    setpoint = (await client.get("/thermometer/setpoint")).json()
    assert 20 < setpoint < 100
    problem = assert_problem(await client.delete(href), 409, "already ended")
    assert "cancelled" in problem["detail"]
    assert_problem(await client.get(f"{href}/output"), 409, "cancelled")


async def test_cancel_thread_action(client: HttpClient) -> None:
    response = await client.post("/counter/count_slowly", {"n": 100, "delay": 0.1})
    href = response.json()["href"]
    cancelled = await client.delete(href)
    assert cancelled.json()["status"] == "cancelled"
    assert (await client.get("/counter/count")).json() < 100


async def test_output_of_running_invocation_is_409(
        client: HttpClient, autojump_clock: trio.testing.MockClock) -> None:
    href = (await client.post("/thermometer/ramp", {"to": 30})).json()["href"]
    assert_problem(await client.get(f"{href}/output"), 409, "not finished")
    await client.delete(href)


async def test_ended_invocations_expire(demo_server: ThingServer, client: HttpClient,
                                        autojump_clock: trio.testing.MockClock) -> None:
    href = (await client.post("/counter/increment")).json()["href"]
    await wait_ended(client, href)
    await trio.sleep(demo_server.config.invocation_retention - 1)
    assert (await client.get(href)).status == 200
    await trio.sleep(2)
    assert_problem(await client.get(href), 404, "expired")


# ------------------------------------------------------------------ events


async def test_event_long_poll(demo_server: ThingServer, client: HttpClient,
                               autojump_clock: trio.testing.MockClock) -> None:
    results: list[Response] = []

    async def poll() -> None:
        async with connect(demo_server) as poller:
            results.append(await poller.get("/thermometer/events/overheated"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await client.put("/thermometer/properties", {"threshold": 25, "setpoint": 40})
    [response] = results
    assert response.status == 200
    reading = response.json()
    assert reading["temperature"] > 25
    assert reading["time"].startswith("20")


async def test_event_long_poll_times_out_with_204(
        client: HttpClient, autojump_clock: trio.testing.MockClock) -> None:
    response = await client.get("/thermometer/events/overheated")
    assert response.status == 204


# ------------------------------------------------------------------ faulty Thing code


@attrs.frozen
class Blip:
    n: int


class Faulty(tt.Thing):
    """Thing code that fails in every way it can."""

    blipped = tt.event(Blip)

    @tt.property
    def broken(self) -> int:
        raise RuntimeError("sensor unplugged")

    @tt.action
    def explode(self) -> None:
        raise RuntimeError("boom")

    @tt.action
    def refuse(self) -> None:
        raise tt.InvalidValue("not now", path="refuse")

    @tt.action
    def blip(self, n: int) -> None:
        self.blipped.emit(Blip(n=n))  # from a worker thread


@pytest.fixture
async def faulty_server() -> AsyncIterator[ThingServer]:
    server = ThingServer()
    server.add_thing("faulty", Faulty())
    async with server.running():
        yield server


@pytest.fixture
async def faulty_client(faulty_server: ThingServer) -> AsyncIterator[HttpClient]:
    with trio.fail_after(10):
        async with connect(faulty_server) as client:
            yield client


async def test_failing_getter_is_500_and_connection_lives(faulty_client: HttpClient) -> None:
    problem = assert_problem(await faulty_client.get("/faulty/broken"), 500)
    assert "sensor unplugged" not in problem["detail"]  # no internals leak
    assert (await faulty_client.get("/faulty/")).status == 200


async def test_failing_action_is_recorded_failed(faulty_client: HttpClient) -> None:
    problem = assert_problem(await faulty_client.post("/faulty/actions/explode"), 500, "boom")
    assert "RuntimeError" in problem["detail"]
    [invocation] = (await faulty_client.get("/faulty/explode")).json()
    assert invocation["status"] == "failed"
    assert invocation["error"]["status"] == 500
    assert invocation["error"]["detail"] == "boom"
    assert_problem(await faulty_client.post("/faulty/actions/refuse"), 422, "not now")


async def test_thread_emitted_event_reaches_long_poll(faulty_server: ThingServer,
                                                      faulty_client: HttpClient) -> None:
    # A long-poll sees only emissions made while it waits, and we cannot see from here
    # when the poll is parked, so emit (from a worker thread) until it is answered.
    results: list[Any] = []

    async def poll() -> None:
        async with connect(faulty_server) as poller:
            results.append((await poller.get("/faulty/events/blipped")).json())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        n = 0
        while not results:
            n += 1
            assert (await faulty_client.post("/faulty/actions/blip", {"n": n})).status == 204
            await trio.testing.wait_all_tasks_blocked()
    assert 1 <= results[0]["n"] <= n
