"""Browser tests: Playwright for Python driving Debian's Chromium, headless.

Playwright never downloads a browser here: it is pointed at ``/usr/bin/chromium`` (``make test``
installs Debian's package where it is missing), and a missing browser fails the run, never skips it.
Screenshots of both pages are saved under ``artifacts/ui/`` (or ``$REELSERVE_TEST_ARTIFACTS/ui``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from support import RunningServer, serve
from ui_support import ADMIN_KEY, CHROMIUM, USER_KEY


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module, not per session: sync Playwright runs an event loop in this thread while it is
    open, and the async tests of later modules need the thread's loop to themselves."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The embedded server with the tiny model, user keys and an admin key: the pages must ask for both."""
    with serve(tmp_path_factory.mktemp("ui") / "data", api_keys=[USER_KEY], admin_keys=[ADMIN_KEY]) as running:
        yield running


def _open_page(browser: Browser, width: int, height: int) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page threw: {errors}"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (empty session storage) at desktop width; a script error fails the test."""
    yield from _open_page(browser, 1280, 900)


@pytest.fixture
def phone_page(browser: Browser) -> Iterator[Page]:
    """The same at a phone's width."""
    yield from _open_page(browser, 390, 844)
