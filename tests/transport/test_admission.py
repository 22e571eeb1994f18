"""ClientConnections: the per-address connection count behind the 429 at accept time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_things.transport.admission import ClientConnections


def test_each_address_has_its_own_limit() -> None:
    clients = ClientConnections(limit=2)
    assert clients.admit("192.0.2.1") and clients.admit("192.0.2.1")
    assert not clients.admit("192.0.2.1")
    assert clients["192.0.2.1"] == 2  # a refusal is not counted
    assert clients.admit("192.0.2.2")
    clients.release("192.0.2.1")
    assert clients.admit("192.0.2.1")


def test_a_released_address_is_forgotten() -> None:
    clients = ClientConnections(limit=3)
    clients.admit("192.0.2.1")
    clients.release("192.0.2.1")
    assert len(clients) == 0
    assert clients["192.0.2.1"] == 0


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ClientConnections(limit=0)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans())))
def test_counts_match_a_model_and_never_exceed_the_limit(
        steps: list[tuple[str, bool]]) -> None:
    clients = ClientConnections(limit=2)
    model: dict[str, int] = {}
    for address, connect in steps:
        if connect:
            admitted = clients.admit(address)
            assert admitted == (model.get(address, 0) < 2)
            model[address] = model.get(address, 0) + admitted
        elif model.get(address, 0):
            clients.release(address)
            model[address] -= 1
        assert clients[address] == model.get(address, 0) <= 2
    assert len(clients) == sum(1 for n in model.values() if n)
