"""The request rate limit of a WebSocket connection: a token bucket, without a clock."""

from __future__ import annotations

from trio_things.protocol.rate import RequestRate


def test_request_rate_is_a_token_bucket() -> None:
    rate = RequestRate(rate=10.0, burst=3)
    assert [rate.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert rate.refused == 1
    assert not rate.allow(0.05)  # half a token back
    assert rate.refused == 2
    assert rate.allow(0.1)  # one token back: served, and the refusals are forgiven
    assert rate.refused == 0
    assert [rate.allow(100.0) for _ in range(4)] == [True, True, True, False]  # capped
