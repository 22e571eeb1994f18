"""Flow credit, pure: positions and times in, decisions out."""

from __future__ import annotations

import pytest

from trio_things.protocol.credit import (
    PING_PAYLOAD_SIZE,
    PING_PREFIX,
    Credit,
    ping_payload,
    ponged_position,
)


def test_a_ping_payload_carries_its_position_and_is_always_the_same_size() -> None:
    for position in (0, 1, 16 * 1024, 2**40 + 7):
        payload = ping_payload(position)
        assert len(payload) == PING_PAYLOAD_SIZE <= 125  # a control frame's payload
        assert payload.startswith(PING_PREFIX)
        assert ponged_position(payload) == position


@pytest.mark.parametrize("payload", [b"", b"hello", b"tt-credit xyz", PING_PREFIX + b"1" * 15,
                                     b"trio-things keepalive", b"x" * PING_PAYLOAD_SIZE])
def test_a_pong_to_anything_else_confirms_nothing(payload: bytes) -> None:
    assert ponged_position(payload) is None


def test_a_fast_reader_gets_more_credit_a_slow_one_less() -> None:
    fast = Credit(target=1.0, minimum=4096, maximum=1 << 22)
    fast.ping_sent(8192, now=10.0)
    assert fast.pong(8192, now=10.001)  # 8 KiB read in a millisecond: 8 MB/s
    assert fast.size == 1 << 22  # capped at the maximum
    assert fast.confirmed == 8192

    slow = Credit(target=1.0, minimum=4096, maximum=1 << 22)
    slow.ping_sent(8192, now=10.0)
    assert slow.pong(8192, now=12.0)  # 8 KiB in 2 s: 4 KiB/s
    assert slow.size == 4096  # what it reads in a second
    crawling = Credit(target=1.0, minimum=4096)
    crawling.ping_sent(8192, now=0.0)
    assert crawling.pong(8192, now=100.0)
    assert crawling.size == 4096  # never below the minimum


def test_pings_are_due_every_half_credit() -> None:
    credit = Credit(size=16384)
    assert credit.next_ping == 8192
    credit.ping_sent(8200, now=0.0)
    assert credit.next_ping == 8200 + 8192
    assert credit.pong(8200, now=0.5)
    assert credit.next_ping == 8200 + credit.size // 2


def test_a_later_pong_answers_the_earlier_pings_too_and_stale_ones_do_nothing() -> None:
    credit = Credit()
    for position in (1000, 2000, 3000):
        credit.ping_sent(position, now=position / 1000)
    assert credit.pong(2000, now=5.0)
    assert credit.confirmed == 2000
    assert not credit.pong(1000, now=6.0)  # answered already, by the later one
    assert not credit.pong(2000, now=6.0)  # a repeat
    assert not credit.pong(2500, now=6.0)  # never sent
    assert credit.pong(3000, now=6.0)
    assert credit.confirmed == 3000


def test_outstanding_pings_are_bounded() -> None:
    credit = Credit()
    for position in range(1, 1000):
        credit.ping_sent(position, now=0.0)
    assert not credit.pong(1, now=1.0)  # forgotten: the client owes at most 64
    assert credit.pong(999, now=1.0)


def test_the_starting_size_must_lie_within_the_bounds() -> None:
    with pytest.raises(ValueError, match="not within"):
        Credit(size=100, minimum=4096)


def test_the_frame_guard_hands_over_pong_payloads_unmasked_whatever_the_reads() -> None:
    """Pongs are read where every client byte is read first: the frame guard."""
    from tests.helpers.rawframes import frame
    from trio_things.protocol.frame_guard import FrameGuard

    stream = (frame(0x1, b'{"a": 1}') + frame(0xA, ping_payload(4242))
              + frame(0xA, b"someone else's") + frame(0x9, b"ping"))
    for split in range(1, len(stream)):
        guard = FrameGuard(max_frames_per_second=1000, frame_burst=100,
                           max_fragments_per_message=8)
        assert guard.feed(stream[:split], 0.0)
        assert guard.feed(stream[split:], 0.0)
        assert [ponged_position(p) for p in guard.pongs] == [4242, None]
