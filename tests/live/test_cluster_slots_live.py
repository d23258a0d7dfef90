"""A Redis Cluster slot moved to another primary (resharding, not a failover) while a worker
follows a channel of that slot: the listener follows the slot to its new node, and the stream
gets every event, before, during and after the move, once and in order.

Six redis-server processes on loopback (three primaries with a replica each), stopped by PID.
"""

from __future__ import annotations

import collections.abc as cabc
from pathlib import Path

import gevent
import pytest
import redis
from redis.crc import key_slot

from flask_ssecors.brokers._redis import RedisBroker
from flask_ssecors.brokers._redis_layout import Keys
from flask_ssecors.events import Event
from tests.live.test_redis_broker import ids_of
from tests.live.test_redis_broker import nothing_more
from tests.live.test_redis_broker import take
from tests.support.topologies import Cluster

pytestmark = [pytest.mark.redis, pytest.mark.live, pytest.mark.timeout(180)]


@pytest.fixture
def cluster(tmp_path: Path) -> cabc.Iterator[Cluster]:
    started = Cluster(tmp_path).start()
    try:
        yield started
    finally:
        started.stop()


def owner_of(cluster: Cluster, slot: int) -> redis.Redis[bytes]:
    for node in cluster.primaries():
        client = node.client()
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                host, port = primary[0], primary[1]
                host = host.decode() if isinstance(host, bytes) else host
                return client_at(host, int(port))
    raise AssertionError(f"no node serves slot {slot}")


def client_at(host: str, port: int) -> redis.Redis[bytes]:
    return redis.Redis(host=host, port=port)


def move_slot(cluster: Cluster, slot: int) -> None:
    """Move ``slot`` and its keys to another primary, the way ``redis-cli --cluster reshard``
    does: IMPORTING / MIGRATING, MIGRATE every key, then SETSLOT NODE everywhere."""
    source = owner_of(cluster, slot)
    source_port = source.connection_pool.connection_kwargs["port"]
    target = next(n.client() for n in cluster.primaries() if n.port != source_port)
    source_id = source.execute_command("CLUSTER", "MYID")
    target_id = target.execute_command("CLUSTER", "MYID")
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        host = target.connection_pool.connection_kwargs["host"]
        port = target.connection_pool.connection_kwargs["port"]
        source.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys)
    for node in cluster.primaries():
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def test_a_channel_whose_slot_moves_keeps_every_event_in_order(cluster: Cluster) -> None:
    worker = RedisBroker(cluster.url, timeout=2.0)
    publisher = RedisBroker(cluster.url, timeout=2.0)
    try:
        subscription = worker.subscribe("moving")
        published = [publisher.publish("moving", Event({"n": n})) for n in range(5)]
        assert ids_of(take(subscription, 5)) == published
        slot = key_slot(Keys("ssecors:").channel("moving").encode())
        move_slot(cluster, slot)
        for n in range(5, 25):
            published.append(publisher.publish("moving", Event({"n": n})))
            gevent.sleep(0.05)
        assert ids_of(take(subscription, 20, timeout=30.0)) == published[5:]
        assert nothing_more(subscription, 0.5)
    finally:
        worker.close()
        publisher.close()
