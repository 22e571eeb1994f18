"""Range requests (RFC 9110 section 14), sans-IO: which bytes of a download to send.

Served for blobs (``GET /blob/{id}``), which are immutable: a blob's id is a strong
validator of its bytes, so its ``ETag`` is the id, and an ``If-Range`` naming it asks
for the range.

What :func:`requested_range` decides, from the ``Range`` header and the size:

* no ``Range``, a unit other than ``bytes``, a header that does not parse, an
  ``If-Range`` that is not the current ``ETag`` (a date never is), or an empty
  representation: None, the whole (200), as section 14.2 allows a server to ignore
  the header;
* more than one range: None too (section 14.2: a server MAY ignore ranges; one
  ``multipart/byteranges`` answer is not worth what clients gain from it);
* one range: ``first-last`` (``last`` past the end is the end), ``first-``, or the
  suffix ``-n`` (the last ``n`` bytes, all of them when fewer): a :class:`ByteRange`
  for 206 with ``Content-Range: bytes first-last/size``;
* one range that starts at or past the end, or the suffix ``-0``:
  :class:`RangeNotSatisfiable` (416, with ``Content-Range: bytes */size``).
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from trio_things.errors import RemoteProtocolError

__all__ = ["ByteRange", "RangeNotSatisfiable", "requested_range", "unsatisfied_range"]

#: RFC 9110 section 14.1.1: ``int-range`` (``first-`` or ``first-last``) or
#: ``suffix-range`` (``-n``), digits only; whitespace around it is the list's.
_RANGE_SPEC: Final = re.compile(r"([0-9]*)-([0-9]*)")
#: Digits beyond this many are larger than any size: no int() of thousands of digits.
_MAX_DIGITS: Final = 18


@attrs.frozen
class ByteRange:
    """The bytes from ``start`` up to, not including, ``stop``, of ``size`` in all."""

    start: int
    stop: int
    size: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.stop - self.start

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` header of a 206 answer (section 14.4)."""
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


class RangeNotSatisfiable(RemoteProtocolError):
    """416: the one range asked for lies past the end of the ``size`` bytes there are."""

    status = 416
    title = "Range Not Satisfiable"

    def __init__(self, detail: str, *, size: int) -> None:
        super().__init__(detail)
        self.size = size


def unsatisfied_range(size: int) -> str:
    """The ``Content-Range`` header of a 416 answer (section 14.4)."""
    return f"bytes */{size}"


def requested_range(range_header: str | None, size: int, *, if_range: str | None = None,
                    etag: str | None = None) -> ByteRange | None:
    """The one range of ``size`` bytes to send, or None to send them all; raises
    :class:`RangeNotSatisfiable`. See the module for the rules."""
    if range_header is None or size == 0:
        return None
    if if_range is not None and (etag is None or if_range.strip() != etag):
        return None  # section 13.1.5: the representation changed, or a date: send it all
    unit, equals, ranges = range_header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    specs = [spec.strip() for spec in ranges.split(",") if spec.strip()]
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = _number(last)
        if suffix == 0:
            raise RangeNotSatisfiable("the range asks for the last 0 bytes", size=size)
        return ByteRange(max(0, size - suffix), size, size)
    start = _number(first)
    stop = size if not last else min(_number(last) + 1, size)
    if last and _number(last) < start:
        return None  # an invalid range (section 14.1.1): ignored, as the header's syntax
    if start >= size:
        raise RangeNotSatisfiable(f"the range starts at byte {first}, past the last of "
                                  f"the {size} there are", size=size)
    return ByteRange(start, stop, size)


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10 ** _MAX_DIGITS
