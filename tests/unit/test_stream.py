"""Stream responses in-process, through the Flask test client and :class:`SSETestClient`.

docs/streams.rst ("What the response carries", "Heartbeats and departed clients"): headers complete
and pinned when the view returns (and never hop-by-hop, ``Content-Length`` or
``Content-Encoding``), first bytes at once, heartbeats after silence, the subscription and the
generator released when the client leaves, and the request context not kept alive by the stream.
The same behaviour on a real server, over real sockets, is in ``test_live_streams.py``.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import gc
import logging
import time
import typing as t
import weakref

import gevent
import pytest
from flask import Flask
from flask import g
from flask import request
from flask import Response
from flask import session
from flask.globals import request_ctx
from werkzeug.datastructures import Headers

from flask_ssecors import Event
from flask_ssecors import SSECors
from flask_ssecors._config import StreamOptions
from flask_ssecors._stream import EventStream
from flask_ssecors._stream import SlowClientError
from flask_ssecors.exceptions import HeaderConflictError
from flask_ssecors.testing import EventStreamReader
from flask_ssecors.testing import SSETestClient

ALLOWED = "https://app.example.com"
ORIGIN = {"Origin": ALLOWED}
CACHE_CONTROL = "private, no-cache, no-store, no-transform, max-age=0"
#: Headers a stream response must never carry (docs/streams.rst, "What the response carries").
NEVER = ("Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Content-Encoding")

MakeApp = cabc.Callable[..., Flask]


@dataclasses.dataclass
class Site:
    """A testing app with a subscription stream at ``/sub/<channel>``."""

    app: Flask
    sse: SSECors
    client: SSETestClient

    def open(self, path: str = "/sub/c", **kwargs: t.Any) -> EventStreamReader:
        kwargs.setdefault("headers", ORIGIN)
        return self.client.open_stream(path, **kwargs)

    def count(self, channel: str | None = None) -> int:
        with self.app.app_context():
            return self.sse.subscriber_count(channel)

    def publish(self, channel: str, event: Event) -> str:
        with self.app.app_context():
            return self.sse.publish(channel, event)


def build(make_app: MakeApp, **config: object) -> Site:
    app = make_app(**config)
    sse = SSECors(app)

    @app.get("/sub/<channel>")
    @sse.stream()
    def sub(channel: str) -> t.Any:
        return sse.subscribe(channel)

    return Site(app, sse, t.cast(SSETestClient, app.test_client()))


@pytest.fixture
def site(make_app: MakeApp) -> Site:
    return build(make_app, SSECORS_HEARTBEAT=0.2)


def wait_for(predicate: cabc.Callable[[], bool], timeout: float = 2.0) -> float:
    """Let greenlets run until ``predicate()`` holds; return how long it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        gevent.sleep(0.005)
    return time.monotonic() - started


# -- opening bytes and headers -------------------------------------------------------------


def test_opening_bytes_are_a_comment(site: Site) -> None:
    with site.open() as stream:
        assert stream.read_chunk(timeout=1) == b": ok\n\n"


@pytest.mark.parametrize(
    ("config", "view_retry", "expected"),
    [
        ({"SSECORS_RETRY": 2500}, None, b"retry: 2500\n\n"),
        ({"SSECORS_RETRY": 0}, None, b"retry: 0\n\n"),
        ({}, 1000, b"retry: 1000\n\n"),
        ({"SSECORS_RETRY": 2500}, 1000, b"retry: 1000\n\n"),
    ],
)
def test_opening_bytes_carry_retry_when_configured(
    make_app: MakeApp, config: dict[str, object], view_retry: int | None, expected: bytes
) -> None:
    app = make_app(**config)
    sse = SSECors(app)
    overrides = {} if view_retry is None else {"retry": view_retry}

    @app.get("/r")
    @sse.stream(**overrides)
    def r() -> t.Any:
        return sse.subscribe("c")

    with t.cast(SSETestClient, app.test_client()).open_stream("/r", headers=ORIGIN) as stream:
        assert stream.read_chunk(timeout=1) == expected


def test_first_bytes_go_out_before_any_event(make_app: MakeApp) -> None:
    app = make_app()
    sse = SSECors(app)

    @app.get("/late")
    @sse.stream()
    def late() -> t.Any:
        def generate() -> cabc.Iterator[str]:
            gevent.sleep(30)
            yield "late"

        return generate()

    client = t.cast(SSETestClient, app.test_client())
    started = time.monotonic()
    with client.open_stream("/late", headers=ORIGIN) as stream:
        assert stream.read_chunk(timeout=1) == b": ok\n\n"
        assert time.monotonic() - started < 0.5


def test_stream_headers_exactly(site: Site) -> None:
    with site.open() as stream:
        response = stream.response
        assert response.status_code == 200
        assert list(response.headers.items()) == [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", CACHE_CONTROL),
            ("X-Accel-Buffering", "no"),
            ("Vary", "Origin"),
            ("Access-Control-Allow-Origin", ALLOWED),
        ]


def test_stream_headers_with_credentials_and_exposed_headers(make_app: MakeApp) -> None:
    site = build(make_app, SSECORS_ALLOW_CREDENTIALS=True, SSECORS_EXPOSE_HEADERS=["X-Stream-Id"])
    with site.open() as stream:
        headers = stream.response.headers
        assert headers["Access-Control-Allow-Origin"] == ALLOWED
        assert headers["Access-Control-Allow-Credentials"] == "true"
        assert headers["Access-Control-Expose-Headers"].lower() == "x-stream-id"
        assert headers["Vary"] == "Origin"


def test_cache_control_forbids_caching_and_transforms(site: Site) -> None:
    with site.open() as stream:
        tokens = {v.strip() for v in stream.response.headers["Cache-Control"].split(",")}
    assert {"no-cache", "no-store", "no-transform"} <= tokens


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("headers", [ORIGIN, {}], ids=["cross-origin", "no-origin"])
def test_never_hop_by_hop_length_or_encoding(
    site: Site, method: str, headers: dict[str, str]
) -> None:
    response = site.client.open("/sub/c", method=method, headers=headers)
    try:
        for name in NEVER:
            assert name not in response.headers
        assert response.headers["Vary"] == "Origin"
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    finally:
        response.close()


def test_same_origin_stream_has_vary_but_no_cors_headers(site: Site) -> None:
    with site.open(headers={}) as stream:
        headers = stream.response.headers
        assert headers["Vary"] == "Origin"
        assert not [k for k, _ in headers.items() if k.lower().startswith("access-control-")]


# -- pinned headers ----------------------------------------------------------------------


def _set_content_type(r: Response) -> None:
    r.headers["Content-Type"] = "text/plain"


def _set_mimetype(r: Response) -> None:
    r.mimetype = "text/html"


def _add_content_encoding(r: Response) -> None:
    r.headers.add("Content-Encoding", "gzip")


def _set_content_length(r: Response) -> None:
    r.content_length = 10


def _add_connection(r: Response) -> None:
    r.headers["Connection"] = "keep-alive"


def _extend_keep_alive(r: Response) -> None:
    r.headers.extend({"Keep-Alive": "timeout=5"})


def _setdefault_transfer_encoding(r: Response) -> None:
    r.headers.setdefault("Transfer-Encoding", "chunked")


def _replace_vary(r: Response) -> None:
    r.headers["Vary"] = "Accept-Encoding"


def _discard_vary_origin(r: Response) -> None:
    r.vary.discard("Origin")


def _delete_cache_control(r: Response) -> None:
    del r.headers["Cache-Control"]


def _cache_for_a_minute(r: Response) -> None:
    r.cache_control.max_age = 60


def _buffer_at_the_proxy(r: Response) -> None:
    r.headers["X-Accel-Buffering"] = "yes"


def _replace_headers(r: Response) -> None:
    r.headers = Headers({"Content-Type": "text/event-stream; charset=utf-8"})


def _clear_headers(r: Response) -> None:
    r.headers.clear()


def _set_cors(r: Response) -> None:
    r.headers["Access-Control-Allow-Origin"] = "*"


@pytest.mark.parametrize(
    "change",
    [
        _set_content_type,
        _set_mimetype,
        _add_content_encoding,
        _set_content_length,
        _add_connection,
        _extend_keep_alive,
        _setdefault_transfer_encoding,
        _replace_vary,
        _discard_vary_origin,
        _delete_cache_control,
        _cache_for_a_minute,
        _buffer_at_the_proxy,
        _replace_headers,
        _clear_headers,
        _set_cors,
    ],
)
def test_changing_pinned_headers_after_the_view_raises(
    site: Site, change: cabc.Callable[[Response], None]
) -> None:
    """An after_request hook (a compression or caching extension, say) that changes what the
    stream pinned is an error, not a silently broken stream; and the subscription the view took
    is released although the response is never served."""

    @site.app.after_request
    def hook(response: Response) -> Response:
        change(response)
        return response

    with pytest.raises(HeaderConflictError):
        site.client.get("/sub/c", headers=ORIGIN)
    gc.collect()
    assert site.count() == 0


def test_response_replaced_by_a_hook_releases_the_subscription(site: Site) -> None:
    @site.app.after_request
    def hook(response: Response) -> Response:
        return Response("replaced")

    response = site.client.get("/sub/c", headers=ORIGIN)
    assert response.get_data() == b"replaced"
    gc.collect()
    assert site.count() == 0


def test_other_headers_may_still_be_added_by_hooks(site: Site) -> None:
    @site.app.after_request
    def hook(response: Response) -> Response:
        response.headers["X-Request-Id"] = "42"
        response.set_cookie("seen", "1")
        response.vary.add("Cookie")
        return response

    with site.open() as stream:
        headers = stream.response.headers
        assert headers["X-Request-Id"] == "42"
        assert headers["Set-Cookie"].startswith("seen=1")
        assert headers["Vary"] == "Origin, Cookie"
        assert headers["Content-Type"] == "text/event-stream; charset=utf-8"


def test_session_cookie_is_still_set(make_app: MakeApp) -> None:
    app = make_app()
    sse = SSECors(app)

    @app.get("/login-stream")
    @sse.stream()
    def login_stream() -> t.Any:
        session["user"] = "ada"
        return sse.subscribe("c")

    client = t.cast(SSETestClient, app.test_client())
    with client.open_stream("/login-stream", headers=ORIGIN) as stream:
        headers = stream.response.headers
        assert headers["Set-Cookie"].startswith("session=")
        vary = {v.strip() for v in headers["Vary"].split(",")}
        assert vary == {"Origin", "Cookie"}
        assert stream.read_chunk(timeout=1) == b": ok\n\n"


def test_headers_are_locked_once_the_response_started(site: Site) -> None:
    served: list[Response] = []

    @site.app.after_request
    def hook(response: Response) -> Response:
        served.append(response)
        return response

    with site.open() as stream:
        assert stream.read_chunk(timeout=1) == b": ok\n\n"
        (response,) = served
        with pytest.raises(HeaderConflictError):
            response.headers["X-Late"] = "1"
        with pytest.raises(HeaderConflictError):
            response.set_cookie("late", "1")
        assert "X-Late" not in response.headers
        assert "Set-Cookie" not in response.headers


# -- what views may return ---------------------------------------------------------------


def test_generator_yielding_events_str_and_dict(make_app: MakeApp) -> None:
    app = make_app()
    sse = SSECors(app)

    @app.get("/mixed")
    @sse.stream()
    def mixed() -> t.Any:
        yield Event("a\nb", event="note", id="7")
        yield "plain"
        yield {"k": [1, 2]}

    client = t.cast(SSETestClient, app.test_client())
    with client.open_stream("/mixed", headers=ORIGIN) as stream:
        events = stream.events(3)
        assert [(e.data, e.event, e.id) for e in events] == [
            ("a\nb", "note", "7"),
            ("plain", None, "7"),  # the browser keeps the last id
            ('{"k":[1,2]}', None, "7"),
        ]
        with pytest.raises(EOFError):
            stream.next_event(timeout=1)
    assert stream.raw.endswith(b'data: {"k":[1,2]}\n\n')


def test_view_returning_a_list_of_events(make_app: MakeApp) -> None:
    app = make_app()
    sse = SSECors(app)

    @app.get("/list")
    @sse.stream()
    def listed() -> t.Any:
        return [Event("one"), "two", {"three": 3}]

    client = t.cast(SSETestClient, app.test_client())
    with client.open_stream("/list", headers=ORIGIN) as stream:
        assert [e.data for e in stream.events(3)] == ["one", "two", '{"three":3}']


def test_view_returning_a_response_passes_through(make_app: MakeApp) -> None:
    app = make_app()
    sse = SSECors(app)

    @app.get("/denied")
    @sse.stream()
    def denied() -> t.Any:
        return Response("log in first", status=401, mimetype="text/plain")

    response = app.test_client().get("/denied", headers=ORIGIN)
    assert response.status_code == 401
    assert response.get_data() == b"log in first"
    assert response.mimetype == "text/plain"


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("data: forged\n\n", "str"),
        (b"data: raw\n\n", "bytes"),
        ({"a": 1}, "dict"),
        (Event("single"), "Event"),
        (None, "NoneType"),
        (42, "int"),
    ],
)
def test_view_returning_something_else_is_a_type_error(
    make_app: MakeApp, value: object, name: str
) -> None:
    app = make_app()
    sse = SSECors(app)

    @app.get("/wrong")
    @sse.stream()
    def wrong() -> t.Any:
        return value

    with pytest.raises(TypeError, match=f"must return or yield events.*returned {name}$"):
        app.test_client().get("/wrong", headers=ORIGIN)


@dataclasses.dataclass
class Probe:
    """What a generator view did: how far it got and whether its ``finally`` ran."""

    yielded: int = 0
    finished: bool = False


def probe_site(
    make_app: MakeApp, items: cabc.Callable[[], cabc.Iterator[object]]
) -> tuple[SSETestClient, Probe]:
    app = make_app(SSECORS_HEARTBEAT=0.2)
    sse = SSECors(app)
    probe = Probe()

    @app.get("/probe")
    @sse.stream()
    def view() -> t.Any:
        def generate() -> cabc.Iterator[object]:
            try:
                for item in items():
                    yield item
                    probe.yielded += 1
            finally:
                probe.finished = True

        return generate()

    return t.cast(SSETestClient, app.test_client()), probe


@pytest.mark.parametrize(
    "bad",
    [b"data: raw\n\n", bytearray(b"raw"), memoryview(b"raw"), None, object(), float("nan")],
    ids=["bytes", "bytearray", "memoryview", "None", "object", "nan"],
)
def test_unsendable_item_ends_the_stream_and_is_logged(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, bad: object
) -> None:
    def items() -> cabc.Iterator[object]:
        yield "before"
        yield bad
        yield "after"

    client, probe = probe_site(make_app, items)
    with caplog.at_level(logging.ERROR, "flask_ssecors"):
        with client.open_stream("/probe", headers=ORIGIN) as stream:
            assert stream.next_event(timeout=1).data == "before"
            with pytest.raises(EOFError):
                stream.next_event(timeout=1)
        assert b"raw" not in stream.raw
        assert b"after" not in stream.raw
    assert probe.finished
    (record,) = [r for r in caplog.records if r.name.startswith("flask_ssecors")]
    assert "cannot be sent" in record.getMessage()
    assert record.exc_info is not None


def test_generator_raising_ends_the_stream_and_is_logged(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    def items() -> cabc.Iterator[object]:
        yield "one"
        raise RuntimeError("view failed")

    client, probe = probe_site(make_app, items)
    with (
        caplog.at_level(logging.ERROR, "flask_ssecors"),
        client.open_stream("/probe", headers=ORIGIN) as stream,
    ):
        assert stream.next_event(timeout=1).data == "one"
        with pytest.raises(EOFError):
            stream.next_event(timeout=1)
        assert stream.response.status_code == 200
    assert probe.finished
    (record,) = [r for r in caplog.records if r.name.startswith("flask_ssecors")]
    assert "raised" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


# -- cleanup -----------------------------------------------------------------------------


def test_closing_the_reader_releases_the_subscription(site: Site) -> None:
    stream = site.open()
    assert stream.read_chunk(timeout=1) == b": ok\n\n"
    assert site.count("c") == 1
    stream.close()
    assert site.count() == 0


def test_closing_the_reader_runs_the_generators_finally(make_app: MakeApp) -> None:
    def items() -> cabc.Iterator[object]:
        yield "first"
        gevent.sleep(60)
        yield "never"

    client, probe = probe_site(make_app, items)
    stream = client.open_stream("/probe", headers=ORIGIN)
    assert stream.next_event(timeout=1).data == "first"
    assert not probe.finished
    stream.close()
    wait_for(lambda: probe.finished, timeout=1)
    assert probe.yielded == 1


def test_closing_before_the_generator_started(make_app: MakeApp) -> None:
    started: list[bool] = []

    def items() -> cabc.Iterator[object]:
        started.append(True)
        yield "x"

    client, _ = probe_site(make_app, items)
    stream = client.open_stream("/probe", headers=ORIGIN)
    stream.close()
    gevent.sleep(0.05)
    assert not started


def test_generator_that_subscribes_releases_in_finally(make_app: MakeApp) -> None:
    """The documented pattern for a generator over a subscription: release it in finally."""
    app = make_app(SSECORS_HEARTBEAT=0.2)
    sse = SSECors(app)

    @app.get("/wrapped")
    @sse.stream()
    def wrapped() -> t.Any:
        subscription = sse.subscribe("c")

        def generate() -> cabc.Iterator[object]:
            try:
                while True:
                    item = subscription.get(1.0)
                    if item is not None:
                        yield Event("seen")
            finally:
                subscription.close()

        return generate()

    client = t.cast(SSETestClient, app.test_client())
    stream = client.open_stream("/wrapped", headers=ORIGIN)
    with app.app_context():
        sse.publish("c", Event("x"))
        assert stream.next_event(timeout=1).data == "seen"
        assert sse.subscriber_count() == 1
        stream.close()
        wait_for(lambda: sse.subscriber_count() == 0, timeout=1)


def test_head_releases_its_subscription(site: Site) -> None:
    response = site.client.open("/sub/c", method="HEAD", headers=ORIGIN)
    assert response.status_code == 200
    assert response.get_data() == b""
    response.close()
    assert site.count() == 0


# -- heartbeats --------------------------------------------------------------------------


def test_heartbeat_after_silence(site: Site) -> None:
    with site.open(include_comments=True) as stream:
        assert stream.next_event(timeout=1).comment == "ok"
        gaps = []
        for _ in range(3):
            started = time.monotonic()
            beat = stream.next_event(timeout=1)
            gaps.append(time.monotonic() - started)
            assert beat.comment == "" and beat.data is None
        assert stream.raw.endswith(b":\n\n")
    assert all(0.15 <= gap < 0.6 for gap in gaps), gaps


def test_heartbeat_on_a_silent_generator(make_app: MakeApp) -> None:
    def items() -> cabc.Iterator[object]:
        gevent.sleep(60)
        yield "never"

    client, _ = probe_site(make_app, items)
    with client.open_stream("/probe", headers=ORIGIN, include_comments=True) as stream:
        assert stream.next_event(timeout=1).comment == "ok"
        started = time.monotonic()
        assert stream.next_event(timeout=1).comment == ""
        assert 0.15 <= time.monotonic() - started < 0.6


def test_no_heartbeat_while_events_flow(site: Site) -> None:
    def publisher() -> None:
        for n in range(8):
            site.publish("c", Event(n))
            gevent.sleep(0.08)

    with site.open(include_comments=True) as stream:
        assert stream.next_event(timeout=1).comment == "ok"
        job = gevent.spawn(publisher)
        events = stream.events(8, timeout=1)
        job.join()
    assert [e.data for e in events] == [str(n) for n in range(8)]


# -- the request context ---------------------------------------------------------------


def test_stream_does_not_keep_the_request_context(make_app: MakeApp) -> None:
    """While the stream is open, the request context, its request and ``g`` are gone: a
    stream holds no reference to them (thousands of open streams must not each keep a
    request, its environ and everything ``g`` collected)."""
    app = make_app()
    sse = SSECors(app)
    refs: dict[str, weakref.ref[object]] = {}

    def remember() -> None:
        refs["context"] = weakref.ref(t.cast(t.Any, request_ctx)._get_current_object())
        refs["request"] = weakref.ref(t.cast(t.Any, request)._get_current_object())
        refs["g"] = weakref.ref(g._get_current_object())

    @app.get("/sub")
    @sse.stream()
    def sub() -> t.Any:
        remember()
        g.big = bytearray(1 << 20)
        return sse.subscribe("c")

    @app.get("/gen")
    @sse.stream()
    def gen() -> t.Any:
        remember()
        last_id = request.headers.get("Last-Event-ID")  # read what it needs, in the view

        def generate() -> cabc.Iterator[object]:
            yield {"resumed_after": last_id}
            gevent.sleep(60)

        return generate()

    client = t.cast(SSETestClient, app.test_client())
    for path in ("/sub", "/gen"):
        refs.clear()
        with client.open_stream(path, headers=ORIGIN) as stream:
            stream.read_chunk(timeout=1)
            if path == "/gen":
                assert stream.next_event(timeout=1).data == '{"resumed_after":null}'
            gc.collect()
            alive = sorted(name for name, ref in refs.items() if ref() is not None)
            assert alive == [], f"{path} keeps {alive} alive"


def test_request_context_check_detects_a_pinning_view(make_app: MakeApp) -> None:
    """The check above can fail: a generator that holds on to ``g`` keeps it alive."""
    app = make_app()
    sse = SSECors(app)
    refs: list[weakref.ref[object]] = []

    @app.get("/pinning")
    @sse.stream()
    def pinning() -> t.Any:
        held = g._get_current_object()
        refs.append(weakref.ref(held))

        def generate() -> cabc.Iterator[object]:
            yield {"holding": type(held).__name__}
            gevent.sleep(60)

        return generate()

    client = t.cast(SSETestClient, app.test_client())
    with client.open_stream("/pinning", headers=ORIGIN) as stream:
        stream.next_event(timeout=1)
        gc.collect()
        assert refs[0]() is not None
    wait_for(lambda: gc.collect() >= 0 and refs[0]() is None, timeout=1)


def test_test_client_reader_may_pause_longer_than_the_send_timeout(make_app: MakeApp) -> None:
    """Regression: the test client read in the test's greenlet, so the send timer armed for
    the last chunk fired in the test itself while it paused between reads."""
    site = build(make_app, SSECORS_SEND_TIMEOUT=0.05, SSECORS_HEARTBEAT=5.0)
    with site.open() as stream:
        assert stream.read_chunk(timeout=1) == b": ok\n\n"
        gevent.sleep(0.2)
        site.publish("c", Event("after the pause"))
        assert stream.next_event(timeout=1).data == "after the pause"
        gevent.sleep(0.2)
        assert site.count() == 1
    assert site.count() == 0


# -- the stream iterable with a stand-in server ----------------------------------------


def options(**changes: t.Any) -> StreamOptions:
    base = StreamOptions(heartbeat=5.0, retry=None, queue_size=100, send_timeout=5.0)
    return dataclasses.replace(base, **changes)


def test_write_that_does_not_complete_in_time_fails() -> None:
    """A server greenlet blocked writing to a client that does not read gets
    :class:`SlowClientError`, a ``ConnectionResetError`` that servers treat as a disconnect."""
    from flask_ssecors.brokers import MemoryBroker

    broker = MemoryBroker()
    stream = EventStream(broker.subscribe("c"), options(send_timeout=0.1))
    written: list[bytes] = []

    def server() -> None:
        try:
            for chunk in stream:
                written.append(chunk)
                gevent.sleep(10)  # a write the client never accepts
        finally:
            stream.close()

    worker = gevent.spawn(server)
    worker.join(2)
    assert isinstance(worker.exception, SlowClientError)
    assert isinstance(worker.exception, ConnectionResetError)
    assert written == [b": ok\n\n"]
    assert broker.subscriber_count() == 0


def test_send_timeout_does_not_count_waiting_for_events() -> None:
    """Only writes are timed: a stream idle longer than the send timeout is fine."""
    from flask_ssecors.brokers import MemoryBroker

    broker = MemoryBroker()
    stream = EventStream(broker.subscribe("c"), options(heartbeat=0.15, send_timeout=0.05))
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        gevent.sleep(0.01)  # a prompt write
        if len(chunks) == 3:
            break
    broker.publish("c", Event("x"))
    chunks.append(next(stream))
    stream.close()  # the server closes the iterable after its last write
    gevent.sleep(0.1)  # the send timer does not outlive the stream
    assert chunks[:3] == [b": ok\n\n", b":\n\n", b":\n\n"]
    assert chunks[3].endswith(b"data: x\n\n")
    assert broker.subscriber_count() == 0


def test_a_stream_dropped_unclosed_is_closed_when_collected(
    make_app: t.Callable[..., Flask],
) -> None:
    """A test (or a broken server) that reads a chunk and lets the response go without closing
    it must not leave the send timer armed: 0.2 s later it would throw SlowClientError into
    whatever that greenlet runs. The stream is closed when collected, and its subscription is
    released."""
    app = make_app(SSECORS_SEND_TIMEOUT=0.2)
    sse = SSECors(app)

    @app.get("/events")
    @sse.stream()
    def events() -> t.Any:
        return sse.subscribe("dropped")

    def read_one_chunk_and_walk_away() -> None:
        response = app.test_client().get("/events", buffered=False)
        assert next(iter(response.response)) == b": ok\n\n"

    read_one_chunk_and_walk_away()
    gc.collect()
    gevent.sleep(0.4)  # past the send timeout: nothing is thrown into this greenlet
    with app.app_context():
        assert sse.subscriber_count() == 0
