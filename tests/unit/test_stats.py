"""sse.stats(), the blinker signals, and the Prometheus exposition."""

from __future__ import annotations

import contextlib
import logging
import typing as t

import gevent
import pytest
from flask import Flask

from flask_ssecors import Event
from flask_ssecors import SSECors
from flask_ssecors import stats as stats_module
from flask_ssecors._config import StreamOptions
from flask_ssecors._stream import EventStream
from tests.conftest import ALLOWED
from tests.conftest import HOSTILE
from tests.conftest import stream_client

ORIGIN = {"Origin": ALLOWED}


def build(make_app: t.Callable[..., Flask], **config: object) -> tuple[Flask, SSECors]:
    app = make_app(**config)
    sse = SSECors(app)

    @app.get("/events")
    @sse.stream(heartbeat=0.05)
    def events() -> t.Any:
        return sse.subscribe("c")

    @app.get("/three")
    @sse.stream()
    def three() -> t.Any:
        return iter([Event("1"), Event("2"), Event("3")])

    @app.get("/secure")
    @sse.stream(require_token=True)
    def secure() -> t.Any:
        return iter(())

    return app, sse


def test_a_fresh_app_has_zero_everywhere(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app)
    with app.app_context():
        assert sse.stats() == {
            "open_streams": 0,
            "streams_opened": 0,
            "streams_closed": 0,
            "events_sent": 0,
            "refused_origins": {},
            "token_refusals": {},
            "slow_clients_dropped": 0,
            "streams_refused_busy": 0,
            "streams_ended": {},
            "faults": {},
            "presence": {"members": 0, "streams": 0, "updates": 0},
        }


def test_streams_and_events_are_counted(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app)
    client = stream_client(app)
    assert client.get("/three", headers=ORIGIN).get_data().count(b"data: ") == 3
    reader = client.open_stream("/events", headers=ORIGIN)
    with app.app_context():
        sse.publish("c", Event("x"))
        reader.next_event(2)
        sse.publish("c", Event("y"))
        reader.next_event(2)
        counted = sse.stats()
        assert (counted["open_streams"], counted["streams_opened"]) == (1, 2)
        assert (counted["streams_closed"], counted["events_sent"]) == (1, 5)
    reader.close()
    with app.app_context():
        counted = sse.stats()
        assert (counted["open_streams"], counted["streams_closed"]) == (0, 2)
        assert counted["events_sent"] == 5


def test_refusals_are_counted_by_reason(make_app: t.Callable[..., Flask]) -> None:
    app, sse = build(make_app, SSECORS_SERVE_WITHOUT_ORIGIN=False)
    client = stream_client(app)
    client.get("/three", headers={"Origin": HOSTILE})
    client.get("/three", headers={"Origin": HOSTILE})
    client.get("/three", headers={"Origin": "https://app.example.com/"})
    client.get("/three")
    client.get("/secure", headers=ORIGIN)
    with app.app_context():
        counted = sse.stats()
    assert counted["refused_origins"] == {
        "origin-not-allowed": 2,
        "malformed-origin": 1,
        "no-origin-refused": 1,
    }
    assert counted["token_refusals"] == {"token-missing": 1}


def test_slow_clients_are_counted(make_app: t.Callable[..., Flask]) -> None:
    """A subscriber that falls more than SSECORS_QUEUE_SIZE behind is dropped and counted."""
    app, sse = build(make_app, SSECORS_QUEUE_SIZE=2)
    reader = stream_client(app).open_stream("/events", headers=ORIGIN)
    reader.read_chunk(1)
    with app.app_context():
        for n in range(5):
            sse.publish("c", Event(str(n)))
        assert reader.read_chunk(2) == b""
        assert sse.stats()["slow_clients_dropped"] == 1


def test_a_send_timeout_is_a_slow_client() -> None:
    """The send timer fired while the server was writing: the end reason says so."""
    options = StreamOptions(heartbeat=5, retry=None, queue_size=10, send_timeout=0.05)

    def serve(stream: EventStream, write_time: float) -> str | None:
        # A greenlet of its own, as the server's: timers other tests left armed in the main
        # greenlet cannot fire into it.
        next(stream)
        with contextlib.suppress(ConnectionResetError):
            gevent.sleep(write_time)  # the write
        stream.close()
        return stream.end_reason

    slow = gevent.spawn(serve, EventStream(iter([Event("x")]), options), 0.2)
    quick = gevent.spawn(serve, EventStream(iter([Event("x")]), options), 0.0)
    gevent.joinall([slow, quick], raise_error=True)
    assert (slow.value, quick.value) == ("send-timeout", "disconnected")


def test_signals_are_sent(make_app: t.Callable[..., Flask]) -> None:
    app, _ = build(make_app, SSECORS_REQUEST_ID_HEADER="X-Request-ID")
    seen: list[tuple[str, Flask, dict[str, t.Any]]] = []

    def receiver(name: str) -> t.Callable[..., None]:
        def receive(sender: Flask, **kwargs: t.Any) -> None:
            seen.append((name, sender, kwargs))

        return receive

    receivers = {
        "opened": receiver("opened"),
        "closed": receiver("closed"),
        "refused": receiver("refused"),
    }
    with (
        stats_module.stream_opened.connected_to(receivers["opened"], app),
        stats_module.stream_closed.connected_to(receivers["closed"], app),
        stats_module.request_refused.connected_to(receivers["refused"], app),
    ):
        client = stream_client(app)
        client.get("/three", headers={**ORIGIN, "X-Request-ID": "r-1"}).get_data()
        client.get("/three", headers={"Origin": HOSTILE})
        client.get("/secure", headers=ORIGIN)
    names = [name for name, _, _ in seen]
    assert names == ["opened", "closed", "refused", "refused"]
    assert all(sender is app for _, sender, _ in seen)
    assert seen[0][2] == {"request_id": "r-1"}
    closed = seen[1][2]
    assert (closed["reason"], closed["events_sent"], closed["request_id"]) == (
        "complete",
        3,
        "r-1",
    )
    assert 0 <= closed["duration"] < 5
    assert seen[2][2] == {"kind": "origin", "reason": "origin-not-allowed"}
    assert seen[3][2] == {"kind": "token", "reason": "token-missing"}


def test_a_failing_receiver_does_not_break_the_stream(
    make_app: t.Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app, sse = build(make_app)

    def broken(sender: Flask, **kwargs: t.Any) -> None:
        raise RuntimeError("receiver bug")

    caplog.set_level(logging.ERROR, logger="flask_ssecors")
    with stats_module.stream_closed.connected_to(broken, app):
        body = stream_client(app).get("/three", headers=ORIGIN).get_data()
    assert body.count(b"data: ") == 3
    assert any("receiver" in r.getMessage() for r in caplog.records)
    with app.app_context():
        assert sse.stats()["streams_closed"] == 1


def test_prometheus_exposition(make_app: t.Callable[..., Flask]) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    app, _ = build(make_app)
    client = stream_client(app)
    client.get("/three", headers=ORIGIN).get_data()
    client.get("/three", headers={"Origin": HOSTILE})
    registry = prometheus_client.CollectorRegistry()
    registry.register(stats_module.PrometheusCollector(app))
    text = prometheus_client.generate_latest(registry).decode()
    assert "ssecors_open_streams 0.0" in text
    assert "ssecors_streams_opened_total 1.0" in text
    assert "ssecors_events_sent_total 3.0" in text
    assert 'ssecors_refused_origins_total{reason="origin-not-allowed"} 1.0' in text
    assert registry.get_sample_value("ssecors_streams_closed_total") == 1.0
