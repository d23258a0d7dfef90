"""Many channels at scale, across real processes: gunicorn -k gevent workers on a real
redis-server (both started on free ports, stopped by PID), thousands of client streams from one
asyncio loop (tests/support/swarm.py).

What the many-channels design promises, shown as a hostile or unlucky deployment would meet it:
live delivery whose cost does not grow with the number of channels; publishes that never fail
while thousands of streams connect; channels forgotten after their TTL; ids that belong to their
channel; names that cannot be stored refused without poisoning anything; one client's streams
that cannot starve others; and a reconnect storm that resumes every client exactly once.

Figures measured here are printed (``pytest -s tests/live/test_channels_live.py``); speed is judged
by ratios taken in the same run, never by absolute times.
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import functools
import http.client
import json
import statistics
import threading
import time
import typing as t
from pathlib import Path

import pytest
import redis

from flask_ssecors import Event
from flask_ssecors import Publisher
from flask_ssecors.events import RESET_EVENT
from tests.support.servers import LiveServer
from tests.support.servers import RedisServer
from tests.support.swarm import sockets_left
from tests.support.swarm import Swarm
from tests.support.swarm import SwarmStream

pytestmark = [pytest.mark.redis, pytest.mark.live, pytest.mark.timeout(300)]

APP = "tests.live_apps.channels_app:create_app()"


@contextlib.contextmanager
def serving(
    broker_url: str,
    *,
    workers: int = 2,
    connections: int = 8000,
    log_path: Path | None = None,
    **env: str,
) -> cabc.Iterator[LiveServer]:
    """The channels app under gunicorn -k gevent, stopped by PID whatever happens."""
    server = LiveServer(
        APP,
        env={"BROKER_URL": broker_url, **env},
        workers=workers,
        log_path=log_path,
        # --keep-alive as docs/deployment.rst recommends: gunicorn's gevent worker reads even
        # a connection's first request under it, and a storm takes longer than its default 2 s.
        extra_args=["--worker-connections", str(connections), "--keep-alive", "30"],
    ).start()
    try:
        yield server
    finally:
        server.stop()


def call(
    server: LiveServer, method: str, path: str, body: t.Any = None, *, source: str | None = None
) -> tuple[int, t.Any]:
    connection = http.client.HTTPConnection(
        server.host, server.port, timeout=30, source_address=(source, 0) if source else None
    )
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        text = response.read()
        return response.status, json.loads(text) if text.startswith((b"{", b"[")) else text
    finally:
        connection.close()


def stats_of_every_worker(server: LiveServer, workers: int) -> dict[int, dict[str, t.Any]]:
    """``GET /stats`` until every worker answered once (the kernel picks the worker).

    Bounded by time, not by a number of tries: the worker that accepts first gets the
    connection, and a worker still admitting thousands of streams may accept nothing for a few
    seconds (200 tries in a row all went to the other worker once)."""
    found: dict[int, dict[str, t.Any]] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, stats = call(server, "GET", "/stats")
        found[stats["pid"]] = stats
        if len(found) == workers:
            return found
        time.sleep(0.01)
    raise AssertionError(f"only {len(found)} of {workers} workers answered /stats in 30 s")


def wait_for_subscribers(server: LiveServer, workers: int, count: int) -> None:
    """Wait until the workers together hold ``count`` subscriptions (streams that were cut
    are let go as each worker notices)."""
    deadline = time.monotonic() + 30
    while True:
        held = sum(s["subscribers"] for s in stats_of_every_worker(server, workers).values())
        if held == count:
            return
        assert time.monotonic() < deadline, f"{held} subscriptions held, {count} expected"
        time.sleep(0.2)


def messages(stream: SwarmStream) -> list[dict[str, t.Any]]:
    return [event.json() for event in stream.of_type("message")]


def need_sockets(count: int) -> None:
    left = sockets_left()
    assert left > count + 200, f"this test needs {count} client sockets, {left} are allowed"


# -- live delivery: the cost does not grow with the number of channels ---------------------------


def arrived(stream: SwarmStream, count: int) -> bool:
    return len(stream.events) > count


def probe_latencies(swarm: Swarm, publisher: Publisher, channel: str, count: int) -> list[float]:
    """Publish ``count`` events to ``channel``, one at a time, each once the last arrived;
    return each one's publish-to-receive time, in seconds."""
    [probe] = swarm.open([f"/events/{channel}"])
    assert probe.status == 200
    time.sleep(0.5)
    latencies = []
    for n in range(count):
        before = len(probe.events)
        publisher.publish(channel, Event({"n": n, "t": time.time()}))
        swarm.wait_until(functools.partial(arrived, probe, before), 10, f"probe event {n}")
        event = probe.events[-1]
        latencies.append(event.at - event.json()["t"])
        time.sleep(0.005)
    assert [m["n"] for m in messages(probe)] == list(range(count)), "each once, in order"
    swarm.drop([probe])
    return latencies


def test_probe_latency_with_5000_distinct_channels_matches_one_shared_channel() -> None:
    """5,000 idle streams across 2 workers, first on one shared channel, then on 5,000 distinct
    channels; a probe stream's publish-to-receive latency is compared between the two."""
    streams = 5000
    need_sockets(streams + 10)
    with (
        RedisServer() as server_redis,
        serving(server_redis.url) as server,
        Swarm(server.port) as swarm,
        Publisher(server_redis.url) as publisher,
    ):
        medians = {}
        for layout in ("shared", "distinct"):
            paths = [
                "/events/everyone" if layout == "shared" else f"/events/user:{n}"
                for n in range(streams)
            ]
            idle = swarm.open(paths)
            assert {s.status for s in idle} == {200}
            wait_for_subscribers(server, 2, streams)
            latencies = probe_latencies(swarm, publisher, f"probe:{layout}", 200)
            medians[layout] = statistics.median(latencies)
            p99 = sorted(latencies)[197]
            print(
                f"\n{streams} idle streams, {layout} channel(s): probe latency "
                f"p50 {medians[layout] * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"
            )
            swarm.drop(idle)
        ratio = medians["distinct"] / medians["shared"]
        print(f"distinct / shared median latency: {ratio:.2f}")
        assert ratio <= 2.0, medians


def test_no_publish_fails_while_2000_anonymous_streams_connect_at_once() -> None:
    """2,000 streams, each on a channel of its own, all connecting at once, while a publisher
    publishes through the app every few milliseconds: every publish succeeds, the probe gets
    every event once and in order, every stream opens."""
    streams = 2000
    need_sockets(streams + 10)
    with (
        RedisServer() as server_redis,
        serving(server_redis.url) as server,
        Swarm(server.port) as swarm,
    ):
        [probe] = swarm.open(["/events/probe"])
        answers: list[tuple[int, t.Any]] = []
        storm_over = threading.Event()

        def publish_until_the_storm_is_over() -> None:
            n = 0
            while not storm_over.is_set() or n < 20:
                body = {"channels": ["probe"], "data": {"n": n}}
                answers.append(call(server, "POST", "/publish", body))
                n += 1
                time.sleep(0.005)

        publisher = threading.Thread(target=publish_until_the_storm_is_over)
        publisher.start()
        try:
            time.sleep(0.2)
            began = time.monotonic()
            opened = swarm.open([f"/events/anon:{n}" for n in range(streams)], parallel=streams)
            took = time.monotonic() - began
        finally:
            storm_over.set()
            publisher.join(timeout=60)
        failed = [answer for answer in answers if answer[0] != 200]
        print(f"\n{streams} streams opened in {took:.2f} s; {len(answers)} publishes")
        assert failed == [], failed[:5]
        assert {s.status for s in opened} == {200}, "no stream deferred or refused"
        swarm.wait_until(lambda: len(probe.events) >= len(answers), 10, "every probe event")
        assert [m["n"] for m in messages(probe)] == list(range(len(answers)))


# -- retention -------------------------------------------------------------------------------------


def test_memory_broker_forgets_10000_channels_two_seconds_after_their_last_event() -> None:
    channels = [f"job:{n}" for n in range(10_000)]
    with serving("memory://", workers=1, CHANNEL_TTL="2") as server:
        status, body = call(server, "POST", "/publish", {"channels": channels})
        published = time.monotonic()
        assert status == 200 and len(body["ids"]) == 10_000
        assert call(server, "GET", "/stats")[1]["channels"] == 10_000
        while call(server, "GET", "/stats")[1]["channels"] > 0:
            assert time.monotonic() - published < 10, "channels still held after 10 s"
            time.sleep(0.1)
        gone = time.monotonic() - published
        print(f"\n10,000 channels forgotten {gone:.2f} s after their last event (TTL 2 s)")
        assert gone >= 2.0, "not before their TTL"


def test_redis_keys_of_10000_channels_expire_two_seconds_after_their_last_event() -> None:
    channels = [f"job:{n}" for n in range(10_000)]
    with RedisServer() as server_redis, serving(server_redis.url, CHANNEL_TTL="2") as server:
        client = redis.Redis.from_url(server_redis.url)
        try:
            # The shard streams every channel's live events go through exist once the first
            # event is published: they are the baseline, not per-channel state.
            call(server, "POST", "/publish", {"channels": [f"warm:{n}" for n in range(64)]})
            deadline = time.monotonic() + 10
            while any(client.scan_iter(match="*warm:*", count=1000)):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            baseline = client.dbsize()
            expired_before = int(client.info("stats")["expired_keys"])
            status, _ = call(server, "POST", "/publish", {"channels": channels})
            published = time.monotonic()
            assert status == 200
            # Counted by expiry, not by a DBSIZE peak: on a loaded machine publishing 10,000
            # channels takes longer than their 2 s TTL, so the first expire before the last exist.
            while client.dbsize() > baseline:
                assert time.monotonic() - published < 10, "keys still there after 10 s"
                time.sleep(0.1)
            gone = time.monotonic() - published
            expired = int(client.info("stats")["expired_keys"]) - expired_before
            assert expired >= 10_000, "every channel's keys were created and expired"
            print(
                f"\nRedis: {expired} keys of 10,000 channels expired {gone:.2f} s after "
                f"the last event (TTL 2 s); DBSIZE back to {baseline}"
            )
            assert call(server, "GET", "/stats")[1]["channels"] == 0, "none followed"
        finally:
            client.close()


# -- ids belong to their channel; names that cannot be stored --------------------------------------


def test_an_id_from_another_channel_gets_the_reset_event_and_bad_names_poison_nothing() -> None:
    with (
        RedisServer() as server_redis,
        serving(server_redis.url) as server,
        Swarm(server.port) as swarm,
    ):
        call(server, "POST", "/publish", {"channels": ["a", "a", "b"]})
        _, body = call(server, "POST", "/publish", {"channels": ["a"]})
        id_of_a = body["ids"][0]
        [on_b] = swarm.open(["/events/b"], last_event_ids=[id_of_a])
        swarm.wait_until(lambda: bool(on_b.events), 10, "the first event on b")
        assert on_b.events[0].type == RESET_EVENT, on_b.events[0]

        names = ["%00nul", "x" * 513, "%ED%A0%80"]  # NUL, too long, an encoded surrogate
        refused = swarm.open([f"/events/{name}" for name in names])
        assert [s.status for s in refused[:2]] == [400, 400]
        # open() returns with the headers; the body follows.
        swarm.wait_until(lambda: refused[0].ended, 10, "the 400's body")
        assert b"channel" in refused[0].body.lower(), refused[0].body
        # The encoded surrogate reaches the view as U+FFFD (Werkzeug decodes paths with
        # replacement): a storable name, served.
        assert refused[2].status == 200
        began = time.monotonic()
        [after] = swarm.open(["/events/after"])
        call(server, "POST", "/publish", {"channels": ["after"], "data": {"n": 1}})
        swarm.wait_until(lambda: bool(after.of_type()), 10, "an event after the bad names")
        print(
            f"\nfirst subscribe after the refused names served in {time.monotonic() - began:.3f} s"
        )
        assert after.status == 200


# -- one client cannot starve the others -------------------------------------------------------


def test_one_client_holding_its_streams_cannot_make_others_wait() -> None:
    """``SSECORS_MAX_STREAMS_PER_CLIENT=100``: a client on 127.0.0.2 takes its hundred streams
    and asks for fifty more; those get the busy ``retry:`` answer, and a client on 127.0.0.1
    still gets an ordinary route and a stream that delivers."""
    with (
        serving("memory://", workers=1, MAX_STREAMS_PER_CLIENT="100") as server,
        Swarm(server.port, source="127.0.0.2") as hog,
        Swarm(server.port) as other,
    ):
        held = hog.open([f"/events/hog:{n}" for n in range(100)])
        assert {s.status for s in held} == {200}
        extra = hog.open([f"/events/hog:more:{n}" for n in range(50)])
        hog.wait_until(lambda: all(s.ended for s in extra), 10, "the busy answers ending")
        assert {s.status for s in extra} == {200}
        assert all(s.retry is not None and not s.of_type() for s in extra), "retry: only"
        assert not any(s.ended for s in held), "the held streams stay open"

        began = time.monotonic()
        assert call(server, "GET", "/ping")[0] == 200
        pinged = time.monotonic() - began
        [mine] = other.open(["/events/mine"])
        assert mine.status == 200 and not mine.ended
        call(server, "POST", "/publish", {"channels": ["mine"], "data": {"n": 1}})
        other.wait_until(lambda: bool(mine.of_type()), 10, "the other client's event")
        print(f"\nordinary route answered in {pinged * 1000:.1f} ms beside 100 held streams")


# -- the reconnect storm ---------------------------------------------------------------------------


def test_10000_clients_reconnecting_at_once_resume_with_no_loss_or_duplicate(
    tmp_path: Path,
) -> None:
    """10,000 streams on 1,000 channels across 2 workers; every connection is cut (a deploy, a
    proxy restart); two events per channel are published meanwhile; all 10,000 reconnect at
    once with their ``Last-Event-ID``: each gets exactly the two it missed, then a live one."""
    clients, channels = 10_000, 1000
    need_sockets(clients + 10)
    names = [f"doc:{n % channels}" for n in range(clients)]
    with (
        RedisServer() as server_redis,
        serving(server_redis.url, connections=12_000, log_path=tmp_path / "log") as server,
        Swarm(server.port) as swarm,
        Publisher(server_redis.url) as publisher,
    ):
        first = swarm.open([f"/events/{name}" for name in names])
        assert {s.status for s in first} == {200}
        for n in range(2):
            for channel in range(channels):
                publisher.publish(f"doc:{channel}", Event({"n": n}))
        swarm.wait_until(
            lambda: all(len(s.of_type()) == 2 for s in first), 60, "the first two events"
        )
        last_ids = [s.last_event_id for s in first]
        swarm.drop(first)
        for n in range(2, 4):
            for channel in range(channels):
                publisher.publish(f"doc:{channel}", Event({"n": n}))

        began = time.monotonic()
        again = swarm.open(
            [f"/events/{name}" for name in names], last_event_ids=last_ids, parallel=clients
        )
        swarm.wait_until(
            lambda: all(len(s.of_type()) == 2 for s in again), 120, "every replay", again
        )
        resumed = time.monotonic() - began
        for channel in range(channels):
            publisher.publish(f"doc:{channel}", Event({"n": 4}))
        swarm.wait_until(
            lambda: all(len(s.of_type()) >= 3 for s in again), 60, "the live event", again
        )
        time.sleep(0.5)  # a duplicate would have arrived by now
        print(f"\n{clients} clients reconnected and resumed in {resumed:.2f} s")
        assert {s.status for s in again} == {200}
        wrong = [
            (s.path, [m["n"] for m in messages(s)])
            for s in again
            if [m["n"] for m in messages(s)] != [2, 3, 4]
        ]
        assert wrong == [], wrong[:5]
        assert not any(s.of_type(RESET_EVENT) for s in again)
