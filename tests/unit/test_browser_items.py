"""The browser audit's ``browser-cookie`` item tells a cross-site pair that only the local run
creates (a stream on 127.0.0.1 audited for a page on https://app.example.com, as with the
README's quickstart) apart from a real third-party-cookie problem (docs/cli.rst, local runs)."""

from __future__ import annotations

import pytest

from flask_ssecors.checker._browser_items import _cookie
from flask_ssecors.checker._browser_items import BrowserRun


def run_without_the_cookie() -> BrowserRun:
    return BrowserRun(
        opened=True,
        first_request_headers={"accept": "text/event-stream"},
        cookie_names=("ssecors_check",),
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/ticks", "http://localhost:8000/ticks", "http://[::1]:8000/t"]
)
def test_a_local_stream_for_a_public_page_is_a_warning_that_says_why(url: str) -> None:
    item = _cookie(run_without_the_cookie(), url, "https://app.example.com")
    assert item.status == "warn"
    assert "only in this local run" in item.detail
    assert "localhost" in item.fix


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://api.other.net/events", "https://app.example.com"),  # a real third party
        ("http://127.0.0.1:8000/events", "http://localhost:5001"),  # local, and cross-site
    ],
)
def test_a_real_cross_site_pair_still_fails(url: str, origin: str) -> None:
    item = _cookie(run_without_the_cookie(), url, origin)
    assert item.status == "fail"
    assert "third-party cookie" in item.detail


def test_a_sent_cookie_passes() -> None:
    run = run_without_the_cookie()
    run.first_request_headers["cookie"] = "ssecors_check=1"
    assert _cookie(run, "http://127.0.0.1:8000/t", "https://app.example.com").status == "pass"


def test_chromium_reasons_are_quoted_in_the_warning_and_the_failure() -> None:
    run = run_without_the_cookie()
    run.blocked_cookies = ["ssecors_check (ThirdPartyPhaseout)"]
    warned = _cookie(run, "http://127.0.0.1:8000/t", "https://app.example.com")
    failed = _cookie(run, "https://api.other.net/events", "https://app.example.com")
    assert (warned.status, failed.status) == ("warn", "fail")
    for item in (warned, failed):
        assert item.detail.endswith("Chromium's reasons: ssecors_check (ThirdPartyPhaseout).")
