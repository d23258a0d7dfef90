"""The stream auditor (``flask_ssecors.checker._check``) against real servers on loopback.

Our example app under gunicorn passes every item. Deliberately broken servers
(``tests/live_apps/broken_servers.py``: one raw-socket server, one failure mode per path) each
fail exactly the item that names their mistake, with the header line as evidence; two real-world
setups (flask-cors reflecting origins, an app setting ``Connection: keep-alive``) are caught too.
"""

from __future__ import annotations

import time
import typing as t
from pathlib import Path

import pytest

from flask_ssecors.checker import _check as check
from flask_ssecors.checker._audit import hostile_origins
from flask_ssecors.checker._audit import request_header_names
from flask_ssecors.checker._check import check_stream
from flask_ssecors.checker._check import parse_header
from flask_ssecors.checker._check import Report
from tests.support.servers import BrokenServer
from tests.support.servers import free_port
from tests.support.servers import LiveServer

ORIGIN = "https://app.example.com"
#: Short waits keep the broken-server table fast; the good server answers within milliseconds.
TIMEOUT = 2.0
ALL_HOSTILE = {
    "hostile-unrelated",
    "hostile-suffix",
    "hostile-prefix",
    "hostile-port",
    "hostile-scheme",
    "hostile-null",
}


@pytest.fixture
def server(broken_server: BrokenServer) -> BrokenServer:
    return broken_server


@pytest.fixture
def broken(server: BrokenServer, monkeypatch: pytest.MonkeyPatch) -> BrokenServer:
    """The broken servers, watched 0.6 s instead of 2 s once bytes flow (they send every
    0.2 s), so that the table runs quickly."""
    monkeypatch.setattr(check, "_MIN_WATCH", 0.6)
    return server


def ids(report: Report, status: str) -> set[str]:
    return {item.id for item in report.items if item.status == status}


def item(report: Report, item_id: str) -> t.Any:
    found = [i for i in report.items if i.id == item_id]
    assert len(found) == 1, f"{item_id} not in {[i.id for i in report.items]}"
    return found[0]


# -- the example app -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> t.Iterator[tuple[str, str]]:
    """The example app under gunicorn -k gevent; (API base URL, page origin)."""
    api, page = free_port(), free_port()
    env = {"API_PORT": str(api), "PAGE_PORT": str(page)}
    with LiveServer("example_app:create_app()", env=env, port=api) as server:
        yield server.url, f"http://localhost:{page}"


@pytest.mark.live
def test_example_app_ticks_pass_every_item(example: tuple[str, str]) -> None:
    url, origin = example
    report = check_stream(f"{url}/ticks", origin, credentials=True, timeout=5.0)
    assert [(i.id, i.status) for i in report.items if i.status != "pass"] == []
    assert report.ok
    assert {i.id for i in report.items} >= {
        "preflight",
        "allow-origin",
        "vary-origin",
        "hostile-null",
        "first-bytes",
        "heartbeat",
        "parse",
        "reconnect",
        "resume",
    }
    assert item(report, "allow-origin").detail == f'"Access-Control-Allow-Origin: {origin}".'
    assert "the next event" in item(report, "resume").detail


@pytest.mark.live
def test_example_app_token_feed_passes_with_its_header(example: tuple[str, str]) -> None:
    """The fetch()-read feed: the preflight must allow Authorization, the GET must carry it."""
    url, origin = example
    auth = [("Authorization", "Bearer demo-token")]
    report = check_stream(f"{url}/feed", origin, credentials=True, headers=auth, timeout=5.0)
    assert ids(report, "fail") == set() and ids(report, "warn") == set()
    assert "for GET with authorization" in item(report, "preflight").detail
    without = check_stream(f"{url}/feed", origin, credentials=True, timeout=5.0)
    assert ids(without, "fail") == {"status"}
    assert "401" in item(without, "status").detail


# -- one broken server per failure mode ---------------------------------------------------


BROKEN: list[tuple[str, set[str], set[str], str]] = [
    # mode, failed items, warned items, evidence in the first failed (or warned) item
    ("reflect-any", ALL_HOSTILE, set(), '"Access-Control-Allow-Origin: https://attacker.example"'),
    ("star-credentials", {"preflight", "allow-origin"}, set(), "Allow-Origin: *"),
    ("acao-list", {"preflight", "allow-origin"}, set(), "https://other.example"),
    ("no-vary", {"vary-origin"}, set(), "no Vary header"),
    ("gzip", {"content-encoding"}, set(), '"Content-Encoding: gzip"'),
    ("content-length", {"content-length"}, set(), '"Content-Length: 1000000"'),
    ("keep-alive", {"hop-by-hop"}, set(), '"Keep-Alive: timeout=5, max=100"'),
    ("buffered", {"first-bytes"}, set(), "no body bytes within 2 s"),
    ("no-heartbeat", {"heartbeat"}, set(), "then nothing for 2 s"),
    ("bad-preflight", {"preflight"}, set(), "no Access-Control-Allow-Origin header"),
    ("lastid-refused", {"reconnect"}, set(), '"HTTP/1.1 400 Bad Request"'),
    ("wrong-content-type", {"content-type"}, set(), '"Content-Type: text/plain'),
    ("no-cache-control", {"cache-control"}, set(), "no Cache-Control header"),
    ("no-accel", set(), {"x-accel-buffering"}, "no X-Accel-Buffering header"),
    ("null-allowed", {"hostile-null"}, set(), '"Access-Control-Allow-Origin: null"'),
    ("suffix-match", {"hostile-suffix"}, set(), "https://evilexample.com"),
    ("prefix-match", {"hostile-prefix", "hostile-port"}, set(), ".com.attacker.example"),
    ("scheme-blind", {"hostile-scheme"}, set(), '"Access-Control-Allow-Origin: http://app.'),
    ("replay-inclusive", {"resume"}, set(), "the client sees it twice"),
    ("restart", set(), {"resume"}, "started again at 1"),
    ("bad-utf8", {"parse"}, set(), "invalid UTF-8"),
    ("bad-chunk", {"parse"}, set(), "illegal chunk header: b'zz\\r\\n'"),
    ("hostile-streamed", set(), ALL_HOSTILE, "the stream opened and the view ran"),
    ("ends", set(), {"heartbeat"}, "the server ended the stream"),
    ("redirect", {"status"}, set(), '"Location: /good/events"'),
    ("refuse-all", {"preflight", "status"}, set(), '"HTTP/1.1 403 Forbidden"'),
]


@pytest.mark.live
@pytest.mark.parametrize(("mode", "failed", "warned", "evidence"), BROKEN)
def test_broken_server_fails_the_item_naming_its_mistake(
    broken: BrokenServer, mode: str, failed: set[str], warned: set[str], evidence: str
) -> None:
    report = check_stream(f"{broken.url}/{mode}/events", ORIGIN, credentials=True, timeout=TIMEOUT)
    assert (ids(report, "fail"), ids(report, "warn")) == (failed, warned)
    assert report.ok is (not failed)
    flagged = [i for i in report.items if i.status != "pass"]
    assert evidence in flagged[0].detail
    assert all(i.fix for i in flagged)
    assert all(not i.fix for i in report.items if i.status == "pass")


@pytest.mark.live
@pytest.mark.parametrize("mode", ["good", "trickle"])
def test_reference_server_passes_every_item(broken: BrokenServer, mode: str) -> None:
    """``trickle`` sends the body one byte at a time: chunk sizes, CRLFs and UTF-8 sequences
    split across reads must still decode and parse."""
    report = check_stream(f"{broken.url}/{mode}/events", ORIGIN, credentials=True, timeout=TIMEOUT)
    assert [(i.id, i.status, i.detail) for i in report.items if i.status != "pass"] == []
    assert len(report.items) == 24
    (connections,) = [i for i in report.items if i.id == "connections"]
    assert "six HTTP/1.1 connections per host" in connections.detail  # informational, over 1.1


@pytest.mark.live
def test_port_prefix_trick_is_caught(broken: BrokenServer) -> None:
    """With a port in the origin, ``startswith`` also accepts one more port digit."""
    origin = "http://localhost:5001"
    url = f"{broken.url}/prefix-match/events?allow={origin}"
    report = check_stream(url, origin, credentials=True, timeout=TIMEOUT)
    assert ids(report, "fail") == {"hostile-port"}
    assert '"Access-Control-Allow-Origin: http://localhost:50011"' in (
        item(report, "hostile-port").detail
    )


@pytest.mark.live
def test_without_credentials_a_star_origin_passes(broken: BrokenServer) -> None:
    """``*`` is right for a public stream read without cookies (it is no reflection)."""
    report = check_stream(f"{broken.url}/star-credentials/events", ORIGIN, timeout=TIMEOUT)
    assert ids(report, "fail") == set()
    assert ids(report, "warn") == {"allow-credentials"}
    assert "not reflected: a public stream" in item(report, "hostile-null").detail
    assert "contradictory" in item(report, "allow-credentials").detail


@pytest.mark.live
def test_a_server_that_never_answers_is_bounded_by_the_timeout(broken: BrokenServer) -> None:
    start = time.monotonic()
    report = check_stream(f"{broken.url}/hang/events", ORIGIN, timeout=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0
    assert ids(report, "fail") == {"preflight", "status"}
    assert "no response within 1 s" in item(report, "status").detail


def test_nothing_listening_is_one_connect_failure() -> None:
    report = check_stream(f"http://127.0.0.1:{free_port()}/events", ORIGIN, timeout=1.0)
    assert [(i.id, i.status) for i in report.items] == [("connect", "fail")]
    assert "cannot connect to 127.0.0.1:" in report.items[0].detail
    assert not report.ok


# -- real-world setups ---------------------------------------------------------------------


@pytest.mark.live
def test_flask_cors_with_credentials_reflects_every_hostile_origin() -> None:
    """``CORS(app, supports_credentials=True)`` with its default origins echoes any Origin."""
    with LiveServer("tests.live_apps.broken_wsgi:flask_cors_app()") as server:
        report = check_stream(f"{server.url}/events", ORIGIN, credentials=True, timeout=TIMEOUT)
    assert ids(report, "fail") == ALL_HOSTILE
    assert "with the user's cookies" in item(report, "hostile-null").detail


@pytest.mark.live
@pytest.mark.parametrize(("server", "failed"), [("pywsgi", {"hop-by-hop"}), ("gunicorn", set())])
def test_application_set_keep_alive_is_the_apps_mistake(server: str, failed: set[str]) -> None:
    """gevent's pywsgi passes an app's ``Connection: keep-alive`` through; gunicorn drops it.
    The server's own ``Connection`` and chunked framing are never blamed."""
    target = "tests.live_apps.broken_wsgi:keep_alive_app"
    with LiveServer(target, server=server) as live:
        report = check_stream(f"{live.url}/events", ORIGIN, credentials=True, timeout=TIMEOUT)
    assert ids(report, "fail") == failed
    if failed:
        assert '"Connection: keep-alive" in answer to "Connection: close"' in (
            item(report, "hop-by-hop").detail
        )


# -- https ---------------------------------------------------------------------------------


@pytest.mark.live
def test_https_stream_is_checked_and_its_certificate_verified(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with BrokenServer(tls=certificate) as server:
        url = f"{server.url}/good/events"
        untrusted = check_stream(url, ORIGIN, credentials=True, timeout=TIMEOUT)
        insecure = check_stream(url, ORIGIN, credentials=True, timeout=TIMEOUT, verify=False)
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        trusted = check_stream(url, ORIGIN, credentials=True, timeout=TIMEOUT)
    assert [(i.id, i.status) for i in untrusted.items] == [("connect", "fail")]
    assert "certificate" in untrusted.items[0].detail
    for report in (insecure, trusted):
        assert [(i.id, i.status) for i in report.items if i.status != "pass"] == []


# -- pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (
            "https://app.example.com",
            {
                "hostile-unrelated": "https://attacker.example",
                "hostile-suffix": "https://evilexample.com",
                "hostile-prefix": "https://app.example.com.attacker.example",
                "hostile-port": "https://app.example.com:8443",
                "hostile-scheme": "http://app.example.com",
                "hostile-null": "null",
            },
        ),
        (
            "https://shop.example.co.uk:844",
            {
                "hostile-unrelated": "https://attacker.example",
                "hostile-suffix": "https://evilexample.co.uk:844",
                "hostile-prefix": "https://shop.example.co.uk.attacker.example:844",
                "hostile-port": "https://shop.example.co.uk:8441",
                "hostile-scheme": "http://shop.example.co.uk:844",
                "hostile-null": "null",
            },
        ),
        (
            "http://localhost:5001",
            {
                "hostile-unrelated": "https://attacker.example",
                "hostile-suffix": "http://evillocalhost:5001",
                "hostile-prefix": "http://localhost.attacker.example:5001",
                "hostile-port": "http://localhost:50011",
                "hostile-null": "null",
            },
        ),
        (
            "http://127.0.0.1:65000",
            {
                "hostile-unrelated": "https://attacker.example",
                "hostile-prefix": "http://127.0.0.1.attacker.example:65000",
                "hostile-null": "null",
            },
        ),
        (
            "http://[::1]:808",
            {
                "hostile-unrelated": "https://attacker.example",
                "hostile-port": "http://[::1]:8081",
                "hostile-null": "null",
            },
        ),
    ],
)
def test_hostile_origins_are_derived_from_the_allowed_one(
    origin: str, expected: dict[str, str]
) -> None:
    assert {h.id: h.origin for h in hostile_origins(origin)} == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer x", ("Authorization", "Bearer x")),
        ("Cookie:a=1; b=2", ("Cookie", "a=1; b=2")),
        ("X-Empty:", ("X-Empty", "")),
    ],
)
def test_header_option_is_read(text: str, expected: tuple[str, str]) -> None:
    assert parse_header(text) == expected


@pytest.mark.parametrize("text", ["no colon", ": value", "Bad Name: x", "X: a\r\nInjected: 1"])
def test_invalid_header_option_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_header(text)


def test_preflight_asks_only_for_headers_a_page_must_be_allowed_to_send() -> None:
    headers = [("Cookie", "a=1"), ("Authorization", "x"), ("Accept", "y"), ("X-Token", "z")]
    assert request_header_names(headers) == ["authorization", "x-token"]


@pytest.mark.parametrize(
    "origin",
    ["https://app.example.com/", "HTTPS://app.example.com", "https://app.example.com:443", "*"],
)
def test_origin_must_be_what_a_browser_sends(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin as browsers send it"):
        check_stream("http://127.0.0.1:1/events", origin)


@pytest.mark.parametrize("url", ["ftp://host/x", "http:///x", "https://user:pw@host/x"])
def test_url_must_be_http_or_https(url: str) -> None:
    with pytest.raises(ValueError):
        check_stream(url, ORIGIN)
