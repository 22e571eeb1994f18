"""Keepalive: when the relay pings a silent peer and when it gives up (sans-IO)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trio_things.protocol.keepalive import Keepalive, KeepaliveAction

PING, GIVE_UP = KeepaliveAction.PING, KeepaliveAction.GIVE_UP


def test_a_silent_peer_is_pinged_after_the_interval_then_given_up_on() -> None:
    keepalive = Keepalive(interval=20, timeout=5, start=100)
    assert keepalive.deadline() == 120
    assert keepalive.due(now=119.9, received_at=-1, received_bytes=0) is None
    assert keepalive.due(now=120, received_at=-1, received_bytes=0) is PING
    assert keepalive.deadline() == 125
    assert keepalive.due(now=124, received_at=-1, received_bytes=0) is None
    assert keepalive.due(now=125, received_at=-1, received_bytes=0) is GIVE_UP


def test_any_byte_after_the_ping_answers_it_even_at_the_same_instant() -> None:
    keepalive = Keepalive(interval=20, timeout=5, start=0)
    assert keepalive.due(now=20, received_at=0, received_bytes=10) is PING
    # A pong read at the very instant of the ping (a mock clock): the count moved.
    assert keepalive.due(now=20, received_at=20, received_bytes=16) is None
    assert keepalive.deadline() == 40  # quiet again since the pong
    assert keepalive.due(now=25, received_at=20, received_bytes=16) is None
    assert keepalive.due(now=40, received_at=20, received_bytes=16) is PING


def test_a_talking_peer_is_never_pinged() -> None:
    keepalive = Keepalive(interval=20, timeout=5, start=0)
    assert keepalive.due(now=20, received_at=15, received_bytes=100) is None
    assert keepalive.deadline() == 35
    assert keepalive.due(now=35, received_at=30, received_bytes=200) is None
    assert keepalive.deadline() == 50


@given(gaps=st.lists(st.floats(min_value=0.01, max_value=19.99), max_size=50))
def test_a_peer_that_sends_within_every_interval_is_never_pinged(gaps: list[float]) -> None:
    """Checking at every deadline (as the relay does), a peer whose silences are all
    shorter than the interval is never pinged nor given up on."""
    keepalive = Keepalive(interval=20, timeout=5, start=0.0)
    now, received = 0.0, 0
    for gap in gaps:
        # The relay may wake at any time before the next byte; check at the deadline
        # if it comes first, and at the byte's arrival.
        arrival = now + gap
        if keepalive.deadline() <= arrival:
            assert keepalive.due(now=keepalive.deadline(), received_at=now,
                                 received_bytes=received) is None
        now, received = arrival, received + 1
        assert keepalive.due(now=now, received_at=now, received_bytes=received) is None


@given(interval=st.floats(min_value=0.1, max_value=100),
       timeout=st.floats(min_value=0.1, max_value=100))
def test_a_peer_that_never_answers_is_given_up_on_at_interval_plus_timeout(
        interval: float, timeout: float) -> None:
    keepalive = Keepalive(interval=interval, timeout=timeout, start=0.0)
    actions = []
    while not actions or actions[-1] is not GIVE_UP:
        now = keepalive.deadline()
        actions.append(keepalive.due(now=now, received_at=-1.0, received_bytes=0))
    assert actions == [PING, GIVE_UP]
    assert now == interval + timeout
