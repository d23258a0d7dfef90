"""A fetch() stream reader sending Authorization and Last-Event-ID depends on its preflight."""

from __future__ import annotations

import collections.abc as cabc
import json
import typing as t

import pytest

from .conftest import start_server
from .demo import open_page
from .demo import received
from .demo import states
from .demo import wait_for_state

if t.TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

    from tests.support.example_server import ExampleServer

pytestmark = pytest.mark.browser

WITHOUT_AUTHORIZATION = ["last-event-id", "cache-control", "content-type"]


def feed_requests(server: ExampleServer, method: str) -> list[dict[str, t.Any]]:
    return [r for r in server.stats()["requests"] if r["path"] == "/feed" and r["method"] == method]


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> cabc.Iterator[ExampleServer]:
    """The example app with SSECORS_ALLOWED_HEADERS not listing authorization."""
    running = start_server(
        tmp_path_factory,
        "strict",
        env={"SSECORS_ALLOWED_HEADERS": json.dumps(WITHOUT_AUTHORIZATION)},
    )
    try:
        yield running
    finally:
        running.stop()


def test_fetch_reader_sends_authorization_and_last_event_id(
    server: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    """SSECORS_ALLOWED_HEADERS lists authorization (the example's default): preflight passes."""
    page = open_page(new_context(), f"{server.page_origin}/")
    wait_for_state(page, "feed", "done")  # the page's own probe, on load
    server.reset_stats()
    latest = int(received(page, "ticks")[-1])
    result = page.evaluate("n => demo.probeFeed({lastEventId: n})", latest - 3)
    assert result["ok"], result
    assert result["ids"] == [str(n) for n in range(latest - 2, latest + 1)], "resumed after it"

    [preflight] = feed_requests(server, "OPTIONS")
    assert preflight["status"] == 204
    assert set(preflight["request_headers"].split(",")) == {"authorization", "last-event-id"}
    [stream] = feed_requests(server, "GET")
    assert stream["status"] == 200
    assert stream["authorization"] and stream["cookie"]
    assert stream["last_event_id"] == str(latest - 3)
    [call] = [c for c in server.stats()["calls"] if c["view"] == "feed"]
    assert call["authorized"] is True


def test_fetch_reader_fails_its_preflight_when_authorization_is_not_allowed(
    strict_server: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    server = strict_server
    page = open_page(new_context(), f"{server.page_origin}/")
    assert page.evaluate("demo.verdict") == "allowed", "the origin itself is allowed"
    wait_for_state(page, "feed", "refused")  # the page's own probe, on load
    server.reset_stats()
    latest = int(received(page, "ticks")[-1])
    result = page.evaluate("n => demo.probeFeed({lastEventId: n})", latest - 3)
    assert not result["ok"]
    assert result["status"] is None
    assert "TypeError" in result["error"]
    assert states(page, "feed")[-2:] == ["connecting", "refused"]

    stats = server.stats()
    feed = [r for r in stats["requests"] if r["path"] == "/feed"]
    assert [(r["method"], r["status"]) for r in feed] == [("OPTIONS", 403)], "GET never sent"
    assert set(feed[0]["request_headers"].split(",")) == {"authorization", "last-event-id"}
    assert "feed" not in stats["views"]
