"""Browser tests: Debian's Chromium, driven by Playwright, against the example app under gunicorn.

The app runs as ``make demo`` runs it (``example_app/gunicorn.conf.py``, gevent workers), on free
ports, with its test-only routes on. Chromium is never downloaded: a missing
``/usr/bin/chromium`` fails the run in CI and skips it elsewhere.

Screenshots go to ``test-artifacts/`` (gitignored), including one per open page when a test
fails.
"""

from __future__ import annotations

import collections.abc as cabc
import re
import typing as t

import pytest

from tests.support.example_server import ExampleServer
from tests.support.servers import require_binary
from tests.support.servers import ROOT

if t.TYPE_CHECKING:
    from playwright.sync_api import Browser
    from playwright.sync_api import BrowserContext

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Playwright's own defaults stay (no --disable-features here: it would replace its list).
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Seconds between ticks in the browser tests.
TICK_SECONDS = "0.25"
#: Whether the test's call phase failed (screenshots are saved then).
_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> t.Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture(scope="session")
def browser() -> cabc.Iterator[Browser]:
    executable = require_binary("chromium", CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_context(
    browser: Browser, request: pytest.FixtureRequest
) -> cabc.Iterator[cabc.Callable[[], BrowserContext]]:
    """Make fresh browser contexts (each its own cookie jar: its own chat user)."""
    contexts: list[BrowserContext] = []

    def make() -> BrowserContext:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context

    yield make
    failed = request.node.stash.get(_FAILED, False)
    for i, context in enumerate(contexts):
        if failed:
            name = re.sub(r"[^\w.-]+", "_", request.node.name)
            ARTIFACTS.mkdir(exist_ok=True)
            for j, page in enumerate(context.pages):
                page.screenshot(path=ARTIFACTS / f"failed-{name}-{i}-{j}.png", full_page=True)
        context.close()


def start_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, str] | None = None
) -> ExampleServer:
    log = tmp_path_factory.mktemp(name) / "gunicorn.log"
    return ExampleServer(log, env={"EXAMPLE_TICK_SECONDS": TICK_SECONDS, **(env or {})}).start()


@pytest.fixture(scope="module")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> cabc.Iterator[ExampleServer]:
    """The example app as ``make demo`` runs it: one gevent worker, one tick a second."""
    name = request.module.__name__.rpartition(".")[2]
    running = start_server(tmp_path_factory, name, env={"EXAMPLE_TICK_SECONDS": "1"})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> cabc.Iterator[ExampleServer]:
    """The example app with its default settings."""
    running = start_server(tmp_path_factory, "example")
    try:
        yield running
    finally:
        running.stop()
