"""Scale-out on the wire: gunicorn -k gevent on a real redis-server (free ports, stopped by PID).

A worker receives the events of the channels it follows and nothing else (Redis filters by
channel: sharded pub/sub), and pub/sub's at-most-once delivery loses nothing: a listening
connection killed mid-burst (``CLIENT KILL``) is caught up from the channels' streams before any
later event. docs/deployment.rst ("Capacity past one host") has the figures.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
import redis

from bench._common import children_of
from bench._common import process_cpu_seconds
from flask_ssecors import Event
from flask_ssecors import Publisher
from flask_ssecors.brokers._redis_layout import Keys
from tests.live.test_channels_live import messages
from tests.live.test_isolation_live import serving
from tests.support.servers import RedisServer
from tests.support.swarm import Swarm

pytestmark = [pytest.mark.redis, pytest.mark.live, pytest.mark.timeout(240)]


def listeners(client: redis.Redis[bytes]) -> list[dict[str, str]]:
    return [
        entry
        for entry in client.client_list()
        if str(entry.get("name", "")).startswith("ssecors-listen-")
    ]


def test_a_worker_pays_nothing_for_channels_it_does_not_follow(tmp_path: Path) -> None:
    """One stream on ``mine``; 10,000 events to 10,000 other channels, one in 100 to ``mine``:
    the worker's listener is subscribed to ``mine`` alone, Redis sends it nothing else, and
    the stream gets its 100 events in order. The worker's CPU per foreign event is printed (a
    benchmark figure: ``python -m bench.channels --deployment`` measures it properly)."""
    with (
        RedisServer() as broker,
        serving(broker.url, tmp_path / "log") as server,
        Swarm(server.port) as swarm,
        Publisher(broker.url) as publisher,
    ):
        admin: redis.Redis[bytes] = redis.Redis.from_url(broker.url)
        [mine] = swarm.open(["/events/mine"])
        swarm.wait_until(lambda: len(listeners(admin)) == 1, 10, "the worker's listener")
        assert server.process is not None
        (worker,) = children_of(server.process.pid)
        before = process_cpu_seconds(worker)
        began = time.monotonic()
        expected = []
        for n in range(10_000):
            if n % 100 == 0:
                expected.append(publisher.publish("mine", Event({"n": n})))
            else:
                publisher.publish(f"other:{n}", Event({"n": n, "pad": "x" * 200}))
        swarm.wait_until(lambda: len(mine.of_type()) == 100, 30, "the 100 events on mine")
        spent = process_cpu_seconds(worker) - before
        elapsed = time.monotonic() - began
        assert [e.id for e in mine.of_type()] == expected
        (listening,) = listeners(admin)
        assert (int(listening["ssub"]), int(listening["sub"]), int(listening["psub"])) == (1, 0, 0)
        keys = Keys("ssecors:")
        counts = admin.execute_command(
            "PUBSUB", "SHARDNUMSUB", keys.channel("mine"), keys.channel("other:1")
        )
        assert counts[1::2] == [1, 0]  # Redis sends other:1's events to nobody
        print(
            f"\nworker CPU over 9,900 foreign + 100 own events: {spent * 1000:.0f} ms "
            f"({spent / 9900 * 1e6:.1f} us per foreign event, publisher-bound run of "
            f"{elapsed:.1f} s)"
        )
        admin.close()


def test_listening_connections_killed_mid_burst_lose_and_repeat_nothing(tmp_path: Path) -> None:
    """Two workers, 40 streams on 8 channels; 4,000 events published from two threads while
    every listening connection is killed three times (``CLIENT KILL TYPE pubsub``): each stream
    gets every event of its channel exactly once, in order, and no reset."""
    channels = [f"burst:{n}" for n in range(8)]
    with (
        RedisServer() as broker,
        serving(broker.url, tmp_path / "log", workers=2) as server,
        Swarm(server.port) as swarm,
    ):
        admin: redis.Redis[bytes] = redis.Redis.from_url(broker.url)
        streams = swarm.open([f"/events/{channels[n % 8]}" for n in range(40)])
        swarm.wait_until(
            lambda: sum(int(c["ssub"]) for c in listeners(admin)) >= 8,
            15,
            "every channel subscribed",
        )
        workers = len(listeners(admin))  # the workers the streams landed on
        published: dict[str, list[str]] = {name: [] for name in channels}
        lock = threading.Lock()

        def publish(seed: int) -> None:
            rng = random.Random(seed)
            with Publisher(broker.url) as publisher:
                for n in range(2000):
                    name = rng.choice(channels)
                    with lock:  # the order of ids per channel is the order of this list
                        published[name].append(publisher.publish(name, Event({"n": n})))
                    if n % 50 == 0:
                        time.sleep(0.01)

        threads = [threading.Thread(target=publish, args=(seed,)) for seed in (1, 2)]
        for thread in threads:
            thread.start()
        killed = 0
        for _ in range(3):
            time.sleep(0.4)
            killed += int(admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
        for thread in threads:
            thread.join()
        assert killed >= 3 * workers  # every listener, three times
        total = {name: len(ids) for name, ids in published.items()}
        swarm.wait_until(
            lambda: all(len(s.of_type()) >= total[s.path.rpartition("/")[2]] for s in streams),
            60,
            "every event on every stream",
        )
        time.sleep(0.5)  # a duplicate would have arrived by now
        for stream in streams:
            name = stream.path.rpartition("/")[2]
            assert [e.id for e in stream.of_type()] == published[name], name
            assert not stream.of_type("ssecors-reset")
            assert len(messages(stream)) == total[name]
        assert server.log_text().count("Redis listener lost its connection") >= 3 * workers
        admin.close()
