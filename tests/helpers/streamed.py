"""A raw HTTP/1.1 client for one streamed response (an event stream, a live image
stream): h11 for the HTTP, a parser of the body's own format for what it carries.

:class:`StreamedResponse` sends the request, reads the head (and the whole body of an
answer that is no stream, or of a HEAD), then reads the stream on demand, handing its
bytes to :meth:`StreamedResponse.feed`. Every wait is bounded by ``timeout``. The SSE
and MJPEG clients of ``tests/helpers`` are its subclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

import h11
import trio

from trio_things.testing import DEFAULT_HOST

__all__ = ["TIMEOUT", "StreamedResponse"]

TIMEOUT = 10.0
T = TypeVar("T")


class StreamedResponse(Generic[T]):
    """One request on ``stream``, answered (unless refused) by a stream of ``T``."""

    receive_size = 65536
    """Bytes asked of the stream at a time."""

    def __init__(self, stream: trio.abc.Stream, *, host: str = DEFAULT_HOST,
                 timeout: float = TIMEOUT) -> None:
        self.stream = stream
        self.host = host
        self.timeout = timeout
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        """The whole body of an answer that is no stream (a refusal, a HEAD)."""
        self.received: list[T] = []
        """Everything the stream carried so far, in order."""
        self.wire = bytearray()
        """Every byte received, as sent (the response head first)."""
        self.ended = False
        """The server sent the last chunk: it ended the stream on purpose."""
        self.closed = False
        """The connection ended (with or without the last chunk)."""
        self._h11 = h11.Connection(h11.CLIENT)
        self._unread = 0

    @property
    def is_stream(self) -> bool:
        """Whether the response is the stream (by its status and content type)."""
        raise NotImplementedError

    def begin(self) -> None:
        """Called once the head of a stream is read (a parser may need it)."""

    def feed(self, data: bytes) -> list[T]:
        """What ``data``, the next bytes of the body, completes."""
        raise NotImplementedError

    async def request(self, path: str, headers: Mapping[str, str] | None = None, *,
                      method: str = "GET") -> None:
        """Send the request and read the response head; the whole body too, unless it
        is a stream answering a GET."""
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
            else:
                self.begin()

    async def _next_event(self) -> h11.Event:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            data = bytes(await self.stream.receive_some(self.receive_size))
            self.wire += data
            self._h11.receive_data(data)

    async def _read(self) -> bool:
        """Read once more of the body; False once the stream has ended."""
        if self.closed:
            return False
        try:
            event = await self._next_event()
        except (h11.RemoteProtocolError,  # closed before the last chunk
                trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            return False
        if isinstance(event, h11.Data):
            self.received.extend(self.feed(bytes(event.data)))
        elif isinstance(event, h11.EndOfMessage):
            self.ended = True
        elif isinstance(event, h11.ConnectionClosed):
            self.closed = True
        return True

    async def next_received(self) -> T:
        """The next thing the stream carried, not yet returned, reading as needed."""
        with trio.fail_after(self.timeout):
            while self._unread == len(self.received):
                assert await self._read(), f"the stream ended; received {self.received}"
        self._unread += 1
        return self.received[self._unread - 1]

    async def read_to_end(self) -> list[T]:
        """Read until the connection ends; what was not yet returned."""
        with trio.fail_after(self.timeout):
            while await self._read():
                pass
        rest = self.received[self._unread:]
        self._unread = len(self.received)
        return rest
