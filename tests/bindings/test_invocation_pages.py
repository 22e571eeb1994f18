"""Listings of invocations come in pages (``GET /action_invocations/?limit=&after=``, a
``Link: <...>; rel="next"`` header), the invocations kept are bounded
(``max_invocations_per_thing``), and a WebSocket ``queryallactions`` answers the newest
page only: one listing of every invocation kept used to be megabytes, encoded while the
server's loop waited."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio
import trio.testing

import trio_things as tt
from trio_things.config import ServerConfig
from trio_things.errors import BadRequest
from trio_things.model.invocation import Invocation
from trio_things.protocol import commands as c
from trio_things.protocol.routes import (
    INVOCATION_PAGE_SIZE,
    MAX_INVOCATION_PAGE_SIZE,
    InvocationPage,
    invocation_page,
)
from trio_things.protocol.wtp import WebThingProtocol
from trio_things.testing import HttpConnection, Response, serve_in_memory

LINK = re.compile(r'<(?P<url>[^>]+)>; rel="next"')


class Lab(tt.Thing):
    """Quick actions; ``chatty`` logs a long log."""

    @tt.action
    async def idle(self) -> None:
        pass

    @tt.action
    async def other(self) -> None:
        pass

    @tt.action
    async def chatty(self, context: tt.ActionContext) -> None:
        for i in range(1000):
            context.log(f"{i:04} " + "x" * 300)


@pytest.fixture
async def http(autojump_clock: trio.testing.MockClock) -> AsyncIterator[HttpConnection]:
    async with serve_in_memory(Lab(), name="lab") as served, served.http() as connection:
        yield connection


async def invoke(http: HttpConnection, path: str, count: int) -> list[str]:
    """Invoke ``count`` times; return the ids, once every invocation has ended."""
    ids = []
    for _ in range(count):
        response = await http.post(path)
        assert response.status == 201, response.body
        ids.append(response.json()["id"])
    await trio.testing.wait_all_tasks_blocked()
    return ids


def next_link(response: Response) -> str | None:
    """The path and query of the ``rel="next"`` link; None without one."""
    link = response.headers.get("link")
    if link is None:
        return None
    match = LINK.fullmatch(link)
    assert match is not None, link
    url = match["url"]
    assert url.startswith("http://testserver/")
    return url.removeprefix("http://testserver")


async def every_page(http: HttpConnection, path: str) -> list[list[dict[str, Any]]]:
    pages = []
    next_path: str | None = path
    while next_path is not None:
        response = await http.get(next_path)
        assert response.status == 200, response.body
        pages.append(response.json())
        next_path = next_link(response)
    return pages


def assert_problem(response: Response, status: int, detail: str) -> None:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and detail in problem["detail"]


# ------------------------------------------------------------------ the query


@pytest.mark.parametrize(("query", "page"), [
    ("", InvocationPage(limit=INVOCATION_PAGE_SIZE, after=None)),
    ("limit=7", InvocationPage(limit=7, after=None)),
    ("limit=007&after=abc", InvocationPage(limit=7, after="abc")),
    ("limit=5000", InvocationPage(limit=MAX_INVOCATION_PAGE_SIZE, after=None)),
    ("limit=" + "9" * 5000, InvocationPage(limit=MAX_INVOCATION_PAGE_SIZE, after=None)),
    ("access_token=x&after=a%2Fb", InvocationPage(limit=INVOCATION_PAGE_SIZE, after="a/b")),
])
def test_the_query_names_a_page(query: str, page: InvocationPage) -> None:
    assert invocation_page(query) == page


@pytest.mark.parametrize("query", ["limit=0", "limit=000", "limit=-1", "limit=two",
                                   "limit=", "limit=1.5", "limit=%C2%B2", "after="])
def test_a_bad_query_is_400(query: str) -> None:
    with pytest.raises(BadRequest):
        invocation_page(query)


# ------------------------------------------------------------------ HTTP listings


async def test_a_listing_is_a_page_with_a_link_to_the_next(http: HttpConnection) -> None:
    ids = await invoke(http, "/lab/idle", 250)
    first = await http.get("/action_invocations/")
    assert [i["id"] for i in first.json()] == ids[:100]  # oldest first, 100 by default
    assert first.headers["link"] == (
        f'<http://testserver/action_invocations/?limit=100&after={ids[99]}>; rel="next"')
    pages = await every_page(http, "/action_invocations/")
    assert [len(page) for page in pages] == [100, 100, 50]
    assert [i["id"] for page in pages for i in page] == ids


async def test_limit_sets_the_page_size(http: HttpConnection) -> None:
    ids = await invoke(http, "/lab/idle", 5)
    small = await http.get("/action_invocations/?limit=2")
    assert [i["id"] for i in small.json()] == ids[:2]
    assert next_link(small) == f"/action_invocations/?limit=2&after={ids[1]}"
    pages = await every_page(http, "/action_invocations/?limit=2")
    assert [[i["id"] for i in page] for page in pages] == [ids[:2], ids[2:4], ids[4:]]
    whole = await http.get("/action_invocations/?limit=5")
    assert len(whole.json()) == 5 and "link" not in whole.headers


async def test_the_listings_of_a_thing_and_an_action_are_paged_too(
        http: HttpConnection) -> None:
    idle = await invoke(http, "/lab/idle", 3)
    other = await invoke(http, "/lab/other", 3)
    by_thing = await http.get("/lab/actions?limit=4")
    assert [i["id"] for i in by_thing.json()] == idle + other[:1]
    assert next_link(by_thing) == f"/lab/actions?limit=4&after={other[0]}"
    by_action = await http.get("/lab/other?limit=2")
    assert [i["id"] for i in by_action.json()] == other[:2]
    assert next_link(by_action) == f"/lab/other?limit=2&after={other[1]}"
    assert_problem(await http.get(f"/lab/other?after={idle[0]}"), 404, "list again")


async def test_a_page_stops_at_about_a_mebibyte(http: HttpConnection) -> None:
    """A thousand lines of 300 characters: about 350 KB an invocation."""
    ids = await invoke(http, "/lab/chatty", 5)
    first = await http.get("/lab/chatty")
    assert 1 <= len(first.json()) < 5 and len(first.body) < (1 << 20) + 16
    pages = await every_page(http, "/lab/chatty")
    assert [i["id"] for page in pages for i in page] == ids
    assert all(len(page[0]["log"]) == 1000 for page in pages)


async def test_a_bad_page_is_a_problem(http: HttpConnection) -> None:
    await invoke(http, "/lab/idle", 1)
    assert_problem(await http.get("/action_invocations/?limit=0"), 400, "positive integer")
    assert_problem(await http.get("/action_invocations/?after=nope"), 404,
                   "no invocation 'nope'")


async def test_the_invocations_kept_are_bounded_per_thing(
        autojump_clock: trio.testing.MockClock) -> None:
    config = ServerConfig(max_invocations_per_thing=3)
    async with serve_in_memory(Lab(), name="lab", config=config) as served, \
            served.http() as http:
        ids = await invoke(http, "/lab/idle", 5)
        listed = await http.get("/action_invocations/")
        assert [i["id"] for i in listed.json()] == ids[2:]
        assert_problem(await http.get(f"/action_invocations/{ids[0]}"), 404, "expired")


# ------------------------------------------------------------------ WebSocket


def test_queryallactions_answers_the_newest_page_only() -> None:
    protocol = WebThingProtocol(things={"lab": Lab.affordances}, thing_ids={"lab": "urn:lab"},
                                default_thing="lab")
    [request] = protocol.decode(orjson.dumps({"operation": "queryallactions"}).decode())
    invocations = tuple(Invocation(thing="lab", action="idle" if i % 2 else "other",
                                   input={}) for i in range(250))
    message = protocol.encode_reply(request, c.InvocationListReply(invocations=invocations))
    assert message is not None
    statuses = orjson.loads(message)["statuses"]
    newest = invocations[-INVOCATION_PAGE_SIZE:]
    assert sum(len(s) for s in statuses.values()) == INVOCATION_PAGE_SIZE
    assert [s["actionID"] for s in statuses["idle"]] == [
        i.id for i in reversed(newest) if i.action == "idle"]
    assert statuses["chatty"] == []
