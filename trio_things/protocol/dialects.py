"""WebSocket dialects: what both have in common, and which one a connection speaks.

A dialect is sans-IO, like h11: text in, frozen values out, bytes back. The connection
(:mod:`trio_things.websockets`) feeds it each message and sends what it returns; it
never sees a socket, so every message and every error is tested without one.

Chosen per connection from ``Sec-WebSocket-Protocol`` (``docs/design.md``, "WebSocket
dialects"):

==================================== =========================================
the client offers                    the connection speaks
==================================== =========================================
``webthingprotocol``                 the W3C Web Thing Protocol (:mod:`.wtp`)
nothing, on ``/{thing}/ws``          the LabThings dialect (:mod:`.labthings`)
nothing, on ``/ws``                  the Web Thing Protocol (``thingID`` picks)
==================================== =========================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import attrs

from trio_things.errors import RemoteProtocolError
from trio_things.protocol.commands import Command, Notification, Reply
from trio_things.protocol.problems import ProblemDetails

__all__ = ["SUBPROTOCOL", "Dialect", "MessageError", "Request", "choose_subprotocol"]

#: The W3C Web Thing Protocol's subprotocol name.
SUBPROTOCOL: Final = "webthingprotocol"


@attrs.frozen(kw_only=True)
class Request:
    """One command a message asked for, with what its reply needs to echo.

    ``context`` is the dialect's own (the Web Thing Protocol's envelope); ``tail``
    ends every notification this request's observation receives (``b""``: none).
    """

    command: Command
    context: Any = None
    tail: bytes = b""


class MessageError(RemoteProtocolError):
    """A message that cannot be served, with what the error reply should echo."""

    def __init__(self, error: RemoteProtocolError, context: Any = None) -> None:
        super().__init__(error.detail, status=error.status)
        self.context = context


class Dialect(Protocol):
    """One connection's codec. Implementations are pure: no trio, no sockets."""

    @property
    def encode_notification(self) -> Callable[[Notification], bytes]:
        """Encodes notifications for every connection of this dialect (see
        :data:`trio_things.fanout.observers.Encoder`): the same function for all of
        them, so observer sets encode once per dialect."""

    def decode(self, message: str | bytes) -> Sequence[Request]:
        """The requests in one message; raises :class:`MessageError` for a bad one."""

    def encode_reply(self, request: Request, reply: Reply) -> bytes | None:
        """The reply message to ``request`` (UTF-8 JSON), or ``None`` for none."""

    def encode_error(self, context: Any, problem: ProblemDetails) -> bytes:
        """The error message for a request that failed (``context`` as in
        :class:`MessageError` or :class:`Request`)."""


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """The subprotocol to echo: ours if offered, else none (browsers fail a handshake
    whose answer names a subprotocol they did not offer)."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None

