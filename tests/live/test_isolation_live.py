"""Isolation on the wire: gunicorn -k gevent on a real redis-server (both on free ports, stopped
by PID). What one channel name, one malformed entry or one far-behind client does stays with
it; the rules are in docs/security.rst ("One channel, one subscriber, one far-behind client").
"""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import time
from pathlib import Path

import pytest
import redis

from flask_ssecors import Event
from flask_ssecors import Publisher
from flask_ssecors.brokers._redis_layout import Keys
from tests.live.test_channels_live import call
from tests.support.servers import LiveServer
from tests.support.servers import RedisServer
from tests.support.swarm import Swarm

pytestmark = [pytest.mark.redis, pytest.mark.live, pytest.mark.timeout(180)]

APP = "tests.live_apps.channels_app:create_app()"


@contextlib.contextmanager
def serving(broker_url: str, log: Path, workers: int = 1) -> cabc.Iterator[LiveServer]:
    server = LiveServer(
        APP,
        env={"BROKER_URL": broker_url, "HEARTBEAT": "1"},
        workers=workers,
        log_path=log,
        extra_args=["--keep-alive", "30"],
    ).start()
    try:
        yield server
    finally:
        server.stop()


def listener_ids(client: redis.Redis[bytes]) -> list[int]:
    """The ids of the worker's listening connections (a new id means it reconnected)."""
    return sorted(
        int(entry["id"])
        for entry in client.client_list()
        if str(entry.get("name", "")).startswith("ssecors-listen-")
    )


def test_a_channel_name_with_a_line_break_is_refused_and_nothing_else_notices(
    tmp_path: Path,
) -> None:
    """Regression: ``/rooms/a%0Ab/events`` (Werkzeug's converter decodes ``%0A``) subscribed
    to ``room:a\\nb``; every event on it then made the worker's one Redis listener raise and
    sleep a second, for every channel: 30 publishes stopped delivery for about 30 s."""
    with (
        RedisServer() as broker,
        serving(broker.url, tmp_path / "log") as server,
        Swarm(server.port) as swarm,
    ):
        [calm] = swarm.open(["/events/calm"])
        [poisoned] = swarm.open(["/rooms/a%0Ab/events"])
        assert poisoned.status == 400
        # open() returns with the headers; the body follows.
        swarm.wait_until(lambda: poisoned.ended, 10, "the 400's body")
        assert b"invalid channel name" in poisoned.body
        [ticker] = swarm.open(["/rooms/ok/events"])
        assert ticker.status == 200
        for n in range(30):
            status, answer = call(server, "POST", "/publish", {"channels": ["room:a\nb"]})
            assert (status, answer["error"]) == (400, "ChannelError")
            call(server, "POST", "/publish", {"channels": ["calm", "ticker"], "data": {"n": n}})
        swarm.wait_until(
            lambda: len(calm.of_type()) == 30 and len(ticker.of_type("ticker/message")) == 30,
            20,
            "every event on the other channels",
        )
        assert [e.json()["n"] for e in calm.of_type()] == list(range(30))
        _, stats = call(server, "GET", "/stats")
        assert stats["counters"]["faults"] == {}
        assert "Redis listener failed" not in server.log_text()


def test_malformed_entries_are_contained_and_the_listener_never_restarts(
    tmp_path: Path,
) -> None:
    """Messages a listener cannot dispatch (sent by a foreign or broken publisher) cost the
    subscribers of their channel a reconnect, counted as a fault; the listener keeps its
    connection and every other channel keeps receiving, in order."""
    keys = Keys("ssecors:")
    with (
        RedisServer() as broker,
        serving(broker.url, tmp_path / "log") as server,
        Swarm(server.port) as swarm,
        Publisher(broker.url) as publisher,
    ):
        admin: redis.Redis[bytes] = redis.Redis.from_url(broker.url)
        [victim, calm] = swarm.open(["/events/victim", "/events/calm"])
        publisher.publish("victim", Event("fine"))
        swarm.wait_until(lambda: len(victim.of_type()) == 1, 10, "the victim's first event")
        before = listener_ids(admin)
        assert len(before) == 1
        for n in range(30):
            # what a foreign or broken publisher could send on the channel's pub/sub channel
            admin.execute_command("SPUBLISH", keys.channel("victim"), b"zzzzzz not-an-id\nx")
            publisher.publish("calm", Event({"n": n}))
        swarm.wait_until(lambda: len(calm.of_type()) == 30, 20, "every calm event")
        assert [e.json()["n"] for e in calm.of_type()] == list(range(30))
        swarm.wait_until(lambda: victim.ended, 10, "the victim's stream ending")
        assert listener_ids(admin) == before
        _, stats = call(server, "GET", "/stats")
        assert stats["counters"]["faults"] == {"dispatch": 1}
        log = server.log_text()
        assert "contained a fault (dispatch)" in log
        assert "Redis listener failed" not in log
        # The victim resumes from its channel's own stream, which holds its events intact.
        again = swarm.open(["/events/victim"], last_event_ids=[victim.last_event_id])
        later = publisher.publish("victim", Event("after"))
        swarm.wait_until(lambda: bool(again[0].of_type()), 10, "the victim's next event")
        assert [e.id for e in again[0].of_type()] == [later]
        admin.close()


def test_a_far_behind_client_of_several_channels_resumes(tmp_path: Path) -> None:
    """Regression: 600 missed events on each of two channels (all in the backlog) with the
    default queue of 1,000: every reconnect answered ``: ok`` and nothing else, forever."""
    with (
        RedisServer() as broker,
        serving(broker.url, tmp_path / "log") as server,
        Swarm(server.port) as swarm,
        Publisher(broker.url) as publisher,
    ):
        [first] = swarm.open(["/multi?c=a&c=b"])
        swarm.wait_until(lambda: first.last_event_id is not None, 10, "the opening id")
        held = first.last_event_id
        swarm.drop([first])
        for n in range(600):
            for channel in ("a", "b"):
                publisher.publish(channel, Event({"n": n, "c": channel}))
        [again] = swarm.open(["/multi?c=a&c=b"], last_event_ids=[held])
        swarm.wait_until(lambda: len(again.events) >= 1200, 60, "the 1,200 missed events")
        by_channel: dict[str, list[int]] = {"a": [], "b": []}
        for event in again.events:
            body = event.json()
            assert event.type == f"{body['c']}/message"
            by_channel[body["c"]].append(body["n"])
        assert by_channel == {"a": list(range(600)), "b": list(range(600))}
        assert not again.ended
        publisher.publish("b", Event({"n": 600, "c": "b"}))
        swarm.wait_until(lambda: len(again.events) == 1201, 10, "a live event after the replay")
        time.sleep(0.2)
        assert len(again.events) == 1201
