"""Request ids, and log lines that hostile request values cannot forge."""

from __future__ import annotations

import io
import logging
import typing as t

import pytest
from flask import Flask

from flask_ssecors import Event
from flask_ssecors import SSECors
from flask_ssecors.exceptions import ConfigError
from flask_ssecors.requestid import clean_request_id
from flask_ssecors.requestid import MAX_REQUEST_ID_LENGTH
from flask_ssecors.requestid import RequestIdFilter
from flask_ssecors.testing import SSETestClient
from tests.conftest import ALLOWED
from tests.conftest import HOSTILE

RID = "X-Request-ID"
ACEH = "Access-Control-Expose-Headers"


class _BufferedClient(SSETestClient):
    """Reads every response to its end, so that no stream is left open (with its send timer
    armed in the test's greenlet)."""

    def open(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def build(make_app: t.Callable[..., Flask], **config: object) -> tuple[Flask, SSECors]:
    config.setdefault("SSECORS_REQUEST_ID_HEADER", RID)
    app = make_app(**config)
    app.test_client_class = _BufferedClient
    sse = SSECors(app)

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        return iter([Event("hi")])

    @app.post("/messages")
    @sse.cors()
    def messages() -> t.Any:
        return {"ok": True}

    @app.get("/plain")
    def plain() -> t.Any:
        return "plain"

    return app, sse


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("abc-123", True),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1", False),
        ("a.b_c:d+e/f=g@h", True),
        ("x" * MAX_REQUEST_ID_LENGTH, True),
        ("x" * (MAX_REQUEST_ID_LENGTH + 1), False),
        ("", False),
        ("a b", False),
        ("a\r\nb", False),
        ("a\x00b", False),
        ('a"b', False),
        ("é", False),
        ("a\\b", False),
    ],
)
def test_clean_request_id(value: str | None, kept: bool) -> None:
    assert (clean_request_id(value) == value) is kept
    if not kept:
        assert clean_request_id(value) is None


def test_off_by_default(make_app: t.Callable[..., Flask]) -> None:
    app, _ = build(make_app, SSECORS_REQUEST_ID_HEADER=None)
    response = app.test_client().get("/events", headers={"Origin": ALLOWED})
    assert RID not in response.headers
    assert ACEH not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/events", {"Origin": ALLOWED}, 200),
        ("GET", "/events", {}, 200),
        ("GET", "/events", {"Origin": HOSTILE}, 403),
        ("POST", "/messages", {"Origin": ALLOWED}, 200),
        ("POST", "/messages", {"Origin": HOSTILE}, 403),
        ("OPTIONS", "/messages", {"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}, 204),
    ],
)
def test_every_policed_response_carries_an_id(
    make_app: t.Callable[..., Flask],
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
) -> None:
    app, _ = build(make_app)
    client = app.test_client()
    generated = client.open(path, method=method, headers=headers)
    assert generated.status_code == status
    assert len(generated.headers[RID]) == 32
    kept = client.open(path, method=method, headers={**headers, RID: "req-42"})
    assert kept.headers[RID] == "req-42"
    assert len(kept.headers.getlist(RID)) == 1


def test_unpoliced_routes_get_no_id(make_app: t.Callable[..., Flask]) -> None:
    app, _ = build(make_app)
    assert RID not in app.test_client().get("/plain", headers={RID: "x"}).headers


@pytest.mark.parametrize("value", ["a\r\nb", "x" * 200, "two words", "<script>"])
def test_unsafe_ids_are_replaced(make_app: t.Callable[..., Flask], value: str) -> None:
    app, _ = build(make_app)
    response = app.test_client().get("/events", environ_base={"HTTP_X_REQUEST_ID": value})
    assert response.headers[RID] != value
    assert len(response.headers[RID]) == 32


def test_untrusted_ids_are_always_generated(make_app: t.Callable[..., Flask]) -> None:
    app, _ = build(make_app, SSECORS_TRUST_REQUEST_ID=False)
    response = app.test_client().get("/events", headers={RID: "req-42"})
    assert response.headers[RID] != "req-42"


def test_page_script_may_read_the_id(make_app: t.Callable[..., Flask]) -> None:
    app, _ = build(make_app, SSECORS_EXPOSE_HEADERS=["X-Total"], SSECORS_ALLOW_CREDENTIALS=True)
    client = app.test_client()
    for method, path in (("GET", "/events"), ("POST", "/messages")):
        response = client.open(path, method=method, headers={"Origin": ALLOWED})
        assert response.headers[ACEH] == "x-total, x-request-id"
    with app.app_context():
        assert app.extensions["ssecors"].settings.cors.expose_headers == ("x-total",)


def test_a_custom_header_name(make_app: t.Callable[..., Flask]) -> None:
    app, _ = build(make_app, SSECORS_REQUEST_ID_HEADER="X-Correlation-ID")
    response = app.test_client().get(
        "/events", headers={"Origin": ALLOWED, "X-Correlation-ID": "c-1"}
    )
    assert response.headers["X-Correlation-ID"] == "c-1"
    assert response.headers[ACEH] == "x-correlation-id"


@pytest.mark.parametrize(
    "name", ["Origin", "Cookie", "Sec-Fetch-Site", "Access-Control-X", "a b", 3]
)
def test_header_names_are_validated(make_app: t.Callable[..., Flask], name: object) -> None:
    with pytest.raises(ConfigError) as info:
        SSECors(make_app(SSECORS_REQUEST_ID_HEADER=name))
    assert [issue.key for issue in info.value.issues] == ["SSECORS_REQUEST_ID_HEADER"]


def test_log_records_carry_the_request_id(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = build(make_app)
    caplog.set_level(logging.INFO, logger="flask_ssecors")
    app.test_client().get("/events", headers={"Origin": HOSTILE, RID: "req-7"})
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.request_id == "req-7"  # type: ignore[attr-defined]


def test_the_filter_outside_a_request() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert RequestIdFilter().filter(record)
    assert record.request_id == "-"  # type: ignore[attr-defined]
    kept = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    kept.request_id = "given"
    RequestIdFilter().filter(kept)
    assert getattr(kept, "request_id", None) == "given"


# -- log forgery --------------------------------------------------------------------------------

CRLF_VALUES = [
    "\r\nINFO flask_ssecors forged",
    "\nforged",
    "\rforged",
    "\u2028forged",
    "\x85forged",
    "\x1b[2Jforged",
]


@pytest.mark.parametrize("value", CRLF_VALUES)
def test_hostile_values_never_start_a_log_line(
    make_app: t.Callable[..., Flask], value: str
) -> None:
    """Origins, request ids, Last-Event-IDs, tokens and paths with CR/LF (and other line
    breaks or escapes) are logged escaped: every record is exactly one line."""
    app, sse = build(
        make_app,
        SSECORS_ALLOWED_ORIGINS=[ALLOWED, "https://partner.example.com"],
        SSECORS_MAX_STREAMS=1,
    )
    sse.policy("tenant", origins=[ALLOWED])

    @sse.policy_selector
    def select() -> str | None:
        from flask import request

        return request.headers.get("X-Tenant")

    @app.get("/secure/<room>")
    @sse.stream(require_token=True)
    def secure(room: str) -> t.Any:
        return sse.subscribe(room)

    @app.get("/room")
    @sse.stream()
    def room() -> t.Any:
        return sse.subscribe("room")

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s [%(request_id)s] %(message)s"))
    logger = logging.getLogger("flask_ssecors")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        app.testing = False
        client = app.test_client()
        base = {"HTTP_X_REQUEST_ID": f"id{value}", "HTTP_LAST_EVENT_ID": f"id{value}"}
        requests = [
            ("/events", {**base, "HTTP_ORIGIN": f"https://evil.example{value}"}),
            ("/events", {**base, "HTTP_ORIGIN": HOSTILE}),
            (f"/secure/{value}", {**base, "HTTP_ORIGIN": ALLOWED}),
            (f"/secure/x?token=tok{value}", {**base, "HTTP_ORIGIN": ALLOWED}),
            ("/events", {**base, "HTTP_ORIGIN": ALLOWED, "HTTP_X_TENANT": f"t{value}"}),
            (f"/events{value}", {**base, "HTTP_ORIGIN": HOSTILE}),
        ]
        records = 0
        for path, environ in requests:
            client.get(path, environ_base=environ)
        opened = client.get("/room", environ_base={**base, "HTTP_ORIGIN": ALLOWED}, buffered=False)
        opened.close()
        records = stream.getvalue().count("\n")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    text = stream.getvalue()
    lines = text.splitlines()
    assert records >= 7
    assert "ignored invalid Last-Event-ID" in text
    assert len(lines) == records, text
    assert all(line.startswith(("INFO [", "WARNING [", "ERROR [", "DEBUG [")) for line in lines)
    assert "forged" in text
    for line in lines:
        assert "\x1b" not in line and "\r" not in line
        assert line.count(" [") >= 1
