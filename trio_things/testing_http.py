"""The test harness's raw HTTP client: :class:`HttpConnection`, one keep-alive HTTP/1.1
connection over any trio stream, and the :class:`Response` it reads; with the
harness's defaults (host, timeout) it shares with :mod:`trio_things.testing`.

Import them from :mod:`trio_things.testing`, which re-exports them; this module knows
nothing of the server, so it holds what works against any HTTP server.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import attrs
import h11
import orjson
import trio

__all__ = ["DEFAULT_HOST", "DEFAULT_TIMEOUT", "HttpConnection", "Response"]

#: Seconds a wait on the server may take before it fails with :exc:`trio.TooSlowError`.
DEFAULT_TIMEOUT: Final = 60.0

#: The host the in-memory server answers as: its URLs are ``http://testserver/...``.
DEFAULT_HOST: Final = "testserver"


@attrs.frozen
class Response:
    """An HTTP response, read whole."""

    status: int
    headers: Mapping[str, str]
    """Header names in lower case; a header sent several times has its values joined
    with ``", "`` (RFC 9110 section 5.3)."""
    body: bytes

    def json(self) -> Any:
        """The body, parsed as JSON (:exc:`orjson.JSONDecodeError`, a ``ValueError``,
        if it is not)."""
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        """The body, decoded as UTF-8."""
        return self.body.decode()


class HttpConnection:
    """One keep-alive HTTP/1.1 connection over any trio stream, for tests: requests go
    one after another, each read whole. Made by :meth:`InMemoryServer.http`; or wrap a
    stream of your own (``HttpConnection(await trio.open_tcp_stream(host, port))``).

    It sends exactly what it is given (plus ``Host``, ``Content-Length`` and, for
    ``json``, ``Content-Type``) and checks nothing about the answer, so it can probe
    what a client library would refuse to send. For the Thing's operations, prefer
    ``trio_things.client`` (:meth:`InMemoryServer.connect`).
    """

    def __init__(self, stream: trio.abc.Stream, *, host: str = DEFAULT_HOST,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.stream = stream
        """The stream requests go over; closing it ends the connection."""
        self.host = host
        """The ``Host`` header of every request (unless ``headers`` name one)."""
        self.timeout = timeout
        """Seconds a request may take, response read, before :exc:`trio.TooSlowError`
        (None: no bound). The connection cannot be used after a timeout."""
        self._h11 = h11.Connection(h11.CLIENT)

    async def request(self, method: str, path: str, *, json: Any = None,
                      body: bytes | None = None, headers: Mapping[str, str] | None = None
                      ) -> Response:
        """Send ``method path`` and return the response.

        ``json`` (not None) is sent as a JSON body with ``Content-Type:
        application/json``; else ``body``, else no body (``Content-Length: 0``). To
        send JSON ``null``, pass ``body=b"null"`` and the content type. ``headers``
        are added, replacing the defaults they name.

        Raises:
            ConnectionError: the server closed the connection instead of answering.
            trio.TooSlowError: no whole response within :attr:`timeout`.
        """
        with _fail_after(self.timeout, f"no answer to {method} {path}"):
            return await self._request(method, path, json=json, body=body,
                                       headers=headers or {})

    async def _request(self, method: str, path: str, *, json: Any, body: bytes | None,
                       headers: Mapping[str, str]) -> Response:
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        all_headers = {"host": self.host} | {k.lower(): v for k, v in headers.items()}
        if json is not None:
            body = orjson.dumps(json)
            all_headers.setdefault("content-type", "application/json")
        body = body or b""
        all_headers["content-length"] = str(len(body))
        request = h11.Request(method=method, target=path, headers=list(all_headers.items()))
        await self.stream.send_all(b"".join(
            self._h11.send(event) or b""
            for event in (request, h11.Data(data=body), h11.EndOfMessage())))
        response: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                self._h11.receive_data(bytes(await self.stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")
        assert response is not None
        received: dict[str, str] = {}
        for key, value in response.headers:
            name = key.decode().lower()
            received[name] = (f"{received[name]}, {value.decode()}" if name in received
                              else value.decode())
        return Response(status=response.status_code, headers=received,
                        body=b"".join(chunks))

    async def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> Response:
        """``GET path``."""
        return await self.request("GET", path, headers=headers)

    async def put(self, path: str, json: Any, *,
                  headers: Mapping[str, str] | None = None) -> Response:
        """``PUT path`` with ``json`` as the body: write a property."""
        return await self.request("PUT", path, json=json, headers=headers)

    async def post(self, path: str, json: Any = None, *,
                   headers: Mapping[str, str] | None = None) -> Response:
        """``POST path`` with ``json`` as the body: invoke an action."""
        return await self.request("POST", path, json=json, headers=headers)

    async def delete(self, path: str, *, headers: Mapping[str, str] | None = None
                     ) -> Response:
        """``DELETE path``: cancel an invocation."""
        return await self.request("DELETE", path, headers=headers)


@contextmanager
def _fail_after(seconds: float | None, what: str) -> Iterator[None]:
    """``trio.fail_after(seconds)``, its TooSlowError saying what was waited for."""
    if seconds is None:
        yield
        return
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise trio.TooSlowError(f"{what} within {seconds:g} s") from None
