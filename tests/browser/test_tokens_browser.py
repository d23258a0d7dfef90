"""Stream tokens and capacity in Chromium: a page on an allowed origin gets a token and
streams; the same token replayed from another origin is refused for good; over capacity,
EventSource keeps reconnecting instead of giving up.

The API is :mod:`tests.live_apps.hardening` under gunicorn. The pages come from tiny static
servers (threads of the test process, on loopback ports of their own), so each test picks
exactly the origins it needs: ``localhost`` ports are same-site with the API (cookies flow),
``127.0.0.1`` is cross-site. (Pages fulfilled by Playwright's ``route`` would not do: Chromium
counts them as public, and their requests to loopback as Private Network Access.)
"""

from __future__ import annotations

import collections.abc as cabc
import http.server
import json
import threading
import time
import typing as t

import pytest

from flask_ssecors.tokens import TOKEN_EXPIRED_EVENT
from tests.support.servers import LiveServer
from tests.support.wire import request

if t.TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import BrowserContext
    from playwright.sync_api import Page

pytestmark = pytest.mark.browser

PAGE = f"""<!doctype html>
<meta charset="utf-8"><title>tokens</title>
<script>
window.streams = [];
window.getToken = async (api, query) => {{
  const options = {{method: "POST", credentials: "include"}};
  const response = await fetch(`${{api}}/token?${{query}}`, options);
  return {{
    status: response.status,
    token: response.ok ? (await response.json()).token : null,
    requestId: response.headers.get("X-Request-ID"),
  }};
}};
window.openStream = (url, withCredentials) => {{
  const source = new EventSource(url, {{withCredentials}});
  const record = {{opened: 0, events: [], errors: [], expired: 0}};
  source.onopen = () => {{ record.opened += 1; }};
  source.onmessage = (event) => record.events.push(event.data);
  source.addEventListener("{TOKEN_EXPIRED_EVENT}", () => {{ record.expired += 1; }});
  source.onerror = () => record.errors.push(source.readyState);
  window.streams.push({{source, record}});
  return window.streams.length - 1;
}};
window.record = (n) => {{
  const stream = window.streams[n];
  return {{...stream.record, state: stream.source.readyState}};
}};
window.closeStream = (n) => window.streams[n].source.close();
</script>
<body>tokens</body>
"""

CLOSED = 2
CONNECTING = 0


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: t.Any) -> None:
        pass


class PageServer:
    """Serves the test page on a loopback port, in a thread of the test process."""

    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Api:
    """The API server and the page origins it allows."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.pages = [PageServer(), PageServer()]
        self.page_a = f"http://localhost:{self.pages[0].port}"
        self.page_b = f"http://localhost:{self.pages[1].port}"
        self.cross_site = f"http://127.0.0.1:{self.pages[0].port}"
        settings = {
            "ORIGINS": f"{self.page_a},{self.page_b}",
            "REQUEST_ID_HEADER": "X-Request-ID",
            "HEARTBEAT": "1",
            **env,
        }
        self.server = LiveServer(
            "tests.live_apps.hardening:app", env=settings, log_path=tmp_path / "api.log"
        )
        self.url = f"http://localhost:{self.server.port}"

    def stop(self) -> None:
        self.server.stop()
        for page in self.pages:
            page.stop()

    def publish(self, channel: str) -> None:
        status, _, _ = request(self.server.port, f"/publish/{channel}", method="POST")
        assert status == 200

    def stats(self) -> dict[str, t.Any]:
        _, _, body = request(self.server.port, "/stats")
        return t.cast("dict[str, t.Any]", json.loads(body)["stats"])


@pytest.fixture
def api(tmp_path: Path) -> cabc.Iterator[Api]:
    running = Api(tmp_path)
    try:
        running.server.start()
        yield running
    finally:
        running.stop()


def page_on(context: BrowserContext, origin: str) -> Page:
    """A page whose origin is ``origin``."""
    page = context.new_page()
    page.goto(f"{origin}/page.html")
    return page


def record(page: Page, n: int) -> dict[str, t.Any]:
    return t.cast("dict[str, t.Any]", page.evaluate("n => window.record(n)", n))


def wait(page: Page, n: int, condition: str) -> dict[str, t.Any]:
    # Poll on a timer: the conditions change on network events, not on animation frames.
    script = f"n => {{ const r = window.record(n); return {condition}; }}"
    page.wait_for_function(script, arg=n, polling=50)
    return record(page, n)


def test_a_page_on_an_allowed_origin_gets_a_token_and_streams(
    api: Api, new_context: t.Callable[[], BrowserContext]
) -> None:
    page = page_on(new_context(), api.page_a)
    issued = page.evaluate(
        "api => window.getToken(api, 'channels=room:1&cookie=1&max_age=60')", api.url
    )
    assert issued["status"] == 200
    assert len(issued["requestId"]) == 32, "the request id is exposed to page script"
    # The cookie carries the token: the stream URL holds no secret.
    n = page.evaluate("url => window.openStream(url, true)", f"{api.url}/secure/1")
    wait(page, n, "r.opened >= 1")
    api.publish("room:1")
    got = wait(page, n, "r.events.length >= 1")
    assert got["events"] == ['{"n":0}']
    # The same page with the token in the query string works too.
    m = page.evaluate(
        "([url, token]) => window.openStream(`${url}?token=${token}`, false)",
        [f"{api.url}/secure/1", issued["token"]],
    )
    wait(page, m, "r.opened >= 1")
    assert api.stats()["token_refusals"] == {}


def test_a_replayed_token_is_refused_from_another_origin(
    api: Api, new_context: t.Callable[[], BrowserContext]
) -> None:
    """Page B is allowed by the CORS policy, but the token was issued to page A: EventSource
    gets a 403 and stops for good (readyState CLOSED), without a single event."""
    owner = page_on(new_context(), api.page_a)
    token = owner.evaluate("api => window.getToken(api, 'channels=room:1')", api.url)["token"]
    thief = page_on(new_context(), api.page_b)
    stolen = f"{api.url}/secure/1?token={token}"
    n = thief.evaluate("url => window.openStream(url, false)", stolen)
    refused = wait(thief, n, "r.state === 2")
    assert refused["opened"] == 0 and refused["events"] == []
    assert refused["errors"] == [CLOSED]
    # A cross-site page is refused before the token is even looked at.
    outsider = page_on(new_context(), api.cross_site)
    m = outsider.evaluate("url => window.openStream(url, false)", stolen)
    assert wait(outsider, m, "r.state === 2")["opened"] == 0
    api.publish("room:1")
    thief.wait_for_timeout(300)
    assert record(thief, n)["events"] == []
    counted = api.stats()
    assert counted["token_refusals"] == {"token-other-origin": 1}
    assert counted["refused_origins"] == {"origin-not-allowed": 1}
    assert counted["streams_opened"] == 0
    assert token not in (api.server.log_text() or "")


def test_an_expired_token_ends_the_stream_and_the_page_is_told(
    api: Api, new_context: t.Callable[[], BrowserContext]
) -> None:
    page = page_on(new_context(), api.page_a)
    token = page.evaluate("api => window.getToken(api, 'max_age=1.5')", api.url)["token"]
    n = page.evaluate("url => window.openStream(url, false)", f"{api.url}/secure/1?token={token}")
    wait(page, n, "r.opened >= 1")
    ended = wait(page, n, "r.state === 2")
    assert ended["expired"] == 1, "the final event arrived before the stream closed"
    assert ended["errors"][-1] == CLOSED, "the reconnect with the old token got a 401"


def test_over_capacity_eventsource_keeps_trying(
    tmp_path: Path, new_context: t.Callable[[], BrowserContext]
) -> None:
    """At SSECORS_MAX_STREAMS, EventSource gets a retry hint (readyState CONNECTING after the
    error, never CLOSED) and connects once a place is free."""
    api = Api(tmp_path, MAX_STREAMS="1", BUSY_RETRY="500")
    try:
        api.server.start()
        page = page_on(new_context(), api.page_a)
        first = page.evaluate("url => window.openStream(url, true)", f"{api.url}/events/c")
        wait(page, first, "r.opened >= 1")
        second = page.evaluate("url => window.openStream(url, true)", f"{api.url}/events/c")
        busy = wait(page, second, "r.errors.length >= 2")
        assert set(busy["errors"]) == {CONNECTING}
        assert busy["state"] == CONNECTING
        # (each turned-away attempt fires "open" too: it is a 200 stream, with a retry hint)
        page.evaluate("n => window.closeStream(n)", first)
        deadline = time.monotonic() + 15
        while api.stats()["streams_opened"] < 2:  # the next attempt takes the freed place
            assert time.monotonic() < deadline, "the waiting EventSource never got in"
            time.sleep(0.1)
        api.publish("c")
        assert wait(page, second, "r.events.length >= 1")["events"] == ['{"n":0}']
        assert api.stats()["streams_refused_busy"] >= 2
    finally:
        api.stop()
