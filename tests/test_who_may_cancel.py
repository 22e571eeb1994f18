"""Who may cancel an invocation, end to end: the token that invoked it, over HTTP and
over a WebSocket alike; another token is answered 403 and the action runs on.

The rule itself (:func:`trio_things.protocol.access.check_cancel`) is tested without a
server in ``tests/protocol/test_access.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio
import trio_websocket

from trio_things.config import ServerConfig
from trio_things.demo import Thermometer
from trio_things.errors import Forbidden
from trio_things.protocol import commands as c
from trio_things.protocol.access import AccessPolicy
from trio_things.server import ThingServer
from trio_things.testing import HttpConnection, InMemoryServer, in_memory

ALICE, BOB, VIEWER = "alice-full-token", "bob-full-token-", "viewer-read-only"
#: A ramp long enough to be running whenever the test looks.
RAMP = {"to": 150, "rate": 0.001}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def served() -> AsyncIterator[InMemoryServer]:
    server = ThingServer(ServerConfig(access=AccessPolicy(tokens=[ALICE, BOB],
                                                          readonly_tokens=[VIEWER])))
    server.add_thing("thermometer", Thermometer())
    with trio.fail_after(10):
        async with server.running(), in_memory(server) as served:
            yield served


async def invoke_over_http(http: HttpConnection, token: str) -> str:
    response = await http.post("/thermometer/ramp", RAMP, headers=bearer(token))
    assert response.status == 201, response
    return str(response.json()["id"])


async def status(http: HttpConnection, invocation_id: str) -> str:
    response = await http.get(f"/action_invocations/{invocation_id}", headers=bearer(BOB))
    assert response.status == 200
    return str(response.json()["status"])


async def ws_request(ws: trio_websocket.WebSocketConnection, operation: str,
                     **members: Any) -> dict[str, Any]:
    correlation = str(uuid.uuid4())
    await ws.send_message(orjson.dumps({
        "messageID": str(uuid.uuid4()), "messageType": "request", "operation": operation,
        "thingID": "thermometer", "correlationID": correlation} | members).decode())
    while True:
        message = orjson.loads(await ws.get_message())
        if message.get("messageType") == "response" and message["correlationID"] == correlation:
            return dict(message)


async def test_over_http_only_the_invoker_may_cancel(served: InMemoryServer) -> None:
    async with served.http() as http:
        invocation_id = await invoke_over_http(http, ALICE)
        refused = await http.delete(f"/action_invocations/{invocation_id}",
                                    headers=bearer(BOB))
        assert refused.status == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert "invoked" in refused.json()["detail"]
        assert await status(http, invocation_id) in ("pending", "running")
        cancelled = await http.delete(f"/action_invocations/{invocation_id}",
                                      headers=bearer(ALICE))
        assert cancelled.status == 200
        assert cancelled.json()["status"] == "cancelled"


async def test_a_read_only_token_may_cancel_nothing(served: InMemoryServer) -> None:
    async with served.http() as http:
        invocation_id = await invoke_over_http(http, ALICE)
        refused = await http.delete(f"/action_invocations/{invocation_id}",
                                    headers=bearer(VIEWER))
        assert refused.status == 403
        assert await status(http, invocation_id) in ("pending", "running")


async def test_over_the_websocket_only_the_invoker_may_cancel(served: InMemoryServer) -> None:
    """The token, not the connection, is who invoked: the same token cancels over HTTP
    what it invoked over a WebSocket, and another token's connection cannot."""
    async with (served.websocket("/thermometer/ws", ["webthingprotocol"],
                                 headers=bearer(ALICE)) as alice,
                served.websocket(f"/thermometer/ws?access_token={BOB}",
                                 ["webthingprotocol"]) as bob,
                served.http() as http):
        reply = await ws_request(alice, "invokeaction", name="ramp", input=RAMP)
        assert "error" not in reply, reply
        action_id = reply["status"]["actionID"]
        refused = await ws_request(bob, "cancelaction", name="ramp", actionID=action_id)
        assert refused["error"]["status"] == 403
        assert await status(http, action_id) in ("pending", "running")
        refused_http = await http.delete(f"/action_invocations/{action_id}",
                                         headers=bearer(BOB))
        assert refused_http.status == 403
        cancelled = await ws_request(alice, "cancelaction", name="ramp", actionID=action_id)
        assert "error" not in cancelled, cancelled
        with trio.fail_after(5):
            while await status(http, action_id) != "cancelled":
                await trio.testing.wait_all_tasks_blocked()


async def test_the_websocket_cancels_what_its_token_invoked_over_http(
        served: InMemoryServer) -> None:
    async with (served.http() as http,
                served.websocket("/thermometer/ws", ["webthingprotocol"],
                                 headers=bearer(BOB)) as bob):
        invocation_id = await invoke_over_http(http, BOB)
        reply = await ws_request(bob, "cancelaction", name="ramp", actionID=invocation_id)
        assert "error" not in reply, reply


async def test_without_tokens_anyone_may_cancel() -> None:
    """No token configured, no identity: everyone is the same anonymous client."""
    server = ThingServer(ServerConfig())
    server.add_thing("thermometer", Thermometer())
    async with server.running(), in_memory(server) as served, served.http() as http:
        invocation_id = (await http.post("/thermometer/ramp", RAMP)).json()["id"]
        cancelled = await http.delete(f"/action_invocations/{invocation_id}")
        assert cancelled.status == 200


async def test_the_identity_kept_is_never_the_token(served: InMemoryServer) -> None:
    """The invocation's record keeps a hash of the invoker's token, never the token; and
    nothing of it reaches a client."""
    async with served.http() as http:
        invocation_id = await invoke_over_http(http, ALICE)
        answer = await http.get(f"/action_invocations/{invocation_id}", headers=bearer(ALICE))
        assert ALICE.encode() not in answer.body
        dispatcher = served.server._dispatcher
        assert dispatcher is not None
        invoker = dispatcher._invocations.invoker(invocation_id)
        assert invoker is not None and ALICE not in invoker
        await dispatcher.run(c.CancelAction(invocation_id=invocation_id, wait=False),
                             caller=served.server.config.access.caller(
                                 authorization=f"Bearer {ALICE}"))


async def test_a_full_token_may_cancel_what_was_invoked_without_one(
        served: InMemoryServer) -> None:
    """The dispatcher run without a caller (the server's own code) invokes without an
    identity: any full-access token may cancel that; nobody without a token may cancel
    what a token invoked."""
    dispatcher = served.server._dispatcher
    assert dispatcher is not None
    access = served.server.config.access
    bob = access.caller(authorization=f"Bearer {BOB}")
    viewer = access.caller(authorization=f"Bearer {VIEWER}")
    reply = await dispatcher.run(c.InvokeAction(thing="thermometer", name="ramp", input=RAMP))
    assert isinstance(reply, c.InvocationReply)
    anonymous_id = reply.invocation.id
    with pytest.raises(Forbidden):
        await dispatcher.run(c.CancelAction(invocation_id=anonymous_id, wait=False),
                             caller=viewer)
    cancelled = await dispatcher.run(c.CancelAction(invocation_id=anonymous_id, wait=False),
                                     caller=bob)
    assert isinstance(cancelled, c.InvocationReply)
    async with served.http() as http:
        alices = await invoke_over_http(http, ALICE)
    with pytest.raises(Forbidden):
        await dispatcher.run(c.CancelAction(invocation_id=alices, wait=False))
    assert dispatcher._invocations.get(alices).status.value in ("pending", "running")
