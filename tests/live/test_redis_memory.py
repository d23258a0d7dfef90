"""Redis memory stays within the sizing rule of docs/deployment.rst ("Sizing Redis's memory").

Measured with ``INFO memory`` on a real redis-server: the backlogs stay below the documented
formula, and once every channel's TTL has passed, nothing of the channels stays (before 0.1.0,
shard streams that every worker read kept about 10,000 events each, payloads and channel names
included, for good; events now travel by sharded pub/sub, which keeps nothing).
"""

from __future__ import annotations

import collections.abc as cabc
import time

import pytest
import redis

from flask_ssecors.brokers._redis import RedisBroker
from flask_ssecors.events import Event
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

KIB = 1024


def documented_bound(*, channels: int, backlog: int, size: int) -> float:
    """The formula of docs/deployment.rst."""
    return channels * (1.25 * (backlog + 2) * (size + 128) + 6 * KIB)


@pytest.fixture
def server() -> cabc.Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


def used_memory(client: redis.Redis[bytes]) -> int:
    return int(client.info("memory")["used_memory"])


@pytest.mark.parametrize(
    ("size", "channels", "backlog"),
    [(100, 1000, 1), (100, 1000, 10), (1000, 200, 20), (16_000, 20, 50), (60_000, 5, 100)],
)
def test_memory_stays_within_the_documented_formula(
    server: RedisServer, size: int, channels: int, backlog: int
) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
    base = used_memory(client)
    broker = RedisBroker(server.url, backlog=backlog, max_event_size=65536)
    data = "x" * (size - 12)
    try:
        for _ in range(backlog + 3):  # enough to trim every backlog
            for number in range(channels):
                broker.publish(f"channel:{number:05d}", Event(data))
    finally:
        broker.close()
    encoded = len(Event(data).encode())
    bound = documented_bound(channels=channels, backlog=backlog, size=encoded)
    used = used_memory(client) - base
    assert used <= bound, f"{used} bytes used, the documented bound is {bound:.0f}"
    assert used >= bound / 4, f"the bound {bound:.0f} is far above what is used ({used})"
    client.close()


def test_nothing_of_forgotten_channels_stays(server: RedisServer) -> None:
    """Backlog 10, TTL 1 s, 12,000 events of 5 KB on 1,200 channels: once the TTL passed,
    no key is left."""
    client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
    base = used_memory(client)
    broker = RedisBroker(server.url, backlog=10, channel_ttl=1.0)
    try:
        for number in range(12_000):
            broker.publish(f"user:{number % 1200}", Event("x" * 5000))
    finally:
        broker.close()
    held = used_memory(client) - base
    assert held > 50_000_000  # ~60 MB while the channels live
    deadline = time.monotonic() + 20
    while client.dbsize() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.keys("*") == []
    # What is left is Redis's own (the script cache, a hash table grown for 1,200 channels).
    assert used_memory(client) - base < held / 50
    client.close()
