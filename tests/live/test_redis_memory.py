"""Redis memory stays within the sizing rule of docs/deployment.rst ("Sizing Redis's memory").

Measured with ``INFO memory`` on a real redis-server: the backlogs and the shard streams stay
below the documented formula, and once every channel's TTL and the shard window have passed,
nothing of the channels stays (before 0.1.0 the shard streams kept about 10,000 events each,
payloads and channel names included, for good).
"""

from __future__ import annotations

import collections.abc as cabc
import time

import pytest
import redis

from flask_ssecors.brokers._redis import RedisBroker
from flask_ssecors.brokers._redis_layout import LIVE_MAXLEN
from flask_ssecors.brokers._redis_layout import LIVE_WINDOW
from flask_ssecors.events import Event
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

KIB = 1024


def documented_bound(
    *, channels: int, backlog: int, size: int, name: int, published: int, window: float
) -> float:
    """The formula of docs/deployment.rst, for ``published`` events within one window."""
    backlogs = channels * (1.25 * (backlog + 2) * (size + 128) + 6 * KIB)
    shard_entries = min(16 * (LIVE_MAXLEN + 100), published + 1600)
    return backlogs + shard_entries * 1.3 * (size + name + 200)


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
    published = 0
    try:
        for _ in range(backlog + 3):  # enough to trim every backlog
            for number in range(channels):
                broker.publish(f"channel:{number:05d}", Event(data))
                published += 1
    finally:
        broker.close()
    encoded = len(Event(data).encode())
    bound = documented_bound(
        channels=channels,
        backlog=backlog,
        size=encoded,
        name=len("channel:00000"),
        published=published,
        window=LIVE_WINDOW,
    )
    used = used_memory(client) - base
    assert used <= bound, f"{used} bytes used, the documented bound is {bound:.0f}"
    assert used >= bound / 4, f"the bound {bound:.0f} is far above what is used ({used})"
    client.close()


def test_nothing_of_forgotten_channels_stays(server: RedisServer) -> None:
    """Backlog 10, TTL 1 s, 12,000 events of 5 KB on 1,200 channels: once the TTL and the
    shard window passed, only the 16 shard counters are left."""
    client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
    base = used_memory(client)
    broker = RedisBroker(server.url, backlog=10, channel_ttl=1.0, live_window=1.0)
    try:
        for number in range(12_000):
            broker.publish(f"user:{number % 1200}", Event("x" * 5000))
    finally:
        broker.close()
    held = used_memory(client) - base
    assert held > 50_000_000  # ~60 MB while the channels live
    deadline = time.monotonic() + 20
    while client.dbsize() > 16 and time.monotonic() < deadline:
        time.sleep(0.2)
    keys = sorted(key.decode() for key in client.keys("*"))
    assert keys == sorted(f"ssecors:{{s{shard}}}:n" for shard in range(16))
    # What is left is Redis's own (the script cache, a hash table grown for 1,200 channels).
    assert used_memory(client) - base < held / 50
    client.close()
