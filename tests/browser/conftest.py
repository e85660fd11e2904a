"""A real Chromium (Debian's package, never a downloaded build) driven by Playwright, against a
live uvicorn; each test's pages are screenshotted into DISTILLERY_SCREENSHOTS (default: a
temporary folder), and every page must load with no script error, no CSP violation and no
request off this machine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Route,
    sync_playwright,
)

CHROMIUM = os.environ.get("DISTILLERY_CHROMIUM", "/usr/bin/chromium")


# Per module, not per session: Playwright's driver and its event loop end with the browser
# tests instead of lingering through the rest of the suite.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        # Loud on purpose: scripts/test.sh installs it (scripts/ensure-browser.sh), so a missing
        # browser is a broken setup, not a reason to pass without the console tested.
        pytest.fail(f"no Chromium at {CHROMIUM}; run scripts/ensure-browser.sh")
    # --no-sandbox: tests run as root in a container, where Chromium's own sandbox cannot start.
    instance = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
    )
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("DISTILLERY_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Console:
    """One browser context (one user's cookies), with what went wrong on its pages."""

    def __init__(self, context: BrowserContext, screenshots: Path) -> None:
        self.context = context
        self.screenshots = screenshots
        self.problems: list[str] = []
        self.offsite: list[str] = []
        context.route("**/*", self._only_local)
        self.page = self.new_page()

    def _only_local(self, route: Route, request: Request) -> None:
        # Air-gapped: every asset must come from the server itself.
        if urlsplit(request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.offsite.append(request.url)
            route.abort()

    def _console_message(self, message: ConsoleMessage) -> None:
        # The browser logs every 4xx page it loads; those are the tests' own refusals.
        if message.type == "error" and "status of 4" not in message.text:
            self.problems.append(f"console error: {message.text}")

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", self._console_message)
        return page

    def shoot(self, name: str, page: Page | None = None) -> Path:
        path = self.screenshots / f"{name}.png"
        (page or self.page).screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def console_factory(browser: Browser, screenshot_dir: Path) -> Iterator[Callable[[], Console]]:
    consoles: list[Console] = []

    def make() -> Console:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        console = Console(context, screenshot_dir)
        consoles.append(console)
        return console

    yield make
    for console in consoles:
        console.context.close()
    offsite = [url for console in consoles for url in console.offsite]
    problems = [problem for console in consoles for problem in console.problems]
    assert not offsite, f"pages asked for something off this server: {offsite}"
    assert not problems, "\n".join(problems)
