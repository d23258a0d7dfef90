"""The demo page on an origin the API does not allow: every request refused, no view run."""

from __future__ import annotations

import re
import time
import typing as t

import pytest

from .conftest import ARTIFACTS
from .demo import open_page
from .demo import states
from .demo import wait_for_state

if t.TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

    from tests.support.example_server import ExampleServer

pytestmark = pytest.mark.browser


def test_cross_site_origin_is_refused_before_any_view_runs(
    server: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    """http://127.0.0.1:PAGE is cross-site to http://localhost:API and not on the allowlist."""
    server.reset_stats()
    page = open_page(new_context(), f"{server.refused_origin}/")
    assert page.evaluate("demo.verdict") == "refused"
    wait_for_state(page, "page", "refused")
    wait_for_state(page, "feed", "refused")
    # The EventSource failed for good: it never opened, and the browser does not retry.
    assert states(page, "page") == ["connecting", "refused"]
    assert page.evaluate("demo.received.ticks.length") == 0
    assert page.locator("#verdict-title").inner_text().startswith("Refused")
    shown = page.locator("#refusals li").all_inner_texts()
    assert sorted(" ".join(text.split(" ", 3)[:3]) for text in shown) == [
        "EventSource GET /page-events",
        "fetch GET /feed",
        "fetch GET /me",
    ]
    time.sleep(2.5)  # longer than the retry interval (1 s): a retry would show up by now
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "refused.png", full_page=True)

    stats = server.stats()
    from_page = [r for r in stats["requests"] if r["origin"] == server.refused_origin]
    answered = sorted((r["method"], r["path"], r["status"]) for r in from_page)
    assert answered == [
        ("GET", "/me", 403),
        ("GET", "/page-events", 403),
        ("OPTIONS", "/feed", 403),
    ], "one attempt each, all refused"
    assert stats["views"] == {}, "no view ran"
    assert stats["subscribers"] == 0
    # gunicorn's access log says the same.
    origin = re.escape(server.refused_origin)
    line = rf'"GET /page-events\?room=lobby HTTP/1\.1" 403 \d+ origin={origin} '
    assert re.search(line, server.log_text())
