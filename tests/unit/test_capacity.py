"""Capacity, stream age and shutdown, in process (the wire versions are in
test_hardening_live.py)."""

from __future__ import annotations

import signal
import time
import typing as t
import weakref

import gevent
import pytest
from flask import Flask
from flask import Response

from flask_ssecors import _lifecycle as lifecycle
from flask_ssecors import Event
from flask_ssecors import SSECors
from flask_ssecors._parser import parse_events
from flask_ssecors.exceptions import ConfigError
from tests.conftest import ALLOWED
from tests.conftest import stream_client

EVENTSOURCE = {"Origin": ALLOWED, "Accept": "text/event-stream"}


def build(
    make_app: t.Callable[..., Flask], **config: object
) -> tuple[Flask, SSECors, dict[str, int]]:
    app = make_app(**config)
    sse = SSECors(app)
    calls = {"view": 0}

    @app.get("/events")
    @sse.stream(heartbeat=0.05)
    def events() -> t.Any:
        calls["view"] += 1
        return sse.subscribe("c")

    @app.get("/maybe")
    @sse.stream()
    def maybe() -> t.Any:
        return Response("no stream today", 409)

    @app.get("/broken")
    @sse.stream()
    def broken() -> t.Any:
        raise LookupError("broken view")

    return app, sse, calls


def test_over_capacity_eventsource_gets_a_retry_hint(make_app: t.Callable[..., Flask]) -> None:
    """A 503 would make EventSource give up for good: it gets a 200 stream with a retry
    hint (SSECORS_BUSY_RETRY with jitter) that ends at once, and the view does not run."""
    app, sse, calls = build(make_app, SSECORS_MAX_STREAMS=2, SSECORS_BUSY_RETRY=4000)
    client = stream_client(app)
    held = [client.open_stream("/events", headers=EVENTSOURCE) for _ in range(2)]
    try:
        busy = client.get("/events", headers=EVENTSOURCE)
        assert busy.status_code == 200
        assert busy.mimetype == "text/event-stream"
        assert busy.headers["Access-Control-Allow-Origin"] == ALLOWED
        events = parse_events(busy.get_data())
        assert events == []  # nothing dispatched: only a comment and the retry field
        body = busy.get_data().decode()
        retry = int(body.split("retry: ")[1].split("\n")[0])
        assert 2000 <= retry <= 6000
        assert calls["view"] == 2
        plain = client.get("/events", headers={"Origin": ALLOWED})
        assert plain.status_code == 503
        assert plain.headers["Retry-After"] == "4"
        assert plain.headers["Access-Control-Allow-Origin"] == ALLOWED
        with app.app_context():
            assert sse.stats()["streams_refused_busy"] == 2
            assert sse.stats()["open_streams"] == 2
    finally:
        for reader in held:
            reader.close()
    again = client.open_stream("/events", headers=EVENTSOURCE)
    with app.app_context():
        sse.publish("c", Event("after"))
    assert again.next_event(2).data == "after"
    again.close()


def test_retry_hints_are_spread(make_app: t.Callable[..., Flask]) -> None:
    app, _, _ = build(make_app, SSECORS_MAX_STREAMS=1)
    client = stream_client(app)
    held = client.open_stream("/events", headers=EVENTSOURCE)
    hints = {client.get("/events", headers=EVENTSOURCE).get_data() for _ in range(20)}
    held.close()
    assert len(hints) > 5


def test_views_that_do_not_stream_give_their_place_back(
    make_app: t.Callable[..., Flask],
) -> None:
    app, sse, _ = build(make_app, SSECORS_MAX_STREAMS=1, TESTING=False)
    client = stream_client(app)
    for _ in range(3):
        assert client.get("/maybe").status_code == 409
        assert client.get("/broken").status_code == 500
    with app.app_context():
        tracker = app.extensions["ssecors"].streams
        assert (tracker.pending, len(tracker.streams)) == (0, 0)
        assert sse.stats()["streams_refused_busy"] == 0
    reader = client.open_stream("/events", headers=EVENTSOURCE)
    assert reader.response.status_code == 200
    reader.close()


def test_concurrent_admissions_respect_the_limit(make_app: t.Callable[..., Flask]) -> None:
    """Places are reserved before the view runs, so views that block (a broker round trip)
    cannot let more streams in than the limit."""
    app = make_app(SSECORS_MAX_STREAMS=3)
    sse = SSECors(app)

    @app.get("/slow")
    @sse.stream()
    def slow() -> t.Any:
        gevent.sleep(0.05)
        return sse.subscribe("c")

    client = stream_client(app)
    responses = gevent.joinall(
        [gevent.spawn(client.get, "/slow", headers={"Origin": ALLOWED}) for _ in range(8)]
    )
    statuses = sorted(g.value.status_code for g in responses)
    assert statuses == [200, 200, 200, 503, 503, 503, 503, 503]
    for g in responses:
        g.value.close()


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True])
def test_max_streams_is_validated(make_app: t.Callable[..., Flask], value: object) -> None:
    with pytest.raises(ConfigError) as info:
        SSECors(make_app(SSECORS_MAX_STREAMS=value))
    assert [i.key for i in info.value.issues] == ["SSECORS_MAX_STREAMS"]


@pytest.mark.parametrize("value", [0, -1, "60", True, float("nan")])
def test_max_stream_age_is_validated(make_app: t.Callable[..., Flask], value: object) -> None:
    with pytest.raises(ConfigError) as info:
        SSECors(make_app(SSECORS_MAX_STREAM_AGE=value))
    assert [i.key for i in info.value.issues] == ["SSECORS_MAX_STREAM_AGE"]


# -- age ------------------------------------------------------------------------------------


def test_streams_rotate_after_their_maximum_age(make_app: t.Callable[..., Flask]) -> None:
    """The stream ends after at most SSECORS_MAX_STREAM_AGE seconds (at least 90 % of it),
    with a retry hint, and the reconnect resumes after the last event it received."""
    app, sse, _ = build(make_app, SSECORS_MAX_STREAM_AGE=0.5)
    client = stream_client(app)
    begin = time.monotonic()
    reader = client.open_stream("/events", headers=EVENTSOURCE)
    with app.app_context():
        sse.publish("c", Event("one"))
        first = reader.next_event(2)
        with pytest.raises(EOFError):
            reader.next_event(2)
        elapsed = time.monotonic() - begin
        sse.publish("c", Event("two"))
    assert 0.44 <= elapsed <= 0.6, elapsed
    assert b"retry: " in bytes(reader.raw).split(b"\n\n")[-2]
    resumed = client.open_stream(
        "/events", headers={**EVENTSOURCE, "Last-Event-ID": t.cast(str, first.id)}
    )
    assert resumed.next_event(2).data == "two"
    resumed.close()
    with app.app_context():
        assert sse.stats()["streams_ended"] == {"max-age": 1}


def test_stream_ages_are_jittered(make_app: t.Callable[..., Flask]) -> None:
    app, _, _ = build(make_app, SSECORS_MAX_STREAM_AGE=100.0)
    client = stream_client(app)
    readers = [client.open_stream("/events", headers=EVENTSOURCE) for _ in range(20)]
    with app.app_context():
        tracker = app.extensions["ssecors"].streams
        now = time.monotonic()
        ages = [stream._until - now for stream in tracker.streams]
    for reader in readers:
        reader.close()
    assert all(89.5 <= age <= 100.0 for age in ages), ages
    assert max(ages) - min(ages) > 1.0


def test_rotation_uses_the_configured_retry(make_app: t.Callable[..., Flask]) -> None:
    app, _, _ = build(make_app, SSECORS_MAX_STREAM_AGE=0.2, SSECORS_RETRY=2500)
    reader = stream_client(app).open_stream("/events", headers=EVENTSOURCE)
    with pytest.raises(EOFError):
        reader.next_event(2)
    assert bytes(reader.raw).endswith(b"retry: 2500\n\n")
    assert bytes(reader.raw).startswith(b"retry: 2500\n\n")


def test_a_generator_view_rotates_too(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(SSECORS_MAX_STREAM_AGE=0.3)
    sse = SSECors(app)

    @app.get("/ticks")
    @sse.stream(heartbeat=10)
    def ticks() -> t.Any:
        def generate() -> t.Iterator[Event]:
            for n in range(1000):
                yield Event(str(n), id=str(n))
                gevent.sleep(0.05)

        return generate()

    reader = stream_client(app).open_stream("/ticks", headers=EVENTSOURCE)
    begin = time.monotonic()
    received = []
    with pytest.raises(EOFError):
        while True:
            received.append(reader.next_event(2).data)
    assert 0.25 <= time.monotonic() - begin <= 0.45
    assert 3 <= len(received) <= 8


# -- shutdown -------------------------------------------------------------------------------


def test_end_streams_ends_every_stream_with_a_retry_hint(
    make_app: t.Callable[..., Flask],
) -> None:
    app, sse, calls = build(make_app)
    client = stream_client(app)
    readers = [client.open_stream("/events", headers=EVENTSOURCE) for _ in range(5)]
    with app.app_context():
        assert sse.end_streams() == 5
    for reader in readers:
        with pytest.raises(EOFError):
            reader.next_event(2)
        hint = int(bytes(reader.raw).split(b"retry: ")[1].split(b"\n")[0])
        assert 500 <= hint <= 3000
    late = client.get("/events", headers=EVENTSOURCE)
    assert late.status_code == 200 and b"retry: " in late.get_data()
    assert calls["view"] == 5
    with app.app_context():
        assert sse.stats()["streams_ended"] == {"shutdown": 5}
        assert sse.stats()["open_streams"] == 0


@pytest.fixture
def own_trackers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Process-wide shutdown reaches only the apps this test builds (others stay open)."""
    monkeypatch.setattr(lifecycle, "_trackers", weakref.WeakSet())


@pytest.mark.usefixtures("own_trackers")
def test_end_all_streams_wakes_a_generator_view(make_app: t.Callable[..., Flask]) -> None:
    app = make_app()
    sse = SSECors(app)

    @app.get("/silent")
    @sse.stream(heartbeat=30)
    def silent() -> t.Any:
        def generate() -> t.Iterator[Event]:
            gevent.sleep(3600)
            yield Event("never")

        return generate()

    reader = stream_client(app).open_stream("/silent", headers=EVENTSOURCE)
    reader.read_chunk(1)  # the opening comment; the view is now waiting
    gevent.spawn_later(0.05, lifecycle.end_all_streams)
    begin = time.monotonic()
    assert b"retry: " in reader.read_chunk(2)
    assert reader.read_chunk(2) == b""
    assert time.monotonic() - begin < 0.5


class _FakeGeventWorker:
    """Stands in for gunicorn's gevent worker: its handle_exit is the SIGTERM handler."""

    pid = 4242
    worker_connections = 100

    def __init__(self) -> None:
        self.alive = True

    def handle_exit(self, sig: int, frame: object) -> None:
        self.alive = False


@pytest.fixture
def fake_gevent_worker(monkeypatch: pytest.MonkeyPatch) -> t.Iterator[_FakeGeventWorker]:
    """This process as a gunicorn gevent worker: its SIGTERM handler is the worker's."""
    import sys
    import types

    ggevent = types.ModuleType("gunicorn.workers.ggevent")
    ggevent.GeventWorker = _FakeGeventWorker  # type: ignore[attr-defined]
    base = types.ModuleType("gunicorn.workers.base")
    base.Worker = _FakeGeventWorker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gunicorn.workers.ggevent", ggevent)
    monkeypatch.setitem(sys.modules, "gunicorn.workers.base", base)
    monkeypatch.setattr(lifecycle, "_watching", False)
    worker = _FakeGeventWorker()
    saved = {name: signal.getsignal(getattr(signal, name)) for name in lifecycle._STOP_SIGNALS}
    signal.signal(signal.SIGTERM, worker.handle_exit)
    try:
        yield worker
    finally:
        for name, previous in saved.items():
            signal.signal(getattr(signal, name), previous)


@pytest.mark.usefixtures("own_trackers")
def test_the_gunicorn_worker_stop_signal_is_chained(
    make_app: t.Callable[..., Flask], fake_gevent_worker: _FakeGeventWorker
) -> None:
    """When the app is set up in a gunicorn gevent worker, the worker's SIGTERM handler is
    wrapped: streams are told to end, then gunicorn's handler runs (alive = False)."""
    worker = fake_gevent_worker
    app, _, _ = build(make_app)
    handler = signal.getsignal(signal.SIGTERM)
    assert handler is not worker.handle_exit and callable(handler)  # at setup, before a stream
    reader = stream_client(app).open_stream("/events", headers=EVENTSOURCE)
    assert signal.getsignal(signal.SIGTERM) is handler
    handler(signal.SIGTERM, None)
    assert worker.alive is False
    with pytest.raises(EOFError):
        reader.next_event(2)
    assert b"retry: " in bytes(reader.raw)


@pytest.mark.usefixtures("own_trackers")
def test_the_worker_is_still_found_once_its_handler_is_chained(
    make_app: t.Callable[..., Flask], fake_gevent_worker: _FakeGeventWorker
) -> None:
    """Regression: once the stop handler was chained at setup, the worker could no longer be
    found through SIGTERM, and SSECORS_MAX_STREAMS lost its derived default (90 % of
    worker_connections)."""
    app, _, _ = build(make_app)
    assert signal.getsignal(signal.SIGTERM) != fake_gevent_worker.handle_exit
    assert lifecycle.gunicorn_worker() is fake_gevent_worker
    client = stream_client(app)
    reader = client.open_stream("/events", headers=EVENTSOURCE)
    assert app.extensions["ssecors"].streams.limit == 90
    reader.close()


@pytest.mark.usefixtures("own_trackers")
def test_nothing_is_chained_from_a_request(
    make_app: t.Callable[..., Flask], fake_gevent_worker: _FakeGeventWorker
) -> None:
    """Process-wide effects are decided at setup: an app set up with the key off, or outside
    the worker, never installs anything when its streams open."""
    app, _, _ = build(make_app, SSECORS_DRAIN_ON_SHUTDOWN=False)
    reader = stream_client(app).open_stream("/events", headers=EVENTSOURCE)
    assert signal.getsignal(signal.SIGTERM) == fake_gevent_worker.handle_exit
    reader.close()


@pytest.mark.usefixtures("own_trackers")
def test_the_gunicorn_hook_chains_for_a_preloaded_app(
    make_app: t.Callable[..., Flask],
    fake_gevent_worker: _FakeGeventWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``preload_app``: the app is set up before the worker exists; ``post_worker_init =
    end_streams_on_stop`` chains the handler in the worker."""
    from flask_ssecors.gunicorn import end_streams_on_stop

    worker = fake_gevent_worker
    monkeypatch.setattr(lifecycle, "gunicorn_worker", lambda: None)  # set up "in the arbiter"
    app, _, _ = build(make_app)
    assert signal.getsignal(signal.SIGTERM) == worker.handle_exit
    end_streams_on_stop(worker)
    handler = signal.getsignal(signal.SIGTERM)
    assert handler != worker.handle_exit and callable(handler)
    reader = stream_client(app).open_stream("/events", headers=EVENTSOURCE)
    handler(signal.SIGTERM, None)
    assert worker.alive is False
    with pytest.raises(EOFError):
        reader.next_event(2)


def test_nothing_is_chained_outside_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "_watching", False)
    before = signal.getsignal(signal.SIGTERM)
    lifecycle.watch_server()
    assert signal.getsignal(signal.SIGTERM) is before
