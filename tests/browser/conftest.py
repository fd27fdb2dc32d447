"""The browser for the web app's tests: Debian's Chromium driven by Playwright (which never downloads one here).

Playwright's async API runs in the test's own event loop, the one the engine's API is served from, so waiting on
the page never blocks the server it is waiting for."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright, expect

from tests.support import ROOT

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# `make screenshots` sets it: each screen's PNG is written there.
SCREENSHOTS = os.environ.get("SCREENSHOTS_DIR")
# Long enough for a sync or a webhook on a loaded machine; every wait is for an element or a state, never a sleep.
WAIT_MS = 45_000


def _chromium() -> str:
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    found = shutil.which("chromium")
    if found:
        return found
    message = (
        f"Chromium is not installed at {CHROMIUM}: the browser tests need Debian's chromium "
        "(`apt-get install -y chromium`, which `make test` runs as root or with sudo)."
    )
    if os.environ.get("TEST_REQUIRE_POSTGRES") == "1" or os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile per test (cookies, sessionStorage), failing the test on any page error."""
    created = await browser.new_context(viewport={"width": 1100, "height": 820})
    created.set_default_timeout(WAIT_MS)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    opened = await context.new_page()
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        # The browser logs each 4xx answer (a refused retry, the favicon); those are the app's to show, not errors.
        if message.type == "error" and "status of 4" not in message.text:
            errors.append(f"console: {message.text}")

    # A script error or a refused Content-Security-Policy would leave a screen dead: either fails the test.
    opened.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    opened.on("console", console)
    yield opened
    assert errors == []


async def screenshot(page: Page, name: str) -> None:
    """Writes var/screenshots/<name>.png (or SCREENSHOTS_DIR's) under `make screenshots`; nothing otherwise."""
    if not SCREENSHOTS:
        return
    directory = Path(SCREENSHOTS)
    if not directory.is_absolute():
        directory = ROOT / directory
    directory.mkdir(parents=True, exist_ok=True)
    assert re.fullmatch(r"[a-z0-9-]+", name)
    await page.screenshot(path=str(directory / f"{name}.png"), full_page=True)
