"""The race harness (``flask ssecors race-server``): what it serves, and what a real Chromium
makes of a few of its combinations (the table in docs/cli.rst)."""

from __future__ import annotations

import subprocess
import sys
import typing as t

import pytest
from werkzeug.test import Client

from flask_ssecors._parser import EventStreamParser
from flask_ssecors.checker._browser_options import BrowserOptions
from flask_ssecors.checker._check import check_stream
from flask_ssecors.checker._race import race_app
from tests.support.servers import free_port
from tests.support.servers import require_binary
from tests.support.servers import ROOT
from tests.support.servers import stop
from tests.support.servers import wait_for_port

from .conftest import CHROMIUM

PAGE = "http://localhost:5001"


def read(query: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    response = Client(race_app).get(f"/race?delay=0&{query}", headers={"Origin": PAGE, **headers})
    return response.status_code, dict(response.headers), response.get_data()


def test_it_resumes_after_last_event_id_and_splits_or_merges_as_asked() -> None:
    status, headers, body = read("count=3&split=4")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == PAGE
    events = EventStreamParser().feed(body)
    assert [e.id for e in events] == ["1", "2", "3"]
    _, _, again = read("count=2", **{"Last-Event-ID": "3"})
    assert [e.id for e in EventStreamParser().feed(again)] == ["4", "5"]
    _, _, reset = read("count=3&reset=2")
    assert [e.event for e in EventStreamParser().feed(reset)] == [
        "race",
        "race",
        "ssecors-reset",
        "race",
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("cors=star&credentials=1", {"Access-Control-Allow-Origin": "*"}),
        ("cors=missing", {}),
    ],
)
def test_it_answers_the_cors_mode_asked_for(query: str, expected: dict[str, str]) -> None:
    _, headers, _ = read(f"count=1&{query}")
    got = {k: v for k, v in headers.items() if k == "Access-Control-Allow-Origin"}
    assert got == expected


def test_a_refused_preflight() -> None:
    response = Client(race_app).options(
        "/race?preflight=refuse",
        headers={"Origin": PAGE, "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 403


@pytest.fixture(scope="module")
def harness() -> t.Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "ssecors", "race-server", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, process)
        yield f"http://localhost:{port}/race?count=5&delay=0.1&retry=1000"
    finally:
        stop(process, group=True)


@pytest.mark.browser
@pytest.mark.parametrize(
    ("query", "credentials", "not_passed"),
    [
        ("cors=exact&merge=1", False, {}),
        ("cors=exact&split=7", False, {}),
        ("cors=exact&preflight=refuse", False, {"browser-preflight": "fail"}),
        (
            "cors=star&credentials=1",
            True,
            {"browser-open": "fail", "browser-error": "fail", "browser-preflight": "warn"},
        ),
    ],
)
def test_what_chromium_does_with_the_harness(
    harness: str, query: str, credentials: bool, not_passed: dict[str, str]
) -> None:
    """Merged and split chunks are dispatched; a refused preflight costs a fetch() reader its
    resumes; '*' with credentials is refused by the browser, which gives up for good."""
    options = BrowserOptions(chromium=require_binary("chromium", CHROMIUM))
    report = check_stream(
        f"{harness}&{query}", PAGE, credentials=credentials, timeout=5, browser=options
    )
    browser = {i.id: i.status for i in report.items if i.id.startswith("browser-")}
    assert "browser-open" in browser
    assert {k: v for k, v in browser.items() if v != "pass"} == not_passed
