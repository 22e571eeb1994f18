"""Server-Sent Events for tests: a parser of ``text/event-stream`` (the WHATWG HTML
standard, "Server-sent events", section 9.2.6) and a raw client that reads one SSE
response incrementally, over any trio stream (in memory or a loopback socket).

The client is h11 (as :class:`trio_things.testing.HttpConnection`) so that the chunked
framing is checked by someone other than the server; it also keeps every byte it
received (:attr:`SseClient.wire`), so that a test can look at the framing itself: the
last chunk ``0\\r\\n\\r\\n`` of a stream the server ended on purpose.

It reads only when told to (:meth:`SseClient.next_item`), so a test decides when a
consumer is slow, stalled or gone.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import h11
import orjson
import trio
import trio.testing

from trio_things.testing import DEFAULT_HOST, InMemoryServer, StreamPair

__all__ = ["ACCEPT_SSE", "Comment", "Message", "SseClient", "SseParser", "open_sse",
           "wait_until"]

#: The ``Accept`` header an ``EventSource`` sends.
ACCEPT_SSE: Final = {"accept": "text/event-stream"}
#: Seconds any one wait of the client may take (a hang fails fast, even in real time).
TIMEOUT: Final = 10.0


@attrs.frozen
class Message:
    """One dispatched message. ``event`` is None when the message had no ``event:``
    line (an ``EventSource`` calls it ``message``); ``id`` is the stream's last event id
    when it was dispatched (set by the newest ``id:`` line, of this message or an
    earlier one, as ``MessageEvent.lastEventId``), None before any."""

    data: str
    event: str | None = None
    id: str | None = None

    def json(self) -> Any:
        return orjson.loads(self.data)


@attrs.frozen
class Comment:
    """A comment line (``: text``), without the colon and the one space after it."""

    text: str


Item = Message | Comment


class SseParser:
    """``text/event-stream`` bytes in, :class:`Message` and :class:`Comment` out, in the
    order they came; bytes may be split anywhere (inside a UTF-8 sequence or a CRLF
    too). Lines end with CRLF, LF or CR."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self.last_event_id: str | None = None
        """What an ``EventSource`` would send as ``Last-Event-ID`` now: set at each
        message's end, even one without data (which dispatches nothing)."""

    def feed(self, data: bytes) -> list[Item]:
        items: list[Item] = []
        buffer = self._buffer + self._decoder.decode(data)
        start = 0
        while (end := _EOL.search(buffer, start)) is not None:
            if end.group() == "\r" and end.end() == len(buffer):
                break  # perhaps the CR of a CRLF whose LF has not come yet
            self._end_line(buffer[start:end.start()], items)
            start = end.end()
        self._buffer = buffer[start:]
        return items

    def _end_line(self, line: str, items: list[Item]) -> None:
        if not line:
            self.last_event_id = self._id  # the id buffer outlives the message
            if self._data:
                items.append(Message(data="\n".join(self._data), event=self._event,
                                     id=self._id))
            self._data, self._event = [], None
            return
        if line.startswith(":"):
            items.append(Comment(line[1:].removeprefix(" ")))
            return
        field, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value


_EOL: Final = re.compile(r"\r\n|\r|\n")


class SseClient:
    """One request on ``stream``, answered (unless refused) by an event stream."""

    def __init__(self, stream: trio.abc.Stream, *, host: str = DEFAULT_HOST,
                 timeout: float = TIMEOUT) -> None:
        self.stream = stream
        self.host = host
        self.timeout = timeout
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        """The whole body of an answer that is no event stream (a refusal)."""
        self.items: list[Item] = []
        """Every message and comment received so far, in order."""
        self.wire = bytearray()
        """Every byte received, as sent (the response head first)."""
        self.ended = False
        """The server sent the last chunk: it ended the stream on purpose."""
        self.closed = False
        """The connection ended (with or without the last chunk)."""
        self._h11 = h11.Connection(h11.CLIENT)
        self._parser = SseParser()
        self._unread = 0

    @property
    def is_stream(self) -> bool:
        return self.status == 200 and self.headers.get("content-type") == "text/event-stream"

    async def request(self, path: str, headers: Mapping[str, str] | None = None, *,
                      method: str = "GET") -> None:
        """Send the request and read the response head; the whole body too, unless it
        is an event stream."""
        all_headers = {"host": self.host} | {k.lower(): v for k, v in (headers or {}).items()}
        data = self._h11.send(h11.Request(method=method, target=path,
                                          headers=list(all_headers.items())))
        data += self._h11.send(h11.EndOfMessage())
        with trio.fail_after(self.timeout):
            await self.stream.send_all(data)
            while True:
                event = await self._next_event()
                if isinstance(event, h11.Response):
                    break
            self.status = event.status_code
            self.headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            if not self.is_stream or method == "HEAD":
                body = bytearray()
                while not isinstance(event := await self._next_event(), h11.EndOfMessage):
                    if isinstance(event, h11.Data):
                        body += event.data
                self.body = bytes(body)

    def json(self) -> Any:
        return orjson.loads(self.body)

    async def _next_event(self) -> h11.Event:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            data = bytes(await self.stream.receive_some(65536))
            self.wire += data
            self._h11.receive_data(data)

    async def _read(self) -> bool:
        """Read once more of the body; False once the stream has ended."""
        if self.closed:
            return False
        try:
            event = await self._next_event()
        except h11.RemoteProtocolError:  # closed before the last chunk
            self.closed = True
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            return False
        if isinstance(event, h11.Data):
            self.items.extend(self._parser.feed(bytes(event.data)))
        elif isinstance(event, h11.EndOfMessage):
            self.ended = True
        elif isinstance(event, h11.ConnectionClosed):
            self.closed = True
        return True

    @property
    def last_event_id(self) -> str | None:
        """What an ``EventSource`` would send back as ``Last-Event-ID`` now."""
        return self._parser.last_event_id

    async def read_until_positioned(self) -> str:
        """Read until the stream has given a last event id (a message with an id, even
        one without data); that id."""
        with trio.fail_after(self.timeout):
            while self._parser.last_event_id is None:
                assert await self._read(), f"the stream ended; received {self.items}"
        return self._parser.last_event_id

    async def next_item(self) -> Item:
        """The next message or comment not yet returned, reading as needed."""
        assert self.is_stream, (self.status, self.body)
        with trio.fail_after(self.timeout):
            while self._unread == len(self.items):
                assert await self._read(), f"the stream ended; received {self.items}"
        self._unread += 1
        return self.items[self._unread - 1]

    async def next_message(self) -> Message:
        """The next message not yet returned, passing over comments."""
        while True:
            item = await self.next_item()
            if isinstance(item, Message):
                return item

    async def messages(self, n: int) -> list[Message]:
        """The next ``n`` messages."""
        return [await self.next_message() for _ in range(n)]

    async def read_to_end(self) -> list[Item]:
        """Read until the connection ends; the items not yet returned."""
        with trio.fail_after(self.timeout):
            while await self._read():
                pass
        rest = self.items[self._unread:]
        self._unread = len(self.items)
        return rest


@asynccontextmanager
async def open_sse(served: InMemoryServer, path: str, headers: Mapping[str, str] | None = None,
                   *, accept: str | None = "text/event-stream", method: str = "GET",
                   stream_pair: StreamPair | None = None,
                   timeout: float = TIMEOUT,  # noqa: ASYNC109 (each wait's, as testing.py's)
                   ) -> AsyncIterator[SseClient]:
    """An :class:`SseClient` whose request for ``path`` (``Accept: accept``) was sent and
    whose response head was read; its connection is closed abruptly when the block ends."""
    stream = await served.open_raw_stream(stream_pair=stream_pair)
    try:
        client = SseClient(stream, host=served.host, timeout=timeout)
        all_headers = {"accept": accept} if accept is not None else {}
        await client.request(path, all_headers | dict(headers or {}), method=method)
        yield client
    finally:
        await trio.aclose_forcefully(stream)


async def wait_until(condition: Callable[[], bool], *, rounds: int = 100) -> None:
    """Wait until ``condition()`` holds, letting every task run until it blocks between
    tries (for in-memory servers, whose every step is a task's): fails after ``rounds``
    tries rather than spin, as a busy loop would stop an autojump clock."""
    for _ in range(rounds):
        if condition():
            return
        await trio.testing.wait_all_tasks_blocked()
    assert condition(), f"still not {condition} after {rounds} rounds"
