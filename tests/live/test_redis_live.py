"""The Redis broker across real processes: gunicorn -k gevent servers sharing a redis-server,
both started on free ports and stopped by PID; clients are raw sockets (tests/support/wire.py).

Timings measured here (recovery after a Redis restart, publish failure times, connection
counts) are printed: ``pytest -s tests/live/test_redis_live.py`` shows them.
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import json
import selectors
import signal
import threading
import time
import typing as t
from pathlib import Path

import pytest
import redis

from flask_ssecors.events import Event
from flask_ssecors.events import RESET_EVENT
from tests.support.servers import LiveServer
from tests.support.servers import RedisServer
from tests.support.servers import restart_on_same_port
from tests.support.wire import request
from tests.support.wire import StreamClient

pytestmark = [pytest.mark.redis, pytest.mark.live, pytest.mark.timeout(60)]

APP = "tests.live_apps.redis_app:create_app()"
HEARTBEAT = 0.5
BROKER_TIMEOUT = 1.0


def serve(redis_url: str, *, workers: int = 1, log_path: Path | None = None) -> LiveServer:
    env = {
        "BROKER_URL": redis_url,
        "HEARTBEAT": str(HEARTBEAT),
        "BROKER_TIMEOUT": str(BROKER_TIMEOUT),
        "WEB_CONCURRENCY": "1",
    }
    return LiveServer(APP, env=env, workers=workers, log_path=log_path).start()


@contextlib.contextmanager
def running(*servers: cabc.Callable[[], t.Any]) -> cabc.Iterator[list[t.Any]]:
    """Start servers in order; stop every one that started, in reverse, whatever happens."""
    started: list[t.Any] = []
    try:
        for start in servers:
            started.append(start())
        yield started
    finally:
        for server in reversed(started):
            server.stop()


def publish(server: LiveServer, channel: str, n: int, count: int = 1) -> tuple[int, t.Any]:
    status, _, body = request(
        server.port,
        f"/publish/{channel}?n={n}&count={count}",
        {"Content-Type": "application/json"},
        method="POST",
        body=b"{}",
    )
    return status, json.loads(body)


def stats(server: LiveServer) -> dict[str, t.Any]:
    _, _, body = request(server.port, "/stats")
    return t.cast(dict[str, t.Any], json.loads(body))


def open_stream(server: LiveServer, channel: str, last_event_id: str | None = None) -> StreamClient:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    client = StreamClient(server.port, f"/events/{channel}", headers, include_comments=True)
    assert client.status == 200
    return client


def number(event: Event) -> int:
    return int(json.loads(str(event.data))["n"])


def data_events(client: StreamClient, count: int, timeout: float = 10.0) -> list[Event]:
    """The next ``count`` events that carry data (heartbeat comments skipped)."""
    found: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        event = client.next_event(max(deadline - time.monotonic(), 0.01))
        if event.data is not None:
            found.append(event)
    return found


class Crowd:
    """Many streams read by one thread; every event and comment is logged with its arrival."""

    def __init__(self, clients: list[StreamClient]) -> None:
        self.clients = clients
        self.log: list[list[tuple[float, Event]]] = [[] for _ in clients]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Crowd:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for client in self.clients:
            client.abort()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            for index, client in enumerate(self.clients):
                selector.register(client.sock, selectors.EVENT_READ, index)
            while not self._stop.is_set():
                for key, _ in selector.select(0.05):
                    index = key.data
                    client = self.clients[index]
                    with contextlib.suppress(TimeoutError, OSError, EOFError):
                        client.read_bytes(0.2)
                        while _more_buffered(client):  # chunks that came in the same read
                            client.read_bytes(0.2)
                    now = time.monotonic()
                    self.log[index].extend((now, event) for event in client.pending)
                    client.pending.clear()
                    if client.ended:
                        selector.unregister(client.sock)

    def numbers(self, index: int) -> list[int]:
        return [
            number(event)
            for _, event in self.log[index]
            if event.data is not None and event.event != RESET_EVENT
        ]

    def wait_for(self, condition: cabc.Callable[[int], bool], timeout: float) -> list[int]:
        """Wait until ``condition(index)`` holds for every client; return those where not."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [i for i in range(len(self.clients)) if not condition(i)]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.05)


def _more_buffered(client: StreamClient) -> bool:
    """Whether the client's buffer holds more body without reading the socket."""
    buffered = client._buffer
    if client.ended:
        return False
    if client._remaining_chunk:
        return bool(buffered)
    return b"\r\n" in buffered.lstrip(b"\r\n")


@pytest.fixture(scope="module")
def shared_redis() -> cabc.Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def two_servers(shared_redis: RedisServer) -> cabc.Iterator[tuple[LiveServer, LiveServer]]:
    with running(lambda: serve(shared_redis.url), lambda: serve(shared_redis.url)) as servers:
        yield servers[0], servers[1]


def test_a_client_on_one_server_receives_what_is_published_through_the_other(
    two_servers: tuple[LiveServer, LiveServer],
) -> None:
    first, second = two_servers
    with open_stream(first, "across") as client:
        status, body = publish(second, "across", 0, count=3)
        assert status == 200
        events = data_events(client, 3)
        assert [e.id for e in events] == body["ids"]
        assert [number(e) for e in events] == [0, 1, 2]
    assert stats(first)["pid"] != stats(second)["pid"]


def test_a_client_hopping_between_servers_gets_every_event_once_in_order(
    two_servers: tuple[LiveServer, LiveServer],
) -> None:
    """A publisher keeps publishing through both servers while one client disconnects and
    reconnects with Last-Event-ID, alternating servers: every event once, in order."""
    servers = two_servers
    total = 200
    published: list[str] = []
    done = threading.Event()

    def publisher() -> None:
        for n in range(total):
            status, body = publish(servers[n % 2], "hops", n)
            assert status == 200, body
            published.extend(body["ids"])
            time.sleep(0.005)
        done.set()

    thread = threading.Thread(target=publisher, daemon=True)
    client = open_stream(servers[0], "hops")
    thread.start()
    seen: list[Event] = []
    hops = 0
    try:
        while len(seen) < total:
            seen += data_events(client, min(17, total - len(seen)))
            client.abort()
            hops += 1
            time.sleep(0.02)  # events published meanwhile are replayed
            client = open_stream(servers[hops % 2], "hops", last_event_id=seen[-1].id)
    finally:
        client.abort()
        thread.join(20)
    assert done.is_set()
    assert hops >= 10
    assert all(e.event != RESET_EVENT for e in seen)
    assert [number(e) for e in seen] == list(range(total))
    assert [e.id for e in seen] == published


def test_redis_killed_and_restarted_while_100_clients_stream_and_a_publisher_publishes(
    tmp_path: Path,
) -> None:
    """The durability drill: acknowledged writes are fsynced (appendfsync always), Redis gets
    SIGKILL and comes back on the same port with its AOF. Streams stay open with heartbeats,
    publishes during the outage fail fast with BrokerUnavailable, and afterwards every client
    has every successfully published event exactly once, in order."""
    redis_server = RedisServer(appendonly=True, directory=tmp_path).start()
    holder = [redis_server]
    try:
        with redis.Redis.from_url(redis_server.url) as admin:
            admin.config_set("appendfsync", "always")
        with running(lambda: serve(redis_server.url), lambda: serve(redis_server.url)) as (
            first,
            second,
        ):
            _durability_drill(first, second, holder, tmp_path)
    finally:
        holder[0].stop()


def _durability_drill(
    first: LiveServer,
    second: LiveServer,
    holder: list[RedisServer],
    tmp_path: Path,
) -> None:
    clients = [open_stream((first, second)[i % 2], "drill") for i in range(100)]
    results: list[tuple[float, int, int, t.Any]] = []  # (time, n, status, body)
    stop = threading.Event()

    def publisher() -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            began = time.monotonic()
            status, body = publish(first if n % 2 else second, "drill", n)
            results.append((began, n, status, body))
            n += 1
            time.sleep(0.02)

    probe = open_stream(first, "drill")  # read alone, for prompt arrival times
    arrivals: list[tuple[float, int]] = []

    def read_probe() -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            while not stop.is_set():
                event = probe.next_event(5)
                if event.data is not None:
                    arrivals.append((time.monotonic(), number(event)))

    probe_thread = threading.Thread(target=read_probe, daemon=True)
    probe_thread.start()
    with Crowd(clients) as crowd:
        thread = threading.Thread(target=publisher, daemon=True)
        thread.start()
        time.sleep(1.0)
        killed = time.monotonic()
        holder[0].stop(signal.SIGKILL)
        time.sleep(1.5)
        holder[0] = restart_on_same_port(holder[0], appendonly=True, directory=tmp_path)
        restarted = time.monotonic()
        time.sleep(1.5)
        stop.set()
        thread.join(10)
        ok = [n for _, n, status, _ in results if status == 200]
        failed = [(n, body) for _, n, status, body in results if status != 200]
        assert ok and failed
        last = ok[-1]
        missing = crowd.wait_for(lambda i: last in crowd.numbers(i), timeout=10)
        assert not missing, f"{len(missing)} clients lack the last event"

        # Publishes during the outage raised BrokerUnavailable, within the broker timeout.
        for _, body in failed:
            assert body["error"] == "BrokerUnavailable", body
            assert body["elapsed"] <= BROKER_TIMEOUT + 0.25, body
        # Every client: every successful event once, in order. A publish cut off by the kill
        # may have been written before its answer was lost; only such a one may appear extra.
        maybe = {n for n, _ in failed}
        for index in range(len(clients)):
            got = crowd.numbers(index)
            assert len(got) == len(set(got)), f"client {index} got duplicates"
            assert got == sorted(got), f"client {index} got events out of order"
            assert [n for n in got if n not in maybe] == ok, f"client {index} lost events"
            assert not [e for _, e in crowd.log[index] if e.event == RESET_EVENT]
        # Heartbeats went on while no event could arrive: in each stream, comments come
        # between the last event published before the kill and the first one after the restart.
        before = max(n for at, n, status, _ in results if status == 200 and at < killed)
        after = min(n for at, n, status, _ in results if status == 200 and at > restarted)
        for index in range(len(clients)):
            events = [event for _, event in crowd.log[index]]
            start = next(i for i, e in enumerate(events) if e.data and number(e) == before)
            end = next(i for i, e in enumerate(events) if e.data and number(e) == after)
            beats = [e for e in events[start:end] if e.data is None]
            assert len(beats) >= 2, f"client {index}: {len(beats)} heartbeats in the outage"

        first_ok = min(at for at, _, status, _ in results if status == 200 and at > restarted)
        delivered = min(at for at, n in arrivals if n == after)
    probe.abort()
    probe_thread.join(5)
    numbers = {
        "outage_s": round(restarted - killed, 2),
        "failed_publishes": len(failed),
        "ok_publishes": len(ok),
        "first_ok_publish_after_restart_s": round(first_ok - restarted, 3),
        "first_delivery_after_restart_s": round(delivered - restarted, 3),
        "publish_failure_s_max": round(max(body["elapsed"] for _, body in failed), 3),
    }
    print("durability drill:", numbers)


def test_redis_restarted_without_its_data_sends_the_reset_event() -> None:
    redis_server = RedisServer().start()
    holder = [redis_server]
    try:
        with running(lambda: serve(redis_server.url)) as (server,):
            clients = [open_stream(server, "lossy") for _ in range(5)]
            try:
                status, body = publish(server, "lossy", 0, count=2)
                assert status == 200
                for client in clients:
                    assert [e.id for e in data_events(client, 2)] == body["ids"]
                holder[0].stop(signal.SIGKILL)
                holder[0] = restart_on_same_port(holder[0])
                for client in clients:
                    (reset,) = data_events(client, 1, timeout=10)
                    assert reset.event == RESET_EVENT
                    assert json.loads(str(reset.data)) == {"reason": "broker-restarted"}
                status, after = publish(server, "lossy", 2)
                assert status == 200
                for client in clients:
                    assert [e.id for e in data_events(client, 1)] == after["ids"]
                # A client that held an id from before the loss is told on reconnect.
                with open_stream(server, "lossy", last_event_id=body["ids"][-1]) as late:
                    (reset,) = data_events(late, 1)
                    assert reset.event == RESET_EVENT
            finally:
                for client in clients:
                    client.abort()
    finally:
        holder[0].stop()


def test_redis_connections_stay_a_small_constant_per_worker_with_1000_subscribers() -> None:
    channels = 10
    with (
        running(RedisServer().start) as (redis_server,),
        running(lambda: serve(redis_server.url, workers=2)) as (server,),
    ):
        clients = [open_stream(server, f"crowd:{i % channels}") for i in range(1000)]
        try:
            with redis.Redis.from_url(redis_server.url) as admin:
                listed = admin.client_list()
            mine = _by_worker(listed)
            print("CLIENT LIST per worker with 1,000 subscribers:", mine)
            assert len(mine) == 2, mine  # both workers serve streams
            for counts in mine.values():
                assert counts["listen"] == 1
                assert counts["cmd"] <= 8
            for i in range(channels):
                assert publish(server, f"crowd:{i}", i)[0] == 200
            for index, client in enumerate(clients):
                (event,) = data_events(client, 1)
                assert number(event) == index % channels
        finally:
            for client in clients:
                client.abort()
        # Dead clients are noticed by the next heartbeat; both workers get back to zero.
        deadline = time.monotonic() + 10
        left: dict[int, int] = {}
        while time.monotonic() < deadline:
            reading = stats(server)
            left[reading["pid"]] = reading["subscribers"]
            if len(left) == 2 and not any(left.values()):
                break
            time.sleep(0.1)
        assert left and not any(left.values()), left


def _by_worker(listed: list[dict[str, t.Any]]) -> dict[str, dict[str, int]]:
    """Connection counts per worker pid, from the names the broker gives its connections."""
    found: dict[str, dict[str, int]] = {}
    for connection in listed:
        name = str(connection.get("name", ""))
        if name.startswith("ssecors-"):
            _, role, pid = name.split("-")
            found.setdefault(pid, {"listen": 0, "cmd": 0})[role] += 1
    return found


@pytest.mark.parametrize("web_concurrency", ["2", "1"])
def test_the_memory_broker_warns_under_gunicorn_with_two_workers(
    tmp_path: Path, web_concurrency: str
) -> None:
    """With WEB_CONCURRENCY=2 at start-up; with a plain ``-w 2`` (WEB_CONCURRENCY says 1) on
    the first request, which tells the app it runs in one of several processes."""
    log = tmp_path / "server.log"
    server = LiveServer(
        "tests.live_apps.streams:app",
        env={"WEB_CONCURRENCY": web_concurrency},
        workers=2,
        log_path=log,
    )
    with server:
        if web_concurrency == "1":
            for _ in range(4):
                assert request(server.port, "/count")[0] == 200
        deadline = time.monotonic() + 5
        while "in-memory broker" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = server.log_text()
    assert "in-memory broker" in text
    assert ("WEB_CONCURRENCY=2" in text) == (web_concurrency == "2")
