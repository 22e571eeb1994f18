"""Access rules, without sockets: tokens, roles, origins, CORS, the TD's security."""

from __future__ import annotations

import pytest

from trio_things.errors import Forbidden, Unauthorized
from trio_things.protocol import commands as c
from trio_things.protocol.access import AccessPolicy, Role, check_role

FULL, VIEWER = "full-access-token", "read-only-token"
POLICY = AccessPolicy(tokens=[FULL], readonly_tokens=[VIEWER])


def test_without_tokens_everyone_has_full_access() -> None:
    policy = AccessPolicy()
    assert not policy.enabled
    assert policy.authenticate(authorization=None, query="") is Role.FULL
    assert policy.security_definitions() == {"nosec_sc": {"scheme": "nosec"}}


@pytest.mark.parametrize(("authorization", "query", "role"), [
    (f"Bearer {FULL}", "", Role.FULL),
    (f"bearer   {FULL} ", "", Role.FULL),
    (f"Bearer {VIEWER}", "", Role.READ_ONLY),
    (None, f"access_token={FULL}", Role.FULL),
    (None, f"x=1&access_token={VIEWER}", Role.READ_ONLY),
])
def test_tokens_in_the_header_or_the_query(authorization: str | None, query: str,
                                           role: Role) -> None:
    assert POLICY.authenticate(authorization=authorization, query=query) is role


@pytest.mark.parametrize(("authorization", "query"), [
    (None, ""),
    ("Bearer wrong-token-value", ""),
    (f"Basic {FULL}", ""),
    ("Bearer ", ""),
    (None, "access_token=wrong-token-value"),
    (f"Bearer {FULL[:-1]}", ""),
])
def test_missing_or_unknown_tokens_are_401(authorization: str | None, query: str) -> None:
    with pytest.raises(Unauthorized) as info:
        POLICY.authenticate(authorization=authorization, query=query)
    assert info.value.status == 401


def test_tokens_must_be_long_enough_and_trimmed() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        AccessPolicy(tokens=["short"])
    with pytest.raises(ValueError):
        AccessPolicy(readonly_tokens=[" padded-token "])


def test_tokens_are_not_shown_in_repr() -> None:
    assert FULL not in repr(POLICY)


def test_tokens_from_the_environment() -> None:
    policy = AccessPolicy().with_tokens_from({
        "TRIO_THINGS_TOKENS": f"{FULL}, another-token-1",
        "TRIO_THINGS_READONLY_TOKENS": VIEWER})
    assert policy.authenticate(authorization="Bearer another-token-1", query="") is Role.FULL
    assert policy.authenticate(authorization=f"Bearer {VIEWER}", query="") is Role.READ_ONLY
    assert AccessPolicy().with_tokens_from({}) == AccessPolicy()


def test_the_td_advertises_bearer_when_tokens_are_required() -> None:
    assert POLICY.security_definitions() == {
        "bearer_sc": {"scheme": "bearer", "in": "header", "name": "Authorization"}}


@pytest.mark.parametrize("command", [
    c.ReadProperty(thing="t", name="p"), c.ObserveProperty(thing="t", name="p"),
    c.SubscribeEvent(thing="t", name="e"), c.QueryAction(invocation_id="i"),
    c.ReadAllProperties(thing="t"), c.ListThings(base="http://h/"),
])
def test_read_only_may_read_observe_and_query(command: c.Command) -> None:
    check_role(Role.READ_ONLY, command)
    check_role(Role.FULL, command)


@pytest.mark.parametrize("command", [
    c.WriteProperty(thing="t", name="p", value=1),
    c.WriteMultipleProperties(thing="t", values={"p": 1}),
    c.InvokeAction(thing="t", name="a", input={}), c.CancelAction(invocation_id="i"),
])
def test_read_only_may_not_change_anything(command: c.Command) -> None:
    with pytest.raises(Forbidden) as info:
        check_role(Role.READ_ONLY, command)
    assert info.value.status == 403
    check_role(Role.FULL, command)


@pytest.mark.parametrize(("origin", "host", "allowed"), [
    (None, "lab:8000", ()),  # not a browser
    ("http://lab:8000", "lab:8000", ()),  # the same origin
    ("http://LAB:8000/", "lab:8000", ()),
    ("https://ui.example", "lab:8000", ("https://ui.example",)),
    ("https://anything.example", "lab:8000", ("*",)),
])
def test_websocket_origins_that_may_connect(origin: str | None, host: str,
                                            allowed: tuple[str, ...]) -> None:
    AccessPolicy(allowed_origins=allowed).check_websocket_origin(origin=origin, host=host)


@pytest.mark.parametrize(("origin", "allowed"), [
    ("https://evil.example", ()),
    ("https://evil.example", ("https://ui.example",)),
    ("http://lab:8001", ()),
])
def test_cross_site_websockets_are_403(origin: str, allowed: tuple[str, ...]) -> None:
    with pytest.raises(Forbidden):
        AccessPolicy(allowed_origins=allowed).check_websocket_origin(origin=origin,
                                                                     host="lab:8000")


def test_cors_origins() -> None:
    assert AccessPolicy().cors_origin("https://ui.example") is None
    policy = AccessPolicy(cors_origins=["https://ui.example/"])
    assert policy.cors_origin("https://ui.example") == "https://ui.example"
    assert policy.cors_origin("https://other.example") is None
    assert policy.cors_origin(None) is None
    assert AccessPolicy(cors_origins=["*"]).cors_origin("https://x.example") == (
        "https://x.example")
