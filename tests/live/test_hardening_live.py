"""Tokens, capacity, stream age and graceful shutdown on the wire, under gunicorn -k gevent.

The app is :mod:`tests.live_apps.hardening`; every server runs in a subprocess on a free port and
is stopped by PID. The shutdown test holds 500 streams with a raw, selector-driven client (one
thread, no gevent in the pytest process) and measures how long they take to end after
``SIGTERM``; run it with ``-s`` to see the numbers.
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import signal
import socket
import threading
import time
import typing as t
import urllib.parse

import pytest

from flask_ssecors._parser import EventStreamParser
from flask_ssecors.tokens import ACCESS_LOG_FORMAT
from flask_ssecors.tokens import TOKEN_EXPIRED_EVENT
from tests.support.servers import free_port
from tests.support.servers import LiveServer
from tests.support.servers import RedisServer
from tests.support.wire import request
from tests.support.wire import StreamClient

if t.TYPE_CHECKING:
    from pathlib import Path

    from flask_ssecors.events import Event

pytestmark = pytest.mark.live

TARGET = "tests.live_apps.hardening:app"
ORIGIN = "http://localhost:5001"
OTHER_ORIGIN = "http://localhost:5002"
UA = "Mozilla/5.0 (X11; Linux x86_64) live-test"
BROWSER = {"Origin": ORIGIN, "User-Agent": UA, "Accept": "text/event-stream"}


def serve(tmp_path: Path, name: str, env: dict[str, str], *extra: str) -> LiveServer:
    settings = {"ORIGINS": f"{ORIGIN},{OTHER_ORIGIN}", **env}
    return LiveServer(TARGET, env=settings, extra_args=extra, log_path=tmp_path / f"{name}.log")


def get_token(port: int, **params: str) -> str:
    query = urllib.parse.urlencode(params)
    status, _, body = request(
        port, f"/token?{query}", {"Origin": ORIGIN, "User-Agent": UA}, method="POST"
    )
    assert status == 200, body
    return str(json.loads(body)["token"])


def publish(port: int, channel: str, count: int = 1) -> list[str]:
    status, _, body = request(port, f"/publish/{channel}?count={count}", method="POST")
    assert status == 200, body
    return list(json.loads(body)["ids"])


def stats(port: int) -> dict[str, t.Any]:
    status, _, body = request(port, "/stats")
    assert status == 200
    return dict(json.loads(body))


def wait_for(predicate: t.Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


# -- tokens -------------------------------------------------------------------------------------


def test_stream_closes_when_its_token_expires(tmp_path: Path) -> None:
    """The stream ends on time, after the token-expired event; the token then gets 401."""
    with serve(tmp_path, "expiry", {"HEARTBEAT": "0.5"}) as server:
        asked = time.monotonic()
        token = get_token(server.port, max_age="1.5", channels="room:1")
        answered = time.monotonic()
        with StreamClient(server.port, f"/secure/1?token={token}", BROWSER) as client:
            assert client.status == 200
            publish(server.port, "room:1")
            assert client.next_event(5).data == '{"n":0}'
            last = client.next_event(5)
            assert last.event == TOKEN_EXPIRED_EVENT
            client.read_all(5)
            ended = time.monotonic()
        # Issued between ``asked`` and ``answered``: it expires 1.5 s after some moment between
        # them (on a loaded machine the token request itself took 0.6 s once).
        assert asked + 1.5 - 0.3 <= ended <= answered + 1.5 + 0.5, (ended - asked, ended - answered)
        status, _, body = request(server.port, f"/secure/1?token={token}", BROWSER)
        assert (status, body) == (401, b"Unauthorized: stream token refused (token-expired).\n")
        counted = stats(server.port)["stats"]
        assert counted["streams_ended"] == {"token-expired": 1}
        assert counted["token_refusals"] == {"token-expired": 1}


def test_token_is_kept_out_of_every_log(tmp_path: Path) -> None:
    """With the documented access log format, no log line of the server holds the token:
    neither gunicorn's access log nor flask-ssecors' own lines, for accepted and refused
    requests alike. gunicorn's default format would log it (the control below)."""
    env = {"REQUEST_ID_HEADER": "X-Request-ID", "HEARTBEAT": "0.2"}
    args = ("--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT)
    with serve(tmp_path, "safe", env, *args) as server:
        token = get_token(server.port, channels="room:1")
        tampered = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
        with StreamClient(server.port, f"/secure/1?token={token}", BROWSER) as client:
            assert client.status == 200
        refusals = [
            (f"/secure/1?token={token}", {**BROWSER, "Origin": OTHER_ORIGIN}, 403),
            (f"/secure/1?token={token}", {**BROWSER, "User-Agent": "curl/8"}, 403),
            (f"/secure/2?token={token}", BROWSER, 403),
            (f"/secure/1?token={tampered}", BROWSER, 401),
            ("/secure/1", {**BROWSER, "Cookie": f"ssecors_token={tampered}"}, 401),
        ]
        for path, headers, expected in refusals:
            assert request(server.port, path, headers)[0] == expected
        wait_for(lambda: stats(server.port)["stats"]["streams_closed"] == 1, what="close")
    log = server.log_text()
    assert "GET /secure/1 HTTP/1.1" in log  # the access log is on
    assert "token-other-origin" in log and "token-channel-not-granted" in log
    for value in (token, tampered, token.split(".")[-1], tampered.split(".")[-1]):
        assert value not in log
    with serve(tmp_path, "default", {}, "--access-logfile", "-") as control:
        token = get_token(control.port)
        request(control.port, f"/secure/1?token={token}", {**BROWSER, "Origin": OTHER_ORIGIN})
    assert token in control.log_text(), "gunicorn's default format logs the query string"


def test_log_lines_cannot_be_forged_on_the_wire(tmp_path: Path) -> None:
    """Paths carrying %0d%0a or an escape sequence, and hostile origins and ids, stay on one
    escaped log line each. (HTTP/1.1 servers refuse raw control characters in header values;
    the in-process tests in test_requestid.py cover those.)"""
    env = {"REQUEST_ID_HEADER": "X-Request-ID"}
    with serve(tmp_path, "forgery", env) as server:
        token = get_token(server.port)
        forged = "/secure/x%0d%0aINFO%20flask_ssecors%20forged%0a%1b[2J"
        hostile = {"X-Request-ID": 'a"b c', "Last-Event-ID": "x" * 300}
        headers = {**BROWSER, "Origin": OTHER_ORIGIN, **hostile}
        assert request(server.port, f"{forged}?token={token}", headers)[0] == 403
        evil = {**BROWSER, "Origin": 'https://evil.example"\\'}
        assert request(server.port, forged, evil)[0] == 403
    lines = server.log_text().splitlines()
    assert not [line for line in lines if line.startswith("INFO flask_ssecors forged")]
    ours = [line for line in lines if re.search(r" flask_ssecors[._a-z]* \[", line)]
    assert sum("\\x0d\\x0aINFO flask_ssecors forged\\x0a\\x1b[2J" in line for line in ours) == 2
    assert all("\x1b" not in line for line in ours)
    assert any('origin "https://evil.example\\"\\\\"' in line for line in ours), ours


# -- capacity and age ---------------------------------------------------------------------------


def test_capacity_limit_on_the_wire(tmp_path: Path) -> None:
    """Over SSECORS_MAX_STREAMS, EventSource gets a 200 with a retry hint (not a terminal
    error), other clients 503 with Retry-After; a freed place is taken again."""
    env = {"MAX_STREAMS": "2", "BUSY_RETRY": "800", "HEARTBEAT": "0.2"}
    with serve(tmp_path, "capacity", env) as server:
        first = StreamClient(server.port, "/events/c", BROWSER)
        second = StreamClient(server.port, "/events/c", BROWSER)
        try:
            assert (first.status, second.status) == (200, 200)
            busy = StreamClient(server.port, "/events/c", BROWSER)
            body = busy.read_all(5)
            assert busy.status == 200
            assert busy.header("Content-Type") == "text/event-stream; charset=utf-8"
            assert busy.header("Access-Control-Allow-Origin") == ORIGIN
            assert busy.parser.retry is not None and 400 <= busy.parser.retry <= 1200, body
            busy.close()
            status, headers, _ = request(server.port, "/events/c", {"Origin": ORIGIN})
            assert status == 503
            assert dict(headers)["Retry-After"] == "1"
            first.close()
            wait_for(lambda: stats(server.port)["stats"]["open_streams"] == 1, what="release")
            third = StreamClient(server.port, "/events/c", BROWSER)
            publish(server.port, "c")
            assert third.next_event(5).data == '{"n":0}'
            third.close()
        finally:
            first.close()
            second.close()
        counted = stats(server.port)["stats"]
        assert counted["streams_refused_busy"] == 2


def test_stream_age_rotation_resumes_without_loss(tmp_path: Path) -> None:
    """Each stream ends after at most SSECORS_MAX_STREAM_AGE seconds (less jitter) with a
    retry hint; the client reconnects with Last-Event-ID and misses nothing."""
    with serve(tmp_path, "age", {"MAX_STREAM_AGE": "1.0", "HEARTBEAT": "0.3"}) as server:
        published: list[str] = []
        stop = threading.Event()

        def publisher() -> None:
            while not stop.is_set():
                published.extend(publish(server.port, "rot"))
                time.sleep(0.05)

        received: list[str] = []
        durations: list[float] = []
        thread = threading.Thread(target=publisher)
        client = StreamClient(server.port, "/events/rot", BROWSER)
        begin = time.monotonic()
        thread.start()
        try:
            while time.monotonic() - begin < 3.5:
                opened = time.monotonic()
                data = client.read_all(5)
                durations.append(time.monotonic() - opened)
                assert data.endswith(b"\n\n") and b"retry: " in data.rsplit(b"\n\n", 2)[-2]
                received.extend(e.id for e in client.pending if e.id)
                client.close()
                resume = {"Last-Event-ID": received[-1]} if received else {}
                client = StreamClient(server.port, "/events/rot", {**BROWSER, **resume})
        finally:
            stop.set()
            thread.join()
        try:
            while not received or received[-1] != published[-1]:
                received.append(t.cast(str, client.next_event(5).id))
        finally:
            client.close()
        assert len(durations) >= 3
        assert all(0.85 <= d <= 1.1 for d in durations), durations
        assert received == published
        assert stats(server.port)["stats"]["streams_ended"]["max-age"] >= 3


# -- graceful shutdown --------------------------------------------------------------------------


class _Swarm:
    """Many streams over raw sockets, driven by one selector: chunked framing decoded, events
    parsed as a browser parses them."""

    class Conn:
        def __init__(self, swarm: _Swarm, port: int, path: str, headers: dict[str, str]) -> None:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            self.sock.setblocking(False)
            self.port = port
            self.status: int | None = None
            self.buffer = b""
            self.chunk_left = -1  # -1: expecting a size line
            self.ended = False
            self.ended_at: float | None = None
            self.body = bytearray()
            swarm.selector.register(self.sock, selectors.EVENT_READ, self)

        def feed(self, data: bytes, owner: _Swarm) -> list[Event]:
            self.buffer += data
            events: list[Event] = []
            if self.status is None:
                if b"\r\n\r\n" not in self.buffer:
                    return events
                head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                self.status = int(head.split(b" ", 2)[1])
            while True:
                if self.chunk_left < 0:
                    if b"\r\n" not in self.buffer:
                        break
                    line, self.buffer = self.buffer.split(b"\r\n", 1)
                    if not line:
                        continue
                    self.chunk_left = int(line.split(b";")[0], 16)
                    if self.chunk_left == 0:
                        self.ended = True
                        break
                else:
                    piece = self.buffer[: self.chunk_left]
                    self.buffer = self.buffer[len(piece) :]
                    self.chunk_left -= len(piece)
                    self.body += piece
                    events.extend(owner.parsers[id(self)].feed(piece))
                    if self.chunk_left:
                        break
                    self.chunk_left = -1
            return events

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.parsers: dict[int, EventStreamParser] = {}

    def open(
        self, port: int, path: str, headers: dict[str, str], parser: EventStreamParser
    ) -> Conn:
        conn = self.Conn(self, port, path, headers)
        self.parsers[id(conn)] = parser
        return conn

    def pump(self, timeout: float, on_events: t.Callable[[Conn, list[Event]], None]) -> None:
        for key, _ in self.selector.select(timeout):
            conn: _Swarm.Conn = key.data
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            events = conn.feed(data, self) if data else []
            if not data:
                conn.ended = True
            on_events(conn, events)
            if conn.ended:
                conn.ended_at = conn.ended_at or time.monotonic()
                self.selector.unregister(conn.sock)
                conn.sock.close()

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()


STREAMS = 500
GRACEFUL_TIMEOUT = 10.0


@pytest.mark.redis
@pytest.mark.timeout(180)
def test_sigterm_ends_500_streams_within_the_graceful_timeout(tmp_path: Path) -> None:
    """SIGTERM to gunicorn with 500 open streams: every stream ends at once with a retry hint,
    well within the graceful timeout; each client reconnects to another server with its
    Last-Event-ID and misses no event published meanwhile (Redis broker, shared by both)."""
    with RedisServer() as redis:
        env = {"BROKER_URL": redis.url, "HEARTBEAT": "5"}
        args = ("--graceful-timeout", str(int(GRACEFUL_TIMEOUT)))
        first = serve(tmp_path, "first", env, *args).start()
        second = serve(tmp_path, "second", env, *args).start()
        swarm = _Swarm()
        try:
            _run_shutdown(first, second, swarm)
        finally:
            swarm.close()
            first.stop()
            second.stop()


def _run_shutdown(first: LiveServer, second: LiveServer, swarm: _Swarm) -> None:
    parsers = [EventStreamParser() for _ in range(STREAMS)]
    received: list[list[str]] = [[] for _ in range(STREAMS)]
    on_first: list[_Swarm.Conn] = []
    on_second: dict[int, _Swarm.Conn] = {}
    index: dict[int, int] = {}
    retry_hints = [False] * STREAMS

    def on_events(conn: _Swarm.Conn, events: list[Event]) -> None:
        n = index[id(conn)]
        received[n].extend(e.id for e in events if e.id is not None)
        if conn.port == first.port and conn.ended and n not in on_second:
            retry_hints[n] = parsers[n].retry is not None
            headers = dict(BROWSER)
            if parsers[n].last_event_id:
                headers["Last-Event-ID"] = parsers[n].last_event_id
            parsers[n] = EventStreamParser()
            parsers[n].last_event_id = headers.get("Last-Event-ID", "")
            again = swarm.open(second.port, "/events/swarm", headers, parsers[n])
            index[id(again)] = n
            on_second[n] = again

    for n in range(STREAMS):
        conn = swarm.open(first.port, "/events/swarm", BROWSER, parsers[n])
        index[id(conn)] = n
        on_first.append(conn)
    deadline = time.monotonic() + 30
    while not all(c.body for c in on_first) and time.monotonic() < deadline:
        swarm.pump(0.1, on_events)
    assert all(c.status == 200 and c.body for c in on_first), "not every stream opened"
    assert stats(first.port)["stats"]["open_streams"] == STREAMS

    published: list[str] = []
    stop = threading.Event()

    def publisher() -> None:
        while not stop.is_set():
            published.extend(publish(second.port, "swarm"))
            time.sleep(0.05)

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            swarm.pump(0.05, on_events)
        assert first.process is not None
        sigterm = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        exited: float | None = None
        while time.monotonic() - sigterm < GRACEFUL_TIMEOUT + 5:
            swarm.pump(0.05, on_events)
            if exited is None and first.process.poll() is not None:
                exited = time.monotonic()
            if exited is not None and all(c.ended for c in on_first):
                break
        all_ended = max((c.ended_at or float("inf")) for c in on_first) - sigterm
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            swarm.pump(0.05, on_events)
    finally:
        stop.set()
        thread.join()
    last = published[-1]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(r and r[-1] == last for r in received):
        swarm.pump(0.1, on_events)

    assert exited is not None, "gunicorn did not exit"
    process_exit = exited - sigterm
    print(
        f"\n{STREAMS} streams: all ended {all_ended:.2f} s after SIGTERM; "
        f"gunicorn exited after {process_exit:.2f} s (graceful timeout {GRACEFUL_TIMEOUT:g} s); "
        f"{len(published)} events published"
    )
    assert all_ended < GRACEFUL_TIMEOUT, all_ended
    assert process_exit < GRACEFUL_TIMEOUT, process_exit
    assert first.process.returncode == 0
    assert "graceful timeout" not in first.log_text().lower()
    assert all(retry_hints), f"{retry_hints.count(False)} streams ended without a retry hint"
    assert len(on_second) == STREAMS
    missing = [n for n in range(STREAMS) if received[n] != published]
    assert not missing, (
        f"{len(missing)} clients lost or repeated events, e.g. {received[missing[0]][:5]}..."
    )


@pytest.fixture(autouse=True)
def _free_port_sanity() -> None:
    """Fail early on a machine without loopback networking."""
    free_port()
