"""Screenshots of the dashboard for the docs: ``python -m tests.browser.screenshots``
(``make screenshots``).

Serves the demo Things, opens the Thing list and the thermometer's page in Debian's
chromium, lets the thermometer do something worth seeing (a ramp, an event), waits
until its plot holds a few dozen points, and writes ``docs/images/dashboard-things.png``
and ``docs/images/dashboard-thermometer.png``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from tests.browser.served import Served, launch_options

ROOT = Path(__file__).resolve().parents[2]
POINTS = 80  # values in the temperature plot before the picture is taken (8 s)


def plot_points(page: Page, at_least: int, timeout: float = 30_000) -> None:
    page.wait_for_function(
        """(n) => Number(document.querySelector('[data-property="temperature"] .plot')
                         ?.dataset.points) >= n""", arg=at_least, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images",
                        help="folder for the PNGs (default: docs/images)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        served = Served(cwd=Path(folder))
        served.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(**launch_options())
                try:
                    shoot(browser.new_page(viewport={"width": 1280, "height": 330},
                                           color_scheme="light"), served, args.out)
                finally:
                    browser.close()
        finally:
            served.stop()
    return 0


def shoot(page: Page, served: Served, out: Path) -> None:
    page.goto(served.root)
    expect(page.locator('[data-thing="thermometer"]')).to_be_visible()
    expect(page.locator("#connection")).to_have_text("connected")
    things = out / "dashboard-things.png"
    page.screenshot(path=things)
    print(things)

    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(served.url("dashboard/things/thermometer"))
    expect(page.locator("#connection")).to_have_text("connected")
    plot_points(page, 15)
    threshold = page.locator('[data-property="threshold"]')
    threshold.get_by_label("New threshold").fill("27")
    threshold.get_by_role("button", name="Set").click()
    expect(threshold.locator('[data-role="value"]')).to_have_text("27")
    ramp = page.locator('[data-action="ramp"]')
    ramp.get_by_role("spinbutton", name="to", exact=True).fill("30")
    ramp.get_by_role("spinbutton", name="rate", exact=True).fill("5")
    ramp.get_by_role("button", name="Invoke").click()
    expect(ramp.locator('[data-role="state"]').first).to_have_text("completed", timeout=10_000)
    expect(page.locator('.event-log li[data-event="overheated"]').first).to_be_visible(
        timeout=10_000)
    plot_points(page, POINTS)
    page.evaluate("document.activeElement?.blur(); window.scrollTo(0, 0)")
    thermometer = out / "dashboard-thermometer.png"
    page.screenshot(path=thermometer, full_page=True)
    print(thermometer)


if __name__ == "__main__":
    sys.exit(main())
