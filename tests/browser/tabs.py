"""Servers and page helpers of the tab-sharing tests (``test_shared_*.py``).

The API (:mod:`tests.live_apps.tabs`) runs under gunicorn -k gevent on ``localhost:A``; the
page and its own copy of the helper come from ``localhost:P``, a Werkzeug server in a thread
of the test process. Same site, cross-origin, plain HTTP/1.1: Chromium allows six connections
to ``localhost:A`` for all the tabs of one browser context together.
"""

from __future__ import annotations

import json
import threading
import typing as t

from werkzeug.serving import make_server
from werkzeug.serving import WSGIRequestHandler

from flask_ssecors._assets import assets_version
from tests.live_apps.tabs_page import create_page_app
from tests.support.servers import free_port
from tests.support.servers import LiveServer
from tests.support.wire import request

if t.TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import BrowserContext
    from playwright.sync_api import Page

CONNECTING, OPEN, CLOSED = 0, 1, 2
HELPER = f"/_ssecors/{assets_version()}/ssecors-shared.js"
#: Run in a page before its scripts: what a browser without SharedWorker has.
WITHOUT_SHARED_WORKER = "delete window.SharedWorker;"


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: t.Any) -> None:
        pass


class TabsServers:
    """The API under gunicorn and the page server; both stopped by :meth:`stop`."""

    def __init__(self, tmp_path: Path) -> None:
        api_port = free_port()
        self.api = f"http://localhost:{api_port}"
        page_app = create_page_app(self.api, self.api + HELPER)
        self.page_server = make_server(
            "127.0.0.1", 0, page_app, threaded=True, request_handler=_QuietHandler
        )
        self.page = f"http://localhost:{self.page_server.server_port}"
        self.page_thread = threading.Thread(target=self.page_server.serve_forever, daemon=True)
        self.server = LiveServer(
            "tests.live_apps.tabs:api",
            port=api_port,
            env={"PAGE_ORIGINS": self.page, "HEARTBEAT": "1", "RESUME_DELAY": "0.5"},
            log_path=tmp_path / "api.log",
        )

    def start(self) -> TabsServers:
        self.page_thread.start()
        try:
            self.server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.server.stop()
        self.page_server.shutdown()
        self.page_server.server_close()
        self.page_thread.join(5)

    def publish(self, channel: str, n: int, count: int = 1, event: str = "") -> list[str]:
        """Publish events ``n`` to ``n + count - 1`` on ``channel``; their ids."""
        path = f"/publish/{channel}?n={n}&count={count}&type={event}"
        status, _, body = request(self.server.port, path, method="POST")
        assert status == 200, body
        return t.cast("list[str]", json.loads(body)["ids"])

    def drop(self, channel: str) -> int:
        """End the open streams of ``channel`` on the server; how many there were."""
        status, _, body = request(self.server.port, f"/drop/{channel}", method="POST")
        assert status == 200, body
        return t.cast("int", json.loads(body)["dropped"])

    def stats(self, channel: str) -> dict[str, t.Any]:
        """``subscribers`` of ``channel`` now, and every stream request made for it."""
        status, _, body = request(self.server.port, f"/stats/{channel}")
        assert status == 200, body
        return t.cast("dict[str, t.Any]", json.loads(body))


def open_tab(
    context: BrowserContext,
    servers: TabsServers,
    *,
    worker: bool = True,
    helper: str = "page",
    init: str = "",
    errors: list[str] | None = None,
) -> Page:
    """A new tab with the test page.

    :param worker: ``False`` takes SharedWorker away from the page (the fallback then).
    :param helper: ``"api"`` loads the helper from the API's origin instead of the page's.
    :param init: a script to run in the page before its own.
    :param errors: collects the page's uncaught exceptions and console errors.
    """
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
        page.on(
            "console",
            lambda message: (
                errors.append(f"console: {message.text}") if message.type == "error" else None
            ),
        )
    if not worker:
        page.add_init_script(WITHOUT_SHARED_WORKER)
    if init:
        page.add_init_script(init)
    page.goto(f"{servers.page}/?helper={helper}")
    page.wait_for_function("() => typeof window.track === 'function'")
    return page


def track(
    page: Page, path: str, options: dict[str, t.Any] | None = None, types: list[str] | None = None
) -> int:
    """Open a SharedEventSource on the API's ``path`` in ``page``; its index there."""
    return t.cast(
        "int",
        page.evaluate(
            "([path, options, types]) => window.track(path, options, types)",
            [path, options or {}, types or ["message"]],
        ),
    )


def view(page: Page, n: int = 0) -> dict[str, t.Any]:
    """What source ``n`` of ``page`` saw: events, states, roles, opens, errors, readyState."""
    return t.cast("dict[str, t.Any]", page.evaluate("n => window.view(n)", n))


def wait(page: Page, condition: str, n: int = 0, timeout: float = 15_000) -> dict[str, t.Any]:
    """Wait until ``condition`` (JavaScript over ``v``, the :func:`view`) holds; the view."""
    script = f"n => {{ const v = window.view(n); return {condition}; }}"
    page.wait_for_function(script, arg=n, polling=50, timeout=timeout)
    return view(page, n)


def numbers(seen: dict[str, t.Any], event: str = "message") -> list[int]:
    """The ``n`` of every event named ``event`` a source saw, in order."""
    return [e["data"]["n"] for e in seen["events"] if e["type"] == event]
