"""Property-based tests of the HTTP layer: the real server and the demo Things, end to end.

Rules (as in ``tests/transport/test_http.py``): no sockets. Every example builds its own
:class:`ThingServer` (Thermometer and Counter, small size limits so that 413 and 431 are
in reach), runs it in its own ``trio.run`` on the autojump clock, and talks to
``server.handle_connection`` over ``trio.testing.memory_stream_pair`` in raw bytes, so
that requests h11 would refuse to build can be sent too. Responses are parsed by an h11
client, which checks that they are well-formed HTTP/1.1. Every wait is under
``trio.fail_after``; there are no sleeps.

Virtual time makes a long-poll or an async action's sleep cost next to nothing.
Worker-thread actions (``increment``, ``count_slowly``) take real time, which the clock
does not see: with an autojump threshold of zero, a loop of jumps would race (and starve
the thread of the GIL) while the thread works, so the clock jumps only after a
millisecond of real idleness, and generated ``count_slowly`` inputs that could run for
long are replaced by quick ones.

The regression tests at the end reproduce the bugs these properties found (all fixed):
each states what the server must do with an input that once broke it.
"""

from __future__ import annotations

import itertools
import json
import string
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import h11
import hypothesis
import orjson
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers.servers import demo_server
from tests.helpers.wsclient import open_ws, receive, request
from trio_things.model.description import thing_id
from trio_things.protocol.dialects import SUBPROTOCOL
from trio_things.protocol.limits import HttpLimits
from trio_things.protocol.problems import PROBLEM_CONTENT_TYPE
from trio_things.server import ThingServer

LIMITS: Final = HttpLimits(max_header_bytes=2048, max_body_bytes=4096)
#: Virtual seconds an example may take: each jump of the clock costs a millisecond of
#: real time, and the demo Thermometer wakes every 0.1 virtual seconds, so a hang fails
#: within about six seconds.
GUARD: Final = 600.0
#: Real seconds of idleness before the clock jumps to the next deadline (see above).
AUTOJUMP_THRESHOLD: Final = 0.001
#: Every status a request can get from the demo server without tokens or timeouts: 403
#: for a Host the server does not answer to (DNS rebinding) or a cross-site write
#: (CSRF), which the generated hosts and origins include on purpose.
STATUSES: Final = frozenset({200, 201, 204, 400, 403, 404, 405, 409, 413, 415, 422, 431})
#: Raw bytes can also name a transfer coding h11 does not implement (its hint: 501).
RAW_STATUSES: Final = STATUSES | {501}
#: Where the id of the latest invocation goes in a generated target.
LAST: Final = "LAST-INVOCATION"
TD_REQUEST: Final = b"GET /counter/ HTTP/1.1\r\nHost: testserver\r\n\r\n"
#: The demo counter's TD id when addressed as testserver: the directory retrieves it.
COUNTER_ID: Final = thing_id("http://testserver/", "counter")


def make_server() -> ThingServer:
    return demo_server(http=LIMITS, long_poll_timeout=1.0, invocation_retention=GUARD)


# --------------------------------------------------------------------------- the harness


@attrs.frozen
class Answer:
    """One response as an h11 client parsed it."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    interim: tuple[int, ...]
    """Statuses of the 1xx responses before it."""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def closes(self) -> bool:
        """Whether it says ``Connection: close``."""
        return any("close" in {t.strip().lower() for t in v.split(",")}
                   for k, v in self.headers if k == "connection")

    def json(self) -> Any:
        return orjson.loads(self.body)


def method_seen_by_server(data: bytes) -> bytes:
    """The method of the request in ``data`` as the server's h11 parses it; ``GET`` when
    its head is malformed (the server cannot know then that a HEAD wanted no body)."""
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=LIMITS.max_header_bytes)
    parser.receive_data(data)
    try:
        parsed = parser.next_event()
    except h11.RemoteProtocolError:
        return b"GET"
    return parsed.method if isinstance(parsed, h11.Request) else b"GET"


def first_h11_verdict(data: bytes) -> h11.RemoteProtocolError | type[h11.ConnectionClosed] | None:
    """What h11 makes of ``data`` followed by end of file, before any request: a protocol
    error, ``ConnectionClosed`` (no request began), or None (a request head parsed)."""
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=LIMITS.max_header_bytes)
    parser.receive_data(data)
    parser.receive_data(b"")
    try:
        parsed = parser.next_event()
    except h11.RemoteProtocolError as error:
        return error
    return h11.ConnectionClosed if isinstance(parsed, h11.ConnectionClosed) else None


async def read_answer(stream: trio.abc.Stream, method: bytes) -> tuple[Answer, bytes]:
    """The next response on ``stream`` to a request with ``method``, and the bytes that
    arrived after it. Raises (h11.RemoteProtocolError) if the bytes are no well-formed
    HTTP/1.1 response, AssertionError if the connection ends before one is complete."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "testserver")]))
    client.send(h11.EndOfMessage())
    interim: list[int] = []
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(bytes(await stream.receive_some()))
        elif isinstance(event, h11.InformationalResponse):
            interim.append(event.status_code)
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise AssertionError(f"the connection ended before a complete response: {event!r}")
    assert response is not None
    headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1"))
                    for k, v in response.headers)
    answer = Answer(status=response.status_code, headers=headers, body=bytes(body),
                    interim=tuple(interim))
    return answer, client.trailing_data[0]


async def read_to_eof(stream: trio.abc.Stream) -> bytes:
    """Everything until the server closes its side."""
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


def check_answer(answer: Answer, method: bytes, statuses: frozenset[int] = STATUSES) -> None:
    """What every response promises, whatever the request."""
    assert answer.status != 500, answer  # a 500 is a bug in the server
    assert answer.status in statuses, answer
    assert set(answer.interim) <= {100}, answer
    if method == b"HEAD":
        assert answer.body == b"", answer
    if answer.status >= 400:
        assert answer.header("content-type") == PROBLEM_CONTENT_TYPE, answer
        if method != b"HEAD":
            problem = answer.json()
            assert isinstance(problem, dict), answer
            assert problem["status"] == answer.status, answer
            assert type(problem["status"]) is int, answer
            assert isinstance(problem["title"], str) and problem["title"], answer
            assert isinstance(problem["detail"], str), answer
        if answer.status == 405:
            assert answer.header("allow"), answer  # RFC 9110 section 15.5.6
    elif answer.status == 204:
        assert answer.body == b"", answer
    elif method != b"HEAD":
        assert answer.header("content-type") in (
            "application/json", "application/td+json", "application/ld+json")  # a listing
        answer.json()  # raises unless JSON
        if answer.status == 201:
            assert answer.header("location"), answer


@attrs.define
class Harness:
    """A running server and the connections opened to it in one example."""

    server: ThingServer
    nursery: trio.Nursery
    reference_td: Any = None
    last_invocation: str = "00000000-0000-0000-0000-000000000000"

    def connect(self) -> trio.abc.HalfCloseableStream:
        """A new connection; the server serves its other end in the example's nursery."""
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.server.handle_connection, server_stream)
        return client_stream

    async def get_td(self, stream: trio.abc.Stream) -> None:
        """GET the counter's TD on ``stream``; assert it is answered exactly as always."""
        await stream.send_all(TD_REQUEST)
        answer, extra = await read_answer(stream, b"GET")
        assert (answer.status, extra) == (200, b""), answer
        assert answer.header("content-type") == "application/td+json"
        td = answer.json()
        if self.reference_td is None:
            self.reference_td = td
        assert td == self.reference_td


async def _metronome() -> None:
    """Keep a deadline at most 0.1 virtual seconds ahead. While a worker thread works
    (real time the clock cannot see) and nothing else waits on a timer (at shutdown the
    Thermometer's own task is gone), the autojump clock would otherwise jump straight to
    the example's deadline; this way it moves 0.1 s per millisecond of idleness."""
    for _ in itertools.count():
        await trio.sleep(0.1)


def run_example(body: Callable[[Harness], Awaitable[None]]) -> None:
    """Run ``body`` against a fresh server on the autojump clock, in one ``trio.run``; the
    server's connections must all end once the client closed them."""

    async def main() -> None:
        server = make_server()
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as outer:
                outer.start_soon(_metronome)
                async with server.running(), trio.open_nursery() as nursery:
                    harness = Harness(server=server, nursery=nursery)
                    stream = harness.connect()
                    await harness.get_td(stream)
                    await stream.aclose()
                    await body(harness)
                outer.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=AUTOJUMP_THRESHOLD))


# --------------------------------------------------------------------------- requests

TOKEN_CHARS: Final = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
TOKENS: Final = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)

METHODS: Final = st.one_of(
    st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE"]),
    st.sampled_from(["OPTIONS", "PATCH", "TRACE", "CONNECT", "get", "post", "PROPFIND"]),
    TOKENS,
    st.text(max_size=6),  # often no token at all: spaces, unicode, nothing
)

KNOWN_TARGETS: Final = st.sampled_from([
    "/", "/things/", "/thing_descriptions/", "/.well-known/wot", "/action_invocations/",
    "/.well-known/wot/things", "/.well-known/wot/things?offset=1&limit=1&format=collection",
    f"/.well-known/wot/things/{COUNTER_ID}", "/.well-known/wot/things/urn:uuid:x",
    f"/action_invocations/{LAST}", f"/action_invocations/{LAST}/output",
    "/counter/", "/counter", "/counter/count", "/counter/properties",
    "/counter/properties?names=count", "/counter/actions", "/counter/increment",
    "/counter/actions/increment", "/counter/count_slowly", "/counter/actions/count_slowly",
    "/thermometer/", "/thermometer/setpoint", "/thermometer/threshold",
    "/thermometer/temperature", "/thermometer/properties",
    "/thermometer/properties?names=setpoint,threshold", "/thermometer/ramp",
    "/thermometer/actions/ramp", "/thermometer/events/overheated", "/thermometer/actions",
])

SEGMENTS: Final = st.one_of(
    st.sampled_from([
        "thermometer", "counter", "temperature", "setpoint", "threshold", "count",
        "properties", "actions", "events", "overheated", "ramp", "increment", "count_slowly",
        "action_invocations", "output", "things", "thing_descriptions", ".well-known", "wot",
        "ws", LAST, "", ".", "..", "%2F", "%2f", "%00", "%2e%2e", "%", "%zz", "%C3%A9",
        "counter%2Fcount", "~", "?", "#", ";x=1",
    ]),
    st.text(alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%",
            max_size=12),
    st.text(max_size=6).map(lambda s: urllib.parse.quote(s, safe="")),  # encoded unicode
    st.text(max_size=4),  # raw unicode and controls: never valid in a request line
    st.integers(min_value=100, max_value=2500).map(lambda n: "x" * n),  # to 431
)

QUERIES: Final = st.one_of(
    st.just(""),
    st.sampled_from(["?", "?names=", "?names=count,nope", "?names=setpoint&names=threshold",
                     "?names=%00", "?names=%FF", "?access_token=abc", "?&&==", "?x=%zz",
                     "?limit=0", "?offset=-1", "?limit=1&offset=99999999999",
                     "?format=collection", "?format=%00"]),
    st.text(max_size=20).map(lambda s: "?" + urllib.parse.quote(s, safe="=&,")),
)

TARGETS: Final = st.one_of(
    KNOWN_TARGETS,
    st.tuples(KNOWN_TARGETS, QUERIES).map("".join),
    st.builds(lambda segments, query: "/" + "/".join(segments) + query,
              st.lists(SEGMENTS, max_size=5), QUERIES),
    st.sampled_from(["*", "http://testserver/counter/count", "counter/count", "", "//",
                     "/counter//count", "/./counter/count", "/counter/../counter/count"]),
)

def client_json(value: Any) -> bytes:
    """``value`` as JSON, written as a client in any language may write it.

    Not with orjson: it refuses to write an integer beyond 64 bits (``TypeError`` while
    the test data is being made, which once failed the suite by chance), and a client may
    well send one. The standard library writes integers of any size.
    """
    return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()


#: Floats are kept below 1e15 in magnitude. Integers go beyond 64 bits on purpose: the
#: server refuses them for an integer schema (422, see
#: test_integers_beyond_64_bits_are_refused) and reads them as the nearest double for a
#: number schema, as orjson does.
SCALARS: Final = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False), st.text(max_size=8),
    st.sampled_from([0, 1, -1, 150, 150.0001, -50, -50.5, 20, 20.0, 1.5, "20", "", [], {}]),
)
JSON: Final = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
ACTION_INPUTS: Final = st.dictionaries(
    st.sampled_from(["to", "rate", "by", "n", "delay", "bye"]), SCALARS, max_size=3)
PROPERTY_VALUES: Final = st.dictionaries(
    st.sampled_from(["count", "setpoint", "threshold", "temperature", "nope"]), SCALARS,
    max_size=3)

BODIES: Final = st.one_of(
    st.just(b""),
    st.one_of(SCALARS, JSON, ACTION_INPUTS, PROPERTY_VALUES).map(client_json),
    st.text(max_size=30).map(str.encode),
    st.binary(max_size=60),
    st.sampled_from([b"{", b"[1,", b"nul", b"1e400", b"NaN", b'{"to": 1e400}', b"\xff\xfe",
                     b"  ", b"{}", b"[]", b'"x"', b'{"count": 1}{', b"\x00"]),
    st.integers(min_value=1, max_value=64).map(lambda n: b"1" * (LIMITS.max_body_bytes + n)),
)

CONTENT_TYPES: Final = st.one_of(
    st.none(),
    st.sampled_from([
        "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
        "application/td+json", "application/merge-patch+json", "text/plain",
        "application/x-www-form-urlencoded", "", ";", "multipart/form-data; boundary=x"]),
    st.builds("{}/{}".format, TOKENS, TOKENS),
)

#: Header values: visible ASCII, spaces, tabs and obs-text (bytes 0x80-0xff, as latin-1).
VALUE_CHARS: Final = "".join(map(chr, [9, *range(0x20, 0x7f), *range(0x80, 0x100)]))
#: Names set only where the framing needs them, or chosen on purpose.
RESERVED: Final = frozenset({"content-length", "transfer-encoding", "connection", "expect",
                             "host"})
EXTRA_HEADERS: Final = st.one_of(
    st.tuples(TOKENS.filter(lambda n: n.lower() not in RESERVED),
              st.text(alphabet=VALUE_CHARS, max_size=30))
    .map(lambda nv: nv[0].encode() + b": " + nv[1].encode("latin-1")),
    st.sampled_from([b"Authorization: Bearer nope", b"Origin: http://evil.example",
                     b"Accept: */*", b"Access-Control-Request-Method: PUT",
                     b"Cookie: a=b", b"X-Forwarded-Host: \xe9"]),
    # Malformed lines; never empty, which would end the head early.
    st.binary(min_size=1, max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b
                                              and b.strip() != b""),
)
#: Hosts, including bytes beyond ASCII (obs-text, which h11 accepts).
HOSTS: Final = st.one_of(
    st.none(), st.just("testserver"),
    st.sampled_from(["localhost:8000", "a/b", "x y", "[::1]:80", "@", "", "h:99999", "\xe9"]),
    st.text(alphabet="".join(map(chr, range(0x01, 0x100))).replace("\r", "").replace("\n", ""),
            max_size=20),
)


def _segments(target: str) -> list[str]:
    """The path segments as the router decodes them."""
    segments = [urllib.parse.unquote(s) for s in target.partition("?")[0].split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()
    return segments


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _may_run_long(action: str, body: bytes) -> bool:
    """Whether ``body`` might start ``action`` for longer than an example should take:
    ``count_slowly`` sleeps in real time (default: 10 times 1 s), and an invoke-and-wait
    of ``ramp`` with a tiny rate would wait forever even in virtual time. Errs on the
    side of "long"; then the body is replaced by a quick valid one."""
    if not body.strip():
        return action == "count_slowly"  # no body: the defaults
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if value is None:
        value = {}  # ``null`` means no arguments too
    if not isinstance(value, dict):
        return False
    if action == "count_slowly":
        if set(value) - {"n", "delay"}:
            return False
        n, delay = value.get("n", 10), value.get("delay", 1.0)
        return _number(n) and _number(delay) and not (n <= 3 and delay <= 0.001)
    if set(value) - {"to", "rate"} or not _number(value.get("to")):
        return False
    rate = value.get("rate", 1.0)
    return _number(rate) and not rate >= 100  # at most 20 steps of 0.1 virtual seconds


def _bounded(method: str, target: str, body: bytes) -> bytes:
    """``body``, unless it would start an action that runs too long for an example."""
    if method != "POST":
        return body
    match _segments(target):
        case ["counter", "count_slowly"] | ["counter", "actions", "count_slowly"]:
            if _may_run_long("count_slowly", body):
                return b'{"n": 2, "delay": 0}'
        case ["thermometer", "actions", "ramp"]:  # invoke and wait
            if _may_run_long("ramp", body):
                return b'{"to": 25, "rate": 100}'
    return body


@attrs.frozen
class Request:
    """A request as raw parts; ``encode`` makes the bytes."""

    method: str
    target: str
    version: bytes
    host: str | None
    content_type: str | None
    connection: bytes | None
    expect: bool
    extra: tuple[bytes, ...]
    body: bytes
    chunked: bool

    @property
    def asks_to_close(self) -> bool:
        return self.version == b"HTTP/1.0" or self.connection == b"close"

    def encode(self, last_invocation: str) -> bytes:
        target = self.target.replace(LAST, last_invocation)
        lines = [self.method.encode() + b" " + target.encode() + b" " + self.version]
        if self.host is not None:
            lines.append(b"Host: " + self.host.encode())
        lines.extend(self.extra)
        if self.content_type is not None:
            lines.append(b"Content-Type: " + self.content_type.encode())
        if self.connection is not None:
            lines.append(b"Connection: " + self.connection)
        if self.expect:
            lines.append(b"Expect: 100-continue")
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked")
            body = b"".join(b"%x\r\n%s\r\n" % (len(self.body[i:i + 7]), self.body[i:i + 7])
                            for i in range(0, len(self.body), 7)) + b"0\r\n\r\n"
        else:
            if self.body:
                lines.append(b"Content-Length: %d" % len(self.body))
            body = self.body
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


#: Parts of well-formed requests, so that most requests reach the application.
PLAIN_METHODS: Final = st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE",
                                        "GET", "PUT", "POST", "OPTIONS"])
PLAIN_HEADERS: Final = st.tuples(
    TOKENS.filter(lambda n: n.lower() not in RESERVED),
    st.text(alphabet=string.ascii_letters + string.digits + " -_.,;=/*", max_size=20),
).map(lambda nv: nv[0].encode() + b": " + nv[1].strip().encode())
SHAPED_BODIES: Final = st.one_of(SCALARS, ACTION_INPUTS, PROPERTY_VALUES).map(client_json)
TEMPERATURES: Final = st.floats(min_value=-50, max_value=150)
#: Requests that fit their resource, with a body its schema accepts (or none needed).
FITTING: Final = st.one_of(
    st.tuples(st.just("POST"), st.sampled_from(["/counter/increment",
                                                "/counter/actions/increment"]),
              st.fixed_dictionaries({}, optional={"by": st.integers(-1000, 1000)})),
    st.tuples(st.just("POST"), st.sampled_from(["/thermometer/ramp",
                                                "/thermometer/actions/ramp"]),
              st.fixed_dictionaries({"to": TEMPERATURES}, optional={
                  "rate": st.floats(min_value=0.001, max_value=1000)})),
    st.tuples(st.just("POST"), st.sampled_from(["/counter/count_slowly",
                                                "/counter/actions/count_slowly"]),
              st.fixed_dictionaries({"n": st.integers(0, 3), "delay": st.just(0)})),
    st.tuples(st.just("PUT"), st.just("/counter/count"), st.integers(-1000, 1000)),
    st.tuples(st.just("PUT"), st.sampled_from(["/thermometer/setpoint",
                                               "/thermometer/threshold"]), TEMPERATURES),
    st.tuples(st.just("PUT"), st.just("/thermometer/properties"), st.fixed_dictionaries(
        {}, optional={"setpoint": TEMPERATURES, "threshold": TEMPERATURES})),
    *[st.tuples(st.sampled_from(["GET", "DELETE"]),  # weighted: 409 needs an invocation
                st.sampled_from([f"/action_invocations/{LAST}",
                                 f"/action_invocations/{LAST}/output"]), st.none())] * 3,
).map(lambda mtv: (mtv[0], mtv[1], b"" if mtv[2] is None else client_json(mtv[2])))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """One in three fits its resource, one in three is well-formed, one in three wild."""
    kind = draw(st.sampled_from(["fitting", "well-formed", "wild"]))
    host: str | None
    content_type = draw(st.one_of(st.just("application/json"), CONTENT_TYPES))
    if kind == "fitting":
        method, target, body = draw(FITTING)
        if draw(st.booleans()):  # the right resource, a value of the wrong shape
            body = draw(SHAPED_BODIES)
        host = "testserver"
        extra = []
        version = b"HTTP/1.1"
        if draw(st.booleans()):
            content_type = "application/json"
    elif kind == "wild":
        method = draw(METHODS)
        target = draw(TARGETS)
        host = draw(HOSTS)
        extra = draw(st.lists(EXTRA_HEADERS, max_size=3))
        body = draw(BODIES)
        version = draw(st.sampled_from([b"HTTP/1.1"] * 3 + [b"HTTP/1.0"]))
    else:
        method = draw(PLAIN_METHODS)
        target = draw(st.one_of(KNOWN_TARGETS, st.tuples(KNOWN_TARGETS, QUERIES).map("".join)))
        host = draw(st.sampled_from(["testserver", "localhost:8000", "[::1]:8000"]))
        extra = draw(st.lists(PLAIN_HEADERS, max_size=2))
        body = draw(st.one_of(st.just(b""), SHAPED_BODIES, BODIES))
        version = b"HTTP/1.1"
    return Request(
        method=method,
        target=target,
        version=version,
        host=host,
        content_type=content_type,
        connection=draw(st.sampled_from([None, None, None, b"close", b"keep-alive"])),
        expect=draw(st.sampled_from([False, False, True])),
        extra=tuple(extra),
        body=_bounded(method, target, body),
        chunked=draw(st.sampled_from([False, False, True])),
    )


def plain(method: str, target: str, body: bytes = b"", **changes: Any) -> Request:
    """A well-formed request (JSON body if any), with ``changes``."""
    request = Request(method=method, target=target, version=b"HTTP/1.1", host="testserver",
                      content_type="application/json" if body else None, connection=None,
                      expect=False, extra=(), body=body, chunked=False)
    return attrs.evolve(request, **changes)


# --------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sequence=st.lists(requests(), min_size=1, max_size=5))
# Every status of the table in trio_things/bindings/http.py, whatever the generator finds:
@example(sequence=[  # 201, 409 (running), 200 (cancelled), 409 (ended), 409 (no output)
    plain("POST", "/thermometer/ramp", b'{"to": 100, "rate": 0.001}'),
    plain("GET", f"/action_invocations/{LAST}/output"),
    plain("DELETE", f"/action_invocations/{LAST}"),
    plain("DELETE", f"/action_invocations/{LAST}"),
    plain("GET", f"/action_invocations/{LAST}/output"),
])
@example(sequence=[  # 422, 422, 405, 415, 400, 404
    plain("PUT", "/counter/count", b'"seven"'),
    plain("POST", "/counter/increment", b'{"by": "x"}'),
    plain("PUT", "/thermometer/temperature", b"3"),
    plain("PUT", "/counter/count", b"count=1", content_type="text/plain"),
    plain("PUT", "/counter/count", b"{oops"),
    plain("GET", "/nothing/"),
])
@example(sequence=[  # 204 (long-poll timeout), HEAD, 100 Continue, chunked, HTTP/1.0
    plain("GET", "/thermometer/events/overheated"),
    plain("HEAD", "/counter/count"),
    plain("PUT", "/counter/count", b"5", expect=True, chunked=True),
    plain("GET", "/counter/count", version=b"HTTP/1.0"),
])
@example(sequence=[  # 413, 431
    plain("PUT", "/counter/count", b"1" * (LIMITS.max_body_bytes + 1)),
    plain("GET", "/counter/" + "x" * LIMITS.max_header_bytes),
])
def test_any_request_gets_one_well_formed_answer_and_the_connection_stays_usable(
        sequence: list[Request]) -> None:
    """For any method, target, headers and body: exactly one well-formed HTTP/1.1
    response (after at most a 100 Continue), with a status the server documents and
    never 500; every error is RFC 9457 problem details whose integer ``status`` is the
    HTTP status; a HEAD gets no body, a 405 an ``Allow``, a 201 a ``Location``. Then
    the connection either serves a following GET of the TD exactly as a fresh one does,
    or it says ``Connection: close`` and ends with nothing more; a request that asked
    to close (``Connection: close``, HTTP/1.0) is always answered so."""

    async def body(harness: Harness) -> None:
        stream = harness.connect()
        for item in sequence:
            data = item.encode(harness.last_invocation)
            method = method_seen_by_server(data)
            await stream.send_all(data)
            answer, extra = await read_answer(stream, method)
            hypothesis.event(f"status {answer.status}")
            check_answer(answer, method)
            assert extra == b"", (answer, extra)  # nothing but the one response
            if answer.status == 201:
                harness.last_invocation = answer.json()["id"]
            if item.asks_to_close:
                assert answer.closes, answer
            if answer.closes:
                assert await read_to_eof(stream) == b""
                await stream.aclose()
                stream = harness.connect()
            else:
                await harness.get_td(stream)
        await harness.get_td(stream)
        await stream.aclose()

    run_example(body)


RAW_PREFIXES: Final = st.sampled_from([
    b"", b"GET / HTTP/1.1\r\n", b"GET /counter/ HTTP/1.1\r\nHost: x\r\n",
    b"POST /counter/increment HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
    b"PUT /counter/count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"PUT ", b"HTTP/1.1 200 OK\r\n", b"\r\n", b"GET /counter/count HTTP/1.1\r\nHost: x\r\n\r\n",
])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=st.lists(st.tuples(RAW_PREFIXES, st.binary(max_size=120)).map(b"".join),
                       min_size=1, max_size=3))
def test_arbitrary_bytes_are_refused_with_a_problem_and_a_new_connection_works(
        inputs: list[bytes]) -> None:
    """Whatever bytes a peer sends before closing its side: the server never crashes
    and never answers 500; it answers nothing if no request began, a malformed request
    with exactly one problem-details response of h11's status (400, 501, ...) that says
    ``Connection: close``, and any complete request as usual; then it closes. A new
    connection to the same server is served the TD as before."""

    async def body(harness: Harness) -> None:
        for data in inputs:
            stream = harness.connect()
            await stream.send_all(data)
            await stream.send_eof()
            verdict = first_h11_verdict(data)
            answers: list[Answer] = []
            pending = await read_to_eof(stream)
            while pending:
                method = method_seen_by_server(data) if not answers else b"GET"
                replay = trio.testing.memory_stream_pair()
                await replay[0].send_all(pending)
                await replay[0].send_eof()
                answer, pending = await read_answer(replay[1], method)
                pending += await read_to_eof(replay[1])
                hypothesis.event(f"status {answer.status}")
                check_answer(answer, method, RAW_STATUSES)
                answers.append(answer)
            if verdict is h11.ConnectionClosed:
                assert answers == []  # closed quietly: no request began
            elif isinstance(verdict, h11.RemoteProtocolError):
                [answer] = answers
                assert answer.status == verdict.error_status_hint
                assert answer.closes
            await stream.aclose()
            stream = harness.connect()
            await harness.get_td(stream)
            await stream.aclose()

    run_example(body)


def _values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under a property's TD data schema (the kinds the demo Things use)."""
    low, high = schema.get("minimum"), schema.get("maximum")
    if schema["type"] == "integer":
        # JSON integers that orjson reads and writes exactly (64-bit); beyond that they
        # are refused: test_integers_beyond_64_bits_are_refused.
        return st.integers(min_value=-(2**63) if low is None else low,
                           max_value=2**64 - 1 if high is None else high)
    if schema["type"] == "number":
        return st.one_of(
            st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False),
            st.integers(min_value=-(2**53) if low is None else int(low),
                        max_value=2**53 if high is None else int(high)))
    raise AssertionError(f"a demo property of a new type: {schema}")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_schema_valid_writes_are_read_back_equal(data: st.DataObject) -> None:
    """Every value its TD schema allows, written to a demo Thing's writable property
    (one by one, and several at once), is read back equal, as a value of the schema's
    type: the server stores what it accepted and serves exactly that."""

    async def main() -> None:
        server = make_server()
        with trio.fail_after(10):
            async with server.running(), trio.open_nursery() as nursery:
                harness = Harness(server=server, nursery=nursery)
                stream = harness.connect()

                async def call(method: str, target: str, body: bytes = b"") -> Answer:
                    await stream.send_all(
                        f"{method} {target} HTTP/1.1\r\nHost: testserver\r\n".encode()
                        + b"Content-Type: application/json\r\n"
                        + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                    answer, extra = await read_answer(stream, method.encode())
                    assert extra == b""
                    return answer

                schemas: dict[tuple[str, str], dict[str, Any]] = {}
                for thing in ("thermometer", "counter"):
                    td = (await call("GET", f"/{thing}/")).json()
                    schemas |= {(thing, name): schema
                                for name, schema in td["properties"].items()
                                if not schema.get("readOnly")}
                assert set(schemas) == {("thermometer", "setpoint"),
                                        ("thermometer", "threshold"), ("counter", "count")}
                for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
                    thing, name = data.draw(st.sampled_from(sorted(schemas)), label="property")
                    schema = schemas[thing, name]
                    value = data.draw(_values(schema), label="value")
                    written = await call("PUT", f"/{thing}/{name}", orjson.dumps(value))
                    assert written.status == 204, written
                    read = await call("GET", f"/{thing}/{name}")
                    assert read.status == 200
                    assert read.json() == value
                    assert type(read.json()) is (int if schema["type"] == "integer" else float)
                values = {name: data.draw(_values(schemas["thermometer", name]), label=name)
                          for name in ("setpoint", "threshold")}
                written = await call("PUT", "/thermometer/properties", orjson.dumps(values))
                assert written.status == 204, written
                read = await call("GET", "/thermometer/properties?names=setpoint,threshold")
                assert read.json() == values
                await stream.aclose()

    trio.run(main)


# --------------------------------------------------------------------------- known bugs
# Each reproduces a bug the properties above found, now fixed.


def raw_request(method: str, target: str, body: bytes = b"", *,
                host: bytes = b"testserver", headers: bytes = b"") -> bytes:
    """A request's bytes, with a Content-Length when it has a body."""
    length = b"Content-Length: %d\r\n" % len(body) if body else b""
    return (f"{method} {target} HTTP/1.1\r\n".encode() + b"Host: " + host + b"\r\n"
            + headers + length + b"\r\n" + body)


async def _exchange(server: ThingServer, data: bytes) -> Answer:
    """Send ``data`` on a new connection and read the response; then close."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_connection, server_stream)
        await client_stream.send_all(data)
        answer, _ = await read_answer(client_stream, method_seen_by_server(data))
        await client_stream.aclose()
    return answer


async def test_a_non_ascii_host_does_not_turn_an_invocation_into_a_500() -> None:
    """h11 accepts obs-text (bytes 0x80-0xff) in a Host header. ``server_base`` once took
    it as the host, and the 201's ``Location`` then held a character h11 cannot encode:
    500, although the action had started. A Host that is no authority is now replaced
    by the server's own, so the client gets its 201."""
    server = make_server()
    with trio.fail_after(5):
        async with server.running():
            answer = await _exchange(server, raw_request("POST", "/counter/increment",
                                                         host=b"\xe9"))
            assert server._dispatcher is not None
            started = server._dispatcher._invocations.list()
    assert answer.status in (201, 400), answer
    assert (answer.status == 201) == bool(started)


#: Integers a client may send that no 64-bit integer holds, and the ones at the edges.
BEYOND_64_BITS: Final = [b"18446744073709551616", b"-9223372036854775809", b"1e26",
                         b"%d" % 2**70, b"-%d" % 2**70]
AT_THE_EDGES: Final = [b"18446744073709551615", b"-9223372036854775808", b"9007199254740992"]


@pytest.mark.parametrize("text", BEYOND_64_BITS)
@pytest.mark.parametrize("target", ["/counter/count", "/counter/increment"])
async def test_integers_beyond_64_bits_are_refused(text: bytes, target: str) -> None:
    """The server's decision on integers beyond 64 bits: an integer schema refuses them,
    as a property value and as an action input, with 422 problem details that name the
    field and say why. (orjson reads such an integer as a float that has lost its low
    digits; the ``int`` property once stored it, and every later GET was a 500 or read
    back rounded.) The stored value is untouched and nothing is invoked."""
    server = make_server()
    body = text if target.endswith("count") else b'{"by": ' + text + b"}"
    with trio.fail_after(5):
        async with server.running():
            written = await _exchange(server, raw_request(
                "POST" if target.endswith("increment") else "PUT", target, body,
                headers=b"Content-Type: application/json\r\n"))
            read = await _exchange(server, raw_request("GET", "/counter/count"))
            assert server._dispatcher is not None
            started = server._dispatcher._invocations.list()
    assert written.status == 422, written
    problem = written.json()
    assert problem["status"] == 422
    assert ("count" if target.endswith("count") else "by") in problem["detail"]
    assert "64-bit" in problem["detail"] or "exact integer" in problem["detail"]
    assert read.status == 200, read
    assert read.body == b"0"
    assert started == []


@pytest.mark.parametrize("text", AT_THE_EDGES)
async def test_integers_within_64_bits_are_read_back_exactly(text: bytes) -> None:
    """The largest and smallest 64-bit integers (and 2**53, where doubles stop being
    exact) are stored and read back digit for digit."""
    server = make_server()
    with trio.fail_after(5):
        async with server.running():
            written = await _exchange(server, raw_request(
                "PUT", "/counter/count", text, headers=b"Content-Type: application/json\r\n"))
            read = await _exchange(server, raw_request("GET", "/counter/count"))
    assert written.status == 204, written
    assert read.body == text


def test_an_unencodable_property_value_cannot_crash_the_server() -> None:
    """Once, ``1e26`` was stored in ``count`` (see above), and a change made by a worker
    thread (``count_slowly``) then failed to encode inside ``TrioToken.run_sync_soon``:
    a ``TrioInternalError`` that ended the whole server. Now the write is refused, and
    the thread's changes reach the observer (the bridge's own guard is tested in
    tests/fanout/test_bridge.py)."""

    async def main() -> None:
        server = make_server()
        with trio.fail_after(10):
            async with server.running(), open_ws(server, "/counter/ws", [SUBPROTOCOL]) as ws:
                await request(ws, "observeproperty", name="count")
                assert (await receive(ws))["value"] == 0
                await _exchange(server, raw_request("PUT", "/counter/count", b"1e26"))
                await _exchange(server, raw_request("POST", "/counter/actions/count_slowly",
                                                    b'{"n": 1, "delay": 0}'))
                answer = await _exchange(server, TD_REQUEST)
                assert answer.status == 200

    trio.run(main)


WS_HEAD: Final = (b"GET /counter/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n")


async def test_a_malformed_websocket_handshake_is_answered_with_problem_details(
        autojump_clock: trio.testing.MockClock) -> None:
    """A GET with ``Upgrade: websocket`` but no ``Sec-WebSocket-Key`` once went to
    trio-websocket, whose refusal is a bare ``400``; it is now refused before, with
    problem details like every other error."""
    server = make_server()
    with trio.fail_after(60):
        async with server.running():
            answer = await _exchange(server, WS_HEAD + b"\r\n")
    assert answer.status == 400
    check_answer(answer, b"GET")


@pytest.mark.parametrize("head", [
    WS_HEAD + b"\r\n",  # no key: refused by wsproto (400)
    WS_HEAD.replace(b"/counter/ws", b"/nothing/ws") + b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",  # no endpoint: refused (404)
])
async def test_a_refused_websocket_handshake_says_connection_close(
        head: bytes, autojump_clock: trio.testing.MockClock) -> None:
    """Every response after which the server closes says ``Connection: close`` (RFC 9112
    section 9.6), so a client knows not to reuse the connection: a refused handshake
    too."""
    server = make_server()
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(60):
        async with server.running(), trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_connection, server_stream)
            await client_stream.send_all(head)
            answer, _ = await read_answer(client_stream, b"GET")
            assert answer.status in (400, 404)
            closed = await read_to_eof(client_stream) == b""
            await client_stream.aclose()
    assert closed and answer.closes, answer
