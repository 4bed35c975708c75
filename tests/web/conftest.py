"""The browser fixtures: one headless Chromium per test module, and a page that must stay free of console problems.

Each test module brings its own module-scoped `base_url` fixture (a server on a home seeded for it). A
module tunes the `page` fixture with module-level constants:

- ``IGNORED_CONSOLE``: a regex of console messages that are expected (e.g. ``r"status of 40[04]"`` for the
  404s a test provokes); any other console error or warning, and any uncaught page error, fails the test;
- ``PAGE_TIMEOUT_MS``: the default timeout of the page's actions and waits (15 s);
- ``VIEWPORT``: the window size (`DESKTOP`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.web.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, open_context, watch_console

IGNORED_CONSOLE = r"status of 40[04]"
PAGE_TIMEOUT_MS = 15_000


# Module scope, not session scope: while the sync API's connection is open, its event loop counts as running in
# the main thread (playwright marks it so between calls), so asyncio.run() in a test of another module run
# meanwhile (e.g. tests/serving/test_batching.py under pytest-randomly) would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser, base_url: str) -> Iterator[Page]:
    """A page in a fresh context; after the test, asserts that no console problem happened on it."""
    module = request.module
    context = open_context(
        browser,
        base_url,
        viewport=getattr(module, "VIEWPORT", DESKTOP),
        timeout_ms=getattr(module, "PAGE_TIMEOUT_MS", PAGE_TIMEOUT_MS),
    )
    page = context.new_page()
    problems = watch_console(page, getattr(module, "IGNORED_CONSOLE", IGNORED_CONSOLE))
    yield page
    context.close()
    assert not problems, problems
