"""A small HTTP/1.1 client: h11 on trio streams, with keep-alive.

Why not a general HTTP library: a Thing client makes small JSON requests to a handful
of servers, and h11 (a dependency already) gives a correct HTTP/1.1 state machine with
no I/O of its own, like the server side (:mod:`trio_things.transport.http`).

Theory of operation: one request at a time per connection; a connection whose
exchange ended cleanly (both sides ``DONE``) goes back to a small pool per origin and
serves the next request, otherwise it is closed. Concurrent requests each take their
own connection. A pooled connection may have been closed by the server meanwhile (its
idle timeout); an idempotent request that fails on one before any response byte
arrived is retried once on a fresh connection (RFC 9112 section 9.3.1 allows exactly
this), and connections idle for longer than :data:`MAX_IDLE` are not reused at all.

Resource handling: the :class:`HttpClient` owns every connection; :meth:`aclose`
closes the pooled ones, and a request that is cancelled or fails closes its own, so a
cancelled request never leaves half an exchange on a pooled connection.

Downloads (a blob's bytes, :meth:`HttpClient.download`) are the one kind of response
not read whole: the body is handed out piece by piece as it arrives, each piece within
the timeout (a slow download is fine as long as it moves), and the connection goes back
to the pool only if the body was read to its end.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Final

import attrs
import h11
import orjson
import trio

from trio_things.client.errors import ConnectionLost, ServerError, Timeout
from trio_things.client.streams import Endpoint, OpenStream, connect_stream
from trio_things.client.values import JsonValue

__all__ = ["MAX_IDLE", "Download", "HttpClient", "HttpResponse"]

#: Seconds a pooled connection may sit idle and still be reused. Well under the idle
#: timeouts servers use (60 s for trio-things), so a reused connection is rarely one
#: the server is closing at that moment.
MAX_IDLE: Final = 30.0
#: Idle connections kept per origin; more concurrent requests open more connections,
#: which are closed when they are done.
MAX_POOLED: Final = 4
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_RECEIVE_BYTES: Final = 64 * 1024
_ACCEPT: Final = ("application/json, application/td+json, application/problem+json;q=0.9, "
                  "*/*;q=0.1")
_USER_AGENT: Final = "trio-things-client/0.1"


@attrs.frozen(kw_only=True)
class HttpResponse:
    """A whole response: status, headers (names lower-cased; a field sent several times
    has its values joined with ``", "``, as RFC 9110 section 5.3 allows: two ``Link``
    fields, say) and body.

    A response received, not the server's :class:`trio_things.transport.http.
    HttpResponse` (one to send), which the client may not import."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def json(self) -> JsonValue:
        """The body parsed as JSON; ``None`` when it is empty (a 204, say).

        Raises :class:`~trio_things.client.errors.ServerError` when it is not JSON: the
        server broke the contract of the form we used.
        """
        if not self.body:
            return None
        try:
            value: JsonValue = orjson.loads(self.body)
        except orjson.JSONDecodeError as error:
            raise ServerError(f"{self.url} answered {self.status} with a body that is not "
                              f"JSON: {error}") from None
        return value

    def json_or_text(self) -> JsonValue:
        """The body as JSON if it is, else as text (for error answers)."""
        try:
            return self.json()
        except ServerError:
            return self.body.decode("utf-8", "replace")


def _fields(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header fields by lower-cased name; the values of a repeated field joined with
    ``", "`` in order (RFC 9110 section 5.3), a value repeated verbatim kept once."""
    fields: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        earlier = fields.get(name)
        fields[name] = value if earlier is None or earlier == value else f"{earlier}, {value}"
    return fields


class _Stale(Exception):
    """A reused connection failed before any response byte came: safe to retry once."""


@attrs.define(eq=False)
class _Connection:
    stream: trio.abc.Stream
    protocol: h11.Connection = attrs.field(factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0
    reused: bool = False

    async def exchange(self, request: h11.Request, body: bytes, *, limit: int, url: str
                       ) -> HttpResponse:
        """Send a request with its ``body``, read the whole response (ServerError past
        ``limit`` bytes of body)."""
        response = await self.begin(request, body, url=url)
        chunks: list[bytes] = []
        size = 0
        while (piece := await self.body_piece(url=url)) is not None:
            size += len(piece)
            if size > limit:
                raise ServerError(f"{url}: the response is larger than {limit} bytes")
            chunks.append(piece)
        return HttpResponse(status=response.status_code, headers=_fields(response.headers),
                            body=b"".join(chunks), url=url)

    async def begin(self, request: h11.Request, body: bytes = b"", *, url: str
                    ) -> h11.Response:
        """Send a request (and its ``body``) and read the response's head (its body is
        read with :meth:`body_piece`). A reused connection that fails before any byte
        of the response came raises :class:`_Stale`: the request may be sent again."""
        received_any = False
        try:
            await self.stream.send_all(b"".join(
                self.protocol.send(event) or b""
                for event in (request, h11.Data(data=body), h11.EndOfMessage())))
            while True:
                event = self.protocol.next_event()
                if event is h11.NEED_DATA:
                    data = await self.stream.receive_some(_RECEIVE_BYTES)
                    received_any = received_any or bool(data)
                    self.protocol.receive_data(bytes(data))
                elif isinstance(event, h11.Response):
                    return event
                elif isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("the server closed the connection")
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError,
                OSError) as error:
            if self.reused and not received_any:
                raise _Stale() from error
            raise ConnectionLost(f"{url}: the connection broke: {error}") from error

    async def body_piece(self, *, url: str) -> bytes | None:
        """The next piece of the response's body as it arrives; None at its end."""
        try:
            while True:
                event = self.protocol.next_event()
                if event is h11.NEED_DATA:
                    self.protocol.receive_data(bytes(
                        await self.stream.receive_some(_RECEIVE_BYTES)))
                elif isinstance(event, h11.Data):
                    return bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    return None
                elif isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("the server closed the connection")
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError,
                OSError) as error:
            raise ConnectionLost(f"{url}: the connection broke: {error}") from error

    @property
    def reusable(self) -> bool:
        return self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE


class Download:
    """A response whose body is read as it arrives: :meth:`HttpClient.download`."""

    def __init__(self, *, head: h11.Response, url: str, connection: _Connection,
                 timeout: float) -> None:
        self.status = head.status_code
        self.headers: Mapping[str, str] = _fields(head.headers)
        """Names lower-cased; a repeated field's values joined, as :class:`HttpResponse`'s."""
        self.url = url
        self.finished = False
        """Whether the whole body was read."""
        self._connection = connection
        self._timeout = timeout

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    @property
    def length(self) -> int | None:
        """The body's ``Content-Length``, if the server sent one."""
        value = self.headers.get("content-length", "")
        return int(value) if value.isdigit() else None

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body's pieces as they arrive; :exc:`~trio_things.client.errors.Timeout`
        when none comes within the timeout, ConnectionLost when the connection breaks."""
        while (piece := await self._next()) is not None:
            yield piece

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (ServerError past ``limit`` bytes)."""
        pieces: list[bytes] = []
        size = 0
        async for piece in self.chunks():
            size += len(piece)
            if limit is not None and size > limit:
                raise ServerError(f"{self.url}: the response is larger than {limit} bytes")
            pieces.append(piece)
        return b"".join(pieces)

    async def _next(self) -> bytes | None:
        if self.finished:
            return None
        with trio.move_on_after(self._timeout):
            piece = await self._connection.body_piece(url=self.url)
            if piece is None:
                self.finished = True
            return piece
        raise Timeout(f"GET {self.url}: nothing received for {self._timeout:g} s")


class HttpClient:
    """Keep-alive HTTP/1.1 to any number of origins.

    ``headers_for`` gives the extra headers of a request to an endpoint (an
    ``Authorization`` header only where the token belongs, say); ``timeout`` bounds
    each request, connecting included.
    """

    def __init__(self, open_stream: OpenStream, *, timeout: float,
                 headers_for: Callable[[Endpoint], Sequence[tuple[str, str]]] = lambda _: (),
                 max_response_bytes: int = 64 * 1024 * 1024) -> None:
        self._open_stream = open_stream
        self._timeout = timeout
        self._headers_for = headers_for
        self._max_response_bytes = max_response_bytes
        self._pool: dict[tuple[str, str, int], collections.deque[_Connection]] = {}
        self._closed = False

    async def request(self, method: str, url: str, *, json: JsonValue = None,
                      send_body: bool = False) -> HttpResponse:
        """Send one request and read the whole response.

        ``json`` is sent as the body when ``send_body`` (so that ``null`` can be sent).
        Any status is returned, errors included: what a status means depends on the
        operation, which the caller knows.

        Raises:
            Unreachable: no connection could be made.
            ConnectionLost: the connection broke during the exchange.
            Timeout: no whole response within the timeout.
        """
        if self._closed:
            raise ConnectionLost("the client is closed")
        endpoint = Endpoint.from_url(url)
        body = orjson.dumps(json) if send_body else b""
        headers = [("host", endpoint.host_header), ("user-agent", _USER_AGENT),
                   ("accept", _ACCEPT), *self._headers_for(endpoint),
                   ("content-length", str(len(body)))]
        if send_body:
            headers.append(("content-type", "application/json"))
        request = h11.Request(method=method, target=endpoint.target, headers=headers)
        limit = self._timeout
        with trio.move_on_after(limit) as scope:
            return await self._send(endpoint, method, request, body, url)
        assert scope.cancelled_caught
        raise Timeout(f"{method} {url}: no answer within {limit:g} s")

    async def _send(self, endpoint: Endpoint, method: str, request: h11.Request, body: bytes,
                    url: str) -> HttpResponse:
        for _attempt in range(2):
            connection = await self._take(endpoint)
            if connection is None:
                connection = _Connection(stream=await connect_stream(self._open_stream,
                                                                     endpoint))
            try:
                response = await connection.exchange(
                    request, body, limit=self._max_response_bytes, url=url)
            except _Stale as stale:
                await trio.aclose_forcefully(connection.stream)
                if method in _IDEMPOTENT:
                    continue
                raise ConnectionLost(f"{url}: the connection broke: {stale.__cause__}"
                                     ) from stale.__cause__
            except BaseException:
                await trio.aclose_forcefully(connection.stream)
                raise
            await self._give_back(endpoint, connection)
            return response
        raise ConnectionLost(f"{url}: the connection broke twice")  # pragma: no cover

    @asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[Download]:
        """``GET url``, for the block, its body read as it arrives (see the module):
        the head within the timeout, then each piece within it.

        Raises what :meth:`request` raises. Whatever the status, the body is the
        caller's to read; a connection whose body was not read to its end is closed.
        """
        if self._closed:
            raise ConnectionLost("the client is closed")
        endpoint = Endpoint.from_url(url)
        request = h11.Request(method="GET", target=endpoint.target, headers=[
            ("host", endpoint.host_header), ("user-agent", _USER_AGENT), ("accept", "*/*"),
            *self._headers_for(endpoint)])
        with trio.move_on_after(self._timeout) as scope:
            connection, head = await self._begin(endpoint, request, url)
        if scope.cancelled_caught:
            raise Timeout(f"GET {url}: no answer within {self._timeout:g} s")
        download = Download(head=head, url=url, connection=connection, timeout=self._timeout)
        try:
            yield download
        finally:
            if download.finished:
                await self._give_back(endpoint, connection)
            else:
                await trio.aclose_forcefully(connection.stream)

    async def _begin(self, endpoint: Endpoint, request: h11.Request, url: str
                     ) -> tuple[_Connection, h11.Response]:
        for _attempt in range(2):
            connection = await self._take(endpoint)
            if connection is None:
                connection = _Connection(stream=await connect_stream(self._open_stream,
                                                                     endpoint))
            try:
                return connection, await connection.begin(request, url=url)
            except _Stale:
                await trio.aclose_forcefully(connection.stream)
                continue
            except BaseException:
                await trio.aclose_forcefully(connection.stream)
                raise
        raise ConnectionLost(f"{url}: the connection broke twice")  # pragma: no cover

    async def _take(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._pool.get(endpoint.origin)
        now = trio.current_time()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since <= MAX_IDLE:
                connection.reused = True
                return connection
            await trio.aclose_forcefully(connection.stream)
        return None

    async def _give_back(self, endpoint: Endpoint, connection: _Connection) -> None:
        idle = self._pool.setdefault(endpoint.origin, collections.deque())
        if self._closed or not connection.reusable or len(idle) >= MAX_POOLED:
            await trio.aclose_forcefully(connection.stream)
            return
        connection.protocol.start_next_cycle()
        connection.idle_since = trio.current_time()
        idle.append(connection)

    async def aclose(self) -> None:
        """Close every pooled connection; later requests raise ConnectionLost."""
        self._closed = True
        for idle in self._pool.values():
            while idle:
                await trio.aclose_forcefully(idle.pop().stream)
