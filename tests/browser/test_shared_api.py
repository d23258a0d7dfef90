"""SharedEventSource's API in Chromium: what a page sees is what EventSource would show it.

Each test runs twice: through the SharedWorker (the helper loaded from the page's own origin),
and through the leader election (SharedWorker taken away from the page, as in browsers that
lack it). The API is cross-origin to the page, and every stream is credentialed or not as asked.
"""

from __future__ import annotations

import collections.abc as cabc
import time
import typing as t

import pytest

from .tabs import CLOSED
from .tabs import CONNECTING
from .tabs import HELPER
from .tabs import numbers
from .tabs import OPEN
from .tabs import open_tab
from .tabs import TabsServers
from .tabs import track
from .tabs import view
from .tabs import wait

if t.TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import BrowserContext
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> cabc.Iterator[TabsServers]:
    tmp_path: Path = tmp_path_factory.mktemp("tabs-api")
    running = TabsServers(tmp_path).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(params=["worker", "leader"])
def mode(request: pytest.FixtureRequest) -> str:
    return t.cast("str", request.param)


@pytest.fixture
def tab(
    servers: TabsServers, new_context: t.Callable[[], BrowserContext], mode: str
) -> cabc.Iterator[Page]:
    """One tab of a fresh browser context; it must see no script error."""
    errors: list[str] = []
    yield open_tab(new_context(), servers, worker=mode == "worker", errors=errors)
    assert errors == []


def channel(request: pytest.FixtureRequest) -> str:
    """A channel of this test alone."""
    return "".join(c if c.isalnum() else "-" for c in request.node.name)


def test_events_reach_the_listeners_of_their_name(
    tab: Page, servers: TabsServers, mode: str, request: pytest.FixtureRequest
) -> None:
    """Any event name is forwarded as sent: separators in it, the reset event's, or none."""
    name = channel(request)
    n = track(tab, f"/events/{name}", types=["message", "alpha", "room:7.message"])
    seen = wait(tab, "v.readyState === 1", n)
    assert seen["role"] == mode
    servers.publish(name, 0, event="alpha")
    servers.publish(name, 1)
    servers.publish(name, 2, event="beta")  # nobody listens for it
    servers.publish(name, 3, event="room:7.message")
    seen = wait(tab, "v.events.length >= 3", n)
    got = [(e["type"], e["data"]["n"]) for e in seen["events"]]
    assert got == [("alpha", 0), ("message", 1), ("room:7.message", 3)]
    assert {e["origin"] for e in seen["events"]} == {servers.api}
    assert seen["lastEventId"] == seen["events"][-1]["id"] != ""


def test_the_reset_event_is_forwarded(
    tab: Page, servers: TabsServers, request: pytest.FixtureRequest
) -> None:
    """A stream that cannot resume from its id starts with ``ssecors-reset``; pages get it."""
    name = channel(request)
    servers.publish(name, 0)
    n = track(tab, f"/events/{name}?last_event_id=unknown-7", types=["ssecors-reset", "message"])
    seen = wait(tab, "v.events.length >= 1", n)
    servers.publish(name, 1)
    seen = wait(tab, "v.events.length >= 2", n)
    assert [e["type"] for e in seen["events"]] == ["ssecors-reset", "message"]
    assert seen["events"][1]["data"]["n"] == 1


def test_listeners_added_later_and_removed(
    tab: Page, servers: TabsServers, request: pytest.FixtureRequest
) -> None:
    """A listener added after the stream opened gets the events of its name from then on; a
    removed listener and a cleared ``onmessage`` get nothing."""
    name = channel(request)
    n = track(tab, f"/events/{name}", types=["message"])
    wait(tab, "v.readyState === 1", n)
    tab.evaluate(
        """n => {
            const {source, keep} = window.sources[n];
            window.later = [];
            window.handled = [];
            source.addEventListener("later", (event) => window.later.push(event.data));
            source.onmessage = (event) => window.handled.push(event.data);
        }""",
        n,
    )
    servers.publish(name, 0, event="later")
    servers.publish(name, 1)
    tab.wait_for_function("() => window.later.length === 1 && window.handled.length === 1")
    tab.evaluate(
        """n => {
            const {source, keep} = window.sources[n];
            source.removeEventListener("message", keep);
            source.onmessage = null;
            window.sentinel = 0;
            source.addEventListener("sentinel", () => { window.sentinel += 1; });
        }""",
        n,
    )
    servers.publish(name, 2)
    servers.publish(name, 3, event="sentinel")
    tab.wait_for_function("() => window.sentinel === 1")
    assert numbers(view(tab, n)) == [1], "the removed listener got only what came before"
    assert tab.evaluate("() => window.handled.length") == 1
    assert tab.evaluate("() => window.later.map(JSON.parse).map(d => d.n)") == [0]


def test_ready_state_goes_connecting_open_closed_and_close_stops_the_stream(
    tab: Page, servers: TabsServers, request: pytest.FixtureRequest
) -> None:
    name = channel(request)
    n = track(tab, f"/events/{name}")
    # states[0] is the readyState read in the constructor's own task (tabs_harness.js): the
    # stream may well be open by the time a second evaluate() could look.
    seen = wait(tab, "v.readyState === 1", n)
    assert (seen["states"], seen["opens"], seen["errors"]) == ([CONNECTING, OPEN], 1, [])
    servers.publish(name, 0)
    wait(tab, "v.events.length === 1", n)

    tab.evaluate("n => window.sources[n].source.close()", n)
    seen = view(tab, n)
    assert seen["readyState"] == CLOSED and seen["states"][-1] == CLOSED
    assert seen["role"] is None
    # The last tab left: the shared connection closes (the server notices by its heartbeat).
    deadline = time.monotonic() + 10
    while servers.stats(name)["subscribers"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert servers.stats(name)["subscribers"] == 0
    # A new source on the same stream opens a new connection; the closed one stays silent.
    m = track(tab, f"/events/{name}")
    wait(tab, "v.readyState === 1", m)
    servers.publish(name, 1)
    assert numbers(wait(tab, "v.events.length === 1", m)) == [1]
    assert numbers(view(tab, n)) == [0]
    assert view(tab, n)["opens"] == 1
    assert len(servers.stats(name)["streams"]) == 2


def test_a_refused_stream_fires_error_and_closes_for_good(
    servers: TabsServers, new_context: t.Callable[[], BrowserContext], mode: str
) -> None:
    """The API answers ``403`` (the page's origin is not allowed on ``/refused``):
    ``onerror`` with readyState CLOSED, as EventSource does, and no reconnection."""
    page = open_tab(new_context(), servers, worker=mode == "worker")
    n = track(page, "/refused")
    seen = wait(page, "v.readyState === 2", n)
    assert (seen["opens"], seen["errors"], seen["events"]) == (0, [CLOSED], [])
    assert seen["states"] == [CONNECTING, CLOSED]
    assert seen["role"] is None


def test_with_credentials_sends_the_cookie_and_the_origin_is_the_page(
    tab: Page, servers: TabsServers, request: pytest.FixtureRequest
) -> None:
    """The stream request comes from the page's origin (a SharedWorker's is the page's), with
    the cookie only when ``withCredentials`` asks for it, as for EventSource."""
    name = channel(request)
    assert tab.evaluate("() => window.post('/login')")["status"] == 200
    with_cookie = track(tab, f"/events/{name}-cred", {"withCredentials": True})
    without = track(tab, f"/events/{name}-anon", {"withCredentials": False})
    wait(tab, "v.readyState === 1", with_cookie)
    wait(tab, "v.readyState === 1", without)
    assert tab.evaluate("n => window.sources[n].source.withCredentials", with_cookie) is True
    [credentialed] = servers.stats(f"{name}-cred")["streams"]
    [anonymous] = servers.stats(f"{name}-anon")["streams"]
    assert credentialed["cookie"] and not anonymous["cookie"]
    assert credentialed["origin"] == anonymous["origin"] == servers.page


def test_a_missing_worker_script_falls_back_to_a_leader(
    servers: TabsServers,
    new_context: t.Callable[[], BrowserContext],
    request: pytest.FixtureRequest,
) -> None:
    page = open_tab(new_context(), servers)
    name = channel(request)
    n = track(page, f"/events/{name}", {"worker": "/no-such-worker.js"})
    seen = wait(page, "v.readyState === 1", n)
    assert seen["role"] == "leader"
    assert seen["roles"][:2] == ["worker", "follower"]
    servers.publish(name, 0)
    assert numbers(wait(page, "v.events.length === 1", n)) == [0]


def test_the_helper_loaded_from_the_api_shares_through_a_leader_or_a_named_worker(
    servers: TabsServers,
    new_context: t.Callable[[], BrowserContext],
    request: pytest.FixtureRequest,
) -> None:
    """Loaded from the API's origin, the helper cannot start a SharedWorker from its own URL:
    it elects a leader, unless the page names a worker script on its own origin."""
    page = open_tab(new_context(), servers, helper="api")
    name = channel(request)
    leader = track(page, f"/events/{name}")
    named = track(page, f"/events/{name}", {"worker": HELPER})
    assert wait(page, "v.readyState === 1", leader)["role"] == "leader"
    assert wait(page, "v.readyState === 1", named)["role"] == "worker"


def test_a_dropped_stream_reconnects_once_for_all_tabs_and_resumes(
    servers: TabsServers,
    new_context: t.Callable[[], BrowserContext],
    mode: str,
    request: pytest.FixtureRequest,
) -> None:
    """The server ends the stream (a deploy): the shared EventSource reconnects by itself with
    ``Last-Event-ID``, once for both tabs, and both see the drop as EventSource shows it."""
    name = channel(request)
    context = new_context()
    tabs = [open_tab(context, servers, worker=mode == "worker") for _ in range(2)]
    for page in tabs:
        track(page, f"/events/{name}")
        wait(page, "v.readyState === 1")
    [first_id] = servers.publish(name, 0)
    for page in tabs:
        wait(page, "v.events.length === 1")
    assert servers.drop(name) == 1, "one stream for the two tabs"
    servers.publish(name, 1, count=2)  # while the stream is down (it retries after 300 ms)
    for page in tabs:
        seen = wait(page, "v.events.length >= 3 && v.readyState === 1")
        assert numbers(seen) == [0, 1, 2]
        assert (seen["states"], seen["errors"], seen["opens"]) == ([0, 1, 0, 1], [0], 2)
    streams = servers.stats(name)["streams"]
    assert len(streams) == 2
    assert streams[1]["header"] == first_id, "resumed by EventSource's own Last-Event-ID"


def test_a_leader_that_closes_its_source_hands_over(
    servers: TabsServers,
    new_context: t.Callable[[], BrowserContext],
    request: pytest.FixtureRequest,
) -> None:
    """``close()`` in the leader tab (the tab stays open): the next tab leads and resumes."""
    name = channel(request)
    context = new_context()
    tabs = [open_tab(context, servers, worker=False) for _ in range(2)]
    for page in tabs:
        track(page, f"/events/{name}")
        wait(page, "v.readyState === 1")
    assert [view(page)["role"] for page in tabs] == ["leader", "follower"]
    [first_id] = servers.publish(name, 0)
    wait(tabs[1], "v.events.length === 1")
    tabs[0].evaluate("() => window.sources[0].source.close()")
    servers.publish(name, 1)
    seen = wait(tabs[1], "v.events.length === 2 && v.readyState === 1")
    assert numbers(seen) == [0, 1] and seen["role"] == "leader"
    assert numbers(view(tabs[0])) == [0], "the closed source stays closed"
    streams = servers.stats(name)["streams"]
    assert [s["query"] for s in streams] == [None, first_id]


def test_without_web_locks_each_tab_connects_alone(
    servers: TabsServers,
    new_context: t.Callable[[], BrowserContext],
    request: pytest.FixtureRequest,
) -> None:
    """No Web Locks (an insecure context) and a SharedWorker that cannot start (a CSP without
    it): each tab opens its own EventSource, and still works."""
    init = """
        Object.defineProperty(Navigator.prototype, "locks", {get: () => undefined});
        window.SharedWorker = function () { throw new DOMException("refused", "SecurityError"); };
    """
    name = channel(request)
    context = new_context()
    tabs = [open_tab(context, servers, init=init) for _ in range(2)]
    for page in tabs:
        track(page, f"/events/{name}")
        assert wait(page, "v.readyState === 1")["roles"] == ["worker", "direct"]
    for page in tabs:  # a listener added once the stream is open
        page.evaluate(
            "() => window.sources[0].source.addEventListener('late', window.sources[0].keep)"
        )
    servers.publish(name, 0)
    servers.publish(name, 1, event="late")
    for page in tabs:
        seen = wait(page, "v.events.length === 2")
        assert [(e["type"], e["data"]["n"]) for e in seen["events"]] == [
            ("message", 0),
            ("late", 1),
        ]
    assert len(servers.stats(name)["streams"]) == 2
    for page in tabs:
        page.evaluate("() => window.sources[0].source.close()")
    deadline = time.monotonic() + 10
    while servers.stats(name)["subscribers"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert servers.stats(name)["subscribers"] == 0, "close() closed each tab's EventSource"
