"""The server drops every stream; the page reconnects with Last-Event-ID and misses nothing."""

from __future__ import annotations

import time
import typing as t

import pytest

from .conftest import start_server
from .demo import chat_part
from .demo import consecutive
from .demo import open_page
from .demo import received
from .demo import send
from .demo import states
from .demo import wait_for_count
from .demo import wait_for_state

if t.TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

    from tests.support.example_server import ExampleServer

pytestmark = pytest.mark.browser


def test_streams_resume_after_a_drop_with_every_event_once_in_order(
    server: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    page = open_page(new_context(), f"{server.page_origin}/")
    wait_for_state(page, "page", "open")
    page.wait_for_function("() => demo.me !== null")
    sent = [send(page, f"before the drop {n}")["id"] for n in range(3)]
    wait_for_count(page, "chat", 3)
    wait_for_count(page, "ticks", 92)
    server.reset_stats()

    dropped = server.drop_streams()
    assert dropped["subscriptions"] >= 1
    # Posted while the page is disconnected (it waits 1 s, SSECORS_RETRY, before retrying):
    # these can only reach it by replay after its Last-Event-ID.
    sent += [send(page, f"during the drop {n}")["id"] for n in range(3)]
    wait_for_count(page, "chat", 6)
    wait_for_state(page, "page", "open")
    ticks_at_reconnect = len(received(page, "ticks"))
    wait_for_count(page, "ticks", ticks_at_reconnect + 8)
    time.sleep(1.0)  # anything sent twice would have arrived by now

    assert received(page, "chat") == sent, "every message once, in order"
    assert consecutive(received(page, "ticks")), "every tick once, in order"
    seen = states(page, "page")
    assert seen[-3:] == ["open", "reconnecting", "open"], seen
    resumed = page.evaluate("demo.states.page.at(-1).detail")
    assert resumed.startswith("Resumed after Last-Event-ID "), resumed
    resumed_from = resumed.removeprefix("Resumed after Last-Event-ID ").removesuffix(".")

    stats = server.stats()
    [stream] = [r for r in stats["requests"] if r["path"] == "/page-events"]
    assert stream["last_event_id"] == resumed_from, "the browser sent the last id it had"
    assert chat_part(stream["last_event_id"]) == sent[2], "the chat's part: the last message"
    assert stream["status"] == 200
    published = [c["seq"] for c in stats["calls"] if c["view"] == "published"]
    assert len(published) == 3 and max(published) < stream["seq"], "replayed, not live"


def test_page_recovers_when_the_server_restarts(
    tmp_path_factory: pytest.TempPathFactory, new_context: t.Callable[[], BrowserContext]
) -> None:
    """What the page's footer promises: stop the server, start it again, and nothing is lost.

    The stream resumes from its Last-Event-ID; the restarted server has forgotten both channels,
    so each gets its reset event: the ticker reloads its history (ticks need no server state)
    and the chat signs in again (the session cookie died with the server's random secret) and
    reloads the room.
    """
    server = start_server(tmp_path_factory, "restart")
    try:
        page = open_page(new_context(), f"{server.page_origin}/")
        wait_for_state(page, "page", "open")
        page.wait_for_function("() => demo.me !== null")
        first_user = page.evaluate("demo.me.id")
        wait_for_count(page, "ticks", 95)
        server.stop()
        wait_for_state(page, "page", "reconnecting")
        time.sleep(1.5)  # down for a while: the browser keeps retrying
        server.start()
        ticks_before = len(received(page, "ticks"))
        wait_for_count(page, "ticks", ticks_before + 8)
        assert consecutive(received(page, "ticks")), "no tick lost or repeated"
        page.wait_for_function("id => demo.me && demo.me.id !== id", arg=first_user)
        wait_for_state(page, "page", "open")
        page.wait_for_function("() => !document.getElementById('chat-input').disabled")
        posted = send(page, "still here")
        wait_for_count(page, "chat", 1)
        assert received(page, "chat") == [posted["id"]]
        assert states(page, "page")[-2:] == ["reconnecting", "open"]
    finally:
        server.stop()
