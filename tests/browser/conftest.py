"""Fixtures of the browser tests: Debian's chromium driven by Playwright, and a real
``trio-things serve`` on 127.0.0.1.

The browser is the system's (``/usr/bin/chromium``, ``make browser`` installs it);
Playwright never downloads one. Without it the tests fail, saying how to get it.
Every page is watched for Content-Security-Policy violations and uncaught errors; a
test that caused any fails at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.browser.served import Served, launch_options

# Reported to Python from the page, through a binding: the CSP does not apply to either.
_WATCH_CSP = """
window.__cspViolations = 0;
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations += 1;
  window.__cspViolation(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`
                        + ` at ${event.sourceFile || document.URL}:${event.lineNumber}`);
});
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real browser (Debian's chromium)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        options = launch_options()
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**options)
        try:
            yield browser
        finally:
            browser.close()


class Watch:
    """What a page did wrong: CSP violations, uncaught exceptions."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.errors: list[str] = []

    def console(self, text: str) -> None:
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.violations.append(text)


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def page(browser: Browser, watch: Watch) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.expose_binding("__cspViolation", lambda source, text: watch.violations.append(text))
    context.add_init_script(_WATCH_CSP)
    page = context.new_page()
    page.on("console", lambda message: watch.console(message.text))
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    page.set_default_timeout(10_000)
    try:
        yield page
    finally:
        context.close()
    assert watch.violations == [], "Content-Security-Policy violations"
    assert watch.errors == [], "uncaught errors in the page"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``trio-things serve`` with the demo Things, in ``tmp_path`` (where settings go)."""
    server = Served(cwd=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
