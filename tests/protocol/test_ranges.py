"""Range requests (RFC 9110 section 14), decided without a server."""

from __future__ import annotations

import pytest

from trio_things.protocol.ranges import (
    ByteRange,
    RangeNotSatisfiable,
    requested_range,
    unsatisfied_range,
)

SIZE = 1000


@pytest.mark.parametrize(("header", "start", "stop"), [
    ("bytes=0-99", 0, 100),
    ("bytes=100-", 100, SIZE),
    ("bytes=-10", 990, SIZE),
    ("bytes=-5000", 0, SIZE),  # more than there is: all of it
    ("bytes=990-5000", 990, SIZE),  # last past the end: the end
    ("bytes=999-999", 999, SIZE),
    ("BYTES = 5-6", 5, 7),  # the unit is case-insensitive; whitespace around the list
    ("bytes=, 5-6 ,", 5, 7),  # empty list elements do not count (RFC 9110 5.6.1)
    ("bytes=0099-00100", 99, 101),
])
def test_one_range(header: str, start: int, stop: int) -> None:
    wanted = requested_range(header, SIZE)
    assert wanted == ByteRange(start, stop, SIZE)
    assert wanted.length == stop - start
    assert wanted.content_range == f"bytes {start}-{stop - 1}/{SIZE}"


@pytest.mark.parametrize("header", [
    None,
    "items=0-5",  # another unit
    "bytes 0-5",  # no "="
    "bytes=",  # no range at all
    "bytes=5",  # no "-"
    "bytes=-",  # neither end
    "bytes=9-5",  # last before first: invalid
    "bytes=a-b",
    "bytes=0-1,5-9",  # several: the whole, not multipart
])
def test_what_is_ignored_gets_the_whole(header: str | None) -> None:
    assert requested_range(header, SIZE) is None


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=-0",
                                    "bytes=" + "9" * 5000 + "-"])
def test_a_range_past_the_end_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as raised:
        requested_range(header, SIZE)
    assert raised.value.status == 416
    assert raised.value.size == SIZE
    assert unsatisfied_range(SIZE) == "bytes */1000"


def test_huge_numbers_are_read_without_int_of_thousands_of_digits() -> None:
    assert requested_range("bytes=0-" + "9" * 5000, SIZE) == ByteRange(0, SIZE, SIZE)
    assert requested_range("bytes=-" + "9" * 5000, SIZE) == ByteRange(0, SIZE, SIZE)


def test_an_empty_representation_is_sent_whole() -> None:
    assert requested_range("bytes=0-", 0) is None
    assert requested_range("bytes=-5", 0) is None


def test_if_range_asks_for_the_range_only_while_the_etag_matches() -> None:
    etag = '"abc"'
    assert requested_range("bytes=0-1", SIZE, if_range='"abc"', etag=etag) == ByteRange(
        0, 2, SIZE)
    assert requested_range("bytes=0-1", SIZE, if_range='"other"', etag=etag) is None
    # A date is no strong validator of a blob: the whole.
    assert requested_range("bytes=0-1", SIZE, if_range="Wed, 21 Oct 2015 07:28:00 GMT",
                           etag=etag) is None
    assert requested_range("bytes=0-1", SIZE, if_range='"abc"') is None
