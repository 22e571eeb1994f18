"""serve_http_connection against an h11 client over in-memory streams.

Rules: no sockets (memory_stream_pair), every test under trio.fail_after, timeouts on the
autojump clock (virtual seconds, so a 60 s idle timeout costs nothing), no sleeps to
synchronise. The only sleeps are a slow client's pacing, in virtual time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import h11
import pytest
import trio
import trio.testing

from tests.helpers.servers import demo_server
from trio_things.errors import MethodNotAllowed
from trio_things.protocol.limits import HttpLimits
from trio_things.protocol.problems import PROBLEM_CONTENT_TYPE, ProblemDetails
from trio_things.testing import serve_in_memory
from trio_things.transport.http import (
    HttpRequest,
    HttpResponse,
    RequestHandler,
    UpgradeHandler,
    serve_http_connection,
)
from trio_things.transport.upgrade import UpgradeStream

DEFAULT = HttpLimits()
SMALL = HttpLimits(max_header_bytes=1024, max_body_bytes=10)


async def echo(request: HttpRequest) -> HttpResponse:
    """Echo the body; describe the rest of the request in headers."""
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    return HttpResponse(status=200, body=request.body, headers=(
        ("content-type", "application/octet-stream"),
        ("x-method", request.method),
        ("x-path", request.path),
        ("x-query", request.query),
        ("x-test", request.header("X-TEST") or ""),
    ))


class Client:
    """An h11 client on one end of the pair."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def send(self, *events: h11.Event) -> None:
        await self.stream.send_all(b"".join(self.h11.send(e) or b"" for e in events))

    def expect_response_to(self, method: str) -> None:
        """Make h11 parse a response to raw bytes we sent, as if it had sent ``method``."""
        self.h11.send(h11.Request(method=method, target="/", headers=[("host", "test")]))

    async def next_event(self) -> h11.Event:
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            self.h11.receive_data(bytes(await self.stream.receive_some()))
        assert isinstance(event, h11.Event)
        return event

    async def response(self) -> tuple[h11.Response, bytes]:
        response = await self.next_event()
        assert isinstance(response, h11.Response)
        body = b""
        while isinstance(event := await self.next_event(), h11.Data):
            body += event.data
        assert isinstance(event, h11.EndOfMessage)
        if self.h11.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}:
            self.h11.start_next_cycle()
        return response, body

    async def request(self, method: str = "GET", target: str = "/", body: bytes = b"",
                      headers: tuple[tuple[str, str], ...] = ()) -> tuple[h11.Response, bytes]:
        head = [("host", "test"), ("content-length", str(len(body))), *headers]
        await self.send(h11.Request(method=method, target=target, headers=head),
                        h11.Data(data=body), h11.EndOfMessage())
        return await self.response()

    async def at_eof(self) -> bool:
        """Whether the server closed without sending anything more."""
        return await self.stream.receive_some() == b""


@asynccontextmanager
async def serving(handler: RequestHandler = echo, *, limits: HttpLimits = DEFAULT,
                  handle_upgrade: UpgradeHandler | None = None) -> AsyncIterator[Client]:
    """A server on one end of a memory stream pair; waits for it to finish on exit."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_http_connection(
            server_stream, handle_request=handler, handle_upgrade=handle_upgrade, limits=limits))
        yield Client(client_stream)
        await client_stream.aclose()


def header(response: h11.Response, name: bytes) -> bytes | None:
    return next((v for k, v in response.headers if k == name), None)


def problem(response: h11.Response, body: bytes) -> dict[str, object]:
    assert header(response, b"content-type") == PROBLEM_CONTENT_TYPE.encode()
    assert header(response, b"connection") == b"close"
    document: dict[str, object] = json.loads(body)
    assert document["status"] == response.status_code
    return document


async def test_keep_alive_serves_two_requests_on_one_connection() -> None:
    with trio.fail_after(5):
        async with serving() as client:
            response, body = await client.request("POST", "/a?x=1", b"one",
                                                  headers=(("X-Test", "yes"),))
            assert response.status_code == 200
            assert body == b"one"
            assert header(response, b"content-length") == b"3"
            assert header(response, b"x-path") == b"/a"
            assert header(response, b"x-query") == b"x=1"
            assert header(response, b"x-test") == b"yes"
            response, body = await client.request("POST", "/b", b"two")
            assert (response.status_code, body) == (200, b"two")
            assert header(response, b"connection") is None


async def test_http_1_0_closes_after_the_response() -> None:
    with trio.fail_after(5):
        async with serving() as client:
            await client.stream.send_all(b"GET /old HTTP/1.0\r\n\r\n")
            client.expect_response_to("GET")
            response, _ = await client.response()
            assert response.status_code == 200
            assert header(response, b"connection") == b"close"
            assert await client.at_eof()


async def test_head_gets_get_headers_and_no_body() -> None:
    async def fixed(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, b'{"a": 1}')

    with trio.fail_after(5):
        async with serving(fixed) as client:
            response, body = await client.request("HEAD")
            assert header(response, b"content-length") == b"8"
            assert body == b""
            response, body = await client.request("GET")
            assert body == b'{"a": 1}'


async def test_chunked_request_body_is_reassembled() -> None:
    with trio.fail_after(5):
        async with serving() as client:
            await client.send(
                h11.Request(method="POST", target="/", headers=[
                    ("host", "test"), ("transfer-encoding", "chunked")]),
                h11.Data(data=b"hello "), h11.Data(data=b"world"), h11.EndOfMessage())
            response, body = await client.response()
            assert (response.status_code, body) == (200, b"hello world")


async def test_declared_body_over_the_limit_is_413_and_close() -> None:
    with trio.fail_after(5):
        async with serving(limits=SMALL) as client:
            await client.send(h11.Request(method="POST", target="/", headers=[
                ("host", "test"), ("content-length", "11")]))
            response, body = await client.response()
            assert response.status_code == 413
            assert "10 bytes" in str(problem(response, body)["detail"])
            assert await client.at_eof()
            # Half-closed, the server still drains the body it refused (RFC 9112 9.6), so
            # that a TCP reset cannot destroy the 413 before the client reads it.
            await client.stream.send_all(b"x" * 11)


async def test_413_over_loopback_lets_the_client_finish_sending() -> None:
    """The refused body is drained, not reset: the client's write completes."""
    body = b"x" * (4 * 1024 * 1024)  # beyond the 1 MiB limit and the socket buffers
    head = b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body)
    serve = partial(serve_http_connection, handle_request=echo, handle_upgrade=None)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, serve, listeners)
            port = listeners[0].socket.getsockname()[1]
            client = Client(await trio.open_tcp_stream("127.0.0.1", port))
            async with client.stream, trio.open_nursery() as exchange:
                exchange.start_soon(client.stream.send_all, head + body)
                client.expect_response_to("POST")
                response, _ = await client.response()
                assert response.status_code == 413
            nursery.cancel_scope.cancel()


async def test_chunked_body_over_the_limit_is_413_and_close() -> None:
    with trio.fail_after(5):
        async with serving(limits=SMALL) as client:
            await client.send(
                h11.Request(method="POST", target="/", headers=[
                    ("host", "test"), ("transfer-encoding", "chunked")]),
                h11.Data(data=b"123456"), h11.Data(data=b"789012"))
            response, body = await client.response()
            assert response.status_code == 413
            problem(response, body)
            assert await client.at_eof()


@pytest.mark.parametrize("size", [20_000, 200_000])
async def test_huge_headers_are_431_and_close(size: int) -> None:
    # 20 kB arrives in one read and is measured after parsing; 200 kB overflows h11's
    # buffer for an incomplete head first.
    with trio.fail_after(5):
        async with serving() as client:
            response, body = await client.request(headers=(("x-big", "a" * size),))
            assert response.status_code == 431
            assert "16384 bytes" in str(problem(response, body)["detail"])
            assert await client.at_eof()


async def test_malformed_request_line_is_400_problem() -> None:
    with trio.fail_after(5):
        async with serving() as client:
            await client.stream.send_all(b"NOT AN HTTP REQUEST\r\n\r\n")
            client.expect_response_to("GET")
            response, body = await client.response()
            assert response.status_code == 400
            assert problem(response, body)["title"] == "Bad Request"
            assert await client.at_eof()


async def test_idle_connection_is_closed_quietly(
        autojump_clock: trio.testing.MockClock) -> None:
    limits = HttpLimits(idle_timeout=60)
    with trio.fail_after(120):
        async with serving(limits=limits) as client:
            await client.request()
            idle_since = trio.current_time()
            assert await client.at_eof()
            # The idle timeout, then a moment for one last read (see
            # test_a_request_arriving_as_the_idle_timer_fires_is_served).
            assert 60 <= trio.current_time() - idle_since <= 60.1


async def test_slowloris_is_answered_408_within_the_request_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    limits = HttpLimits(request_timeout=30)
    head = b"GET / HTTP/1.1\r\nHost: test\r\nUser-Agent: one byte a second\r\n\r\n"
    assert len(head) > 30

    async def drip(stream: trio.abc.Stream) -> None:
        try:
            for i in range(len(head)):
                await stream.send_all(head[i:i + 1])
                await trio.sleep(1)
        except trio.BrokenResourceError:
            pass

    with trio.fail_after(60):
        async with serving(limits=limits) as client, trio.open_nursery() as nursery:
            started = trio.current_time()
            nursery.start_soon(drip, client.stream)
            client.expect_response_to("GET")
            response, body = await client.response()
            assert trio.current_time() - started <= 30
            assert response.status_code == 408
            problem(response, body)
            assert await client.at_eof()
            nursery.cancel_scope.cancel()


async def test_handler_exception_is_500_and_the_connection_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(5):
        async with serving() as client:
            response, body = await client.request("POST", "/boom", b"secret payload")
            assert response.status_code == 500
            assert json.loads(body)["status"] == 500
            response, body = await client.request("POST", "/fine", b"ok")
            assert (response.status_code, body) == (200, b"ok")
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    assert errors[0].name == "trio_things.transport.http"
    assert errors[0].exc_info is not None
    assert "secret payload" not in caplog.text


async def test_expect_100_continue() -> None:
    with trio.fail_after(5):
        async with serving(limits=SMALL) as client:
            await client.send(h11.Request(method="POST", target="/", headers=[
                ("host", "test"), ("content-length", "5"), ("expect", "100-continue")]))
            interim = await client.next_event()
            assert isinstance(interim, h11.InformationalResponse)
            assert interim.status_code == 100
            await client.send(h11.Data(data=b"12345"), h11.EndOfMessage())
            response, body = await client.response()
            assert (response.status_code, body) == (200, b"12345")

            # Too large: refused at once, without inviting the body.
            await client.send(h11.Request(method="POST", target="/", headers=[
                ("host", "test"), ("content-length", "50"), ("expect", "100-continue")]))
            response, body = await client.response()
            assert response.status_code == 413


async def test_upgrade_request_without_an_upgrade_handler_is_a_normal_request() -> None:
    upgrade = (("upgrade", "websocket"), ("connection", "Upgrade"))
    with trio.fail_after(5):
        async with serving() as client:
            response, _ = await client.request("GET", "/ws", headers=upgrade)
            assert response.status_code == 200
            response, _ = await client.request("GET", "/again")
            assert header(response, b"x-path") == b"/again"


async def test_upgrade_replays_the_head_and_what_followed_it() -> None:
    head = (b"GET /ws?x=1 HTTP/1.1\r\nHost: test\r\nUpgrade: WebSocket\r\n"
            b"Connection: keep-alive, Upgrade\r\n\r\n")
    early = b"\x81\x02hi"
    seen: list[tuple[HttpRequest, bytes]] = []

    async def take_over(request: HttpRequest, stream: UpgradeStream) -> None:
        data = b""
        while len(data) < len(head + early):
            data += await stream.receive_some()
        seen.append((request, data))

    with trio.fail_after(5):
        async with serving(handle_upgrade=take_over) as client:
            await client.stream.send_all(head + early)
            assert await client.at_eof()
    [(request, data)] = seen
    assert data == head + early
    assert (request.method, request.path, request.query) == ("GET", "/ws", "x=1")
    assert request.header("upgrade") == "WebSocket"
    assert (b"Upgrade", b"WebSocket") in request.raw_headers


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        HttpLimits(idle_timeout=0)


def test_problem_response_carries_allow() -> None:
    error = MethodNotAllowed("read-only", allow=("GET", "HEAD"))
    response = HttpResponse.problem(ProblemDetails.from_error(error))
    assert response.status == 405
    assert ("allow", "GET, HEAD") in response.headers
    assert ("content-type", PROBLEM_CONTENT_TYPE) in response.headers


# --------------------------------------------------------------- hardening, second round


async def test_content_length_with_chunked_is_refused_and_the_hidden_request_never_served(
) -> None:
    """Request smuggling (RFC 9112 section 6.1): a proxy that frames by Content-Length
    takes ``hidden`` for this request's body, while framing by Transfer-Encoding would
    end the body at the empty chunk and serve ``hidden`` as a request of its own."""
    served: list[str] = []

    async def record(request: HttpRequest) -> HttpResponse:
        served.append(request.path)
        return await echo(request)

    hidden = b"GET /hidden HTTP/1.1\r\nHost: test\r\n\r\n"
    body = b"0\r\n\r\n" + hidden
    with trio.fail_after(5):
        async with serving(record) as client:
            await client.stream.send_all(
                b"POST /front HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" % len(body) + body)
            client.expect_response_to("POST")
            response, answer = await client.response()
            assert response.status_code == 400
            detail = str(problem(response, answer)["detail"])
            assert "Content-Length" in detail and "Transfer-Encoding" in detail
            assert await client.at_eof()
    assert served == []


async def test_absolute_form_targets_are_routed_by_their_path_and_query(
        autojump_clock: trio.testing.MockClock) -> None:
    """RFC 9112 section 3.2.2: a server must accept ``GET http://host/path``; the
    target's authority, not ``Host``, is where the client addressed the server. (A
    loopback name, which the server answers to whatever ``allowed_hosts`` says.)"""
    with trio.fail_after(30):
        async with serve_in_memory(demo_server()) as served:
            client = Client(await served.open_raw_stream())

            async def get(target: str) -> tuple[int, object]:
                await client.send(h11.Request(method="GET", target=target,
                                              headers=[("host", "testserver")]),
                                  h11.EndOfMessage())
                response, body = await client.response()
                return response.status_code, json.loads(body)

            assert await get("http://localhost:8123/counter/count") == (200, 0)
            assert await get("http://localhost:8123/counter/properties?names=count") == (
                200, {"count": 0})
            status, td = await get("http://localhost:8123/counter/")
            assert status == 200
            assert isinstance(td, dict) and td["base"] == "http://localhost:8123/"
            assert await get("HTTP://localhost:8123") == (200, {
                "thermometer": "http://localhost:8123/thermometer/",
                "counter": "http://localhost:8123/counter/"})
            await client.stream.aclose()


async def test_a_request_arriving_as_the_idle_timer_fires_is_served(
        autojump_clock: trio.testing.MockClock) -> None:
    """The next request's bytes arrive at the very virtual instant the idle timeout
    expires: the server's read is cancelled then, with the bytes buffered (or about to
    be, whichever task runs first). They must be served, not reset."""
    limits = HttpLimits(idle_timeout=60)
    with trio.fail_after(120):
        async with serving(limits=limits) as client:
            await client.request(target="/first")
            # No virtual time passes while the exchange runs, so the server's idle timer
            # started now: it fires at exactly this deadline.
            await trio.sleep_until(trio.current_time() + limits.idle_timeout)
            response, _ = await client.request(target="/second")
            assert response.status_code == 200
            assert header(response, b"x-path") == b"/second"


@pytest.mark.parametrize(("data", "status", "words"), [
    (b"NOT AN HTTP REQUEST\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/1.1\r\nHost: test\r\nNoColonHere\r\n\r\n", 400, "without a colon"),
    (b"GET / HTTP/1.1\r\nHost: test\r\nBad Name: x\r\n\r\n", 400, "invalid header name"),
    (b"GET / HTTP/1.1\r\nHost: test\r\nX-Nul: a\x00b\r\n\r\n", 400, "invalid header value"),
    (b"GET / HTTP/1.1\r\n\r\n", 400, "Host header is missing"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host header"),
    (b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: ten\r\n\r\n", 400, "Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
     "not hexadecimal"),
    (b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiXX", 400,
     "chunk"),
    (b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "chunked"),
])
async def test_malformed_requests_are_explained_in_words(
        data: bytes, status: int, words: str) -> None:
    """h11's messages quote the offending bytes as ``bytearray(b'...')``: the answer says
    what was wrong instead, and echoes nothing the peer sent."""
    with trio.fail_after(5):
        async with serving() as client:
            await client.stream.send_all(data)
            client.expect_response_to("POST")
            response, body = await client.response()
            assert response.status_code == status
            detail = str(problem(response, body)["detail"])
            assert words in detail
            for raw in ("bytearray", "b'", 'b"', "\\x", "NoColonHere", "Bad Name", "zz", "gzip"):
                assert raw not in detail
            assert await client.at_eof()


# --------------------------------------------------------------------------- streamed responses


def streaming(body_chunks: list[bytes], streamed: list[UpgradeStream]) -> RequestHandler:
    """A handler whose response is a stream that writes ``body_chunks`` (each a whole
    chunk), then the last chunk, and records the stream it was handed."""

    async def write(stream: UpgradeStream) -> None:
        streamed.append(stream)
        for data in body_chunks:
            await stream.send_all(data)
        await stream.send_all(b"0\r\n\r\n")

    async def handler(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status=200, headers=(("content-type", "text/event-stream"),),
                            stream=write)

    return handler


async def test_a_stream_takes_the_connection_over_after_a_chunked_head() -> None:
    streamed: list[UpgradeStream] = []
    with trio.fail_after(5):
        async with serving(streaming([b"3\r\nabc\r\n", b"2\r\nde\r\n"], streamed)) as client:
            await client.send(h11.Request(method="GET", target="/s", headers=[("host", "t")]),
                              h11.EndOfMessage())
            # A pipelined request after it is never answered: the stream owns the link.
            await client.stream.send_all(b"GET /other HTTP/1.1\r\nhost: t\r\n\r\n")
            response, body = await client.response()
            assert response.status_code == 200
            assert header(response, b"transfer-encoding") == b"chunked"
            assert header(response, b"content-length") is None
            assert header(response, b"connection") == b"close"
            assert body == b"abcde"  # h11 took the chunks apart: they were well framed
            assert await client.at_eof()
    assert len(streamed) == 1


async def test_head_of_a_stream_is_its_head_alone() -> None:
    streamed: list[UpgradeStream] = []
    with trio.fail_after(5):
        async with serving(streaming([b"3\r\nabc\r\n"], streamed)) as client:
            response, body = await client.request("HEAD", "/s")
            assert response.status_code == 200
            assert header(response, b"content-type") == b"text/event-stream"
            assert body == b""
            assert await client.at_eof()
    assert streamed == []  # never started: nothing to clean up


async def test_a_stream_asked_for_with_http_1_0_is_505() -> None:
    streamed: list[UpgradeStream] = []
    with trio.fail_after(5):
        async with serving(streaming([], streamed)) as client:
            await client.stream.send_all(b"GET /s HTTP/1.0\r\n\r\n")
            client.expect_response_to("GET")
            response, body = await client.response()
            assert response.status_code == 505
            assert "HTTP/1.1" in str(problem(response, body)["detail"])
    assert streamed == []
