"""The server drops every stream; the page reconnects with Last-Event-ID and misses nothing."""

from __future__ import annotations

import time
import typing as t

import pytest

from .conftest import start_server
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
    wait_for_state(page, "chat", "open")
    wait_for_state(page, "ticker", "open")
    sent = [send(page, f"before the drop {n}")["id"] for n in range(3)]
    wait_for_count(page, "chat", 3)
    server.reset_stats()

    dropped = server.drop_streams()
    assert dropped["subscriptions"] >= 1 and dropped["generators"] >= 1
    # Posted while the page is disconnected (it waits 1 s, SSECORS_RETRY, before retrying):
    # these can only reach it by replay after its Last-Event-ID.
    sent += [send(page, f"during the drop {n}")["id"] for n in range(3)]
    wait_for_count(page, "chat", 6)
    wait_for_state(page, "chat", "open")
    wait_for_state(page, "ticker", "open")
    ticks_at_reconnect = len(received(page, "ticks"))
    wait_for_count(page, "ticks", ticks_at_reconnect + 8)
    time.sleep(1.0)  # anything sent twice would have arrived by now

    assert received(page, "chat") == sent, "every message once, in order"
    assert consecutive(received(page, "ticks")), "every tick once, in order"
    for connection in ("chat", "ticker"):
        seen = states(page, connection)
        assert seen[-3:] == ["open", "reconnecting", "open"], seen
    resumed = page.evaluate("demo.states.chat.at(-1).detail")
    assert resumed == f"Resumed after Last-Event-ID {sent[2]}."

    stats = server.stats()
    [chat] = [r for r in stats["requests"] if r["path"] == "/rooms/lobby/events"]
    assert chat["last_event_id"] == sent[2], "the browser sent the last id it had"
    assert chat["cookie"] and chat["status"] == 200
    published = [c["seq"] for c in stats["calls"] if c["view"] == "published"]
    assert len(published) == 3 and max(published) < chat["seq"], "replayed, not live"
    [ticks] = [r for r in stats["requests"] if r["path"] == "/ticks"]
    assert ticks["status"] == 200
    assert ticks["last_event_id"] in received(page, "ticks")


def test_page_recovers_when_the_server_restarts(
    tmp_path_factory: pytest.TempPathFactory, new_context: t.Callable[[], BrowserContext]
) -> None:
    """What the page's footer promises: stop the server, start it again, and nothing is lost.

    The ticker resumes from its Last-Event-ID (its ticks need no server state). The chat's
    session cookie dies with the server's random secret: the stream answers 401, for good, so
    the page signs in again and reloads the room.
    """
    server = start_server(tmp_path_factory, "restart")
    try:
        page = open_page(new_context(), f"{server.page_origin}/")
        wait_for_state(page, "chat", "open")
        first_user = page.evaluate("demo.me.id")
        wait_for_count(page, "ticks", 95)
        server.stop()
        wait_for_state(page, "ticker", "reconnecting")
        time.sleep(1.5)  # down for a while: the browser keeps retrying
        server.start()
        ticks_before = len(received(page, "ticks"))
        wait_for_count(page, "ticks", ticks_before + 8)
        assert consecutive(received(page, "ticks")), "no tick lost or repeated"
        page.wait_for_function("id => demo.me && demo.me.id !== id", arg=first_user)
        wait_for_state(page, "chat", "open")
        posted = send(page, "still here")
        wait_for_count(page, "chat", 1)
        assert received(page, "chat") == [posted["id"]]
        assert states(page, "ticker")[-2:] == ["reconnecting", "open"]
    finally:
        server.stop()
