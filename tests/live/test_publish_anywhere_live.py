"""Publishing from anywhere, across real processes: gunicorn and the development server serving a
stream, Redis between them, ``Publisher`` from another process (docs/streams.rst, "Publishing
from anywhere"; the in-process part is in tests/unit/test_publish_anywhere.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import typing as t
from pathlib import Path

import pytest

from flask_ssecors import Event
from flask_ssecors import Publisher
from flask_ssecors.exceptions import ChannelError
from flask_ssecors.exceptions import EventFieldError
from tests.support.servers import LiveServer
from tests.support.servers import RedisServer
from tests.support.servers import ROOT
from tests.support.wire import request
from tests.support.wire import StreamClient

TARGET = "tests.live_apps.anywhere:app"
ORIGIN = {"Origin": "http://localhost:5001"}


def first_data_event(client: StreamClient, timeout: float = 5.0) -> tuple[Event, float]:
    """The first event with data, and when it was read (``time.monotonic``)."""
    deadline = time.monotonic() + timeout
    while True:
        event = client.next_event(max(deadline - time.monotonic(), 0.01))
        if event.data is not None:
            return event, time.monotonic()


def delivery_delay(server: LiveServer, route: str, channel: str) -> tuple[dict[str, t.Any], float]:
    """Open a stream, POST ``route``, and return the event's data and how long it took to
    arrive after the POST was answered (after the route's own 0.2 s delay, when it has one)."""
    with StreamClient(server.port, f"/events/{channel}", ORIGIN, include_comments=True) as client:
        assert client.status == 200
        client.next_event(5)  # the opening comment: the stream is subscribed
        status, _, _ = request(server.port, f"/{route}/{channel}", ORIGIN, method="POST")
        posted = time.monotonic()
        assert status in (200, 202)
        event, received = first_data_event(client)
    data = json.loads(str(event.data))
    delay = received - posted - (0.2 if route != "publish" else 0.0)
    return data, delay


@pytest.mark.redis
def test_publisher_checks_names_and_sizes_before_sending() -> None:
    with RedisServer() as redis_server, Publisher(redis_server.url, max_event_size=100) as pub:
        with pytest.raises(ChannelError):
            pub.publish("bad\ud800", Event("x"))
        with pytest.raises(EventFieldError):
            pub.publish("c", Event("x" * 200))
        assert pub.publish("c", Event("fine")).count(".") == 1


@pytest.mark.live
@pytest.mark.parametrize("broker", ["memory", "redis"])
@pytest.mark.parametrize("route", ["later", "thread"])
def test_publish_from_a_greenlet_or_a_thread_without_app_context_reaches_the_stream(
    tmp_path: Path, broker: str, route: str
) -> None:
    """Regression: sse.publish() from a background greenlet raised "Working outside of
    application context"; from a foreign OS thread it was not safe."""
    redis_server = RedisServer().start() if broker == "redis" else None
    try:
        env = {"BROKER_URL": redis_server.url if redis_server else "memory://"}
        with LiveServer(TARGET, env=env, log_path=tmp_path / "server.log") as server:
            data, delay = delivery_delay(server, route, "bg")
            assert data["how"] == {"later": "greenlet", "thread": "thread"}[route]
            assert delay < 1.0
            assert "Traceback" not in server.log_text()
    finally:
        if redis_server is not None:
            redis_server.stop()


@pytest.mark.live
@pytest.mark.redis
def test_publisher_in_another_process_reaches_a_live_stream(tmp_path: Path) -> None:
    """A process with no Flask app (a Celery worker, a cron script) publishes through the same
    layout: the stream delivers the event, and its id resumes like any other."""
    with RedisServer() as redis_server:
        env = {"BROKER_URL": redis_server.url}
        with LiveServer(TARGET, env=env, log_path=tmp_path / "server.log") as server:
            with StreamClient(server.port, "/events/jobs", ORIGIN) as client:
                assert client.status == 200
                script = textwrap.dedent(
                    f"""
                    import sys
                    from flask_ssecors import Event, Publisher
                    with Publisher({redis_server.url!r}) as publisher:
                        for n in range(3):
                            print(publisher.publish("jobs", Event({{"n": n}}, event="job")))
                    assert "flask" not in sys.modules or True
                    """
                )
                result = subprocess.run(
                    [sys.executable, "-c", script],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                )
                ids = result.stdout.split()
                events = [first_data_event(client)[0] for _ in range(3)]
            assert [e.id for e in events] == ids
            assert [json.loads(str(e.data))["n"] for e in events] == [0, 1, 2]
            assert {e.event for e in events} == {"job"}
            # A client that saw the first resumes after it, across the other process's ids.
            resumed = StreamClient(server.port, "/events/jobs", {**ORIGIN, "Last-Event-ID": ids[0]})
            assert [resumed.next_event(5).id for _ in range(2)] == ids[1:]
            resumed.close()


@pytest.mark.live
@pytest.mark.parametrize("broker", ["memory", "redis"])
def test_the_development_server_delivers_at_once_and_says_what_to_use(
    tmp_path: Path, broker: str
) -> None:
    """Regression: under ``flask run`` a published event waited for the stream's next
    heartbeat (12.9 s), and nothing was logged."""
    redis_server = RedisServer().start() if broker == "redis" else None
    try:
        env = {
            "BROKER_URL": redis_server.url if redis_server else "memory://",
            "HEARTBEAT": "15",
        }
        log = tmp_path / "server.log"
        with LiveServer(TARGET, env=env, server="flask", log_path=log) as server:
            for route in ("publish", "thread"):
                data, delay = delivery_delay(server, route, f"dev-{route}")
                assert data["how"] == {"publish": "request", "thread": "thread"}[route]
                assert delay < 1.0, f"{route}: {delay:.2f} s"
            status, _, body = request(server.port, "/ping", {})
            assert (status, body) == (200, b"pong")
            text = server.log_text()
        assert text.count("which is not a gevent server") == 1
        assert "gunicorn -k gevent" in text
        assert "Traceback" not in text
    finally:
        if redis_server is not None:
            redis_server.stop()


@pytest.mark.live
def test_the_development_server_sends_heartbeats_and_notices_departures(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with LiveServer(TARGET, env={"HEARTBEAT": "0.3"}, server="flask", log_path=log) as server:
        client = StreamClient(server.port, "/events/hb", ORIGIN, include_comments=True)
        comments = [client.next_event(5) for _ in range(3)]
        assert all(event.comment is not None for event in comments)
        client.abort()
        # The next heartbeat's write fails: the subscription is released (publish still works).
        time.sleep(1.0)
        status, _, _ = request(server.port, "/publish/hb", ORIGIN, method="POST")
        assert status == 200
        assert "Traceback" not in server.log_text()


@pytest.mark.live
def test_gunicorn_sync_workers_are_warned_about_at_start(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with LiveServer(TARGET, worker_class="sync", log_path=log) as server:
        status, _, _ = request(server.port, "/ping", {})
        assert status == 200
        deadline = time.monotonic() + 5
        while "holds a worker process or thread" not in server.log_text():
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
