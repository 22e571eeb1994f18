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
import orjson
import trio
import trio.testing

from tests.helpers.streamed import TIMEOUT, StreamedResponse
from trio_things.testing import DEFAULT_HOST, InMemoryServer, StreamPair

__all__ = ["ACCEPT_SSE", "Comment", "Message", "SseClient", "SseParser", "open_sse",
           "wait_until"]

#: The ``Accept`` header an ``EventSource`` sends.
ACCEPT_SSE: Final = {"accept": "text/event-stream"}
#: Seconds any one wait of the client may take (a hang fails fast, even in real time).


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


class SseClient(StreamedResponse[Item]):
    """One request on ``stream``, answered (unless refused) by an event stream."""

    def __init__(self, stream: trio.abc.Stream, *, host: str = DEFAULT_HOST,
                 timeout: float = TIMEOUT) -> None:
        super().__init__(stream, host=host, timeout=timeout)
        self._parser = SseParser()

    @property
    def items(self) -> list[Item]:
        """Every message and comment received so far, in order."""
        return self.received

    @property
    def is_stream(self) -> bool:
        return self.status == 200 and self.headers.get("content-type") == "text/event-stream"

    def feed(self, data: bytes) -> list[Item]:
        return self._parser.feed(data)

    def json(self) -> Any:
        return orjson.loads(self.body)

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
        return await self.next_received()

    async def next_message(self) -> Message:
        """The next message not yet returned, passing over comments."""
        while True:
            item = await self.next_item()
            if isinstance(item, Message):
                return item

    async def messages(self, n: int) -> list[Message]:
        """The next ``n`` messages."""
        return [await self.next_message() for _ in range(n)]


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
