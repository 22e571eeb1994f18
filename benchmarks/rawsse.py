"""Just enough of the client side of a Server-Sent Events stream for a load generator.

The SSE counterpart of :mod:`benchmarks.rawws`, and built by hand for the same reason:
the load generator must cost much less per message than the server it measures. A
consumer sends one plain HTTP/1.1 ``GET`` with ``Accept: text/event-stream``; the
server answers ``200`` with a ``text/event-stream`` body in ``Transfer-Encoding:
chunked`` (RFC 9112 section 7.1)::

    26\\r\\n
    id: 3ebdb661.0\\n
    data: {"n":0,"t":0.0}\\n
    \\n\\r\\n
    ...
    0\\r\\n\\r\\n                (the last chunk: the server ended the stream)

:func:`count_messages` walks the chunk *sizes* only (one ``find`` and one ``int`` a
chunk) and counts the ``data:`` lines inside each chunk with ``bytes.count``, without
copying a payload: a message is counted by its ``data:`` line, so a comment
(``: keep-alive``, the heartbeat) counts for nothing, and a chunk holding several
messages counts as many. trio-things writes one message a chunk, its data one line of
JSON (a multi-line ``data`` would count once a line; no server here sends one).

Everything here is pure (bytes in, values out); :mod:`benchmarks.loadgen` owns the
sockets.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ResponseError", "check_response_head", "count_messages", "stream_request"]

_END_OF_HEAD: Final = b"\r\n\r\n"
_CRLF: Final = b"\r\n"
_DATA_LINE: Final = b"\ndata:"
_DATA_FIRST: Final = b"data:"


class ResponseError(Exception):
    """The server refused the stream, or answered something that is not one."""


def stream_request(host: str, port: int, path: str) -> bytes:
    """The consumer's request: what ``EventSource`` sends, less the cookies."""
    return (f"GET {path} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n"
            "\r\n").encode()


def check_response_head(buffer: bytes) -> int | None:
    """Where the chunked body begins in ``buffer`` once it holds the whole response
    head, or ``None`` while it does not yet.

    Raises :class:`ResponseError` unless the status is 200, the body
    ``text/event-stream`` and chunked (a stream of unknown length needs one or the
    other of chunking and a close; this parser reads chunks).
    """
    end = buffer.find(_END_OF_HEAD)
    if end < 0:
        if len(buffer) > 16384:
            raise ResponseError("no end of the response head within 16 KiB")
        return None
    head = buffer[:end].decode("latin-1").split("\r\n")
    status = head[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise ResponseError(f"the server answered {head[0]!r}, not 200")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if headers.get("content-type", "").partition(";")[0].strip() != "text/event-stream":
        raise ResponseError(f"content-type {headers.get('content-type')!r}, not an event "
                            "stream")
    if headers.get("transfer-encoding") != "chunked":
        raise ResponseError("the body is not chunked")
    return end + len(_END_OF_HEAD)


def count_messages(buffer: bytes) -> tuple[int, int, bool]:
    """Count the messages in the whole chunks at the start of ``buffer``.

    Returns ``(messages, consumed, ended)``: ``consumed`` is where the first incomplete
    chunk begins (keep ``buffer[consumed:]`` for the next read); ``ended`` is whether the
    last chunk (size 0) was reached, after which nothing is read. Raises
    :exc:`ValueError` for a chunk size that is not hexadecimal.

    This loop is the load generator's whole per-message cost, so it keeps to locals and
    C-level calls, and never slices a payload.
    """
    end = len(buffer)
    find = buffer.find
    count = buffer.count
    startswith = buffer.startswith
    pos = 0
    messages = 0
    while True:
        eol = find(_CRLF, pos)
        if eol < 0:
            return messages, pos, False
        try:
            size = int(buffer[pos:eol], 16)
        except ValueError:  # a chunk extension (none is sent here), or garbage
            size = int(buffer[pos:eol].partition(b";")[0], 16)
        if size == 0:
            return messages, pos, True
        start = eol + 2
        stop = start + size
        if stop + 2 > end:
            return messages, pos, False
        messages += count(_DATA_LINE, start, stop) + startswith(_DATA_FIRST, start)
        pos = stop + 2
