"""Access rules, without sockets: tokens, roles, origins, CORS, the TD's security."""

from __future__ import annotations

import pytest

from trio_things.errors import Forbidden, Unauthorized, UnsupportedMediaType
from trio_things.protocol import commands as c
from trio_things.protocol.access import (
    ANONYMOUS,
    AccessPolicy,
    Caller,
    Role,
    check_action_body,
    check_cancel,
    check_role,
    identity_of,
)

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
def test_tokens_in_the_header_or_on_a_handshake_the_query(
        authorization: str | None, query: str, role: Role) -> None:
    assert POLICY.authenticate(authorization=authorization, query=query,
                               query_token=True) is role
    if authorization is not None:
        assert POLICY.authenticate(authorization=authorization, query=query) is role


@pytest.mark.parametrize("query", [f"access_token={FULL}", f"x=1&access_token={VIEWER}"])
def test_a_token_in_the_query_of_an_http_request_is_401(query: str) -> None:
    """Only a WebSocket handshake may carry its token in the URL: browsers cannot set
    its headers. An HTTP request's URL ends up in logs, proxies and history."""
    with pytest.raises(Unauthorized, match="Authorization header") as info:
        POLICY.authenticate(authorization=None, query=query)
    assert info.value.status == 401
    assert FULL not in info.value.detail and VIEWER not in info.value.detail


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
        POLICY.authenticate(authorization=authorization, query=query, query_token=True)
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


# ----------------------------------------------------------------------------- hosts
# (The in-memory harness, imported by the test suite, makes every server answer to
# "testserver" too; these use other names.)


@pytest.mark.parametrize(("host", "bound", "allowed"), [
    (None, "127.0.0.1", ()),  # HTTP/1.0: no Host
    ("localhost:8000", "127.0.0.1", ()),
    ("LocalHost.:1234", "127.0.0.1", ()),
    ("localhost", "127.0.0.1", ()),
    ("127.0.0.1:9", "127.0.0.1", ()),
    ("[::1]:80", "::1", ()),
    ("192.168.1.20:8000", "0.0.0.0", ()),  # an address cannot be rebound
    ("[fe80::1]:8000", "0.0.0.0", ()),
    ("lab-pc.local:8000", "lab-pc.local", ()),  # the name it is bound to
    ("lab.example:8000", "0.0.0.0", ("lab.example",)),
    ("a.lab.example", "0.0.0.0", (".lab.example",)),
    ("lab.example", "0.0.0.0", (".lab.example",)),
    ("rebind.attacker.example:8000", "127.0.0.1", ("*",)),
    ("a/b", "127.0.0.1", ()),  # no host at all: no browser sends it
    ("\xe9", "127.0.0.1", ()),
])
def test_hosts_a_request_may_address(host: str | None, bound: str,
                                     allowed: tuple[str, ...]) -> None:
    policy = AccessPolicy(allowed_hosts=allowed)
    assert policy.host_allowed(host, bound=bound)
    policy.check_host(host, bound=f"{bound}:8000")


@pytest.mark.parametrize(("host", "bound", "allowed"), [
    ("rebind.attacker.example:8000", "127.0.0.1", ()),
    ("rebind.attacker.example", "0.0.0.0", ()),
    ("localhost.attacker.example", "127.0.0.1", ()),
    ("127.0.0.1.nip.io:8000", "127.0.0.1", ()),
    ("evil-lab.example", "0.0.0.0", ("lab.example",)),
    ("lab.example.evil", "0.0.0.0", (".lab.example",)),
    ("xlab.example", "0.0.0.0", (".lab.example",)),
    ("other-pc.local:8000", "lab-pc.local", ()),
])
def test_other_host_names_are_refused_saying_how_to_allow_them(
        host: str, bound: str, allowed: tuple[str, ...]) -> None:
    policy = AccessPolicy(allowed_hosts=allowed)
    assert not policy.host_allowed(host, bound=bound)
    with pytest.raises(Forbidden) as info:
        policy.check_host(host, bound=bound)
    name = host.rsplit(":", 1)[0]
    assert f'allowed_hosts = ["{name}"]' in info.value.detail
    assert "[server.access]" in info.value.detail


@pytest.mark.parametrize("value", ["lab.example:8000", "http://lab.example", "lab/x", "",
                                   "[::1]:80"])
def test_allowed_hosts_are_names_without_port(value: str) -> None:
    with pytest.raises(ValueError, match="without a scheme or port"):
        AccessPolicy(allowed_hosts=[value])


def test_allowed_hosts_are_normalized() -> None:
    assert AccessPolicy(allowed_hosts=["Lab.Example.", " .Lab.example", "*", "[::1]"]
                        ).allowed_hosts == ("lab.example", ".lab.example", "*", "[::1]")
    assert AccessPolicy().allowing_host("lab.example:8000").allowed_hosts == ("lab.example",)
    assert AccessPolicy().allowing_host("localhost:8000") == AccessPolicy()


# ----------------------------------------------------------------------------- CSRF


@pytest.mark.parametrize(("method", "origin", "site", "policy"), [
    ("GET", "https://evil.example", "cross-site", AccessPolicy()),  # reads change nothing
    ("OPTIONS", "https://evil.example", "cross-site", AccessPolicy()),
    ("POST", None, None, AccessPolicy()),  # not a browser
    ("POST", None, "same-origin", AccessPolicy()),
    ("POST", None, "same-site", AccessPolicy()),
    ("POST", None, "none", AccessPolicy()),
    ("POST", "http://lab:8000", "same-origin", AccessPolicy()),
    ("DELETE", "http://LAB:8000/", None, AccessPolicy()),
    ("PUT", "https://ui.example", "cross-site", AccessPolicy(cors_origins=["https://ui.example"])),
    ("PATCH", "https://ui.example", None, AccessPolicy(allowed_origins=["https://ui.example/"])),
    ("POST", "https://any.example", "cross-site", AccessPolicy(cors_origins=["*"])),
])
def test_writes_that_pass(method: str, origin: str | None, site: str | None,
                          policy: AccessPolicy) -> None:
    policy.check_write_origin(method=method, origin=origin, sec_fetch_site=site,
                              host="lab:8000")


@pytest.mark.parametrize(("method", "origin", "site", "policy"), [
    ("POST", "https://evil.example", None, AccessPolicy()),
    ("post", "https://evil.example", "cross-site", AccessPolicy()),
    ("PUT", "https://evil.example", None, AccessPolicy(cors_origins=["https://ui.example"])),
    ("DELETE", "null", None, AccessPolicy()),  # a sandboxed frame, a file
    ("PATCH", "http://lab:8001", "same-site", AccessPolicy()),  # another port
    ("POST", None, "cross-site", AccessPolicy()),
    ("POST", None, "Cross-Site", AccessPolicy(cors_origins=["https://ui.example"])),
])
def test_cross_site_writes_are_403(method: str, origin: str | None, site: str | None,
                                   policy: AccessPolicy) -> None:
    with pytest.raises(Forbidden) as info:
        policy.check_write_origin(method=method, origin=origin, sec_fetch_site=site,
                                  host="lab:8000")
    assert "cors_origins" in info.value.detail


INVOKE = c.InvokeAction(thing="t", name="a", input={})


@pytest.mark.parametrize("content_type", [
    None, "application/json", "Application/JSON; charset=utf-8", "application/td+json"])
def test_action_bodies_declared_json_or_undeclared_pass(content_type: str | None) -> None:
    check_action_body(INVOKE, content_type)


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "", "application/xml"])
def test_action_bodies_declared_otherwise_are_415(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        check_action_body(INVOKE, content_type)
    assert info.value.status == 415
    assert "application/json" in info.value.detail
    check_action_body(c.CancelAction(invocation_id="i"), content_type)  # not an action body


# ----------------------------------------------------------------------------- who may cancel

ALICE = Caller(Role.FULL, identity_of("alice-full-token"))
BOB = Caller(Role.FULL, identity_of("bob-full-token"))


def test_identities_stand_for_tokens_and_are_not_them() -> None:
    alice = POLICY.caller(authorization=f"Bearer {FULL}")
    viewer = POLICY.caller(authorization=None, query=f"access_token={VIEWER}",
                           query_token=True)
    assert alice == Caller(Role.FULL, identity_of(FULL))
    assert viewer.role is Role.READ_ONLY and viewer.identity == identity_of(VIEWER)
    assert alice.identity != viewer.identity
    assert alice.identity is not None and FULL not in alice.identity
    assert AccessPolicy().caller(authorization=f"Bearer {FULL}") is ANONYMOUS


@pytest.mark.parametrize(("caller", "invoker"), [
    (ALICE, ALICE.identity),  # its own
    (ALICE, None),  # a full token: what was invoked without a token
    (ANONYMOUS, None),  # no tokens at all: everyone is the same nobody
])
def test_who_may_cancel(caller: Caller, invoker: str | None) -> None:
    check_cancel(caller, invoker)


@pytest.mark.parametrize(("caller", "invoker"), [
    (BOB, ALICE.identity),
    (ANONYMOUS, ALICE.identity),
    (Caller(Role.READ_ONLY, identity_of("viewer-token")), None),
])
def test_who_may_not_cancel(caller: Caller, invoker: str | None) -> None:
    with pytest.raises(Forbidden, match="only the token that invoked"):
        check_cancel(caller, invoker)


@pytest.mark.parametrize(("origin", "policy"), [
    (None, AccessPolicy()),
    ("http://127.0.0.1:8000", AccessPolicy()),  # the server's own page
    ("https://lab.example", AccessPolicy(cors_origins=["https://lab.example"])),
    ("https://lab.example/", AccessPolicy(allowed_origins=["https://lab.example"])),
    ("https://anywhere.example", AccessPolicy(cors_origins=["*"])),
])
def test_event_stream_origins_that_may_open_one(origin: str | None,
                                                policy: AccessPolicy) -> None:
    policy.check_stream_origin(origin=origin, host="127.0.0.1:8000")


def test_an_event_stream_from_another_site_is_forbidden_and_told_how_to_allow_it() -> None:
    with pytest.raises(Forbidden, match="add it to cors_origins") as info:
        AccessPolicy(cors_origins=["https://lab.example"]).check_stream_origin(
            origin="https://evil.example", host="127.0.0.1:8000")
    assert info.value.status == 403


def test_a_query_token_counts_only_where_it_is_allowed() -> None:
    query = f"access_token={FULL}"
    assert POLICY.caller(authorization=None, query=query, query_token=True).role is Role.FULL
    with pytest.raises(Unauthorized, match="event streams"):
        POLICY.caller(authorization=None, query=query)
