"""``ssecors-check --browser``: a real headless Chromium says what it does with the stream.

The example app (under gunicorn, as ``make demo`` serves it) passes every ``browser-`` item;
raw-socket servers that get one thing wrong (``tests/live_apps/broken_servers.py``) each fail
the item that names it, quoting Chromium's own console message and the header line the wire
audit saw. Every check here launches its own Chromium (``/usr/bin/chromium``), as the command
does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner

from flask_ssecors.checker._browser_options import BrowserOptions
from flask_ssecors.checker._check import check_stream
from flask_ssecors.checker._cli import check_command
from tests.support.servers import LiveServer
from tests.support.servers import require_binary
from tests.support.servers import ROOT

from .conftest import CHROMIUM
from .conftest import start_server

if t.TYPE_CHECKING:
    from flask_ssecors.checker._check import Report
    from tests.support.example_server import ExampleServer

pytestmark = pytest.mark.browser

PAGE = "http://localhost:5001"
BROWSER_ITEMS = [
    "browser-open",
    "browser-events",
    "browser-error",
    "browser-reconnect",
    "browser-retry",
    "browser-cookie",
    "browser-preflight",
]


@pytest.fixture(scope="module")
def chromium() -> BrowserOptions:
    return BrowserOptions(chromium=require_binary("chromium", CHROMIUM))


@pytest.fixture
def broken(broken_server: LiveServer) -> LiveServer:
    return broken_server


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[ExampleServer]:
    server = start_server(tmp_path_factory, "check-browser")
    try:
        yield server
    finally:
        server.stop()


def items(report: Report) -> dict[str, t.Any]:
    return {item.id: item for item in report.items}


def test_example_app_passes_every_browser_item(example: ExampleServer) -> None:
    """Through the console script, as a user runs it: the wire items and the browser's."""
    require_binary("chromium", CHROMIUM)
    url = f"http://localhost:{example.api_port}/ticks"
    command = [str(Path(sys.executable).parent / "ssecors-check")]
    result = subprocess.run(
        [
            *command,
            *(url, "--origin", example.page_origin, "--credentials", "--browser"),
            *("--timeout", "5", "--json", "-q"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    flagged = [
        (i["id"], i["status"], i["detail"]) for i in report["items"] if i["status"] != "pass"
    ]
    assert flagged == []
    found = {i["id"]: i["detail"] for i in report["items"] if i["id"].startswith("browser-")}
    assert list(found) == BROWSER_ITEMS
    assert "the browser reconnected" in found["browser-reconnect"]
    assert "with Last-Event-ID: " in found["browser-reconnect"]
    assert found["browser-retry"].startswith("retry: 1000 ms announced")
    assert "carried the cookie (ssecors_check)" in found["browser-cookie"]


#: mode, the failed browser- items, and text in the first one's detail: Chromium's own words
#: and the wire's evidence.
BROKEN = [
    (
        "star-credentials",
        {"browser-open", "browser-error"},
        [
            "must not be the wildcard '*' when the request's credentials mode is 'include'",
            '"Access-Control-Allow-Origin: *" with credentials',
        ],
    ),
    (
        "no-acac",
        {"browser-open", "browser-error"},
        [
            "The value of the 'Access-Control-Allow-Credentials' header in the response is ''",
            "no Access-Control-Allow-Credentials header",
        ],
    ),
    (
        "refuse-all",
        {"browser-open", "browser-error", "browser-preflight"},
        [
            "No 'Access-Control-Allow-Origin' header is present on the requested resource",
            'status: "HTTP/1.1 403 Forbidden"',
        ],
    ),
    (
        "ends",
        {"browser-retry"},
        ["the server ended the stream without ever sending retry:"],
    ),
]


@pytest.mark.parametrize(("mode", "failed", "evidence"), BROKEN)
def test_broken_server_fails_the_browser_item_naming_it(
    broken: LiveServer,
    chromium: BrowserOptions,
    mode: str,
    failed: set[str],
    evidence: list[str],
) -> None:
    url = f"http://localhost:{broken.port}/{mode}/events?allow={PAGE}"
    report = check_stream(url, PAGE, credentials=True, timeout=2.0, browser=chromium)
    flagged = [i for i in report.items if i.id.startswith("browser-") and i.status == "fail"]
    assert {i.id for i in flagged} == failed, [(i.id, i.detail) for i in flagged]
    for text in evidence:
        assert text in flagged[0].detail
    assert all(i.fix for i in flagged)


def test_a_server_side_close_is_followed_by_a_reconnect_with_last_event_id(
    broken: LiveServer, chromium: BrowserOptions
) -> None:
    """``ends`` closes after each event: Chromium comes back after its default 3 s with the id
    it last received, and the server resumes after it."""
    url = f"http://localhost:{broken.port}/ends/events?allow={PAGE}"
    report = check_stream(url, PAGE, credentials=True, timeout=2.0, browser=chromium)
    found = items(report)
    assert found["browser-error"].status == "pass"
    assert "the server ended the stream" in found["browser-error"].detail
    reconnect = found["browser-reconnect"]
    assert reconnect.status == "pass", reconnect.detail
    assert "after the server ended the stream, the browser reconnected" in reconnect.detail
    assert "with Last-Event-ID: 1 and the stream opened again" in reconnect.detail


def test_a_cut_connection_is_resumed_and_a_missing_retry_is_a_warning(
    broken: LiveServer, chromium: BrowserOptions
) -> None:
    """A stream that never ends is cut by the check's relay, as a proxy restart would."""
    url = f"http://localhost:{broken.port}/good/events?allow={PAGE}"
    report = check_stream(url, PAGE, credentials=True, timeout=2.0, browser=chromium)
    found = items(report)
    assert report.ok
    assert "after the check cut the connection" in found["browser-reconnect"].detail
    assert found["browser-reconnect"].status == "pass"
    assert found["browser-retry"].status == "warn"


def test_a_cross_site_stream_gets_no_cookie(broken: LiveServer, chromium: BrowserOptions) -> None:
    """The page on localhost, the stream on 127.0.0.1: two sites, so the cookie is a third-party
    cookie, and Chromium's own reasons for holding it back are quoted."""
    url = f"http://127.0.0.1:{broken.port}/good/events?allow={PAGE}"
    report = check_stream(url, PAGE, credentials=True, timeout=2.0, browser=chromium)
    cookie = items(report)["browser-cookie"]
    assert cookie.status == "fail", cookie.detail
    assert "third-party cookie" in cookie.detail
    assert "Chromium's reasons: ssecors_check (" in cookie.detail


def test_a_public_page_for_a_local_stream_is_a_warning_that_quotes_chromium(
    broken: LiveServer, chromium: BrowserOptions
) -> None:
    """The page on example.com, the stream on 127.0.0.1 (the quickstart's local audit): Chromium
    still holds the cookie back, and the item says that only the local run makes the pair
    cross-site, with Chromium's reasons quoted."""
    url = f"http://127.0.0.1:{broken.port}/good/events"
    report = check_stream(
        url, "https://app.example.com", credentials=True, timeout=2.0, browser=chromium
    )
    cookie = items(report)["browser-cookie"]
    assert cookie.status == "warn", cookie.detail
    assert "cross-site only in this local run" in cookie.detail
    assert "Chromium's reasons: ssecors_check (" in cookie.detail


def test_the_audit_runs_beside_a_running_playwright_and_inside_an_event_loop(
    broken: LiveServer, chromium: BrowserOptions, browser: t.Any
) -> None:
    """Playwright's synchronous API refuses a thread whose asyncio loop runs: the suite's own
    session browser (``browser``) holds one in this thread, and so does any caller inside an
    event loop. The audit still runs and reports."""
    import asyncio

    assert browser.is_connected()
    url = f"http://localhost:{broken.port}/good/events?allow={PAGE}"
    report = check_stream(url, PAGE, credentials=True, timeout=2.0, browser=chromium)
    assert items(report)["browser-open"].status == "pass", items(report)["browser-open"].detail

    async def inside_a_loop() -> Report:
        return check_stream(url, PAGE, credentials=True, timeout=2.0, browser=chromium)

    # the suite's Playwright already runs a loop in this thread; asyncio.run needs a fresh one
    import threading

    found: list[Report] = []
    worker = threading.Thread(target=lambda: found.append(asyncio.run(inside_a_loop())))
    worker.start()
    worker.join(timeout=120)
    assert found, "the audit inside an event loop did not return"
    assert items(found[0])["browser-open"].status == "pass", items(found[0])["browser-open"].detail


def test_missing_chromium_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        check_command,
        ["http://127.0.0.1:1/events", "--origin", PAGE, "--browser", "--chromium", "/nope"],
    )
    assert result.exit_code == 2
    assert "--browser needs Chromium at /nope" in result.output
