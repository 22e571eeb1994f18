"""Who may do what: bearer tokens, roles, who may cancel what, and what web pages may reach.

Pure: the HTTP binding and the WebSocket handshake hand in the headers they received, and
get back a :class:`Caller` or a :class:`~trio_things.errors.RemoteProtocolError` to answer
with. Nothing here touches a socket, so every rule is tested without one
(``docs/security.md`` says the same for operators).

* **Bearer tokens** (RFC 6750). With no token configured, everyone has full access (the
  server binds to 127.0.0.1 by default, and warns when it binds elsewhere without
  tokens). With tokens, every HTTP request and every WebSocket handshake must carry one
  in the ``Authorization: Bearer <token>`` header. Browsers cannot set headers on a
  WebSocket, so a handshake may carry it in the ``access_token`` query parameter (RFC
  6750 section 2.3) instead; an HTTP request may not: a URL ends up in logs, proxies and
  browser history, and every HTTP client can send the header. Tokens are compared in
  constant time, against every configured token, so the time an answer takes says
  nothing about how close a guess was.
* **Roles**: a read-only token may read, observe, subscribe and query; writing,
  invoking and cancelling answer 403.
* **Who may cancel**: an invocation remembers who invoked it (:attr:`Caller.identity`,
  a keyed hash of the token, never the token). Only that token may cancel it; a
  full-access token may also cancel invocations made without a token. Without tokens
  nobody has an identity, so everyone may cancel everything, as before.
* **Hosts** (DNS rebinding): a page on ``rebind.attacker.example`` whose name the
  attacker then points at 127.0.0.1 is, to the browser, same-origin with this server;
  only the ``Host`` it sends gives it away. A request whose ``Host`` names another host
  than the loopback names, the name the server is bound to and ``allowed_hosts`` is
  refused with 403. An IP address cannot be rebound, so an IP ``Host`` always passes.
* **Cross-site writes** (CSRF): a page on another site can make a browser send a
  "simple" POST (a form's content type, or none) without asking first. A request that
  changes something (POST, PUT, DELETE, PATCH) from an ``Origin`` that is neither the
  server's own nor allowed (``cors_origins``, ``allowed_origins``), or marked
  ``Sec-Fetch-Site: cross-site``, is refused with 403; and an action's body declared as
  anything but JSON is refused with 415 even when empty, which no form can avoid.
* **Origins** of WebSockets: a browser page from another site must not drive a
  WebSocket with the user's network position (cross-site WebSocket hijacking). A
  handshake whose ``Origin`` differs from the ``Host`` it addresses is refused with 403
  unless the origin is in ``allowed_origins``. Clients that are not browsers send no
  ``Origin`` and are not affected. ``cors_origins`` likewise lists the origins whose
  pages may call the HTTP API (CORS); none by default.

One job in one module, though it is long: one policy, :class:`AccessPolicy` and the
checks that apply it, every rule above reading the same configured tokens, hosts and
origins.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import re
import secrets
import urllib.parse
from collections.abc import Iterable
from typing import Any, Final

import attrs

from trio_things.errors import Forbidden, Unauthorized, UnsupportedMediaType
from trio_things.protocol import commands as c

__all__ = [
    "ANONYMOUS",
    "AccessPolicy",
    "Caller",
    "Role",
    "allow_test_host",
    "check_action_body",
    "check_cancel",
    "check_role",
    "identity_of",
]

#: RFC 6750 section 3: "the resource server MUST include the HTTP WWW-Authenticate
#: response header field" in a 401.
WWW_AUTHENTICATE: Final = 'Bearer realm="trio-things"'

#: Commands that change a Thing: refused to read-only tokens.
_WRITES: Final = (c.WriteProperty, c.WriteMultipleProperties, c.InvokeAction, c.CancelAction)

#: Methods that change something (RFC 9110 section 9.2.1: not "safe"); the ones a page
#: on another site must not make a browser send here.
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "DELETE", "PATCH"})

#: Host names every server answers to: loopback, which browsers resolve themselves
#: (never through DNS, so no attacker can rebind them).
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "[::1]")

#: A ``Host`` that is a host name or address and a port (RFC 3986 section 3.2.2 and
#: 3.2.3): the only kind a browser sends. Anything else (a ``/``, a space, a byte
#: beyond ASCII) comes from no browser, so from no rebinding attack either.
_AUTHORITY: Final = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]*)?")

#: Names every server in this process answers to, whatever its configuration: none,
#: unless the in-memory test harness (:mod:`trio_things.testing`, which no server
#: imports) is imported, which adds the name its servers answer as (``testserver``), as
#: Django's test runner adds ``testserver`` to ``ALLOWED_HOSTS``.
_TEST_HOSTS: Final[set[str]] = set()

#: The key of the identity hash, new in every process: an identity can be compared with
#: another, never turned back into a token, however short, even by someone who reads
#: the server's memory or a log line it might end up in.
_IDENTITY_KEY: Final = secrets.token_bytes(32)


class Role(enum.Enum):
    """What an authenticated client may do."""

    FULL = "full"
    READ_ONLY = "readonly"


@attrs.frozen
class Caller:
    """Who sent a request: what their token allows, and which token it was."""

    role: Role = Role.FULL
    identity: str | None = None
    """A keyed hash of the bearer token (:func:`identity_of`), never the token; None
    when no token was needed (the server requires none)."""


#: The caller when the server requires no token: full access, no identity.
ANONYMOUS: Final = Caller()


def identity_of(token: str) -> str:
    """The identity that stands for ``token`` in this process: an HMAC-SHA-256 under a
    random per-process key, so that the records that keep it (an invocation's invoker)
    hold nothing that would let anyone recover or test guesses of the token."""
    return hmac.new(_IDENTITY_KEY, token.encode(), hashlib.sha256).hexdigest()[:32]


def _tokens(values: Iterable[str]) -> tuple[str, ...]:
    tokens = tuple(values)
    for token in tokens:
        if not isinstance(token, str) or len(token) < 8 or token != token.strip():
            raise ValueError("tokens must be strings of at least 8 characters, "
                             "without surrounding spaces")
    return tokens


def _origins(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(value.rstrip("/").lower() for value in values)


def _hosts(values: Iterable[str]) -> tuple[str, ...]:
    hosts = []
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"allowed_hosts holds host names, not {value!r}")
        host = value.strip().lower().rstrip(".")
        bare = host.removeprefix(".")
        ipv6 = bare.startswith("[") and bare.endswith("]")
        if host != "*" and (not _AUTHORITY.fullmatch(bare) or (":" in bare and not ipv6)):
            raise ValueError(f"allowed_hosts holds host names without a scheme or port "
                             f"(any port is allowed), such as 'lab.example': not {value!r}")
        hosts.append(host)
    return tuple(hosts)


@attrs.frozen(kw_only=True)
class AccessPolicy:
    """The access rules of one server; the default lets every local program do
    everything, and no web page anything."""

    tokens: tuple[str, ...] = attrs.field(default=(), converter=_tokens, repr=False)
    """Bearer tokens with full access."""
    readonly_tokens: tuple[str, ...] = attrs.field(default=(), converter=_tokens, repr=False)
    """Bearer tokens that may only read, observe, subscribe and query."""
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=_origins)
    """Web origins (``https://lab.example``) whose pages may open WebSockets; ``*``: any."""
    cors_origins: tuple[str, ...] = attrs.field(default=(), converter=_origins)
    """Web origins whose pages may call the HTTP API (CORS); ``*``: any."""
    allowed_hosts: tuple[str, ...] = attrs.field(default=(), converter=_hosts)
    """Host names (any port) requests may address besides the loopback names and the
    name the server is bound to: ``lab.example``; ``.lab.example`` for it and every
    name under it; ``*``: any (no DNS rebinding protection)."""

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

    def allowing_host(self, host: str) -> AccessPolicy:
        """This policy, with ``host`` (a name, any port) allowed too."""
        name = _host_name(host)
        if name is None or self.host_allowed(host, bound=""):
            return self
        return attrs.evolve(self, allowed_hosts=(*self.allowed_hosts, name))

    def security_definitions(self) -> dict[str, dict[str, Any]]:
        """The TD ``securityDefinitions`` that describe this policy."""
        if not self.enabled:
            return {"nosec_sc": {"scheme": "nosec"}}
        return {"bearer_sc": {"scheme": "bearer", "in": "header", "name": "Authorization"}}

    # ----------------------------------------------------------------------- tokens

    def caller(self, *, authorization: str | None, query: str = "",
               query_token: bool = False) -> Caller:
        """Who sent a request with this ``Authorization`` header and URL query: their
        role and identity (:data:`ANONYMOUS` when no token is required).

        The ``access_token`` query parameter counts only where a browser can send no
        header (``query_token``): a WebSocket handshake, an ``EventSource`` stream.

        Raises :class:`~trio_things.errors.Unauthorized` (401) when tokens are required
        and none, or an unknown one, was given.
        """
        if not self.enabled:
            return ANONYMOUS
        token = _bearer(authorization, query if query_token else "")
        if token is None:
            if not query_token and _query_token(query) is not None:
                raise Unauthorized("send the bearer token in the Authorization header "
                                   "(Authorization: Bearer <token>); ?access_token= is "
                                   "accepted only on WebSocket handshakes and event "
                                   "streams, as URLs end up in logs")
            raise Unauthorized("this server requires a bearer token (Authorization: Bearer "
                               "<token>, or ?access_token=<token> for WebSockets and "
                               "event streams)")
        given = token.encode()
        # Compare with every token, whatever matches: no early exit to time.
        full = [hmac.compare_digest(given, t.encode()) for t in self.tokens]
        readonly = [hmac.compare_digest(given, t.encode()) for t in self.readonly_tokens]
        if any(full):
            return Caller(Role.FULL, identity_of(token))
        if any(readonly):
            return Caller(Role.READ_ONLY, identity_of(token))
        raise Unauthorized("the bearer token is not valid")

    def authenticate(self, *, authorization: str | None, query: str = "",
                     query_token: bool = False) -> Role:
        """The role of :meth:`caller`."""
        return self.caller(authorization=authorization, query=query,
                           query_token=query_token).role

    # ----------------------------------------------------------------------- browsers

    def host_allowed(self, host: str | None, *, bound: str) -> bool:
        """Whether a request may address ``host`` (its ``Host`` header) on a server
        bound to ``bound`` (``config.host``, a port after it is ignored).

        A missing ``Host`` (HTTP/1.0), an IP address, and a value that is no host name
        at all pass: none is a name a browser resolved through DNS, which rebinding
        needs. A name passes if it is a loopback name, the name the server is bound to,
        or in ``allowed_hosts``; case and a trailing dot do not matter.
        """
        if not host or "*" in self.allowed_hosts:
            return True
        name = _host_name(host)
        if name is None:
            return True
        if name in LOOPBACK_HOSTS or name == _host_name(bound) or name in _TEST_HOSTS:
            return True
        return any(name == allowed or (allowed.startswith(".") and (
            name == allowed[1:] or name.endswith(allowed))) for allowed in self.allowed_hosts)

    def check_host(self, host: str | None, *, bound: str) -> None:
        """Refuse (403) a request that addresses a host this server is not known as:
        DNS rebinding (see :meth:`host_allowed`)."""
        if not self.host_allowed(host, bound=bound):
            name = _host_name(host or "") or host
            raise Forbidden(
                f"this server does not answer to the host name '{name}' (protection "
                f"against DNS rebinding); if that is its name, add it to allowed_hosts "
                f'in [server.access]: allowed_hosts = ["{name}"]')

    def check_write_origin(self, *, method: str, origin: str | None,
                           sec_fetch_site: str | None, host: str | None) -> None:
        """Refuse (403) a request that changes something (:data:`UNSAFE_METHODS`) sent
        by a page of another site (CSRF): its ``Origin`` is not the server's own
        (``Host``) nor in ``cors_origins`` or ``allowed_origins``, or, without an
        ``Origin``, it says ``Sec-Fetch-Site: cross-site``. Programs that are not
        browsers send neither header and are not affected."""
        if method.upper() not in UNSAFE_METHODS:
            return
        if origin is not None:
            if self._origin_allowed(origin, host):
                return
            raise Forbidden(
                f"{method.upper()} requests from pages of origin {origin!r} are not allowed "
                "(a page of another site may not change anything here); to allow that "
                "site, add its origin to cors_origins in [server.access]")
        if (sec_fetch_site or "").strip().lower() == "cross-site":
            raise Forbidden(f"{method.upper()} requests from pages of another site "
                            "(Sec-Fetch-Site: cross-site) are not allowed; to allow a site, "
                            "add its origin to cors_origins in [server.access]")

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        listed = (*self.cors_origins, *self.allowed_origins)
        normalized = origin.strip().rstrip("/").lower()
        if "*" in listed or normalized in listed:
            return True
        return _same_origin(normalized, host)

    def check_websocket_origin(self, *, origin: str | None, host: str | None) -> None:
        """Refuse (403) a browser's handshake from another site unless it is allowed."""
        if origin is None or "*" in self.allowed_origins:
            return
        normalized = origin.rstrip("/").lower()
        if normalized in self.allowed_origins:
            return
        if _same_origin(normalized, host):
            return  # same origin: the page came from this server
        raise Forbidden(f"WebSocket connections from origin {origin!r} are not allowed; "
                        "add it to allowed_origins")

    def check_stream_origin(self, *, origin: str | None, host: str | None) -> None:
        """Refuse (403) an event stream opened by a page of another site that is not in
        ``cors_origins`` or ``allowed_origins``: it could not read the stream, yet the
        server would hold it open and fan out to it."""
        if origin is None or self._origin_allowed(origin, host):
            return
        raise Forbidden(f"event streams from pages of origin {origin!r} are not allowed; "
                        "add it to cors_origins in [server.access]")

    def cors_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request from ``origin``."""
        if origin is None or not self.cors_origins:
            return None
        if "*" in self.cors_origins or origin.rstrip("/").lower() in self.cors_origins:
            return origin
        return None


def allow_test_host(host: str) -> None:
    """Let every server in this process answer to ``host`` (a name; a port is ignored).

    For the in-memory test harness only (:mod:`trio_things.testing` calls it for its
    ``testserver`` when imported): tests reach servers configured any way, the default
    included, under that name, which no browser resolves through DNS in a test run."""
    name = _host_name(host)
    if name is not None:
        _TEST_HOSTS.add(name)


def check_role(role: Role, command: c.Command) -> None:
    """Refuse (403) a command that ``role`` may not run."""
    if role is Role.READ_ONLY and isinstance(command, _WRITES):
        raise Forbidden("this token may only read, observe, subscribe and query")


def check_action_body(command: c.Command, content_type: str | None) -> None:
    """Refuse (415) an action invoked with a body declared as anything but JSON, even an
    empty one: the content types an HTML form (or a "simple" fetch) can send from any
    site without asking first are ``text/plain``, ``application/x-www-form-urlencoded``
    and ``multipart/form-data``, and an empty body of those must not run an action.

    No ``Content-Type`` at all passes, as a body without one is read as JSON: only a
    script can send that, and a browser then sends ``Origin``, which
    :meth:`AccessPolicy.check_write_origin` judges; and clients post empty bodies so
    (``trio_things.client`` for an action without input, ``curl -X POST``).
    """
    if not isinstance(command, c.InvokeAction) or content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"an action's input must be declared application/json, even when empty, not "
            f"{media_type or 'empty'!r} (Content-Type: application/json)")


def check_cancel(caller: Caller, invoker: str | None) -> None:
    """Refuse (403) ``caller`` cancelling an invocation invoked by ``invoker`` (an
    identity, None: invoked without a token).

    A token may cancel what it invoked; a full-access token may also cancel what was
    invoked without a token (by the server's own code, or before tokens were needed).
    Without tokens every caller and every invoker is anonymous, so anyone may cancel
    anything. The invoker's role is checked before (:func:`check_role`).
    """
    if caller.identity == invoker:
        return
    if invoker is None and caller.role is Role.FULL:
        return
    raise Forbidden("only the token that invoked this action may cancel it")


# --------------------------------------------------------------------------- internals


def _host_name(host: str) -> str | None:
    """The name in a ``Host`` value (lower case, no port, no trailing dot); None for an
    IP address, or for a value that is no host and port at all."""
    match = _AUTHORITY.fullmatch(host.strip())
    if match is None:
        return None
    name = match["host"].lower().rstrip(".")
    if name.startswith("["):
        return None  # an IPv6 literal (or IPvFuture): no name to rebind
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` (normalized) names the host and port ``host`` addresses."""
    return host is not None and urllib.parse.urlsplit(origin).netloc == host.strip().lower()


def _query_token(query: str) -> str | None:
    values = urllib.parse.parse_qs(query).get("access_token")
    return values[0] if values else None


def _bearer(authorization: str | None, query: str) -> str | None:
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return _query_token(query)
