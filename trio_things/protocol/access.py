"""Who may do what: bearer tokens, read-only roles, and which web origins may connect.

Pure: the HTTP binding and the WebSocket handshake hand in the headers they received, and
get back a :class:`Role` or a :class:`~trio_things.errors.RemoteProtocolError` to answer
with. Nothing here touches a socket, so every rule is tested without one.

* **Bearer tokens** (RFC 6750). With no token configured, everyone has full access (the
  server binds to 127.0.0.1 by default, and warns when it binds elsewhere without
  tokens). With tokens, every HTTP request and every WebSocket handshake must carry one:
  in the ``Authorization: Bearer <token>`` header, or, for browsers, which cannot set
  headers on a WebSocket, in the ``access_token`` query parameter (RFC 6750 section 2.3).
  Tokens are compared in constant time, against every configured token, so the time an
  answer takes says nothing about how close a guess was.
* **Roles**: a read-only token may read, observe, subscribe and query; writing,
  invoking and cancelling answer 403.
* **Origins**: a browser page from another site must not drive a WebSocket with the
  user's network position (cross-site WebSocket hijacking). A handshake whose ``Origin``
  differs from the ``Host`` it addresses is refused with 403 unless the origin is in
  ``allowed_origins``. Clients that are not browsers send no ``Origin`` and are not
  affected. ``cors_origins`` likewise lists the origins whose pages may call the HTTP API
  (CORS); none by default.
"""

from __future__ import annotations

import enum
import hmac
import urllib.parse
from collections.abc import Iterable
from typing import Any, Final

import attrs

from trio_things.errors import Forbidden, Unauthorized
from trio_things.protocol import commands as c

__all__ = ["AccessPolicy", "Role", "check_role"]

#: RFC 6750 section 3: "the resource server MUST include the HTTP WWW-Authenticate
#: response header field" in a 401.
WWW_AUTHENTICATE: Final = 'Bearer realm="trio-things"'

#: Commands that change a Thing: refused to read-only tokens.
_WRITES: Final = (c.WriteProperty, c.WriteMultipleProperties, c.InvokeAction, c.CancelAction)


class Role(enum.Enum):
    """What an authenticated client may do."""

    FULL = "full"
    READ_ONLY = "readonly"


def _tokens(values: Iterable[str]) -> tuple[str, ...]:
    tokens = tuple(values)
    for token in tokens:
        if not isinstance(token, str) or len(token) < 8 or token != token.strip():
            raise ValueError("tokens must be strings of at least 8 characters, "
                             "without surrounding spaces")
    return tokens


def _origins(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(value.rstrip("/").lower() for value in values)


@attrs.frozen(kw_only=True)
class AccessPolicy:
    """The access rules of one server; the default lets everyone do everything."""

    tokens: tuple[str, ...] = attrs.field(default=(), converter=_tokens, repr=False)
    """Bearer tokens with full access."""
    readonly_tokens: tuple[str, ...] = attrs.field(default=(), converter=_tokens, repr=False)
    """Bearer tokens that may only read, observe, subscribe and query."""
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=_origins)
    """Web origins (``https://lab.example``) whose pages may open WebSockets; ``*``: any."""
    cors_origins: tuple[str, ...] = attrs.field(default=(), converter=_origins)
    """Web origins whose pages may call the HTTP API (CORS); ``*``: any."""

    @property
    def enabled(self) -> bool:
        """Whether tokens are required."""
        return bool(self.tokens or self.readonly_tokens)

    def with_tokens_from(self, environ: dict[str, str] | Any) -> AccessPolicy:
        """This policy plus the comma-separated tokens in ``TRIO_THINGS_TOKENS`` and
        ``TRIO_THINGS_READONLY_TOKENS`` (secrets belong in the environment, not in a
        configuration file that is shared)."""
        def split(name: str) -> tuple[str, ...]:
            return tuple(t.strip() for t in environ.get(name, "").split(",") if t.strip())

        return attrs.evolve(self, tokens=self.tokens + split("TRIO_THINGS_TOKENS"),
                            readonly_tokens=(self.readonly_tokens
                                             + split("TRIO_THINGS_READONLY_TOKENS")))

    def security_definitions(self) -> dict[str, dict[str, Any]]:
        """The TD ``securityDefinitions`` that describe this policy."""
        if not self.enabled:
            return {"nosec_sc": {"scheme": "nosec"}}
        return {"bearer_sc": {"scheme": "bearer", "in": "header", "name": "Authorization"}}

    def authenticate(self, *, authorization: str | None, query: str) -> Role:
        """The role of a request with this ``Authorization`` header and URL query.

        Raises :class:`~trio_things.errors.Unauthorized` (401) when tokens are required
        and none, or an unknown one, was given.
        """
        if not self.enabled:
            return Role.FULL
        token = _bearer(authorization, query)
        if token is None:
            raise Unauthorized("this server requires a bearer token (Authorization: Bearer "
                               "<token>, or ?access_token=<token> for WebSockets)")
        given = token.encode()
        # Compare with every token, whatever matches: no early exit to time.
        full = [hmac.compare_digest(given, t.encode()) for t in self.tokens]
        readonly = [hmac.compare_digest(given, t.encode()) for t in self.readonly_tokens]
        if any(full):
            return Role.FULL
        if any(readonly):
            return Role.READ_ONLY
        raise Unauthorized("the bearer token is not valid")

    def check_websocket_origin(self, *, origin: str | None, host: str | None) -> None:
        """Refuse (403) a browser's handshake from another site unless it is allowed."""
        if origin is None or "*" in self.allowed_origins:
            return
        normalized = origin.rstrip("/").lower()
        if normalized in self.allowed_origins:
            return
        if host is not None and urllib.parse.urlsplit(normalized).netloc == host.lower():
            return  # same origin: the page came from this server
        raise Forbidden(f"WebSocket connections from origin {origin!r} are not allowed; "
                        "add it to allowed_origins")

    def cors_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request from ``origin``."""
        if origin is None or not self.cors_origins:
            return None
        if "*" in self.cors_origins or origin.rstrip("/").lower() in self.cors_origins:
            return origin
        return None


def check_role(role: Role, command: c.Command) -> None:
    """Refuse (403) a command that ``role`` may not run."""
    if role is Role.READ_ONLY and isinstance(command, _WRITES):
        raise Forbidden("this token may only read, observe, subscribe and query")


def _bearer(authorization: str | None, query: str) -> str | None:
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    values = urllib.parse.parse_qs(query).get("access_token")
    return values[0] if values else None
