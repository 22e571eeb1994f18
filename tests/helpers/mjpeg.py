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
import trio

from tests.helpers.streamed import TIMEOUT, StreamedResponse
from trio_things.testing import DEFAULT_HOST, InMemoryServer, StreamPair

__all__ = ["MjpegClient", "Part", "PartParser", "is_jpeg", "open_mjpeg"]

#: Seconds any one wait of the client may take (a hang fails fast, even in real time).
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


class MjpegClient(StreamedResponse[Part]):
    """One request on ``stream``, answered (unless refused) by a live image stream."""

    receive_size = 1 << 20

    def __init__(self, stream: trio.abc.Stream, *, host: str = DEFAULT_HOST,
                 timeout: float = TIMEOUT) -> None:
        super().__init__(stream, host=host, timeout=timeout)
        self._parser: PartParser | None = None

    @property
    def parts(self) -> list[Part]:
        """Every part received so far, in order."""
        return self.received

    @property
    def is_stream(self) -> bool:
        return self.status == 200 and self.headers.get("content-type", "").startswith(
            "multipart/x-mixed-replace")

    @property
    def boundary(self) -> str:
        match = _BOUNDARY.search(self.headers.get("content-type", ""))
        assert match is not None, self.headers
        return match.group(1)

    def begin(self) -> None:
        self._parser = PartParser(self.boundary)

    def feed(self, data: bytes) -> list[Part]:
        assert self._parser is not None, (self.status, self.headers, self.body)
        return self._parser.feed(data)

    @property
    def close_delimiter_seen(self) -> bool:
        return self._parser is not None and self._parser.closed

    async def next_part(self) -> Part:
        """The next part not yet returned, reading as needed."""
        return await self.next_received()


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
