"""Live image streams for tests: a strict parser of ``multipart/x-mixed-replace`` bodies
(RFC 2046 section 5.1, as browsers read MJPEG) and a raw client that reads one such
response incrementally, over any trio stream (in memory or a loopback socket).

As :mod:`tests.helpers.sse`, the client is h11, so that the chunked framing is checked
by someone other than the server, and keeps every byte it received (:attr:`wire`). It
reads only when told to, so a test decides when a viewer is slow, stalled or gone.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

import attrs
import h11
import trio

from trio_things.testing import DEFAULT_HOST, InMemoryServer, StreamPair

__all__ = ["MjpegClient", "Part", "PartParser", "is_jpeg", "open_mjpeg"]

#: Seconds any one wait of the client may take (a hang fails fast, even in real time).
TIMEOUT: Final = 10.0
_BOUNDARY: Final = re.compile(r'boundary="?([^";]+)"?')


@attrs.frozen
class Part:
    """One part: its headers (lower-case names) and its body."""

    headers: dict[str, str]
    body: bytes


def is_jpeg(data: bytes) -> bool:
    """Whether ``data`` begins with a JPEG's SOI marker and ends with its EOI."""
    return data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"


class PartParser:
    """Body bytes in, :class:`Part` values out, split anywhere. Strict: every part must
    begin with the delimiter, carry ``Content-Length``, and end with CRLF right after
    that many bytes; anything else is an :exc:`AssertionError`."""

    def __init__(self, boundary: str) -> None:
        self._delimiter = b"--" + boundary.encode()
        self._buffer = b""
        self.closed = False
        """The close delimiter came: no part follows."""

    def feed(self, data: bytes) -> list[Part]:
        self._buffer += data
        parts: list[Part] = []
        while self._buffer and not self.closed:
            part = self._next()
            if part is None:
                break
            parts.append(part)
        return parts

    def _next(self) -> Part | None:
        buffer, delimiter = self._buffer, self._delimiter
        if len(buffer) < len(delimiter) + 2:
            assert delimiter.startswith(buffer[:len(delimiter)]), buffer[:80]
            return None
        assert buffer.startswith(delimiter), f"no delimiter at {buffer[:80]!r}"
        after = buffer[len(delimiter):len(delimiter) + 2]
        if after == b"--":
            assert buffer[len(delimiter) + 2:] in (b"", b"\r", b"\r\n"), buffer[:80]
            self.closed = True
            self._buffer = b""
            return None
        assert after == b"\r\n", f"the delimiter ends with {after!r}"
        end = buffer.find(b"\r\n\r\n", len(delimiter))
        if end < 0:
            return None
        headers: dict[str, str] = {}
        for line in buffer[len(delimiter) + 2:end].decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            assert colon, f"a header line without a colon: {line!r}"
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        start = end + 4
        if len(buffer) < start + length + 2:
            return None
        assert buffer[start + length:start + length + 2] == b"\r\n", "no CRLF after the body"
        self._buffer = buffer[start + length + 2:]
        return Part(headers=headers, body=buffer[start:start + length])


class MjpegClient:
    """One request on ``stream``, answered (unless refused) by a live image stream."""

    def __init__(self, stream: trio.abc.Stream, *, host: str = DEFAULT_HOST,
                 timeout: float = TIMEOUT) -> None:
        self.stream = stream
        self.host = host
        self.timeout = timeout
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""
        """The whole body of an answer that is no image stream (a refusal, a HEAD)."""
        self.parts: list[Part] = []
        """Every part received so far, in order."""
        self.wire = bytearray()
        """Every byte received, as sent (the response head first)."""
        self.ended = False
        """The server sent the last chunk: it ended the stream on purpose."""
        self.closed = False
        """The connection ended (with or without the last chunk)."""
        self._h11 = h11.Connection(h11.CLIENT)
        self._parser: PartParser | None = None
        self._unread = 0

    @property
    def is_stream(self) -> bool:
        return self.status == 200 and self.headers.get("content-type", "").startswith(
            "multipart/x-mixed-replace")

    @property
    def boundary(self) -> str:
        match = _BOUNDARY.search(self.headers.get("content-type", ""))
        assert match is not None, self.headers
        return match.group(1)

    async def request(self, path: str, headers: Mapping[str, str] | None = None, *,
                      method: str = "GET") -> None:
        """Send the request and read the response head; the whole body too, unless it
        is an image stream answering a GET."""
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
                self._parser = PartParser(self.boundary)

    async def _next_event(self) -> h11.Event:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            data = bytes(await self.stream.receive_some(1 << 20))
            self.wire += data
            self._h11.receive_data(data)

    async def _read(self) -> bool:
        """Read once more of the body; False once the stream has ended."""
        assert self._parser is not None, (self.status, self.headers, self.body)
        if self.closed:
            return False
        try:
            event = await self._next_event()
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            return False
        if isinstance(event, h11.Data):
            self.parts.extend(self._parser.feed(bytes(event.data)))
        elif isinstance(event, h11.EndOfMessage):
            self.ended = True
        elif isinstance(event, h11.ConnectionClosed):
            self.closed = True
        return True

    @property
    def close_delimiter_seen(self) -> bool:
        return self._parser is not None and self._parser.closed

    async def next_part(self) -> Part:
        """The next part not yet returned, reading as needed."""
        with trio.fail_after(self.timeout):
            while self._unread == len(self.parts):
                assert await self._read(), f"the stream ended after {len(self.parts)} parts"
        self._unread += 1
        return self.parts[self._unread - 1]

    async def read_to_end(self) -> list[Part]:
        """Read until the connection ends; the parts not yet returned."""
        with trio.fail_after(self.timeout):
            while await self._read():
                pass
        rest = self.parts[self._unread:]
        self._unread = len(self.parts)
        return rest


@asynccontextmanager
async def open_mjpeg(served: InMemoryServer, path: str,
                     headers: Mapping[str, str] | None = None, *, method: str = "GET",
                     stream_pair: StreamPair | None = None,
                     timeout: float = TIMEOUT,  # noqa: ASYNC109 (each wait's, as testing.py's)
                     ) -> AsyncIterator[MjpegClient]:
    """An :class:`MjpegClient` whose request for ``path`` was sent and whose response
    head was read; its connection is closed abruptly when the block ends."""
    stream = await served.open_raw_stream(stream_pair=stream_pair)
    try:
        client = MjpegClient(stream, host=served.host, timeout=timeout)
        await client.request(path, headers, method=method)
        yield client
    finally:
        await trio.aclose_forcefully(stream)
