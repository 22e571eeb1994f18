"""HTTP/1.1 on one connection: h11 parses and frames, this module only moves bytes.

Theory of operation: like hypercorn's Trio TCP server, a thin loop reads under a
deadline, feeds the bytes to h11, and writes what h11 returns. h11 owns the protocol
(keep-alive, ``Connection: close``, HTTP/1.0, chunked framing, which state may send
what); this module owns time and size, which h11 leaves to its caller:

* between requests, the next one must start within ``idle_timeout``, or we close quietly;
* once its first byte came, a request (head and body) must be complete within
  ``request_timeout``, or it is answered 408 (the slowloris defence);
* the head may not exceed ``max_header_bytes`` (431), the body ``max_body_bytes`` (413);
* a response write may take ``write_timeout``, or the connection is dropped.

A peer's mistake becomes :class:`~trio_things.errors.RemoteProtocolError` and is answered
with an RFC 9457 problem and a close; its ``detail`` says in words what was wrong (h11's
own messages quote the peer's bytes, which a problem never echoes). A few requests h11
accepts are refused here too: one framed both by ``Content-Length`` and by
``Transfer-Encoding`` (400: request smuggling, RFC 9112 section 6.1). An absolute-form
target (``GET http://host/path``, RFC 9112 section 3.2.2) is served as its path and query,
its authority standing in for ``Host``. Requests are read whole before the handler runs:
REST bodies here are small JSON documents, and buffering keeps handlers free of I/O. (A
handler that waits long, a long-poll, may await :attr:`HttpRequest.peer_left` to learn
that its client left meanwhile.)

A response is whole too, but for two kinds. A *stream* (an SSE stream): its head is
written here, with ``Transfer-Encoding: chunked`` and ``Connection: close``; then the
response's :data:`StreamBody` takes the connection over, as an upgrade handler does,
writes the chunks itself, and the connection ends when it returns. And a *sized body*
(:class:`SizedBody`, a download): its length is known, so it goes out with a
``Content-Length`` on a connection that stays alive, in pieces taken from an async
source as they are written, each piece of at most 64 KiB within ``write_timeout``: a
slow reader is served as long as it makes progress, a stalled one is dropped.

One module, though long: each limit is enforced at one point of one read-write loop, and
the refusals share that loop's way of answering and closing.
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Final, cast

import attrs
import h11
import trio

from trio_things.errors import PayloadTooLarge, RemoteProtocolError
from trio_things.protocol.limits import HttpLimits
from trio_things.protocol.problems import PROBLEM_CONTENT_TYPE, ProblemDetails
from trio_things.transport.upgrade import UpgradeStream, socket_receive

__all__ = [
    "HttpRequest",
    "HttpResponse",
    "RequestHandler",
    "SizedBody",
    "StreamBody",
    "UpgradeHandler",
    "refuse_http_connection",
    "serve_http_connection",
]

logger = logging.getLogger(__name__)

#: Bytes asked of the stream per read (64 KiB, hypercorn's read size too).
_RECEIVE_BYTES: Final = 64 * 1024

#: Bytes of a sized body written at a time, each within ``write_timeout``: what counts
#: as progress for a slow reader. Slices of the source's pieces, not copies.
_WRITE_PIECE: Final = 64 * 1024

#: Seconds we keep draining the peer's bytes after half-closing; see ``_Connection._linger``.
_LINGER_SECONDS: Final = 2.0

#: Seconds the last read of an idle connection may take; see ``_Connection._read_request``.
_IDLE_RECHECK_SECONDS: Final = 0.01

#: RFC 9112 section 3.2.2, the absolute form of a request target: a scheme (RFC 3986
#: section 3.1), ``://``, the authority, then the path and query (perhaps empty).
_ABSOLUTE_FORM: Final = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://(?P<authority>[^/?#]*)(?P<rest>.*)", re.DOTALL)

#: Ways a connection ends that are nobody's bug: the peer went away, we closed it, or a
#: write made no progress within ``write_timeout``.
_NORMAL_ENDINGS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError)

#: RFC 9110 section 6.4.1: these responses carry no content, hence no Content-Length.
_NO_CONTENT_STATUSES: Final = frozenset({204, 304})

#: Framing is the transport's: handlers' values for these are replaced.
_FRAMING_HEADERS: Final = frozenset({"content-length", "transfer-encoding"})


@attrs.frozen(kw_only=True)
class HttpRequest:
    """One complete request, body included.

    Text fields are decoded as latin-1, which never fails and maps each byte to one
    character (h11 has already rejected bytes HTTP does not allow there).
    """

    method: str
    target: str
    """The request target as sent, e.g. ``/thing/prop?x=1``; an absolute-form target
    (``http://host:8000/thing/prop?x=1``) becomes its path and query."""
    headers: tuple[tuple[str, str], ...]
    """Names lower-cased, values as sent, in order; but for an absolute-form target,
    ``host`` holds the target's authority."""
    body: bytes
    http_version: str
    raw_headers: tuple[tuple[bytes, bytes], ...]
    """As sent, names in their original case: what an upgrade replays."""
    peer_left: Callable[[], Awaitable[None]] = attrs.field(
        default=trio.sleep_forever, eq=False, repr=False)
    """Returns when the peer has closed the connection (or it broke), for a handler
    that waits long (a long-poll) to stop waiting for nobody: without it, nothing reads
    the connection while the handler runs, and a client gone is noticed only when the
    answer is written, up to ``long_poll_timeout`` later, its observer kept all along.
    Call it only while handling the request; what the peer sends meanwhile (a
    pipelined request) is kept for the next request. A peer that half-closed looks
    gone too, so only a handler whose answer can wait for nobody should use it."""

    @classmethod
    def from_h11(cls, event: h11.Request, body: bytes,
                 peer_left: Callable[[], Awaitable[None]] = trio.sleep_forever
                 ) -> HttpRequest:
        """The request h11 parsed as ``event``, with its whole ``body``.

        RFC 9112 section 3.2.2: a server "MUST accept the absolute-form in requests"
        and, when it does, "MUST ignore the received Host header field (if any) and
        instead use the host information of the request-target". So such a target is
        reduced to the origin form the routes know, and its authority replaces ``Host``,
        which is what the URLs in answers (a TD's ``base``, ``Location``) are built
        from, and what a WebSocket handshake's ``Origin`` is compared with.
        """
        target = event.target.decode("latin-1")
        headers = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers)
        if (absolute := _ABSOLUTE_FORM.fullmatch(target)) is not None:
            rest = absolute["rest"]
            target = rest if rest.startswith("/") else f"/{rest}"
            host = ("host", absolute["authority"])
            headers = (host, *((n, v) for n, v in headers if n != "host"))
        return cls(
            method=event.method.decode("latin-1"),
            target=target,
            headers=headers,
            body=body,
            http_version=event.http_version.decode("latin-1"),
            raw_headers=tuple(event.headers.raw_items()),
            peer_left=peer_left,
        )

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The target's query, without ``?``; empty if none."""
        return self.target.partition("?")[2]


def _body_validator(instance: HttpResponse, attribute: attrs.Attribute[bytes], body: bytes) -> None:
    if body and instance.status in _NO_CONTENT_STATUSES:
        raise ValueError(f"a {instance.status} response has no body")


@attrs.frozen(kw_only=True)
class SizedBody:
    """A body of known ``length``, written as :meth:`chunks` makes it (a download):
    framed by ``Content-Length``, never held whole. ``chunks()`` is called once per
    response written (not for HEAD) and must yield exactly ``length`` bytes, as
    ``bytes`` or memoryviews (written as they are, without a copy); it is closed when
    the write stops early. Should it raise, or yield more or fewer bytes, the response
    cannot be finished: the connection is closed."""

    length: int = attrs.field(validator=attrs.validators.ge(0))
    chunks: Callable[[], AsyncGenerator[bytes | memoryview, None]]


def _sized_validator(instance: HttpResponse, attribute: attrs.Attribute[SizedBody | None],
                     sized: SizedBody | None) -> None:
    if sized is None:
        return
    if instance.body or instance.stream is not None:
        raise ValueError("a response has one body: body, stream or sized, not two")
    if instance.status in _NO_CONTENT_STATUSES:
        raise ValueError(f"a {instance.status} response has no body")


StreamBody = Callable[[UpgradeStream], Awaitable[None]]
"""Writes a streamed response's body, chunk-framed (RFC 9112 section 7.1), on the
connection it is handed after the head; the connection ends when it returns. It owns
the time and size of what it writes; it should not raise (whatever escapes is logged)."""


@attrs.frozen(kw_only=True)
class HttpResponse:
    """A response. The transport adds Content-Length (and drops the body of an answer to
    HEAD); 1xx statuses are not responses here, 101 is the upgrade handler's.

    With ``stream``, the body is not ``body`` but what ``stream`` writes: the head goes
    out with ``Transfer-Encoding: chunked`` and ``Connection: close``, then ``stream``
    takes the connection over (not for HEAD: the head alone answers it). Only HTTP/1.1
    can frame it: an HTTP/1.0 request is answered 505 instead.

    With ``sized``, the body is what :class:`SizedBody` yields, ``Content-Length`` its
    ``length`` (HEAD gets the head alone), and the connection stays alive."""

    status: int = attrs.field(validator=[attrs.validators.ge(200), attrs.validators.le(599)])
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = attrs.field(default=b"", validator=_body_validator)
    stream: StreamBody | None = None
    sized: SizedBody | None = attrs.field(default=None, validator=_sized_validator)

    @classmethod
    def json(cls, status: int, body: bytes, content_type: str = "application/json",
             headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
        """A response whose ``body`` is already-encoded JSON."""
        return cls(status=status, headers=(("content-type", content_type), *headers), body=body)

    @classmethod
    def problem(cls, problem: ProblemDetails) -> HttpResponse:
        """An RFC 9457 problem, with an ``Allow`` header when it names allowed methods."""
        allow = (("allow", ", ".join(problem.allow)),) if problem.allow else ()
        return cls.json(problem.status, problem.to_bytes(), PROBLEM_CONTENT_TYPE, allow)


RequestHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
"""Answers one request. Any exception but Cancelled is a bug: logged and answered 500."""

UpgradeHandler = Callable[[HttpRequest, UpgradeStream], Awaitable[None]]
"""Takes over the connection after a WebSocket upgrade request, answering it itself.
Should not raise: whatever escapes is logged with its traceback. The transport keeps no
reference to the request once it has called the handler, so the handler can free it."""


async def serve_http_connection(
    stream: trio.abc.Stream,
    *,
    handle_request: RequestHandler,
    handle_upgrade: UpgradeHandler | None,
    limits: HttpLimits = HttpLimits(),
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the connection ends.

    Each request is read whole (within ``limits``), passed to ``handle_request``, and its
    response written with a Content-Length; the connection is kept alive unless HTTP says
    otherwise (``Connection: close``, HTTP/1.0). ``Expect: 100-continue`` is answered 100
    when the announced body is within limits, 413 otherwise. HEAD is answered with
    GET's headers and no body.

    A GET carrying ``Upgrade: websocket`` and ``Connection: upgrade`` is, when
    ``handle_upgrade`` is given, not answered here: ``handle_upgrade(request, upgrade)``
    gets an :class:`UpgradeStream` that first replays the request head and any bytes
    read after it, so the WebSocket library can run the handshake itself. Without
    ``handle_upgrade``, such a request goes to ``handle_request`` like any other.

    Returns:
      When the peer closes or idles out, after a response that ends the connection, after
      a write fails or times out, or when ``handle_upgrade`` returns. Cancellation
      propagates as usual, at any point.

    Resource handling:
      This function owns ``stream`` and closes it (without waiting) before it returns,
      in all cases. After a response that ends the connection it first half-closes and
      drains the peer's bytes for up to two seconds (RFC 9112 section 9.6), so that a
      TCP reset cannot destroy that response. After an upgrade the handler owns the
      connection, free of ``limits``, until it returns; the stream is closed then too,
      which is harmless if the handler already did.

    Error handling:
      No exception escapes but :exc:`trio.Cancelled`. A malformed, oversized or too slow
      request is answered with its status (400, 413, 431, 408, ...) as problem details,
      then the connection is closed. An exception from ``handle_request`` is logged with
      its traceback and answered 500; the connection goes on serving. A broken or closed
      stream and a timed-out write are normal endings, logged at debug level; anything
      else, an exception from ``handle_upgrade`` included, is logged with its traceback.
      Log lines never carry payloads.
    """
    connection = _Connection(stream, limits)
    # What is closed at the end: the UpgradeStream once there is one, which closes
    # ``stream`` and forgets the descriptor its fast path writes to, so that no write can
    # ever reach a descriptor number the kernel has given to another connection.
    closing: trio.abc.Stream = stream
    try:
        request = await connection.serve(handle_request, upgrade=handle_upgrade is not None)
        if request is not None and handle_upgrade is not None:
            closing = connection.upgrade_stream()
            upgraded = handle_upgrade(request, closing)
            # h11's state and buffers, and the request, are done with: the handler holds
            # the request only as long as it needs it, for the long life of a WebSocket.
            del connection, request
            await upgraded
        elif connection.stream_body is not None:
            closing = connection.body_stream()
            streamed = connection.stream_body(closing)
            del connection  # as above: a stream lives long, h11's buffers need not
            await streamed
    except _NORMAL_ENDINGS as exc:
        logger.debug("HTTP connection ended: %s", type(exc).__name__)
    except Exception:
        logger.exception("HTTP connection failed")
    finally:
        await trio.aclose_forcefully(closing)


async def refuse_http_connection(
    stream: trio.abc.Stream, error: RemoteProtocolError, *, limits: HttpLimits = HttpLimits(),
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Answer ``error`` on a connection not served at all, then close ``stream``.

    The answer (problem details with ``Connection: close``) is written at once, before
    any request is read: reading one would be serving the connection. HTTP clients read
    a response that comes early, and the half-close and drain that follow (as after any
    refusal, see :func:`serve_http_connection`) keep a TCP reset from destroying it.
    ``headers`` are added to the response (e.g. ``Sec-WebSocket-Version`` with a 426).

    Resource handling and errors as for :func:`serve_http_connection`: it owns and
    closes ``stream``, and only :exc:`trio.Cancelled` escapes. It takes at most
    ``write_timeout`` plus two seconds.
    """
    try:
        await _Connection(stream, limits).refuse(error, headers)
    except _NORMAL_ENDINGS as exc:
        logger.debug("refused HTTP connection ended: %s", type(exc).__name__)
    except Exception:
        logger.exception("refusing an HTTP connection failed")
    finally:
        await trio.aclose_forcefully(stream)


class _Connection:
    """One connection's h11 state machine and the stream it is fed from."""

    def __init__(self, stream: trio.abc.Stream, limits: HttpLimits) -> None:
        self._stream = stream
        self._fileno = stream.socket.fileno if isinstance(stream, trio.SocketStream) else None
        self._limits = limits
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._request: h11.Request | None = None
        """The request being read or answered, once its head has arrived."""
        self.stream_body: StreamBody | None = None
        """Set when a streamed response's head is written: the connection is its now."""

    async def serve(self, handle_request: RequestHandler, *, upgrade: bool) -> HttpRequest | None:
        """Answer requests until the connection must end.

        Returns the first WebSocket upgrade request unanswered if ``upgrade``, else None.
        """
        while True:
            try:
                request = await self._read_request()
            except RemoteProtocolError as error:
                logger.debug("refused a request: %d", error.status)
                await self.refuse(error)
                return None
            if request is None:
                return None
            if upgrade and _is_websocket_upgrade(request):
                return request
            await self._respond(request, handle_request)
            if self.stream_body is not None:
                return None
            if self._h11.our_state is h11.MUST_CLOSE:
                await self._linger()
                return None
            self._h11.start_next_cycle()

    def upgrade_stream(self) -> UpgradeStream:
        """The stream after the upgrade request, replaying it and what followed it."""
        assert self._request is not None
        replay = _request_head(self._request) + self._h11.trailing_data[0]
        return UpgradeStream(self._stream, replay)

    def body_stream(self) -> UpgradeStream:
        """The stream after a streamed response's head: reads give what the peer sent
        after its request (a stream's body ignores it), writes go to the socket."""
        return UpgradeStream(self._stream, self._h11.trailing_data[0])

    async def _read_request(self) -> HttpRequest | None:
        """The next whole request; None if the peer closed or idled out before one began.

        Raises RemoteProtocolError for a request to refuse.

        When the idle timer fires, the read it cancels may have had bytes waiting: a
        request that reached the kernel (or a memory stream's buffer) at that very
        moment, before this task ran again. Closing a socket with unread bytes sends a
        TCP reset, which destroys the request, so a last read gets a moment
        (``_IDLE_RECHECK_SECONDS``) first. It returns at once with bytes already
        received (Trio tries the socket before it waits), and the request they begin
        is served; only if nothing came is the connection closed.
        """
        self._request = None
        if not self._h11.trailing_data[0]:  # else a pipelined request has begun already
            with trio.move_on_after(self._limits.idle_timeout) as idle:
                await self._receive()
            if idle.cancelled_caught:
                with trio.move_on_after(_IDLE_RECHECK_SECONDS) as recheck:
                    await self._receive()
                if recheck.cancelled_caught:
                    logger.debug("closing an idle HTTP connection")
                    return None
        with trio.move_on_after(self._limits.request_timeout):
            return await self._receive_request()
        raise RemoteProtocolError(
            f"The request was not complete within {self._limits.request_timeout} seconds.",
            status=408)

    async def _receive_request(self) -> HttpRequest | None:
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)  # all h11 yields in the client's IDLE state
        self._request = event
        _refuse_ambiguous_framing(event)
        limits = self._limits
        if len(_request_head(event)) > limits.max_header_bytes:
            raise _headers_too_large(limits)
        if _content_length(event) > limits.max_body_bytes:
            raise PayloadTooLarge(f"The body exceeds {limits.max_body_bytes} bytes.")
        if self._h11.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        body = bytearray()
        while isinstance(event := await self._next_event(), h11.Data):
            body += event.data
            if len(body) > limits.max_body_bytes:
                raise PayloadTooLarge(f"The body exceeds {limits.max_body_bytes} bytes.")
        assert isinstance(event, h11.EndOfMessage)  # h11 raises rather than end a body early
        return HttpRequest.from_h11(self._request, bytes(body), self._peer_left)

    async def _peer_left(self) -> None:
        """:attr:`HttpRequest.peer_left`: return at the end of the stream (or when it
        breaks). Bytes that come first are fed to h11 for the next request; after them,
        the peer is still there, and this waits for ever (reading on would buffer
        without bound). Cancelling it loses nothing: Trio's receive is cancel-safe."""
        if not self._h11.trailing_data[0]:
            try:
                data = await self._stream.receive_some(_RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            self._h11.receive_data(bytes(data))
        await trio.sleep_forever()

    async def _next_event(self) -> h11.Event:
        """h11's next event, reading as needed; h11's protocol errors become ours."""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:
                    raise _headers_too_large(self._limits) from exc
                raise RemoteProtocolError(
                    _describe(exc), status=exc.error_status_hint) from exc
            if isinstance(event, h11.Event):
                return event
            # PAUSED comes only between requests or after an upgrade, when we do not read.
            assert event is h11.NEED_DATA
            await self._receive()

    async def _receive(self) -> None:
        """Feed h11 the stream's next bytes (b"" at end of file). Over a plain socket,
        bytes already there are read without waiting for a scheduler round: each round
        may carry a fan-out to every observer, and a request would wait one for nothing
        (:func:`~trio_things.transport.upgrade.socket_receive`)."""
        if self._fileno is not None:
            data: bytes | bytearray = await socket_receive(self._fileno, _RECEIVE_BYTES)
        else:
            data = await self._stream.receive_some(_RECEIVE_BYTES)
        self._h11.receive_data(bytes(data))  # no copy of bytes, which sockets return

    async def _respond(self, request: HttpRequest, handle_request: RequestHandler) -> None:
        try:
            response = await handle_request(request)
            if response.stream is not None and self._h11.their_http_version != b"1.1":
                response = HttpResponse.problem(ProblemDetails.from_status(
                    505, "a stream is sent with HTTP/1.1 chunked framing; ask with HTTP/1.1"))
            head = _response_head(response)
        except Exception:
            logger.exception("request handler failed on %s %s", request.method, request.path)
            response = HttpResponse.problem(ProblemDetails.internal_error())
            head = _response_head(response)
        if response.stream is not None and request.method != "HEAD":
            await self._send(head)
            self.stream_body = response.stream
            return
        if response.sized is not None and request.method != "HEAD":
            await self._write_sized(head, response.sized)
            return
        await self._write_response(head, response.body)

    async def _write_sized(self, head: h11.Response, body: SizedBody) -> None:
        """Write the head, then the body piece by piece as its source yields it, each
        piece (a slice, no copy: h11 passes data through) within ``write_timeout``."""
        await self._send(head)
        try:
            async with aclosing(body.chunks()) as chunks:
                async for chunk in chunks:
                    view = memoryview(chunk)
                    for start in range(0, len(view), _WRITE_PIECE):
                        await self._send_data(view[start:start + _WRITE_PIECE])
            await self._send(h11.EndOfMessage())
        except Exception:  # the source failed, or its length was not the one announced
            if self._h11.our_state is not h11.ERROR:
                self._h11.send_failed()  # half a body is on the wire: close, do not reuse
            raise

    async def _send_data(self, data: memoryview) -> None:
        """Write one piece of a body as it is, within ``write_timeout``."""
        # h11 takes any bytes-like object, and passes a Data's through as it is.
        pieces = self._h11.send_with_data_passthrough(h11.Data(data=cast(bytes, data)))
        try:
            with trio.fail_after(self._limits.write_timeout):
                for piece in pieces or ():
                    await self._stream.send_all(piece)
        except BaseException:
            self._h11.send_failed()
            raise

    async def refuse(self, error: RemoteProtocolError,
                     headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer a refused request (or connection) and linger, unless an interrupted
        write forbids it."""
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = HttpResponse.problem(ProblemDetails.from_error(error))
        response = attrs.evolve(response, headers=(*response.headers, *headers))
        await self._write_response(_response_head(response, close=True), response.body)
        await self._linger()

    async def _write_response(self, head: h11.Response, body: bytes) -> None:
        if self._request is not None and self._request.method == b"HEAD":
            body = b""
        if body:
            await self._send(head, h11.Data(data=body), h11.EndOfMessage())
        else:
            await self._send(head, h11.EndOfMessage())

    async def _send(
        self, *events: h11.InformationalResponse | h11.Response | h11.Data | h11.EndOfMessage,
    ) -> None:
        """Write ``events`` in one ``send_all`` within ``write_timeout``.

        If the write fails or is cancelled, part of it may be on the wire: h11 is told, so
        its state forbids any further write on this connection.
        """
        data = b"".join(self._h11.send(event) for event in events)
        try:
            with trio.fail_after(self._limits.write_timeout):
                await self._stream.send_all(data)
        except BaseException:
            self._h11.send_failed()
            raise

    async def _linger(self) -> None:
        """Half-close, then discard what the peer still sends, for a moment.

        RFC 9112 section 9.6: "If a server performs an immediate close of a TCP
        connection, there is a significant risk that the client will not be able to read
        the last HTTP response. [...] To avoid the TCP reset problem, servers typically
        close a connection in stages. First, the server performs a half-close by closing
        only the write side of the read/write connection. The server then continues to
        read from the connection until it receives a corresponding close by the client,
        or until the server is reasonably certain that its own TCP stack has received the
        client's acknowledgement of the packet(s) containing the server's last response."
        A 413 answered before the body arrived is the common case. We wait at most
        ``_LINGER_SECONDS``, many round trips on any network we expect.
        """
        if not isinstance(self._stream, trio.abc.HalfCloseableStream):
            return
        await self._stream.send_eof()
        with trio.move_on_after(_LINGER_SECONDS):
            while await self._stream.receive_some(_RECEIVE_BYTES):
                pass


def _request_head(event: h11.Request) -> bytes:
    """The request line and headers as h11 parsed them, ending in the blank line."""
    lines = [b"%s %s HTTP/%s" % (event.method, event.target, event.http_version)]
    lines += [b"%s: %s" % field for field in event.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _refuse_ambiguous_framing(event: h11.Request) -> None:
    """Raise RemoteProtocolError (400) for a request framed two ways.

    RFC 9112 section 6.1: a request with both ``Content-Length`` and
    ``Transfer-Encoding`` "ought to be handled as an error", as it "might indicate an
    attempt to perform request smuggling": a proxy in front that frames by
    ``Content-Length`` forwards bytes that we, framing by ``Transfer-Encoding`` as h11
    does, would serve as a second request nobody checked. The refusal closes the
    connection, as the RFC demands, so those bytes are never read as a request.
    """
    names = {name for name, _ in event.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        raise RemoteProtocolError(
            "The request has both Content-Length and Transfer-Encoding headers, so its "
            "body could end in two places; send one of them (RFC 9112 section 6.1).")


#: h11's messages for a peer's mistake, by how they begin, and what we say instead. Some
#: quote the offending bytes as ``bytearray(b'...')``, which a problem must not echo
#: (they could be anything, and mean nothing to a person); the header line case is
#: told apart by ``_describe_header_line``. The statuses are h11's, kept as they are.
_H11_MESSAGES: Final = (
    ("illegal request line", "The request line is malformed: it must be a method, a "
     "target and an HTTP version (HTTP/1.1), separated by single spaces."),
    ("no request line received", "The request begins with an empty line instead of a "
     "request line."),
    ("continuation line at start of headers", "The first header line begins with "
     "whitespace, as if it continued a header before it."),
    ("Missing mandatory Host: header", "The Host header is missing; HTTP/1.1 requires it."),
    ("Found multiple Host: headers", "The request has more than one Host header."),
    ("conflicting Content-Length headers", "The request has conflicting Content-Length "
     "values."),
    ("bad Content-Length", "The Content-Length header is not a decimal number of bytes."),
    ("multiple Transfer-Encoding headers", "The request has more than one "
     "Transfer-Encoding header; only a single 'chunked' is supported."),
    ("Only Transfer-Encoding: chunked is supported", "The request's Transfer-Encoding "
     "is not 'chunked', the only transfer coding supported."),
    ("illegal chunk header", "The chunked body's size line is not hexadecimal (a chunk's "
     "size, optionally followed by extensions)."),
    ("malformed chunk footer", "A chunk of the chunked body is not followed by CRLF: it is "
     "longer than its size line said."),
    ("peer closed connection without sending complete message body", "The connection "
     "ended before the request's body was complete."),
    ("peer unexpectedly closed connection", "The connection ended in the middle of the "
     "request."),
    ("Illegal method characters", "The method has characters a method cannot have."),
    ("Illegal target characters", "The request target has characters a target cannot "
     "have."),
)

#: RFC 9110 section 5.1 (a field name is a token) and 5.5 (field values).
_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE: Final = re.compile(rb"[ \t]*(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?[ \t]*")


def _describe(exc: h11.RemoteProtocolError) -> str:
    """What was wrong with a request h11 refused, in words, without the peer's bytes."""
    message = str(exc)
    if message.startswith("illegal header line"):
        return _describe_header_line(message)
    for start, detail in _H11_MESSAGES:
        if message.startswith(start):
            return detail
    return "The request is not well-formed HTTP/1.1."


def _describe_header_line(message: str) -> str:
    """Which part of a header line h11 refused (``illegal header line: bytearray(...)``)
    is wrong. The line is recovered from the message's ``repr`` by ``ast.literal_eval``,
    which evaluates literals only; a message of another shape gets a general answer."""
    general = "A header line is malformed: it must be a name, a colon and a value."
    quoted = message.partition(": ")[2].removeprefix("bytearray(").removesuffix(")")
    try:
        line = ast.literal_eval(quoted)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return general
    if not isinstance(line, bytes):
        return general
    name, colon, value = line.partition(b":")
    if not colon:
        return "There is a header line without a colon; it must be a name, a colon and a value."
    if not _TOKEN.fullmatch(name):
        return ("A header line has an invalid header name: a name is letters, digits and "
                "a few symbols, without spaces, right before the colon.")
    if not _FIELD_VALUE.fullmatch(value):
        return ("A header line has an invalid header value: it contains a control "
                "character, such as NUL or a lone carriage return.")
    return general


def _headers_too_large(limits: HttpLimits) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"The request line and headers exceed {limits.max_header_bytes} bytes.", status=431)


def _content_length(event: h11.Request) -> int:
    """The declared body length; 0 if none (chunked bodies are measured as they come)."""
    return next((int(value) for name, value in event.headers if name == b"content-length"), 0)


def _response_head(response: HttpResponse, *, close: bool = False) -> h11.Response:
    """h11's response event; h11 checks the status and headers as it builds it."""
    headers = [(k, v) for k, v in response.headers if k.lower() not in _FRAMING_HEADERS]
    if response.stream is not None:
        headers.append(("transfer-encoding", "chunked"))
        close = True
    elif response.sized is not None:
        headers.append(("content-length", str(response.sized.length)))
    elif response.status not in _NO_CONTENT_STATUSES:
        headers.append(("content-length", str(len(response.body))))
    if close:
        headers.append(("connection", "close"))
    return h11.Response(status_code=response.status, headers=headers)


def _tokens(request: HttpRequest, name: str) -> set[str]:
    """The lower-cased comma-separated tokens of every ``name`` header."""
    return {token.strip().lower()
            for key, value in request.headers if key == name
            for token in value.split(",")}


def _is_websocket_upgrade(request: HttpRequest) -> bool:
    """RFC 6455 section 4.1: a GET (without a body) asking to switch to ``websocket``."""
    return (request.method == "GET" and not request.body
            and "websocket" in _tokens(request, "upgrade")
            and "upgrade" in _tokens(request, "connection"))
