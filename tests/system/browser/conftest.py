"""A real Chromium driven by Playwright: Debian's ``chromium`` (installed by
``make browser-deps``), never Playwright's own browser download."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


@pytest.fixture
def browser() -> Iterator[Browser]:
    """One browser per test: Playwright's sync API keeps an event loop running
    in this thread until it stops, which would break every later test that
    runs asyncio itself (the in-process worker)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run `make browser-deps` as root"
        if os.geteuid() == 0:
            # Where it can be installed (CI runs as root), missing is a failure.
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # With that loop running, Django refuses ORM calls from this thread
    # (SynchronousOnlyOperation). The tests only use the ORM between browser
    # steps, never concurrently with them; allowed while the browser is up.
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield launched
            finally:
                launched.close()
    finally:
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 1400, "height": 900},
        locale="en-GB",
        timezone_id="Asia/Kolkata",
    )
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    yield opened
    context.close()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go: test-artifacts/ at the project root (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
