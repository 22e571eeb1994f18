"""Choosing forms from a TD: plain functions on JSON, no trio."""

from __future__ import annotations

from typing import Any

from trio_things.client.forms import (
    Form,
    affordance_forms,
    base_url,
    http_form,
    labthings_invoke_first,
    thing_forms,
    wtp_form,
)

TD_URL = "http://host:8000/lab/"

TD: dict[str, Any] = {
    "base": "http://host:8000/",
    "properties": {
        "level": {"forms": [
            {"href": "lab/level", "op": ["readproperty", "writeproperty"]},
            {"href": "ws://host:8000/lab/ws", "op": ["readproperty", "observeproperty"],
             "subprotocol": "webthingprotocol"},
        ]},
        "plain": {"forms": [{"href": "lab/plain"}]},
        "sse": {"forms": [
            {"href": "lab/sse", "op": "observeproperty", "subprotocol": "sse"},
            {"href": "wss://elsewhere/ws", "op": "observeproperty",
             "subprotocol": "webthingprotocol"},
        ]},
    },
    "actions": {"climb": {"forms": [
        {"href": "lab/actions/climb", "op": ["invokeaction"], "htv:methodName": "POST"},
        {"href": "lab/climb", "op": ["invokeaction"], "htv:methodName": "POST"},
        {"href": "action_invocations/{id}", "op": ["queryaction"]},
        {"href": "coap://host/lab/climb", "op": ["invokeaction"]},
    ]}},
    "events": {"tick": {"forms": [{"href": "lab/events/tick"}]}},
    "forms": [{"href": "lab/properties", "op": ["readallproperties"]}],
}


def forms(kind: str, name: str) -> list[Form]:
    found = affordance_forms(TD, TD_URL, kind, name)  # type: ignore[arg-type]
    assert found is not None
    return found


def test_relative_hrefs_resolve_against_base_or_the_td_url() -> None:
    assert base_url(TD, TD_URL) == "http://host:8000/"
    assert base_url({"base": "../"}, "http://h/a/b/td") == "http://h/a/"
    assert base_url({}, TD_URL) == TD_URL
    assert forms("properties", "level")[0].href == "http://host:8000/lab/level"
    assert thing_forms(TD, TD_URL)[0].href == "http://host:8000/lab/properties"
    # URI template variables survive resolution, and expand percent-encoded.
    query = forms("actions", "climb")[2]
    assert query.href == "http://host:8000/action_invocations/{id}"
    assert query.expand(id="a b/c") == "http://host:8000/action_invocations/a%20b%2Fc"


def test_the_first_form_listing_the_op_in_a_scheme_we_speak_wins() -> None:
    level = forms("properties", "level")
    assert http_form(level, "readproperty") is level[0]
    assert wtp_form(level, "readproperty") is level[1]
    assert wtp_form(level, "observeproperty") is level[1]
    assert http_form(level, "observeproperty") is None
    # An HTTP form with a subprotocol we do not speak (sse) is skipped.
    sse = forms("properties", "sse")
    assert http_form(sse, "observeproperty") is None
    assert wtp_form(sse, "observeproperty") is sse[1]


def test_op_defaults_by_affordance_kind_and_methods_by_op() -> None:
    plain = forms("properties", "plain")[0]
    assert plain.op == ("readproperty", "writeproperty")
    assert (plain.method_for("readproperty"), plain.method_for("writeproperty")) == (
        "GET", "PUT")
    assert forms("events", "tick")[0].op == ("subscribeevent", "unsubscribeevent")
    assert forms("properties", "sse")[0].op == ("observeproperty",)
    climb = forms("actions", "climb")
    assert climb[0].method_for("invokeaction") == "POST"
    assert climb[2].method_for("queryaction") == "GET"


def test_unknown_affordances_have_no_forms() -> None:
    assert affordance_forms(TD, TD_URL, "properties", "nothing") is None
    assert affordance_forms({}, TD_URL, "actions", "climb") is None


def test_the_labthings_invoke_form_goes_first() -> None:
    """`POST {TD URL}/{action}` answers with the invocation on LabThings servers; the
    other HTTP forms follow in TD order, non-HTTP ones are left out."""
    ordered = labthings_invoke_first(forms("actions", "climb"), TD_URL, "climb")
    assert [f.href for f in ordered] == ["http://host:8000/lab/climb",
                                         "http://host:8000/lab/actions/climb"]
    # Without such a form, TD order.
    ordered = labthings_invoke_first(forms("actions", "climb"), "http://other/td", "climb")
    assert ordered[0].href == "http://host:8000/lab/actions/climb"
