"""The demo page on the allowed origin: ticks and chat arrive, with the session cookie."""

from __future__ import annotations

import typing as t

import pytest

from .demo import consecutive
from .demo import messages
from .demo import open_page
from .demo import received
from .demo import send
from .demo import wait_for_count
from .demo import wait_for_state

if t.TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

    from tests.support.example_server import ExampleServer

pytestmark = pytest.mark.browser


def requests(server: ExampleServer, method: str, path: str) -> list[dict[str, t.Any]]:
    return [
        r
        for r in server.stats()["requests"]
        if r["method"] == method and r["path"] == path and r["port"] == str(server.api_port)
    ]


def test_ticks_arrive_on_the_allowed_origin(
    server: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    server.reset_stats()
    errors: list[str] = []
    page = open_page(new_context(), f"{server.page_origin}/", errors)
    assert page.evaluate("demo.verdict") == "allowed"
    wait_for_state(page, "ticker", "open")
    wait_for_count(page, "ticks", 95)  # 90 ticks of history, then live ones
    ticks = received(page, "ticks")
    assert consecutive(ticks)
    assert page.locator("#price").inner_text() != "—"
    [stream] = [r for r in requests(server, "GET", "/ticks") if r["origin"]]
    assert (stream["status"], stream["origin"]) == (200, server.page_origin)
    wait_for_state(page, "feed", "done")
    assert errors == [], "no script errors, no failed requests"


def test_chat_reaches_every_tab_with_the_cookie(
    server: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    server.reset_stats()
    alice = new_context()
    alice_tabs = [open_page(alice, f"{server.page_origin}/") for _ in range(2)]
    bob_tab = open_page(new_context(), f"{server.page_origin}/")
    tabs = [*alice_tabs, bob_tab]
    for tab in tabs:
        wait_for_state(tab, "chat", "open")
    alice_name = alice_tabs[0].evaluate("demo.me.name")
    assert alice_tabs[1].evaluate("demo.me.name") == alice_name, "one cookie per context"
    bob_name = bob_tab.evaluate("demo.me.name")

    # Typed and sent through the form, like a person would.
    alice_tabs[0].fill("#chat-input", "hello from the first tab")
    alice_tabs[0].click("#chat-send")
    for tab in tabs:
        wait_for_count(tab, "chat", 1)
    posted = send(bob_tab, "hello back")
    for tab in tabs:
        wait_for_count(tab, "chat", 2)

    for tab in tabs:
        shown = messages(tab)[-2:]
        assert [(m["user"], m["text"]) for m in shown] == [
            (alice_name, "hello from the first tab"),
            (bob_name, "hello back"),
        ]
        assert received(tab, "chat")[-1] == posted["id"]
    assert [m["mine"] for m in messages(alice_tabs[0])[-2:]] == [True, False]

    # Server side: the cookie came with every stream request and every POST, and the view
    # that ran saw the user it names.
    streams = requests(server, "GET", "/rooms/lobby/events")
    assert len(streams) == 3
    assert all(r["status"] == 200 and r["cookie"] for r in streams)
    assert {r["origin"] for r in streams} == {server.page_origin}
    posts = requests(server, "POST", "/rooms/lobby/messages")
    assert [(r["status"], r["cookie"]) for r in posts] == [(201, True), (201, True)]
    preflights = requests(server, "OPTIONS", "/rooms/lobby/messages")
    assert preflights, "a JSON POST from another origin is preflighted"
    assert all(r["status"] == 204 and not r["cookie"] for r in preflights)
    calls = server.stats()["calls"]
    stream_users = sorted(c["user"] for c in calls if c["view"] == "room_events")
    assert stream_users == sorted([alice_name, alice_name, bob_name])
    post_users = [c["user"] for c in calls if c["view"] == "post_message"]
    assert post_users == [alice_name, bob_name]
    # The ticker is credentialed too: tabs opened after the session existed sent the cookie.
    assert any(r["cookie"] for r in requests(server, "GET", "/ticks"))
