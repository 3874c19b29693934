"""Headless Chromium for tests that open the HTML the pipeline writes (Playwright).

`chromium` is a module fixture: a Playwright `Browser` on the machine's Chromium
(the Debian package, /usr/bin/chromium; `playwright install` cannot download a
build here, and `.ci/run` installs the package). Tests that use it skip, saying
why, where Playwright or Chromium is missing. `tests/conftest.py` makes both
fixtures available to every test module. It lives no longer than its module:
while Playwright runs, its event loop is the thread's, and Dagster's in-process runs
then skip their own loop's cleanup (a RuntimeWarning); so a module that runs the
pipeline does that before its first browser test.

`open_offline` opens a page that reaches nothing but files: any other request is
aborted (or answered by the test with a stand-in), so no test talks to the network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

CHROMIUM = Path(os.environ.get("ENRICH_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: pages load from local files, but the machine's two cores are shared.
PAGE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """The machine's headless Chromium, driven by Playwright; skips when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: `uv sync` installs the dev dependencies")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class OpenedPage:
    """A loaded page and what it did: dialogs it opened, errors its scripts raised."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)


@pytest.fixture
def open_offline(chromium: Browser) -> Iterator:
    """`open_offline(path, stand_ins={url_part: javascript})` -> `OpenedPage`.

    The test's pages share one browser context, closed after the test. A request for
    a URL containing a `stand_ins` key is answered with that script; any other
    request that is not a file is aborted.
    """
    context = chromium.new_context()

    def open_page(path: Path, stand_ins: dict[str, str] | None = None) -> OpenedPage:
        page = context.new_page()
        opened = OpenedPage(page)

        def route(route: Route) -> None:
            url = route.request.url
            if url.startswith("file:"):
                route.continue_()
                return
            script = next((js for part, js in (stand_ins or {}).items() if part in url), None)
            if script is not None:
                route.fulfill(status=200, content_type="application/javascript", body=script)
                return
            opened.blocked_requests.append(url)
            route.abort()

        page.route("**/*", route)
        page.on("dialog", lambda dialog: (opened.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: opened.script_errors.append(str(error)))
        page.goto(path.resolve().as_uri(), wait_until="load", timeout=PAGE_TIMEOUT_MS)
        return opened

    try:
        yield open_page
    finally:
        context.close()
