"""A screenshot of the working page, for people and for the docs.

Saved as ``test-artifacts/demo.png``; a copy is kept as ``docs/_static/demo.png``. This module
has its own server, so the chat shows only the conversation below.
"""

from __future__ import annotations

import typing as t

import pytest

from .conftest import ARTIFACTS
from .demo import messages
from .demo import open_page
from .demo import send
from .demo import wait_for_chat
from .demo import wait_for_count
from .demo import wait_for_state

if t.TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

    from tests.support.example_server import ExampleServer

pytestmark = pytest.mark.browser

CONVERSATION = [
    ("alice", "Is this stream really coming from another origin?"),
    ("bob", "Yes: the page and the API are two origins, and the cookie still comes along."),
    ("alice", "And a page on 127.0.0.1 gets a 403 before any view runs?"),
    ("bob", "Before the view, the generator or the subscription. Try the link below."),
]


@pytest.fixture(scope="module")
def server(demo_server: ExampleServer) -> ExampleServer:
    return demo_server


def test_screenshot_of_the_working_page(
    server: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    alice = open_page(new_context(), f"{server.page_origin}/")
    bob = open_page(new_context(), f"{server.page_origin}/")
    for tab in (alice, bob):
        wait_for_chat(tab)
        wait_for_state(tab, "feed", "done")
    tabs = {"alice": alice, "bob": bob}
    for n, (who, text) in enumerate(CONVERSATION, 1):
        send(tabs[who], text)
        wait_for_count(alice, "chat", n)  # one at a time, so the clock times read in order
    assert [m["text"] for m in messages(alice)] == [text for _, text in CONVERSATION]
    assert alice.evaluate("demo.verdict") == "allowed"
    alice.locator("#chat-input").fill("And reconnects resume from Last-Event-ID")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "demo.png"
    alice.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 20_000
