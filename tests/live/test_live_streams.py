"""Streams on the wire: the live app under gunicorn's gevent worker (and gevent's pywsgi), in a
subprocess, read over raw sockets.

docs/streams.rst ("What the response carries", "Heartbeats and departed clients", "Slow
clients", "Last-Event-ID and replay"), observed where they matter: the headers the app hands to
``start_response`` and the ones on the wire, the first bytes before any event, heartbeats,
replay after ``Last-Event-ID`` and the reset event, cleanup after clients vanish, and slow
clients cut loose without holding anyone else up.

Timings are measured, not slept for. Run with ``-s`` to see them::

    .venv/bin/pytest tests/live/test_live_streams.py -q -s
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import dataclasses
import json
import statistics
import threading
import time
import typing as t
import uuid
from pathlib import Path

import pytest

from flask_ssecors.events import RESET_EVENT
from tests.support.servers import LiveServer
from tests.support.wire import request
from tests.support.wire import StreamClient

pytestmark = pytest.mark.live

APP = "tests.live_apps.streams:app"
ORIGIN = "http://localhost:5001"
HEARTBEAT = 0.5
SEND_TIMEOUT = 2.0
BACKLOG = 50
#: Slack for scheduling on a busy two-core machine, on top of what a bound allows.
MARGIN = 0.35
#: What a stream response never carries (docs/streams.rst, "What the response carries").
NEVER = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)
STREAM_HEADERS = [
    "Content-Type",
    "Cache-Control",
    "X-Accel-Buffering",
    "Vary",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
]

#: Numbers worth reporting, printed when the module ends (visible with ``-s``).
MEASURED: dict[str, object] = {}


@dataclasses.dataclass
class Server:
    """A running live app and how it was configured."""

    live: LiveServer
    name: str
    heartbeat: float
    send_timeout: float
    opening: bytes
    clients: list[StreamClient] = dataclasses.field(default_factory=list)

    @property
    def port(self) -> int:
        return self.live.port

    def get_json(self, path: str) -> t.Any:
        status, _, body = request(self.port, path)
        assert status == 200, (path, status, body, self.log_tail())
        return json.loads(body)

    def count(self, channel: str | None = None) -> int:
        path = "/count" if channel is None else f"/count?channel={channel}"
        return int(self.get_json(path)["count"])

    def generators(self) -> int:
        return int(self.get_json("/count")["generators"])

    def publish(self, channel: str, count: int = 1, size: int = 0) -> list[str]:
        status, _, body = request(
            self.port, f"/publish/{channel}?count={count}&size={size}", method="POST"
        )
        assert status == 200, (status, body)
        return list(json.loads(body)["ids"])

    def open(
        self, path: str, headers: dict[str, str] | None = None, **kwargs: t.Any
    ) -> StreamClient:
        """Open a stream (from the allowed origin unless ``headers`` say otherwise); it is
        closed after the test whatever happens."""
        all_headers = {"Origin": ORIGIN, **(headers or {})}
        client = StreamClient(self.port, path, all_headers, **kwargs)
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.clients:
            with contextlib.suppress(OSError):
                client.close()
        self.clients.clear()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.live.log_text().splitlines()[-lines:])


def wait_for(predicate: cabc.Callable[[], bool], timeout: float, interval: float = 0.01) -> float:
    """Poll until ``predicate()`` holds; return the time it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def start(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    *,
    server: str = "gunicorn",
    retry: int | None = None,
    **env: object,
) -> Server:
    settings = {"HEARTBEAT": HEARTBEAT, "SEND_TIMEOUT": SEND_TIMEOUT, "BACKLOG": BACKLOG, **env}
    environment = {key: str(value) for key, value in settings.items()}
    if retry is not None:
        environment["RETRY"] = str(retry)
    log: Path = tmp_path_factory.mktemp("live") / f"{name}.log"
    extra = ["--graceful-timeout", "1"] if server == "gunicorn" else []
    live = LiveServer(APP, env=environment, server=server, extra_args=extra, log_path=log)
    live.start()
    try:
        # The port listens before the worker has imported the app: wait for an answer, so
        # that no test measures the worker's start-up.
        wait_for(lambda: request(live.port, "/count", timeout=20)[0] == 200, 20)
    except BaseException:
        live.stop()
        raise
    opening = f"retry: {retry}\n\n".encode() if retry is not None else b": ok\n\n"
    return Server(
        live,
        name,
        float(settings["HEARTBEAT"]),  # type: ignore[arg-type]
        float(settings["SEND_TIMEOUT"]),  # type: ignore[arg-type]
        opening,
    )


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> cabc.Iterator[Server]:
    """Heartbeat 0.5 s, send timeout 2 s, queue 1000, backlog 50."""
    server = start(tmp_path_factory, "gunicorn", QUEUE_SIZE=1000)
    try:
        yield server
    finally:
        server.close_clients()
        server.live.stop()


@pytest.fixture(scope="module")
def small_queue(tmp_path_factory: pytest.TempPathFactory) -> cabc.Iterator[Server]:
    """A queue of 8 events, a longer send timeout (4 s), and ``retry:`` as the first bytes."""
    server = start(tmp_path_factory, "small-queue", QUEUE_SIZE=8, SEND_TIMEOUT=4.0, retry=1500)
    try:
        yield server
    finally:
        server.close_clients()
        server.live.stop()


@pytest.fixture(scope="module")
def pywsgi(tmp_path_factory: pytest.TempPathFactory) -> cabc.Iterator[Server]:
    server = start(tmp_path_factory, "pywsgi", server="pywsgi", QUEUE_SIZE=1000)
    try:
        yield server
    finally:
        server.close_clients()
        server.live.stop()


@pytest.fixture(params=["gunicorn", "pywsgi"])
def any_server(request: pytest.FixtureRequest) -> cabc.Iterator[Server]:
    server: Server = request.getfixturevalue(request.param)
    try:
        yield server
    finally:
        server.close_clients()


@pytest.fixture(autouse=True, scope="module")
def report() -> cabc.Iterator[None]:
    yield
    if MEASURED:
        print("\nlive stream measurements:")
        for key, value in MEASURED.items():
            print(f"  {key}: {value}")


# -- headers ---------------------------------------------------------------------------------


def test_stream_headers_on_the_wire(any_server: Server) -> None:
    stream = any_server.open(f"/events/{unique('headers')}")
    assert stream.status == 200
    assert stream.header("Content-Type") == "text/event-stream; charset=utf-8"
    cache = {v.strip() for v in (stream.header("Cache-Control") or "").split(",")}
    assert {"no-cache", "no-store", "no-transform"} <= cache
    assert stream.header("X-Accel-Buffering") == "no"
    assert stream.header("Vary") == "Origin"
    assert stream.headers_named("Access-Control-Allow-Origin") == [ORIGIN]
    assert stream.header("Access-Control-Allow-Credentials") == "true"
    assert stream.header("Content-Length") is None
    assert stream.header("Content-Encoding") is None
    # The server frames the body itself.
    assert stream.header("Transfer-Encoding") == "chunked"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_app_never_hands_the_server_hop_by_hop_headers(any_server: Server, method: str) -> None:
    """What reaches ``start_response`` is the app's doing; ``Connection`` and
    ``Transfer-Encoding`` on the wire are the server's. The test tells them apart."""
    paths = [f"/events/{unique('hop')}", "/silent", "/ticks?count=1"]
    wire: dict[str, set[str]] = {}
    for path in paths:
        stream = any_server.open(path, method=method)
        wire[path.partition("?")[0]] = {name.lower() for name, _ in stream.header_lines}
        stream.close()
    seen = any_server.get_json("/_start_response")
    for path, wire_names in wire.items():
        app_names = seen[path][-1]
        assert app_names == STREAM_HEADERS, path
        assert not {n.lower() for n in app_names} & NEVER
        added_by_server = wire_names - {n.lower() for n in app_names}
        if method == "GET":
            assert "transfer-encoding" in added_by_server
        if any_server.name == "gunicorn":
            assert "connection" in added_by_server
        assert not added_by_server & {"content-length", "content-encoding"}


# -- first bytes and heartbeats ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/events/{channel}", "/silent"])
@pytest.mark.parametrize("name", ["gunicorn", "small_queue", "pywsgi"])
def test_first_bytes_before_any_event(request: pytest.FixtureRequest, name: str, path: str) -> None:
    server: Server = request.getfixturevalue(name)
    stream = server.open(path.format(channel=unique("first")))
    first = stream.read_bytes(timeout=server.heartbeat)
    elapsed = time.monotonic() - stream.sent_at
    assert first == server.opening
    assert elapsed < server.heartbeat / 2, elapsed
    MEASURED[f"first bytes after request, {name} {path.split('/')[1]}"] = f"{elapsed * 1000:.1f} ms"
    stream.close()


@pytest.mark.parametrize("path", ["/events/{channel}", "/silent"])
def test_heartbeat_within_the_interval(any_server: Server, path: str) -> None:
    stream = any_server.open(path.format(channel=unique("beat")), include_comments=True)
    assert stream.next_event(timeout=1).comment == "ok"
    last = time.monotonic()
    gaps = []
    for _ in range(3):
        beat = stream.next_event(timeout=any_server.heartbeat + 2)
        now = time.monotonic()
        assert beat.comment == "" and beat.data is None
        gaps.append(now - last)
        last = now
    assert stream.raw.endswith(b":\n\n")
    heartbeat = any_server.heartbeat
    assert all(heartbeat * 0.8 <= gap <= heartbeat + MARGIN for gap in gaps), gaps
    MEASURED[f"heartbeat gaps, {any_server.name} {path.split('/')[1]}"] = [
        round(g, 3) for g in gaps
    ]


# -- replay and reset --------------------------------------------------------------------------


def test_replay_strictly_after_last_event_id(gunicorn: Server) -> None:
    channel = unique("replay")
    ids = gunicorn.publish(channel, count=10)
    stream = gunicorn.open(f"/events/{channel}", {"Last-Event-ID": ids[4]})
    replayed = stream.events(5, timeout=2)
    assert [e.id for e in replayed] == ids[5:]
    assert [json.loads(t.cast(str, e.data))["n"] for e in replayed] == list(range(5, 10))
    live = gunicorn.publish(channel, count=3)
    assert [e.id for e in stream.events(3, timeout=2)] == live
    seen = [e.id or "" for e in replayed] + live

    # The client vanishes; more is published; it comes back with the last id it saw.
    stream.abort()
    missed = gunicorn.publish(channel, count=4)
    again = gunicorn.open(f"/events/{channel}", {"Last-Event-ID": seen[-1]})
    assert [e.id for e in again.events(4, timeout=2)] == missed
    later = gunicorn.publish(channel, count=1)
    assert [e.id for e in again.events(1, timeout=2)] == later
    everything = seen + missed + later
    assert everything == ids[5:] + live + missed + later
    assert len(set(everything)) == len(everything)


def test_first_connect_resumes_from_the_query_parameter(gunicorn: Server) -> None:
    channel = unique("query")
    ids = gunicorn.publish(channel, count=4)
    stream = gunicorn.open(f"/events/{channel}?last_event_id={ids[1]}")
    assert [e.id for e in stream.events(2, timeout=2)] == ids[2:]


def test_header_wins_over_the_query_parameter(gunicorn: Server) -> None:
    channel = unique("both")
    ids = gunicorn.publish(channel, count=4)
    stream = gunicorn.open(f"/events/{channel}?last_event_id={ids[0]}", {"Last-Event-ID": ids[2]})
    assert [e.id for e in stream.events(1, timeout=2)] == ids[3:]


@pytest.mark.parametrize("stale", ["unknown", "older-than-backlog", "other-epoch"])
def test_reset_on_unknown_id(gunicorn: Server, stale: str) -> None:
    channel = unique("reset")
    ids = gunicorn.publish(channel, count=BACKLOG + 5)
    last_event_id = {
        "unknown": "not-an-id",
        "older-than-backlog": ids[0],
        "other-epoch": "0" + ids[-1],
    }[stale]
    stream = gunicorn.open(
        f"/events/{channel}", {"Last-Event-ID": last_event_id}, include_comments=True
    )
    assert stream.next_event(timeout=1).comment == "ok"
    reset = stream.next_event(timeout=2)
    assert reset.event == RESET_EVENT
    assert reset.id == ids[-1]
    live = gunicorn.publish(channel, count=1)
    assert [e.id for e in stream.events(1, timeout=2)] == live

    # Reconnecting with the reset's id resumes from there: no reset, nothing skipped.
    again = gunicorn.open(f"/events/{channel}", {"Last-Event-ID": reset.id})
    assert [e.id for e in again.events(1, timeout=2)] == live
    more = gunicorn.publish(channel, count=1)
    assert [e.id for e in again.events(1, timeout=2)] == more


def test_invalid_last_event_id_is_ignored(gunicorn: Server) -> None:
    """Control characters make the id invalid: treated as absent (live only, no reset)."""
    channel = unique("invalid")
    gunicorn.publish(channel, count=3)
    stream = gunicorn.open(f"/events/{channel}?last_event_id=1%0D%0Aevent:%20forged")
    assert stream.read_bytes(timeout=1) == gunicorn.opening
    live = gunicorn.publish(channel, count=1)
    (event,) = stream.events(1, timeout=2)
    assert (event.id, event.event) == (live[0], "message")


# -- clients that leave ------------------------------------------------------------------------


def _disconnect_cleanup(server: Server, how: str) -> float:
    channel = unique("gone")
    baseline = server.generators()
    streams = [server.open(f"/events/{channel}") for _ in range(20)]
    silent = [server.open("/silent") for _ in range(5)]
    for stream in [*streams, *silent]:
        assert stream.read_bytes(timeout=2) == server.opening
    wait_for(lambda: server.count(channel) == 20 and server.generators() == baseline + 5, 5)
    started = time.monotonic()
    for stream in [*streams, *silent]:
        if how == "abort":
            stream.abort()
        else:
            stream.close()
    wait_for(lambda: server.count(channel) == 0 and server.generators() == baseline, 10)
    elapsed = time.monotonic() - started
    bound = 2 * server.heartbeat + MARGIN
    assert elapsed <= bound, f"{elapsed:.3f} s > {bound} s\n{server.log_tail()}"
    return elapsed


@pytest.mark.parametrize("how", ["abort", "close"])
def test_clients_that_vanish_are_cleaned_up(any_server: Server, how: str) -> None:
    """20 subscription streams and 5 generator streams vanish (RST, or FIN without reading
    on): subscriptions and generators are released within two heartbeats."""
    elapsed = _disconnect_cleanup(any_server, how)
    MEASURED[f"cleanup after {how} of 25 streams, {any_server.name}"] = f"{elapsed:.3f} s"


def test_head_request_releases_its_subscription(any_server: Server) -> None:
    channel = unique("head")
    calls_before = any_server.get_json("/count")["view_calls"]
    status, headers, body = request(
        any_server.port, f"/events/{channel}", {"Origin": ORIGIN}, method="HEAD"
    )
    assert status == 200
    assert body == b""
    assert ("Content-Type", "text/event-stream; charset=utf-8") in headers
    assert any_server.get_json("/count")["view_calls"] == calls_before + 1
    wait_for(lambda: any_server.count(channel) == 0, 1)


# -- slow clients ------------------------------------------------------------------------------


@dataclasses.dataclass
class Reader:
    """A client reading on its own thread, recording each event's id and delivery latency."""

    client: StreamClient
    ids: list[str] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    error: BaseException | None = None

    def run(self, target: list[int], stop: threading.Event) -> None:
        try:
            while len(self.ids) < target[0] and not stop.is_set():
                try:
                    event = self.client.next_event(timeout=1)
                except TimeoutError:
                    continue
                received = time.time()
                if event.data is None:
                    continue
                self.latencies.append(received - json.loads(t.cast(str, event.data))["t"])
                self.ids.append(event.id or "")
        except BaseException as error:  # reported by the test
            self.error = error


def test_slow_reader_is_dropped_while_a_hundred_others_keep_receiving(gunicorn: Server) -> None:
    """A client stops reading (tiny receive buffer, never reads). A burst fills its socket
    buffers, so the server's write to it blocks; 100 readers then join the channel and events
    go on being published to all 101. The readers get every event, in order, on time, while
    the slow client's write stays blocked; after the send timeout the server cuts it off."""
    channel = unique("slow")
    slow = gunicorn.open(f"/events/{channel}", rcvbuf=1024, timeout=30)
    assert slow.read_bytes(timeout=2) == gunicorn.opening
    slow_connected = time.monotonic()
    wait_for(lambda: gunicorn.count(channel) == 1, 5)
    # More than the slow client's socket buffers hold (about 1.7 MB on loopback here).
    burst: list[str] = []
    for _ in range(15):
        burst += gunicorn.publish(channel, count=10, size=20_000)
    burst_end = time.monotonic()

    readers = [
        Reader(
            gunicorn.open(
                f"/events/{channel}", {"Last-Event-ID": burst[-1]}, keep_raw=False, timeout=30
            )
        )
        for _ in range(100)
    ]
    wait_for(lambda: gunicorn.count(channel) == 101, 5)
    joined = time.monotonic()
    assert joined - burst_end < gunicorn.send_timeout, "too slow to join before the drop"
    target = [1 << 30]
    stop = threading.Event()
    threads = [threading.Thread(target=r.run, args=(target, stop), daemon=True) for r in readers]
    for thread in threads:
        thread.start()
    published: list[str] = []
    dropped = None
    try:
        while time.monotonic() - joined < 20:
            published += gunicorn.publish(channel, count=5, size=2_000)
            if gunicorn.count(channel) == 100:
                dropped = time.monotonic()
                break
            time.sleep(0.05)
        assert dropped is not None, f"the slow client was never dropped\n{gunicorn.log_tail()}"
        before_drop = len(published)
        for _ in range(5):  # delivery goes on after the drop
            published += gunicorn.publish(channel, count=5, size=2_000)
            time.sleep(0.05)
        target[0] = len(published)
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop.set()
    for reader in readers:
        assert reader.error is None, reader.error
        assert reader.ids == published, "a reader missed, repeated or reordered events"
    assert gunicorn.count(channel) == 100, "a reader that kept up was dropped"
    assert dropped - burst_end >= gunicorn.send_timeout * 0.5
    # The server closed the slow connection: draining it ends without the final chunk.
    slow.read_all(timeout=10)
    assert slow.ended and not slow.complete, "the slow stream was not cut off"
    assert len(slow.raw) > 1_000_000

    latencies = sorted(lat for reader in readers for lat in reader.latencies)
    while_blocked = sorted(lat for reader in readers for lat in reader.latencies[:before_drop])
    MEASURED["slow reader: dropped after connect / after the burst"] = (
        f"{dropped - slow_connected:.2f} s / {dropped - burst_end:.2f} s"
    )
    MEASURED["slow reader: events to 100 readers while it was blocked / in all"] = (
        f"{before_drop} / {len(published)}"
    )
    MEASURED["100 readers: latency p50 / p99 / max, while the slow one was blocked"] = _percentiles(
        while_blocked
    )
    MEASURED["100 readers: latency p50 / p99 / max, all events"] = _percentiles(latencies)


def _percentiles(values: list[float]) -> str:
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return (
        f"{statistics.median(values) * 1000:.1f} / {p99 * 1000:.1f} / "
        f"{values[-1] * 1000:.1f} ms (n={len(values)})"
    )


def test_overflowing_subscriber_is_dropped_before_the_send_timeout(small_queue: Server) -> None:
    """With a queue of 8, a client whose writes block is dropped once 8 events wait for it,
    without waiting for the 4 s send timeout; the reader that keeps up loses nothing."""
    channel = unique("overflow")
    slow = small_queue.open(f"/events/{channel}", rcvbuf=1024, timeout=30)
    reader = small_queue.open(f"/events/{channel}", keep_raw=False)
    wait_for(lambda: small_queue.count(channel) == 2, 5)
    published: list[str] = []
    received: list[str] = []
    started = time.monotonic()
    dropped = None
    while time.monotonic() - started < 20:
        batch = small_queue.publish(channel, count=5, size=20_000)
        published += batch
        received += [e.id or "" for e in reader.events(5, timeout=5)]
        if small_queue.count(channel) == 1:
            dropped = time.monotonic()
            break
    assert dropped is not None, small_queue.log_tail()
    assert received == published
    # Dropped for overflow while its write was still blocked: once it reads again, the server
    # finishes that write and ends the stream cleanly, before the send timeout cut it off.
    slow.read_all(timeout=10)
    assert slow.ended and slow.complete, "the server gave up on the write instead"
    assert slow.raw.endswith(b"\n\n")
    more = small_queue.publish(channel, count=3)
    assert [e.id for e in reader.events(3, timeout=2)] == more
    MEASURED["small queue: events published until the drop"] = len(published)
    MEASURED["small queue: dropped after"] = f"{dropped - started:.2f} s"
