"""The demo page on the allowed origin: ticks and chat arrive on one stream per browser, shared
by its tabs; the chat's requests carry the session cookie."""

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
    wait_for_state(page, "page", "open")
    wait_for_count(page, "ticks", 95)  # 90 ticks of history, then live ones
    ticks = received(page, "ticks")
    assert consecutive(ticks)
    assert page.locator("#price").inner_text() != "—"
    [stream] = requests(server, "GET", "/page-events")
    assert (stream["status"], stream["origin"]) == (200, server.page_origin)
    [history] = requests(server, "GET", "/ticks/recent")
    assert (history["status"], history["origin"]) == (200, server.page_origin)
    assert requests(server, "GET", "/ticks") == [], "the ticker comes on the page's one stream"
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
        wait_for_state(tab, "page", "open")
        tab.wait_for_function("() => !document.getElementById('chat-input').disabled")
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

    # Server side: one stream per browser (alice's two tabs share hers), both from the page's
    # origin; the cookie came with every POST, and the view that ran saw the user it names.
    streams = requests(server, "GET", "/page-events")
    assert len(streams) == 2, streams
    assert all(r["status"] == 200 for r in streams)
    assert {r["origin"] for r in streams} == {server.page_origin}
    assert {tab.evaluate("demo.shared().role") for tab in alice_tabs} <= {
        "worker",
        "leader",
        "follower",
    }
    posts = requests(server, "POST", "/rooms/lobby/messages")
    assert [(r["status"], r["cookie"]) for r in posts] == [(201, True), (201, True)]
    preflights = requests(server, "OPTIONS", "/rooms/lobby/messages")
    assert preflights, "a JSON POST from another origin is preflighted"
    assert all(r["status"] == 204 and not r["cookie"] for r in preflights)
    calls = server.stats()["calls"]
    assert len([c for c in calls if c["view"] == "page_events"]) == 2
    post_users = [c["user"] for c in calls if c["view"] == "post_message"]
    assert post_users == [alice_name, bob_name]
    # The chat's reads are credentialed: the room was loaded with each browser's cookie.
    rooms = requests(server, "GET", "/rooms/lobby")
    assert len(rooms) == 3 and all(r["cookie"] for r in rooms)
