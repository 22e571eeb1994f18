"""WebSocket connections: the hand-off from HTTP, one nursery per connection.

A request with ``Upgrade: websocket`` to ``/ws`` or ``/{thing}/ws`` leaves the h11 loop
as an :class:`~trio_things.transport.upgrade.UpgradeStream` (which replays the request
bytes h11 already read) and is handed to trio-websocket. The subprotocol is chosen from
the client's ``Sec-WebSocket-Protocol`` and echoed back (browsers fail the handshake
otherwise): ``webthingprotocol`` when offered, else none (the LabThings dialect).

This release completes the handshake and keeps the connection readable, but serves no
operations over it yet: every message is answered with a 501 problem details object.
The notification core (observe, subscribe, action status) is the next milestone; until
then the Thing Description advertises no WebSocket forms.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Collection
from typing import Final

import trio
import trio_websocket

from trio_things.protocol.problems import PROBLEM_CONTENT_TYPE, ProblemDetails
from trio_things.transport.http import HttpRequest
from trio_things.transport.upgrade import UpgradeStream

__all__ = ["SUBPROTOCOL", "serve_websocket_upgrade"]

logger = logging.getLogger("trio_things.websockets")

#: The W3C Web Thing Protocol's subprotocol name.
SUBPROTOCOL: Final = "webthingprotocol"
#: Seconds a client has to complete the opening handshake.
HANDSHAKE_TIMEOUT: Final = 10.0
#: Seconds we give the close frame at shutdown. Short on purpose: shutdown has cancelled
#: trio-websocket's reader too, so the peer's answering close frame is never read and
#: this always elapses; Ctrl-C must still end ``serve`` within a second.
CLOSE_TIMEOUT: Final = 0.25


def websocket_route(path: str, things: Collection[str]) -> str | None:
    """The Thing a WebSocket path addresses (``""`` for the server-wide ``/ws``), or
    ``None`` when the path is no WebSocket endpoint."""
    segments = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
    match segments:
        case ["ws"]:
            return ""
        case [thing, "ws"] if thing in things:
            return thing
    return None


async def serve_websocket_upgrade(request: HttpRequest, stream: UpgradeStream, *,
                                  things: Collection[str]) -> None:
    """Run one WebSocket connection until the client leaves or the server stops.

    Resource handling:
        trio-websocket's reader task runs in a nursery owned by this call; both end
        when it returns. On cancellation (server shutdown) the client is sent close
        code 1001 (going away), waiting at most ``CLOSE_TIMEOUT`` for its answer.

    Error handling:
        A handshake that does not complete within ``HANDSHAKE_TIMEOUT``, an unknown
        path (404 with problem details) and a vanished peer all end the connection
        quietly; nothing the client sends can raise out of this function.
    """
    websocket: trio_websocket.WebSocketConnection | None = None
    async with trio.open_nursery() as nursery:
        try:
            with trio.move_on_after(HANDSHAKE_TIMEOUT):
                ws_request = await trio_websocket.wrap_server_stream(nursery, stream)
                if websocket_route(request.path, things) is None:
                    problem = ProblemDetails.from_status(
                        404, f"no WebSocket endpoint at {request.path!r}")
                    await ws_request.reject(404, body=problem.to_bytes(), extra_headers=[
                        (b"content-type", PROBLEM_CONTENT_TYPE.encode())])
                    return
                offered = ws_request.proposed_subprotocols
                websocket = await ws_request.accept(
                    subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
            if websocket is None:  # handshake timed out
                return
            try:
                await _answer_every_message(websocket)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                    await websocket.aclose(1001, "server shutting down")
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            nursery.cancel_scope.cancel()


async def _answer_every_message(websocket: trio_websocket.WebSocketConnection) -> None:
    reply = ProblemDetails.from_status(
        501, "WebSocket operations are not served yet; use the HTTP forms of the "
        "Thing Description").to_bytes().decode()
    while True:
        await websocket.get_message()
        await websocket.send_message(reply)
