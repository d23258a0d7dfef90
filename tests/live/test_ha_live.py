"""No single Redis to fail: the Redis broker on Sentinel and on a Redis Cluster, through a
primary's crash, with real topologies on loopback and the app under gunicorn -k gevent.

While clients stream and a publisher publishes with ``SSECORS_BROKER_MIN_REPLICAS=1``, the
primary (of the Sentinel set, or of one cluster shard) is SIGKILLed. After the failover, every
client has every acknowledged event exactly once, in order, and no reset event; publishes
during the switch either succeed or raise ``BrokerUnavailable`` within the timeout; listening
connections stay bounded per worker.
"""

from __future__ import annotations

import json
import threading
import time
import typing as t
from pathlib import Path

import pytest

from flask_ssecors.checker._broker_check import check_broker
from tests.support.servers import LiveServer
from tests.support.topologies import Cluster
from tests.support.topologies import listening_connections
from tests.support.topologies import SentinelSet
from tests.support.wire import request
from tests.support.wire import StreamClient

pytestmark = [pytest.mark.live, pytest.mark.redis, pytest.mark.timeout(300)]

APP = "tests.live_apps.redis_app:create_app()"
ORIGIN = {"Origin": "http://localhost:5001"}
TIMEOUT = 2.0


class Publisher(threading.Thread):
    """Publishes event after event over the servers, round robin, recording what was
    acknowledged (an id came back) and how long each failure took."""

    def __init__(self, servers: list[LiveServer], channels: list[str]) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.channels = channels
        self.acknowledged: list[tuple[str, str]] = []
        self.failures: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        number = 0
        while not self.halt.is_set():
            channel = self.channels[number % len(self.channels)]
            server = self.servers[number % len(self.servers)]
            started = time.monotonic()
            status, _, body = request(
                server.port, f"/publish/{channel}?n={number}", method="POST", timeout=30
            )
            answer = json.loads(body)
            if status == 200:
                self.acknowledged.append((channel, answer["ids"][0]))
            else:
                assert answer.get("error") == "BrokerUnavailable", answer
                self.failures.append(time.monotonic() - started)
            number += 1
            time.sleep(0.02)


def position(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition(".")[2].partition("-")
    return int(ms), int(seq)


def received(client: StreamClient, last: str | None, limit: float = 15.0) -> list[t.Any]:
    """The events a client got, read until it has ``last`` and nothing more came at once."""
    events: list[t.Any] = []
    deadline = time.monotonic() + limit
    done = last is None
    while time.monotonic() < deadline:
        try:
            event = client.next_event(0.2 if done else max(0.1, deadline - time.monotonic()))
        except (TimeoutError, EOFError):
            if done:
                break
            continue
        if event.data is not None:
            events.append(event)
            done = done or event.id == last
    return events


def check_exactly_once(
    clients: list[tuple[str, StreamClient]], publisher: Publisher
) -> dict[str, int]:
    acked: dict[str, list[str]] = {}
    for channel, event_id in publisher.acknowledged:
        acked.setdefault(channel, []).append(event_id)
    totals = {"clients": 0, "acknowledged": len(publisher.acknowledged), "extra": 0}
    for channel, client in clients:
        expected = acked.get(channel, [])
        events = received(client, expected[-1] if expected else None)
        ids = [e.id for e in events]
        assert not [e for e in events if e.event == "ssecors-reset"], channel
        assert len(ids) == len(set(ids)), f"{channel}: duplicates"
        assert ids == sorted(ids, key=position), f"{channel}: out of order"
        missing = [i for i in expected if i not in set(ids)]
        assert missing == [], f"{channel}: {len(missing)} acknowledged events missing"
        totals["extra"] += len(ids) - len(expected)  # stored although publish raised
        totals["clients"] += 1
    return totals


def run(
    tmp_path: Path,
    url: str,
    channels: list[str],
    clients_wanted: int,
    fail_over: t.Callable[[], object],
) -> tuple[dict[str, int], Publisher, list[LiveServer]]:
    env = {
        "BROKER_URL": url,
        "MIN_REPLICAS": "1",
        "BROKER_TIMEOUT": str(TIMEOUT),
        "HEARTBEAT": "1",
        "BACKLOG": "5000",
    }
    servers = [
        LiveServer(APP, env=env, log_path=tmp_path / f"server{n}.log").start() for n in range(2)
    ]
    clients: list[tuple[str, StreamClient]] = []
    publisher = Publisher(servers, channels)
    try:
        for index in range(clients_wanted):
            channel = channels[index % len(channels)]
            server = servers[index % 2]
            client = StreamClient(
                server.port, f"/events/{channel}", ORIGIN, timeout=30, keep_raw=False
            )
            assert client.status == 200
            clients.append((channel, client))
        publisher.start()
        time.sleep(2)
        fail_over()
        time.sleep(3)  # publishes after the failover, through the new primary
        publisher.halt.set()
        publisher.join(60)
        totals = check_exactly_once(clients, publisher)
        return totals, publisher, servers
    finally:
        publisher.halt.set()
        for _, client in clients:
            client.close()
        for server in servers:
            server.stop()


def test_sentinel_failover_delivers_every_acknowledged_event_once(tmp_path: Path) -> None:
    topology = SentinelSet(tmp_path / "redis").start()
    try:
        seen: dict[str, object] = {}

        def fail_over() -> None:
            seen["before"] = listening_connections(topology.nodes())
            seen["killed"], seen["new"] = topology.fail_over()

        channels = [f"ha:{n}" for n in range(10)]
        totals, publisher, _ = run(tmp_path, topology.url, channels, 100, fail_over)
        print("sentinel:", totals, "failures:", len(publisher.failures))
        assert totals["clients"] == 100
        assert totals["acknowledged"] > 100
        # Publishes during the switch raised BrokerUnavailable in bounded time, never hung.
        assert all(took < TIMEOUT + 3 for took in publisher.failures), publisher.failures
        before = t.cast(dict[str, int], seen["before"])
        assert len(before) == 2 and set(before.values()) == {1}  # one per worker
        report = check_broker(topology.url, min_replicas=1, channel="ha:1")
        roles = sorted(node["role"] for node in report["nodes"])
        assert roles == ["primary", "replica"], report
        assert {entry["primary"] for entry in report["sentinels"]} == {topology.primary_address()}
    finally:
        topology.stop()


def test_cluster_failover_delivers_every_acknowledged_event_once(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "redis").start()
    try:
        seen: dict[str, object] = {}

        def fail_over() -> None:
            primaries = cluster.primaries()
            seen["holding"] = {node.address: node.client().dbsize() for node in primaries}
            seen["listening"] = listening_connections(cluster.all)
            seen["new"] = cluster.fail_over(primaries[0])

        channels = [f"room:{n}" for n in range(50)]
        totals, publisher, _ = run(tmp_path, cluster.url, channels, 200, fail_over)
        print("cluster:", totals, "failures:", len(publisher.failures), seen)
        assert totals["clients"] == 200
        assert totals["acknowledged"] > 100
        assert all(took < TIMEOUT + 3 for took in publisher.failures), publisher.failures
        holding = t.cast(dict[str, int], seen["holding"])
        assert len(holding) == 3 and all(keys > 0 for keys in holding.values()), holding
        listening = t.cast(dict[str, int], seen["listening"])
        assert len(listening) == 2, listening  # the two workers
        assert all(count <= 16 for count in listening.values()), listening
        report = check_broker(cluster.url, channel="room:1")
        assert len(report["slots"]) == 3
        assert sorted(node["role"] for node in report["nodes"]).count("primary") == 3
        assert report["channel"]["node"] in {entry["primary"] for entry in report["slots"]}
    finally:
        cluster.stop()
