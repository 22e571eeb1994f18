"""Where the client's bytes go: URLs split into endpoints, and the stream opener seam.

Every connection the client makes, HTTP or WebSocket, starts with one call to an
:class:`OpenStream`. The default, :func:`open_tcp_stream`, opens TCP (and TLS for
``https``/``wss``); tests pass one that returns an in-memory stream served by a
:class:`~trio_things.server.ThingServer` in the same ``trio.run``, so the whole client
runs against the real server without a socket.
"""

from __future__ import annotations

import functools
import os
import ssl
import urllib.parse
from typing import Final, Protocol

import attrs
import trio

from trio_things.client.errors import Unreachable

__all__ = ["DEFAULT_PORTS", "Endpoint", "OpenStream", "connect_stream", "open_tcp_stream"]

#: RFC 9110 section 4.2 and RFC 6455 section 3: the ports a URL implies.
DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_TLS_SCHEMES: Final = frozenset({"https", "wss"})
_PLAIN: Final = {"https": "http", "wss": "ws", "http": "http", "ws": "ws"}


class OpenStream(Protocol):
    """Opens a byte stream to ``host:port`` (TLS when ``tls``); raises ``OSError`` when
    it cannot. The client owns and closes every stream it gets."""

    async def __call__(self, host: str, port: int, *, tls: bool) -> trio.abc.Stream: ...


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


async def open_tcp_stream(host: str, port: int, *, tls: bool) -> trio.abc.Stream:
    """The default :class:`OpenStream`: TCP, with TLS verified against the system's
    certificate authorities for ``https`` and ``wss``.

    The TLS handshake is done here, not at the first request, so that its failure is
    a failure to connect (an :class:`ssl.SSLError`, which is an ``OSError``) that
    :func:`connect_stream` can explain, rather than a connection that broke."""
    if not tls:
        return await trio.open_tcp_stream(host, port)
    stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=_tls_context(),
                                                 https_compatible=True)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as error:
        await trio.aclose_forcefully(stream)
        cause = error.__cause__
        if isinstance(cause, OSError):
            raise cause from None
        raise ssl.SSLError(f"the TLS handshake failed: {cause or error!r}") from error
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


@attrs.frozen(kw_only=True)
class Endpoint:
    """A URL as a connection needs it: scheme, host, port, and the request target."""

    scheme: str
    host: str
    port: int
    target: str

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """Split an absolute ``http``, ``https``, ``ws`` or ``wss`` URL; ``ValueError``
        for any other."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an absolute http(s) or ws(s) URL: {url!r}")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            raise ValueError(f"bad port in {url!r}") from None
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(scheme=scheme, host=parts.hostname, port=port, target=target)

    @property
    def tls(self) -> bool:
        """Whether the scheme asks for TLS."""
        return self.scheme in _TLS_SCHEMES

    @property
    def host_header(self) -> str:
        """The ``Host`` header (RFC 9110 section 7.2): the port only when not implied,
        an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def plain_url(self) -> str:
        """This endpoint's URL without TLS (``https`` -> ``http``, ``wss`` -> ``ws``),
        the port kept: what to try when the server does not speak TLS."""
        scheme = _PLAIN[self.scheme]
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == DEFAULT_PORTS[scheme] else f":{self.port}"
        return f"{scheme}://{host}{port}{self.target}"

    @property
    def origin(self) -> tuple[str, str, int]:
        """What connections are pooled by: one connection serves one origin."""
        return (self.scheme, self.host, self.port)


async def connect_stream(open_stream: OpenStream, endpoint: Endpoint) -> trio.abc.Stream:
    """``open_stream`` for ``endpoint``, its ``OSError`` turned into
    :class:`~trio_things.client.errors.Unreachable` naming where we tried to go (and,
    for a failed TLS handshake, what to try instead)."""
    try:
        return await open_stream(endpoint.host, endpoint.port, tls=endpoint.tls)
    except ssl.SSLError as error:
        raise Unreachable(_tls_failure(endpoint, error)) from error
    except OSError as error:
        raise Unreachable(f"cannot reach {endpoint.host_header}: {_reason(error)}"
                          ) from error


#: OpenSSL's reasons for a handshake answered by something that is not TLS: a plain
#: HTTP server answering a ClientHello with ``HTTP/1.1 400``, say.
_NOT_TLS: Final = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE",
                             "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"})


def _tls_failure(endpoint: Endpoint, error: ssl.SSLError) -> str:
    """Why the TLS handshake failed; where the server seems to speak plain http (or
    ws), which URL to try instead."""
    where = f"the TLS handshake with {endpoint.host_header} failed"
    code: str | None = getattr(error, "reason", None)  # OpenSSL's, when it raised
    reason = code or error.strerror or str(error)
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"{where}: {error.verify_message or reason}"
    plain = _PLAIN[endpoint.scheme]
    if code in _NOT_TLS:
        return (f"{where} ({reason}): the server speaks plain {plain}, not "
                f"{endpoint.scheme}; try {endpoint.plain_url}")
    return f"{where} ({reason}); if the server speaks plain {plain}, try {endpoint.plain_url}"


def _reason(error: OSError) -> str:
    """Why a connection failed, in the words of the first attempt that did (trio
    wraps one error per address tried, under a summary that names none)."""
    cause: BaseException | None = error
    while isinstance(cause, OSError | BaseExceptionGroup):
        if isinstance(cause, OSError) and isinstance(cause.errno, int) and cause.errno > 0:
            return os.strerror(cause.errno)  # trio's own strerror repeats the address
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror  # a resolver error (gaierror: negative errno)
        cause = (cause.exceptions[0] if isinstance(cause, BaseExceptionGroup)
                 else cause.__cause__)
    return str(error) or type(error).__name__
