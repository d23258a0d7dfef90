"""Presence on the wire: gunicorn -k gevent workers sharing a real redis-server (free port,
stopped by PID), or one worker on the memory broker; streams held by this process
(``tests/support/swarm.py``).

Members and counts are exact as streams open and close across workers; each member's join and
leave are published once across the deployment; a SIGKILLed worker's members leave within
``SSECORS_PRESENCE_TTL``, with their leave events, and a respawned worker brings none back. On
Redis Cluster, presence lives in each channel's slot and heals the same way.
"""

from __future__ import annotations

import collections
import collections.abc as cabc
import contextlib
import http.client
import json
import os
import signal
import time
import typing as t
from pathlib import Path

import gevent
import pytest

from bench._common import children_of
from flask_ssecors.brokers._presence import JOIN_EVENT
from flask_ssecors.brokers._presence import LEAVE_EVENT
from flask_ssecors.brokers._presence import Presence
from flask_ssecors.brokers._redis import RedisBroker
from tests.support.servers import LiveServer
from tests.support.servers import RedisServer
from tests.support.swarm import Swarm
from tests.support.swarm import SwarmStream

pytestmark = [pytest.mark.live, pytest.mark.timeout(240)]

APP = "tests.live_apps.presence_app:create_app()"


@contextlib.contextmanager
def serving(
    broker_url: str, log: Path, *, workers: int, ttl: float = 30.0
) -> cabc.Iterator[LiveServer]:
    server = LiveServer(
        APP,
        env={"BROKER_URL": broker_url, "PRESENCE_TTL": str(ttl), "HEARTBEAT": "0.5"},
        workers=workers,
        log_path=log,
    ).start()
    try:
        assert server.process is not None
        deadline = time.monotonic() + 20
        while len(children_of(server.process.pid)) < workers:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        # A worker accepts a while after it started: until each has answered, every stream
        # could land on one of them and the test would prove nothing about several.
        answered: set[int] = set()
        while len(answered) < workers:
            assert time.monotonic() < deadline, f"only workers {answered} answered"
            answered.add(get_json(server.port, "/local")["pid"])
        yield server
    finally:
        server.stop()


def get_json(port: int, path: str) -> dict[str, t.Any]:
    """One GET on a connection of its own (so that the workers take turns answering)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        return t.cast("dict[str, t.Any]", json.loads(body))
    finally:
        connection.close()


def presence_of(port: int, channel: str) -> tuple[list[str], int]:
    answer = get_json(port, f"/presence/{channel}")
    return answer["members"], answer["connections"]


def settle(port: int, channel: str, want: tuple[list[str], int], timeout: float = 15) -> float:
    """Seconds until the channel's presence is ``want`` (asked of whichever worker answers)."""
    began = time.monotonic()
    seen = presence_of(port, channel)
    while seen != want:
        assert time.monotonic() - began < timeout, f"presence is {seen}, not {want}"
        time.sleep(0.05)
        seen = presence_of(port, channel)
    return time.monotonic() - began


def local_streams(port: int, workers: int) -> dict[int, int]:
    """Each worker's streams that declared a member, asked until every worker answered."""
    seen: dict[int, int] = {}
    for _ in range(200):
        answer = get_json(port, "/local")
        seen[answer["pid"]] = answer["presence"]["streams"]
        if len(seen) == workers:
            break
    return seen


def announcements(stream: SwarmStream) -> list[tuple[str, str]]:
    """The join and leave events a stream received, as (type, member), in order."""
    return [
        (event.type, event.json()["member"])
        for event in stream.events
        if event.type in (JOIN_EVENT, LEAVE_EVENT)
    ]


def check_once_each(stream: SwarmStream, members: list[str], *, left: bool) -> None:
    """Each member joined exactly once (and, with ``left``, then left exactly once)."""
    by_member: dict[str, list[str]] = collections.defaultdict(list)
    for kind, member in announcements(stream):
        by_member[member].append(kind)
    want = [JOIN_EVENT, LEAVE_EVENT] if left else [JOIN_EVENT]
    assert {m: by_member[m] for m in members} == {m: want for m in members}
    assert set(by_member) == set(members)


@pytest.mark.redis
def test_members_and_counts_are_exact_across_two_workers(tmp_path: Path) -> None:
    """10 members with 4 streams each over 2 workers: exact counts from either worker as
    streams open and close; one join and one leave per member, whichever worker held its
    first and last stream."""
    members = [f"m{n}" for n in range(10)]
    with (
        RedisServer() as broker,
        serving(broker.url, tmp_path / "log", workers=2) as server,
        Swarm(server.port) as swarm,
    ):
        [watcher] = swarm.open(["/watch/room"])
        streams = swarm.open(
            [f"/events/room?member={m}" for _ in range(4) for m in members], parallel=8
        )
        assert all(s.status == 200 for s in streams)
        settle(server.port, "room", (members, 40))
        held = local_streams(server.port, 2)
        assert sum(held.values()) == 40 and len(held) == 2, held
        assert min(held.values()) > 0, f"every stream went to one worker: {held}"
        swarm.wait_until(lambda: len(announcements(watcher)) >= 10, 10, "the joins")
        check_once_each(watcher, members, left=False)

        swarm.drop(streams[:30])  # three of each member's four streams
        settle(server.port, "room", (members, 10))
        time.sleep(1.0)  # nothing more may come
        check_once_each(watcher, members, left=False)

        swarm.drop(streams[30:])
        settle(server.port, "room", ([], 0))
        swarm.wait_until(lambda: len(announcements(watcher)) >= 20, 10, "the leaves")
        time.sleep(1.0)
        check_once_each(watcher, members, left=True)
        assert [e.type for e in watcher.events if e.type == "ssecors-reset"] == []


@pytest.mark.redis
def test_a_killed_workers_members_leave_within_the_ttl_and_never_come_back(
    tmp_path: Path,
) -> None:
    """SIGKILL one of two workers: the members whose only stream it held leave within
    ``SSECORS_PRESENCE_TTL`` (4 s here), each with one leave event; the others stay; the
    worker gunicorn starts in its place brings none of them back."""
    ttl = 4.0
    members = [f"m{n}" for n in range(24)]
    with (
        RedisServer() as broker,
        serving(broker.url, tmp_path / "log", workers=2, ttl=ttl) as server,
        Swarm(server.port) as swarm,
    ):
        [watcher] = swarm.open(["/watch/room"])
        streams = swarm.open([f"/events/room?member={m}" for m in members], parallel=8)
        settle(server.port, "room", (sorted(members), len(members)))
        swarm.wait_until(lambda: len(announcements(watcher)) >= len(members), 10, "the joins")
        last_id = watcher.last_event_id
        held = local_streams(server.port, 2)
        assert len(held) == 2 and min(held.values()) > 0, f"streams not spread: {held}"
        victim = max(held, key=lambda pid: held[pid])
        assert server.process is not None
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        # The victim's streams end at once (the kernel closes its sockets).
        swarm.wait_until(
            lambda: sum(s.ended or s.error is not None for s in streams) > 0, 10, "cut streams"
        )
        time.sleep(0.5)
        gone = sorted(m for m, s in zip(members, streams, strict=True) if s.ended or s.error)
        kept = sorted(set(members) - set(gone))
        assert gone and kept, f"the streams were not spread over both workers: {gone}"
        settle(server.port, "room", (kept, len(kept)), timeout=3 * ttl)
        took = time.monotonic() - killed_at
        print(f"\nthe killed worker's {len(gone)} members left {took:.2f} s after SIGKILL")
        assert took <= ttl + 0.5, f"they left after {took:.2f} s; SSECORS_PRESENCE_TTL is {ttl}"
        # The leave events, replayed from before the kill to a new stream.
        [replayed] = swarm.open(["/watch/room"], last_event_ids=[last_id])
        swarm.wait_until(lambda: len(announcements(replayed)) >= len(gone), 10, "the leaves")
        time.sleep(0.5)
        assert sorted(m for kind, m in announcements(replayed) if kind == LEAVE_EVENT) == gone
        assert all(kind == LEAVE_EVENT for kind, _ in announcements(replayed))
        # gunicorn starts another worker; nothing comes back, for longer than a TTL.
        deadline = time.monotonic() + 20
        while len(children_of(server.process.pid)) < 2:
            assert time.monotonic() < deadline, "gunicorn did not replace the worker"
            time.sleep(0.1)
        time.sleep(2 * ttl)
        assert presence_of(server.port, "room") == (kept, len(kept))


def test_the_memory_broker_counts_exactly_in_one_worker(tmp_path: Path) -> None:
    members = [f"m{n}" for n in range(5)]
    with (
        serving("memory://", tmp_path / "log", workers=1) as server,
        Swarm(server.port) as swarm,
    ):
        [watcher] = swarm.open(["/watch/room"])
        streams = swarm.open([f"/events/room?member={m}" for _ in range(3) for m in members])
        settle(server.port, "room", (members, 15))
        swarm.drop(streams[:10])
        settle(server.port, "room", (members, 5))
        swarm.drop(streams[10:])
        settle(server.port, "room", ([], 0))
        swarm.wait_until(lambda: len(announcements(watcher)) >= 10, 10, "joins and leaves")
        time.sleep(0.5)
        check_once_each(watcher, members, left=True)
        assert local_streams(server.port, 1) == {
            children_of(t.cast("t.Any", server.process).pid)[0]: 0
        }


def test_a_bad_member_gets_400(tmp_path: Path) -> None:
    with (
        serving("memory://", tmp_path / "log", workers=1) as server,
        Swarm(server.port) as swarm,
    ):
        bad = swarm.open(["/events/room?member=", "/events/room?member=a%0Ab"])
        assert [s.status for s in bad] == [400, 400]
        assert presence_of(server.port, "room") == ([], 0)


# -- in-process brokers: two RedisBrokers stand for two workers ------------------------------


def until(check: t.Callable[[], bool], timeout: float, what: str = "the condition") -> float:
    """Seconds until ``check()`` (polled in gevent's loop, so the brokers' greenlets run)."""
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"{what} did not happen within {timeout} s"
        gevent.sleep(0.05)
    return time.monotonic() - began


def kinds_of(watcher: t.Any, count: int) -> list[str]:
    """The event types of the next ``count`` frames of a subscription."""
    kinds: list[str] = []
    while len(kinds) < count:
        frame = watcher.get(5)
        assert frame is not None, f"got only {kinds}"
        kinds.append(frame.split(b"event: ")[1].split(b"\n")[0].decode())
    return kinds


@contextlib.contextmanager
def topology(kind: str, root: Path) -> cabc.Iterator[str]:
    """A Redis of ``kind`` (``single``, ``sentinel`` or ``cluster``) on loopback; its URL."""
    from tests.support.topologies import Cluster
    from tests.support.topologies import SentinelSet

    if kind == "single":
        with RedisServer() as server:
            yield server.url
        return
    started = SentinelSet(root).start() if kind == "sentinel" else Cluster(root).start()
    try:
        yield started.url
    finally:
        started.stop()


@contextlib.contextmanager
def brokers(url: str, count: int, ttl: float) -> cabc.Iterator[list[RedisBroker]]:
    made = [RedisBroker(url, prefix="pr:", presence_ttl=ttl, timeout=2.0) for _ in range(count)]
    try:
        yield made
    finally:
        for broker in made:
            with contextlib.suppress(Exception):
                broker.close()


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["single", "sentinel", "cluster"])
def test_a_worker_that_dies_without_a_word_is_reaped_within_the_ttl(
    kind: str, tmp_path: Path
) -> None:
    """Two brokers, members on six channels (on a cluster, several slots and nodes): exact
    counts, one join per member; one broker stops dead (its greenlets killed, nothing written):
    its member leaves every channel within the TTL, each with one leave event."""
    ttl = 4.0
    with topology(kind, tmp_path / "redis") as url, brokers(url, 2, ttl) as (one, two):
        channels = [f"room:{n}" for n in range(6)]
        watchers = {c: one.subscribe(c) for c in channels}
        mine = [one.subscribe(c, member="a", announce=True) for c in channels]
        theirs = [two.subscribe(c, member="b", announce=True) for c in channels]
        until(
            lambda: all(
                one.presence(c) == Presence(c, frozenset({"a", "b"}), 2, 2) for c in channels
            ),
            10,
            "both members everywhere",
        )
        for greenlet in two._greenlets:  # dies: nothing written, nothing closed
            greenlet.kill()
        took = until(lambda: all(one.presence(c).members == {"a"} for c in channels), 3 * ttl)
        print(f"\n{kind}: the dead broker's member left every channel after {took:.2f} s")
        assert took <= ttl + 0.5
        for channel, watcher in watchers.items():
            kinds = kinds_of(watcher, 3)
            assert sorted(kinds) == sorted([JOIN_EVENT, JOIN_EVENT, LEAVE_EVENT]), channel
            assert kinds[-1] == LEAVE_EVENT
            assert watcher.get(0.3) is None
        for subscription in [*mine, *theirs, *watchers.values()]:
            subscription.close()


@pytest.mark.redis
def test_presence_heals_after_a_sentinel_failover(tmp_path: Path) -> None:
    """The primary is SIGKILLed and a replica promoted (presence written just before may be
    lost with it): every worker notices what Redis forgot and writes its members again."""
    from tests.support.topologies import SentinelSet

    sentinel = SentinelSet(tmp_path / "redis").start()
    try:
        with brokers(sentinel.url, 2, 4.0) as (one, two):
            streams = [
                broker.subscribe(f"room:{n}", member=f"{name}{n}")
                for n in range(5)
                for broker, name in ((one, "a"), (two, "b"))
            ]

            def exact() -> bool:
                return all(
                    one.presence(f"room:{n}").members == {f"a{n}", f"b{n}"} for n in range(5)
                )

            until(exact, 10, "the members")
            sentinel.fail_over()
            took = until(lambda: _quietly(exact), 60, "the members after the failover")
            print(f"\npresence exact again {took:.2f} s after the failover")
            for stream in streams:
                stream.close()
            until(lambda: one.presence("room:0").connections == 0, 10, "everyone gone")
    finally:
        sentinel.stop()


def _quietly(check: t.Callable[[], bool]) -> bool:
    """``check()``, False while the broker is unavailable (a failover in progress)."""
    from flask_ssecors.exceptions import BrokerUnavailable

    try:
        return check()
    except BrokerUnavailable:
        return False


@pytest.mark.redis
def test_redis_losing_its_data_is_healed_by_the_workers(tmp_path: Path) -> None:
    """FLUSHALL (a restart without persistence): every worker finds its deadline gone, takes
    a new name and writes its members again; counts are exact again within the TTL."""
    import redis

    ttl = 4.0
    with RedisServer() as server, brokers(server.url, 2, ttl) as (one, two):
        streams = [one.subscribe("room", member="a"), two.subscribe("room", member="b")]
        streams.append(two.subscribe("room", member="b"))
        until(lambda: one.presence("room").connections == 3, 10)
        admin: redis.Redis[bytes] = redis.Redis.from_url(server.url)
        admin.flushall()
        assert one.presence("room").connections == 0
        took = until(
            lambda: one.presence("room") == Presence("room", frozenset({"a", "b"}), 2, 3),
            3 * ttl,
        )
        print(f"\npresence exact again {took:.2f} s after FLUSHALL")
        assert took <= ttl
        for stream in streams:
            stream.close()
        until(lambda: one.presence("room").connections == 0, 10)
        admin.close()


@pytest.mark.redis
def test_a_worker_taken_for_dead_comes_back_under_a_new_name(tmp_path: Path) -> None:
    """A worker paused past its deadline is reaped (its member leaves, with the event); when
    it runs again it notices and writes its members again (the member joins again). Its old
    name can never write again."""
    import redis

    ttl = 4.0
    with RedisServer() as server, brokers(server.url, 2, ttl) as (one, two):
        watcher = one.subscribe("room")
        stream = two.subscribe("room", member="b", announce=True)
        until(lambda: one.presence("room").member_count == 1, 10)
        old = two._presence.worker
        admin: redis.Redis[bytes] = redis.Redis.from_url(server.url)
        admin.zadd("pr:presence:workers", {old: 1})  # its deadline, long gone
        assert kinds_of(watcher, 1) == [JOIN_EVENT]
        assert kinds_of(watcher, 2) == [LEAVE_EVENT, JOIN_EVENT]
        until(lambda: two._presence.worker != old, 10, "a new name")
        assert one.presence("room") == Presence("room", frozenset({"b"}), 1, 1)
        assert admin.zscore("pr:presence:workers", old) is None
        stream.close()
        assert kinds_of(watcher, 1) == [LEAVE_EVENT]
        assert one.presence("room").connections == 0
        watcher.close()
        admin.close()
