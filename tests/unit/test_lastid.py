"""``flask_ssecors.last_event_id()``: the request's ``Last-Event-ID``, validated as untrusted.

docs/security.rst ("Untrusted ``Last-Event-ID``", "Log injection"): the header (or, for a first
connection, the ``last_event_id`` query parameter) is bounded in length and may hold no control
character; an invalid value is treated as absent and logged escaped, never raw.
"""

from __future__ import annotations

import collections.abc as cabc
import logging
import typing as t
from urllib.parse import quote

import pytest
from flask import Flask

from flask_ssecors import last_event_id
from flask_ssecors import SSECors
from flask_ssecors._lastid import clean_last_event_id
from flask_ssecors._lastid import MAX_LAST_EVENT_ID_LENGTH

MakeApp = cabc.Callable[..., Flask]


def wsgi(text: str) -> str:
    """``text`` as a WSGI server passes a header a browser sent as UTF-8 (latin-1 decoded)."""
    return text.encode("utf-8").decode("latin-1")


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    app = make_app()
    SSECors(app)

    @app.get("/id")
    def show() -> t.Any:
        first = last_event_id()
        assert last_event_id() == first  # read once, then cached for the request
        return {"id": first}

    return app


def read(app: Flask, header: str | None = None, query: str | None = None) -> str | None:
    """What ``last_event_id()`` returns for a request with this raw header and query value."""
    environ = {} if header is None else {"HTTP_LAST_EVENT_ID": header}
    path = "/id" if query is None else f"/id?last_event_id={quote(query, safe='')}"
    response = app.test_client().get(path, environ_overrides=environ)
    assert response.status_code == 200
    return t.cast("str | None", response.get_json()["id"])


@pytest.mark.parametrize(
    "value",
    [
        "42",
        "1a217db19518b99-1",
        "room:7/event#3",
        "with space",
        " leading and trailing ",
        "x" * MAX_LAST_EVENT_ID_LENGTH,
        "'quoted' \"double\" \\ back",
    ],
)
def test_valid_header_is_returned_as_is(app: Flask, value: str) -> None:
    assert read(app, header=value) == value


@pytest.mark.parametrize(
    "value",
    ["é", "日本-42", "emoji-\U0001f600", "é" * MAX_LAST_EVENT_ID_LENGTH],
    ids=["latin", "cjk", "astral", "longest-multibyte"],
)
def test_utf8_header_is_decoded(app: Flask, value: str) -> None:
    """Browsers send the id as UTF-8; WSGI hands headers over as latin-1 strings."""
    assert read(app, header=wsgi(value)) == value


def test_header_wins_over_query_parameter(app: Flask) -> None:
    assert read(app, header="from-header", query="from-query") == "from-header"


def test_query_parameter_is_used_for_a_first_connect(app: Flask) -> None:
    """Browsers cannot set headers on a first ``EventSource`` connection."""
    assert read(app, query="from-query") == "from-query"
    assert read(app, query="日本") == "日本"


def test_invalid_header_does_not_fall_back_to_the_query(app: Flask) -> None:
    """A reconnecting browser sends the header; the query still holds the older cursor of the
    first connection, and resuming from it would replay events the client already has."""
    assert read(app, header="bad\x00id", query="from-query") is None


@pytest.mark.parametrize(("header", "query"), [(None, None), ("", None), (None, ""), ("", "q")])
def test_absent_or_empty_is_none(app: Flask, header: str | None, query: str | None) -> None:
    assert read(app, header=header, query=query) is None


CONTROL = {
    "CR": "a\rb",
    "LF": "a\nb",
    "CRLF-forgery": "7\r\nX-Injected: 1",
    "NUL": "a\x00b",
    "DEL": "a\x7fb",
    "TAB": "a\tb",
    "ESC": "\x1b[31mred",
    "C1-NEL": "a\x85b",
    "line-separator": "a\u2028b",
    "bidi-override": "a\u202eb",
}


@pytest.mark.parametrize("value", CONTROL.values(), ids=CONTROL.keys())
@pytest.mark.parametrize("where", ["header", "query"])
def test_control_characters_are_refused_and_logged_escaped(
    app: Flask, caplog: pytest.LogCaptureFixture, value: str, where: str
) -> None:
    with caplog.at_level(logging.WARNING, "flask_ssecors"):
        if where == "header":
            assert read(app, header=wsgi(value)) is None
        else:
            assert read(app, query=value) is None
    (record,) = [r for r in caplog.records if r.name.startswith("flask_ssecors")]
    message = record.getMessage()
    assert "Last-Event-ID" in message
    assert message.isprintable() and message.isascii(), repr(message)
    assert "\\x" in message or "\\u" in message


def test_too_long_is_refused(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    longest = "x" * MAX_LAST_EVENT_ID_LENGTH
    with caplog.at_level(logging.WARNING, "flask_ssecors"):
        assert read(app, header=longest + "x") is None
        assert read(app, query=longest + "x") is None
        assert read(app, header=wsgi("é" * (MAX_LAST_EVENT_ID_LENGTH + 1))) is None
        assert read(app, header="x" * 100_000) is None
    records = [r for r in caplog.records if r.name.startswith("flask_ssecors")]
    assert len(records) == 4
    # Escaping may widen each kept character (\\xc3), but what is kept is bounded.
    assert all(len(r.getMessage()) < 1000 for r in records), "logs must be bounded"
    assert len(records[3].getMessage()) < 300


@pytest.mark.parametrize(
    "raw",
    ["\xff", "\xc3", "\xe6\x97", "\xed\xa0\x80", "\xc0\xaf"],
    ids=["invalid-byte", "truncated-2", "truncated-3", "surrogate", "overlong"],
)
def test_invalid_utf8_header_is_refused(
    app: Flask, caplog: pytest.LogCaptureFixture, raw: str
) -> None:
    with caplog.at_level(logging.WARNING, "flask_ssecors"):
        assert read(app, header=f"id-{raw}") is None
    assert len([r for r in caplog.records if r.name.startswith("flask_ssecors")]) == 1


def test_outside_a_request_is_none() -> None:
    assert last_event_id() is None


@pytest.mark.parametrize(
    ("value", "wsgi_encoded", "expected"),
    [
        (None, True, None),
        ("", True, None),
        ("abc", True, "abc"),
        (wsgi("日本"), True, "日本"),
        ("日本", False, "日本"),
        ("\xe6", True, None),
        ("a\nb", False, None),
        ("x" * (MAX_LAST_EVENT_ID_LENGTH + 1), False, None),
    ],
)
def test_clean_last_event_id(value: str | None, wsgi_encoded: bool, expected: str | None) -> None:
    assert clean_last_event_id(value, wsgi=wsgi_encoded) == expected


def test_invalid_id_on_a_stream_is_treated_as_absent(make_app: MakeApp) -> None:
    """An invalid Last-Event-ID means "no id": live events, no replay and no reset event; an
    unknown but valid one gets the reset event."""
    from flask_ssecors.events import Event
    from flask_ssecors.events import RESET_EVENT
    from flask_ssecors.testing import SSETestClient

    app = make_app()
    sse = SSECors(app)

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        return sse.subscribe("c")

    client = t.cast(SSETestClient, app.test_client())
    with app.app_context():
        sse.publish("c", Event("old"))
    with client.open_stream("/events", environ_overrides={"HTTP_LAST_EVENT_ID": "1\n2"}) as s:
        s.read_chunk(timeout=1)
        with app.app_context():
            sse.publish("c", Event("live"))
        assert s.next_event(timeout=1).data == "live"
    with client.open_stream("/events", headers={"Last-Event-ID": "unknown"}) as s:
        assert s.next_event(timeout=1).event == RESET_EVENT
