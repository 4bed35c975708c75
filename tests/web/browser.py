"""What the browser tests share: how Chromium is launched, the demo sign-in, and page helpers.

The fixtures built on these (`browser`, `page`) are in conftest.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, ViewportSize, expect

PASSWORD = "bridgehead-demo"
ADMIN = "admin@demo.bridgehead.dev"
CHROMIUM = "/usr/bin/chromium"  # Debian's package; playwright's own download is not used
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def open_context(
    browser: Browser, base_url: str, viewport: ViewportSize, timeout_ms: float
) -> BrowserContext:
    """A fresh context (no cookies) on the server, with the viewport and default timeout given."""
    context = browser.new_context(base_url=base_url, viewport=viewport)
    context.set_default_timeout(timeout_ms)
    return context


def watch_console(page: Page, ignored: str) -> list[str]:
    """The console errors and warnings (but those matching `ignored`) and uncaught page errors, as they come.

    Warnings count: a CSP refusal or plotly's "cannot add style rule" warning would mean charts draw
    without styles.
    """
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning") and not re.search(ignored, message.text):
            problems.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    return problems


def sign_in(page: Page, email: str, password: str = PASSWORD, path: str = "/login") -> None:
    page.goto(path)
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def shot(page: Page, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / name), full_page=True, animations="disabled", caret="hide")


def full_shot(page: Page, name: str) -> None:
    """A full-page screenshot at 1280 wide, laid out at the page's full height (as a tall window would show
    it), so that the sticky sidebar spans the page instead of floating where the capture scrolled to."""
    height = page.evaluate("() => document.documentElement.scrollHeight")
    page.set_viewport_size({"width": DESKTOP["width"], "height": max(DESKTOP["height"], height)})
    page.wait_for_timeout(150)  # plotly's responsive charts settle after the resize
    shot(page, name)
    page.set_viewport_size(DESKTOP)


def charts_drawn(page: Page, count: int) -> None:
    expect(page.locator(".chart.chart-ready")).to_have_count(count)
    expect(page.locator(".chart svg.main-svg").first).to_be_visible()
