"""Who is in the room: two visitors of the demo are two members, each sees the other under "In
the room", and when one closes its tab the other sees the leave, as an event and in its list,
within a few seconds.

A member is a chat user (the session's name), not a tab: the tabs of one browser share one
stream through the tab-shared helper, and a stream declares one member. So the two members here
are two browser contexts (two cookie jars, two people), and a second tab of one of them is one
more tab of the same member: closing it changes nothing.

The demo as ``make demo`` runs it (one tick a second, the in-memory broker), and with
``SSECORS_BROKER_URL=redis://...`` and two workers, where the two visitors' streams may be
served by different workers.
"""

from __future__ import annotations

import collections.abc as cabc
import time
import typing as t

import pytest

from tests.support.servers import RedisServer

from .conftest import start_server
from .demo import open_page
from .demo import wait_for_chat

if t.TYPE_CHECKING:
    from playwright.sync_api import BrowserContext
    from playwright.sync_api import Page

    from tests.support.example_server import ExampleServer

pytestmark = pytest.mark.browser

#: The bar: the other tab shows the leave within this long after a tab closed.
LEAVE_SECONDS = 5.0
#: How long a tab that closes while its browser keeps another open is watched for a leave.
NO_LEAVE_SECONDS = 2.0


@pytest.fixture(scope="module")
def server(demo_server: ExampleServer) -> ExampleServer:
    return demo_server


@pytest.fixture(scope="module")
def redis_demo(tmp_path_factory: pytest.TempPathFactory) -> cabc.Iterator[ExampleServer]:
    """The demo with two gevent workers sharing a Redis broker, one tick a second."""
    with RedisServer() as redis:
        env = {"SSECORS_BROKER_URL": redis.url, "WORKERS": "2", "EXAMPLE_TICK_SECONDS": "1"}
        running = start_server(tmp_path_factory, "members-redis", env=env)
        try:
            yield running
        finally:
            running.stop()


def shown_members(page: Page) -> list[str]:
    """The names listed under "In the room", in the order shown."""
    return t.cast(
        "list[str]",
        page.evaluate(
            "() => [...document.querySelectorAll('#members .member')].map(m => m.dataset.member)"
        ),
    )


def wait_for_members(page: Page, names: list[str], seconds: float = 15.0) -> None:
    """Wait until the list shows exactly ``names`` (sorted)."""
    try:
        page.wait_for_function(
            """names => JSON.stringify([...document.querySelectorAll('#members .member')]
                .map(m => m.dataset.member)) === JSON.stringify(names)""",
            arg=names,
            timeout=seconds * 1000,
            polling=50,
        )
    except Exception as exc:  # Playwright's TimeoutError, said plainly
        shown = shown_members(page)
        raise AssertionError(f"the list shows {shown}, not {names}, after {seconds} s") from exc


def presence_events(page: Page) -> list[dict[str, str]]:
    """The join and leave events the page received: ``{"type", "member", "id"}``."""
    return t.cast("list[dict[str, str]]", page.evaluate("demo.received.presence"))


def test_two_visitors_see_each_other_and_one_leaving(
    server: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    two_visitors_see_each_other_and_one_leaving(server, new_context)


@pytest.mark.redis
def test_two_visitors_on_redis_see_each_other_and_one_leaving(
    redis_demo: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    assert redis_demo.log_text().count("Booting worker") == 2
    two_visitors_see_each_other_and_one_leaving(redis_demo, new_context)


def two_visitors_see_each_other_and_one_leaving(
    server: ExampleServer, new_context: t.Callable[[], BrowserContext]
) -> None:
    """Alice, then Bob: each lists both; a second tab of Bob's changes nothing; Bob closes
    his tab, and Alice sees him leave within :data:`LEAVE_SECONDS`."""
    url = f"{server.page_origin}/"
    errors: list[str] = []
    alice = open_page(new_context(), url, errors)
    wait_for_chat(alice)
    alice_name = alice.evaluate("demo.me.name")
    wait_for_members(alice, [alice_name])

    bobs = new_context()
    bob = open_page(bobs, url, errors)
    wait_for_chat(bob)
    bob_name = bob.evaluate("demo.me.name")
    assert bob_name != alice_name
    both = sorted([alice_name, bob_name])
    wait_for_members(alice, both)  # from bob's join event: alice was there first
    wait_for_members(bob, both)  # from the room's snapshot
    joined = [e for e in presence_events(alice) if e["member"] == bob_name]
    assert [e["type"] for e in joined] == ["ssecors-join"]
    assert joined[0]["id"], "an event of the room, with its id"

    # What a person (and a screen reader) finds: a heading, and a list with one item each.
    heading = alice.get_by_role("heading", name="In the room")
    assert heading.text_content() == "In the room (2)"
    items = alice.get_by_role("list").filter(has=alice.locator(".member")).get_by_role("listitem")
    assert items.all_inner_texts() == [
        f"{name} (you)" if name == alice_name else name for name in both
    ]

    # A second tab of bob's browser shares his stream: the same member, no join, no leave.
    second = open_page(bobs, url, errors)
    wait_for_chat(second)
    wait_for_members(second, both)
    second.close()
    time.sleep(NO_LEAVE_SECONDS)
    assert shown_members(alice) == both
    assert [e["type"] for e in presence_events(alice) if e["member"] == bob_name] == [
        "ssecors-join"
    ]

    # Bob closes his last tab: his browser's stream ends, and alice sees him leave.
    closed = time.monotonic()
    bob.close()
    wait_for_members(alice, [alice_name], LEAVE_SECONDS)
    took = time.monotonic() - closed
    left = [e for e in presence_events(alice) if e["member"] == bob_name]
    assert [e["type"] for e in left] == ["ssecors-join", "ssecors-leave"]
    assert left[1]["id"] != left[0]["id"]
    assert heading.text_content() == "In the room (1)"
    print(f"the leave was shown {took:.2f} s after the tab closed")
    assert errors == [], "no script errors, no failed requests"
