"""The dashboard in a real browser (Debian's chromium, headless) against a real
``trio-things serve``: what a user sees and does, end to end.

Nothing sleeps to synchronise: every wait is Playwright's auto-waiting ``expect`` or
``wait_for_function``, with a timeout that is the requirement under test where there
is one (a change on the server shows within a second).
"""

from __future__ import annotations

import re
import urllib.error
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import Watch
from tests.browser.served import Served
from trio_things.bindings.dashboard import CONTENT_SECURITY_POLICY

ROOT = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def card(page: Page, kind: str, name: str) -> Locator:
    return page.locator(f'[data-{kind}="{name}"]')


def value(page: Page, name: str) -> Locator:
    return card(page, "property", name).locator('[data-role="value"]')


def number_of(page: Page, name: str) -> float:
    text = value(page, name).text_content() or ""
    return float(text)


def open_thing(page: Page, served: Served, name: str) -> None:
    response = page.goto(served.url(f"dashboard/things/{name}"))
    assert response is not None and response.status == 200
    expect(page.locator("#connection")).to_have_text("connected")


def wait_for_number(page: Page, name: str, condition: str, timeout: float) -> None:
    """Wait until the value shown for property ``name`` satisfies ``condition`` (JS, on ``v``)."""
    page.wait_for_function(
        f"""() => {{
          const text = document.querySelector('[data-property="{name}"] [data-role="value"]')
            ?.textContent;
          const v = Number(text);
          return text && !Number.isNaN(v) && ({condition});
        }}""", timeout=timeout)


def test_the_list_shows_the_served_things(page: Page, served: Served) -> None:
    descriptions = served.get("thing_descriptions/")
    assert {"thermometer", "counter"} <= descriptions.keys()
    for path in ("", "dashboard/", "dashboard"):
        page.goto(served.url(path))
        expect(page.get_by_role("heading", name="Things", exact=True)).to_be_visible()
        for name, td in descriptions.items():
            link = card(page, "thing", name).get_by_role("link", name=td["title"])
            expect(link).to_have_attribute("href", f"/dashboard/things/{name}")
    expect(card(page, "thing", "thermometer")).to_contain_text(
        "A simulated thermometer whose temperature follows a setpoint.")
    page.get_by_role("link", name="Thermometer").click()
    expect(page).to_have_url(served.url("dashboard/things/thermometer"))
    expect(page.get_by_role("heading", name="Thermometer", level=1)).to_be_visible()
    # JSON clients still get JSON at /.
    assert served.get("")["thermometer"] == served.url("thermometer/")


def test_a_change_on_the_server_shows_within_a_second_and_the_plot_grows(
        page: Page, served: Served) -> None:
    open_thing(page, served, "thermometer")
    expect(value(page, "temperature")).to_have_text(NUMBER)
    plot = card(page, "property", "temperature").locator(".plot")
    expect(plot.locator("canvas")).to_have_count(1)
    wait_for_number(page, "temperature", "true", timeout=1000)
    before = int(plot.get_attribute("data-points") or 0)
    served.put("thermometer/setpoint", 60)
    expect(value(page, "setpoint")).to_have_text("60", timeout=1000)
    wait_for_number(page, "temperature", "v > 30", timeout=1000)
    # Ten more values at 10 a second: the plot has drawn them.
    page.wait_for_function(
        """(before) => Number(document.querySelector('[data-property="temperature"] .plot')
                              .dataset.points) >= before + 10""", arg=before, timeout=3000)


def test_a_write_from_the_page_reaches_the_server(page: Page, served: Served) -> None:
    open_thing(page, served, "thermometer")
    setpoint = card(page, "property", "setpoint")
    setpoint.get_by_label("New setpoint").fill("42.5")
    setpoint.get_by_role("button", name="Set").click()
    expect(value(page, "setpoint")).to_have_text("42.5")
    assert served.get("thermometer/setpoint") == 42.5
    expect(setpoint.locator('[data-role="error"]')).to_be_empty()


def test_a_refused_write_shows_the_servers_detail(page: Page, served: Served) -> None:
    open_thing(page, served, "thermometer")
    setpoint = card(page, "property", "setpoint")
    setpoint.get_by_label("New setpoint").fill("500")
    setpoint.get_by_role("button", name="Set").click()
    expect(setpoint.locator('[data-role="error"]')).to_have_text(
        "setpoint: 500 is greater than the maximum 150")
    assert served.get("thermometer/setpoint") == 20.0
    # The user's input stays for correcting, not overwritten by the live value.
    expect(setpoint.get_by_label("New setpoint")).to_have_value("500")


def test_invoking_an_action_shows_running_then_completed_with_its_output(
        page: Page, served: Served) -> None:
    open_thing(page, served, "thermometer")
    ramp = card(page, "action", "ramp")
    ramp.get_by_role("spinbutton", name="to", exact=True).fill("25")
    ramp.get_by_label("rate", exact=True).fill("5")   # one second from 20 to 25
    ramp.get_by_role("button", name="Invoke").click()
    invocation = ramp.locator(".invocation").first
    expect(invocation.locator('[data-role="state"]')).to_have_text("running", timeout=2000)
    expect(invocation.get_by_role("button", name="Cancel")).to_be_enabled()
    expect(invocation.locator('[data-role="state"]')).to_have_text("completed", timeout=10_000)
    expect(invocation.locator('[data-role="output-value"]')).to_have_text(NUMBER)
    expect(invocation.get_by_role("button", name="Cancel")).to_be_hidden()
    assert served.get("thermometer/setpoint") == 25
    # A refused input makes no invocation and shows why.
    ramp.get_by_role("spinbutton", name="to", exact=True).fill("900")
    ramp.get_by_role("button", name="Invoke").click()
    expect(ramp.locator('form [data-role="error"]')).to_contain_text("900 is greater than")
    expect(ramp.locator(".invocation")).to_have_count(1)


def test_cancel_stops_a_running_action(page: Page, served: Served) -> None:
    open_thing(page, served, "counter")
    slowly = card(page, "action", "count_slowly")
    slowly.get_by_label("n", exact=True).fill("100")
    slowly.get_by_label("delay", exact=True).fill("0.2")
    slowly.get_by_role("button", name="Invoke").click()
    invocation = slowly.locator(".invocation").first
    expect(invocation.locator('[data-role="state"]')).to_have_text("running")
    expect(invocation.locator(".log")).to_contain_text("counted 1 of 100")  # progress, live
    invocation.get_by_role("button", name="Cancel").click()
    expect(invocation.locator('[data-role="state"]')).to_have_text("cancelled")
    assert served.get("counter/count") < 100
    expect(invocation.get_by_role("button", name="Cancel")).to_be_hidden()


def test_an_event_appears_in_the_log(page: Page, served: Served) -> None:
    open_thing(page, served, "thermometer")
    expect(page.locator(".empty-log")).to_be_visible()
    for name, number in (("threshold", "25"), ("setpoint", "30")):
        form = card(page, "property", name)
        form.get_by_label(f"New {name}").fill(number)
        form.get_by_role("button", name="Set").click()
        expect(value(page, name)).to_have_text(number)
    entry = page.locator('.event-log li[data-event="overheated"]').first
    expect(entry).to_contain_text("overheated", timeout=5000)
    expect(entry).to_contain_text('"temperature":')
    expect(page.locator(".empty-log")).to_be_hidden()


def test_after_a_restart_the_page_reconnects_and_is_live_again(
        page: Page, served: Served) -> None:
    open_thing(page, served, "thermometer")
    status = page.locator("#connection")
    set_button = card(page, "property", "setpoint").get_by_role("button", name="Set")
    expect(set_button).to_be_enabled()
    served.stop()
    expect(status).to_have_text(re.compile(r"^reconnecting"))
    expect(set_button).to_be_disabled()   # nothing can be sent while disconnected
    expect(card(page, "property", "temperature")).to_have_class(re.compile(r"\bstale\b"))
    served.start()                        # the same port, as a user restarting it
    expect(status).to_have_text("connected", timeout=20_000)
    expect(set_button).to_be_enabled()
    served.put("thermometer/setpoint", 70)
    expect(value(page, "setpoint")).to_have_text("70", timeout=1000)
    wait_for_number(page, "temperature", "v > 40", timeout=2000)
    expect(card(page, "property", "temperature")).not_to_have_class(re.compile(r"\bstale\b"))


def test_the_csp_holds_on_every_page(page: Page, served: Served, watch: Watch) -> None:
    """Every page loads, runs and draws under the server's CSP; the fixture fails the
    test on any violation, and the last step shows it would see one."""
    for path in ("", "dashboard/", "dashboard/things/thermometer", "dashboard/things/counter",
                 "dashboard/things/nosuchthing", "dashboard/elsewhere"):
        response = page.goto(served.url(path))
        assert response is not None
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        expect(page.locator("#connection")).to_have_text("connected")
    page.goto(served.url("dashboard/things/counter"))
    increment = card(page, "action", "increment")
    increment.get_by_role("button", name="Invoke").click()
    expect(increment.locator('[data-role="state"]').first).to_have_text("completed")
    assert watch.violations == []
    # The watch is not blind: an inline style attribute is a violation it reports.
    page.evaluate("document.body.setAttribute('style', 'color: red')")
    page.wait_for_function("() => window.__cspViolations > 0")
    assert any("style-src" in v for v in watch.violations), watch.violations
    watch.violations.clear()


def test_an_unknown_thing_says_so(page: Page, served: Served) -> None:
    page.goto(served.url("dashboard/things/nosuchthing"))
    expect(page.get_by_role("heading", name="No such Thing")).to_be_visible()
    expect(page.locator("main")).to_contain_text("nosuchthing")


def test_any_thing_gets_controls_from_its_schemas(page: Page, tmp_path: Path) -> None:
    """A user's Thing: boolean, enum, string, object and integer properties, action
    inputs of those kinds, an object output and a blob output; its description is text."""
    config = tmp_path / "things.toml"
    config.write_text('[things.gadget]\nclass = "tests.browser.gadgets:Gadget"\n')
    served = Served(str(config), "--app-dir", str(ROOT), cwd=tmp_path)
    served.start()
    try:
        open_thing(page, served, "gadget")
        header = page.locator(".thing-header")
        expect(header).to_contain_text("A gadget <img src=x id=injected> whose <b>description</b>")
        expect(header.locator(".description p")).to_have_count(2)
        assert page.locator("#injected").count() == 0
        assert page.locator(".thing-header b").count() == 0

        def write(name: str, fill: object) -> None:
            form = card(page, "property", name)
            control = form.get_by_label(f"New {name}")
            if fill is True or fill is False:
                control.set_checked(bool(fill))
            elif name == "mode":
                control.select_option(label=str(fill))
            else:
                control.fill(str(fill))
            form.get_by_role("button", name="Set").click()
            expect(form.locator(".done")).to_have_text("✓")

        write("enabled", True)
        write("mode", "scan")
        write("label", "second <b>")
        write("limits", '{"low": 2, "high": 7}')
        write("level", "9")
        assert served.get("gadget/properties") == {
            "enabled": True, "mode": "scan", "label": "second <b>",
            "limits": {"low": 2, "high": 7}, "level": 9}
        expect(value(page, "label")).to_have_text("second <b>")
        expect(value(page, "limits")).to_have_text('{"low":2,"high":7}')

        limits = card(page, "property", "limits")
        limits.get_by_label("New limits").fill("{not json")
        limits.get_by_role("button", name="Set").click()
        expect(limits.locator('[data-role="error"]')).to_contain_text("not JSON")

        configure = card(page, "action", "configure")
        configure.get_by_role("combobox", name="mode", exact=True).select_option(label="track")
        configure.get_by_label("enabled", exact=True).check()
        configure.get_by_label("note", exact=True).fill("hi")
        configure.get_by_role("button", name="Invoke").click()
        invocation = configure.locator(".invocation").first
        expect(invocation.locator('[data-role="state"]')).to_have_text("completed")
        expect(invocation.locator('[data-role="output-value"]')).to_contain_text('"mode": "track"')
        expect(value(page, "mode")).to_have_text("track")

        picture = card(page, "action", "picture")
        picture.get_by_role("button", name="Invoke").click()
        image = picture.locator(".invocation img.blob-image")
        expect(image).to_be_visible()
        page.wait_for_function(
            """() => document.querySelector('[data-action="picture"] img.blob-image')
                       ?.naturalWidth === 4""")
        expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    finally:
        served.stop()


def test_a_frame_stream_is_shown_live(page: Page, served: Served) -> None:
    td = served.get("camera/")
    streams = [link for link in td.get("links", [])
               if link.get("type") == "multipart/x-mixed-replace"]
    assert streams, "the demo camera has a frame stream"
    open_thing(page, served, "camera")
    stream = page.locator("img.stream")
    expect(stream).to_have_count(len(streams))
    expect(stream.first).to_have_attribute("src", served.url(streams[0]["href"]))
    page.wait_for_function("() => document.querySelector('img.stream').naturalWidth > 0")


TOKEN = "full-access-token-1234"
READONLY = "read-only-token-5678"


def test_tokens_prompt_readonly_and_full(page: Page, tmp_path: Path) -> None:
    served = Served(cwd=tmp_path, env={"TRIO_THINGS_TOKENS": TOKEN,
                                       "TRIO_THINGS_READONLY_TOKENS": READONLY})
    served.start()
    try:
        with pytest.raises(urllib.error.HTTPError):
            served.get("thermometer/")
        page.goto(served.root)
        expect(page.get_by_role("heading", name="Access token")).to_be_visible()
        token = page.get_by_label("Token")
        token.fill("wrong-token-000000")
        page.get_by_role("button", name="Continue").click()
        expect(page.locator("#token-error")).to_have_text("The token was refused.")

        token.fill(READONLY)
        page.get_by_role("button", name="Continue").click()
        expect(card(page, "thing", "thermometer")).to_be_visible()
        expect(page.locator("#role")).to_have_text("read-only")
        assert page.evaluate("sessionStorage.getItem('trio-things.token')") == READONLY
        assert page.evaluate("localStorage.length") == 0

        open_thing(page, served, "thermometer")   # the socket carries the token too
        wait_for_number(page, "temperature", "true", timeout=2000)
        expect(page.locator(".notice")).to_contain_text("Read-only access")
        for button in page.get_by_role("button", name=re.compile("^(Set|Invoke)$")).all():
            expect(button).to_be_disabled()
        expect(card(page, "property", "setpoint").get_by_label("New setpoint")).to_be_disabled()
        served.put("thermometer/setpoint", 33, token=TOKEN)
        expect(value(page, "setpoint")).to_have_text("33")

        page.get_by_role("button", name="Forget token").click()
        expect(page.get_by_role("heading", name="Access token")).to_be_visible()
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Continue").click()
        expect(page.locator("#connection")).to_have_text("connected")
        expect(page.locator("#role")).to_be_hidden()
        setpoint = card(page, "property", "setpoint")
        setpoint.get_by_label("New setpoint").fill("44")
        setpoint.get_by_role("button", name="Set").click()
        expect(value(page, "setpoint")).to_have_text("44")
        assert served.get("thermometer/setpoint", token=TOKEN) == 44

        # A frame stream under tokens: read by script with the header (no token in a URL).
        page.goto(served.url("dashboard/things/camera"))
        page.wait_for_function("() => document.querySelector('img.stream')?.naturalWidth > 0")
        expect(page.locator("img.stream")).to_have_attribute("src", re.compile(r"^blob:"))
    finally:
        served.stop()


def test_the_package_ships_the_dashboard() -> None:
    """The files the page loads are package data, so an installed trio-things serves them."""
    folder = ROOT / "trio_things" / "dashboard"
    for name in ("index.html", "app.js", "style.css", "vendor/uPlot.esm.js",
                 "vendor/uPlot.min.css", "vendor/uPlot.LICENSE", "vendor/README.md"):
        assert (folder / name).is_file(), name
    html = (folder / "index.html").read_text()
    assert 'type="module" src="/dashboard/static/app.js"' in html
    assert "style=" not in html and "onclick" not in html.lower()


def test_offline_then_online_again(page: Page, served: Served) -> None:
    """The browser says the network is gone: the page says offline, and reconnects as
    soon as the browser says it is back."""
    open_thing(page, served, "thermometer")
    page.context.set_offline(True)
    expect(page.locator("#connection")).to_have_text("offline")
    expect(card(page, "property", "temperature")).to_have_class(re.compile(r"\bstale\b"))
    page.context.set_offline(False)
    expect(page.locator("#connection")).to_have_text("connected")
    served.put("thermometer/setpoint", 50)
    expect(value(page, "setpoint")).to_have_text("50", timeout=1000)
